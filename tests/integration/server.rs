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
