//! The listener: session limit and shutdown.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn over_the_session_limit_gets_421() {
    let sink = Sink::start(Behaviour::Accept).await;
    let mut cfg = test_config(sink.addr);
    cfg.server.max_sessions = 1;
    let s = Strainer::start(cfg).await;
    let (mut first, g) = Client::connect(s.addr).await;
    assert_eq!(g.code, 220);
    let (_second, g2) = Client::connect(s.addr).await;
    assert_eq!(g2.code, 421);
    // The first session is unaffected.
    assert_eq!(first.cmd("NOOP").await.code, 250);
    drop(first);
    s.stop().await;
}

/// The accept queue holds a burst as large as the session limit while the server is too busy to
/// accept: connections complete at once instead of waiting on SYN retransmissions.
#[tokio::test]
async fn the_accept_queue_holds_a_burst_of_max_sessions_connections() {
    let l = strainer::server::listen("127.0.0.1:0".parse().unwrap(), 600).unwrap();
    let addr = l.local_addr().unwrap();
    let conns = (0..600).map(|_| tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(addr)));
    let done = futures_util::future::join_all(conns).await;
    let ok = done.iter().filter(|c| matches!(c, Ok(Ok(_)))).count();
    assert_eq!(ok, 600, "connections not completed while nothing accepted");
}

/// A burst far over the limit: every connection gets its greeting or its 421, none is left
/// waiting on a full accept queue (the default backlog of 128 left some hanging for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_connections_is_greeted_or_refused_never_left_hanging() {
    let sink = Sink::start(Behaviour::Accept).await;
    let mut cfg = test_config(sink.addr);
    cfg.server.max_sessions = 50;
    let s = Strainer::start(cfg).await;
    let conns: Vec<_> = (0..600).map(|_| tokio::net::TcpStream::connect(s.addr)).collect();
    let conns: Vec<_> = futures_util::future::join_all(conns).await.into_iter().map(|c| c.unwrap()).collect();
    let greet = conns.into_iter().map(|c| async move {
        use tokio::io::AsyncReadExt;
        let mut c = c;
        let mut buf = [0u8; 3];
        // A liveness bound, not a performance one: a dropped handshake waits forever.
        tokio::time::timeout(Duration::from_secs(60), c.read_exact(&mut buf)).await.map(|_| buf).ok().map(|b| (b, c))
    });
    let got = futures_util::future::join_all(greet).await;
    let codes: Vec<_> = got.iter().map(|g| g.as_ref().map(|(b, _)| b.to_vec())).collect();
    let greeted = codes.iter().filter(|c| c.as_deref() == Some(b"220")).count();
    let refused = codes.iter().filter(|c| c.as_deref() == Some(b"421")).count();
    assert_eq!(greeted + refused, 600, "connections without an answer: {}", 600 - greeted - refused);
    assert!(greeted <= 50 && refused >= 550, "{greeted} greeted, {refused} refused");
    drop(got);
    s.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_transactions_in_flight_and_closes_idle_sessions() {
    let sink = Sink::start(Behaviour::Accept).await;
    let mut s = Strainer::start(test_config(sink.addr)).await;
    let (mut idle, _) = Client::connect(s.addr).await;
    idle.cmd("EHLO idle").await;
    let (mut busy, _) = Client::connect(s.addr).await;
    busy.cmd("EHLO busy").await;
    busy.send("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n").await;
    for _ in 0..3 {
        busy.reply().await;
    }
    busy.send("Subject: in flight\r\n\r\n").await;
    s.signal_stop();
    assert_eq!(idle.reply().await.code, 421, "idle sessions are told at once");
    tokio::time::sleep(Duration::from_millis(100)).await;
    busy.send("body\r\n.\r\n").await;
    assert_eq!(busy.reply().await.code, 250, "the transaction in flight completes");
    assert_eq!(busy.reply().await.code, 421);
    assert_eq!(sink.got().len(), 1);
    s.stop().await;
}
