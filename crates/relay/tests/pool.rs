//! Connection reuse: fewer connections, and a connection the server closed meanwhile costs a
//! retry on a fresh one, never a lost or doubled message.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strainer_receive::{DataReply, Handler, Session, SessionConfig, Shutdown};
use strainer_relay::{Outgoing, Pool, RelayConfig};
use strainer_types::{ClientInfo, Enhanced, Envelope, Recipient, Reply, Transaction};
use tokio::net::TcpListener;

#[derive(Default)]
struct Sink {
    got: Mutex<Vec<Vec<u8>>>,
}

impl Handler for Sink {
    async fn data(&self, tx: Transaction) -> DataReply {
        self.got.lock().unwrap().push(tx.message);
        DataReply::One(Reply::new(250, Enhanced(2, 0, 0), "Ok: queued as X"))
    }
}

async fn sink(idle: Duration) -> (SocketAddr, Arc<Sink>, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = Arc::new(Sink::default());
    let conns = Arc::new(AtomicUsize::new(0));
    let cfg = Arc::new(SessionConfig {
        command_timeout: idle,
        xforward_hosts: vec!["127.0.0.0/8".parse().unwrap()],
        ..SessionConfig::default()
    });
    let (_tx, rx) = tokio::sync::watch::channel(Shutdown::Running);
    let (h2, c2) = (h.clone(), conns.clone());
    tokio::spawn(async move {
        let _keep = _tx;
        while let Ok((s, peer)) = l.accept().await {
            c2.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(Session::new(s, peer, cfg.clone(), h2.clone(), rx.clone()).run());
        }
    });
    (addr, h, conns)
}

fn pool(addr: SocketAddr) -> Pool {
    let cfg = RelayConfig {
        address: addr.to_string(),
        hostname: "filter.test".into(),
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(2),
        data_timeout: Duration::from_secs(2),
    };
    Pool::new(cfg, 4, Duration::from_secs(10))
}

async fn send(p: &Pool, body: &str) -> bool {
    let env = Envelope { sender: "a@b".into(), params: Default::default(), recipients: vec![Recipient::new("c@d")] };
    let d = p
        .deliver(Outgoing { envelope: &env, client: &ClientInfo::default(), prefix: b"", message: body.as_bytes() })
        .await
        .unwrap();
    d.all_accepted()
}

#[tokio::test]
async fn messages_in_sequence_share_one_connection() {
    let (addr, sink, conns) = sink(Duration::from_secs(30)).await;
    let p = pool(addr);
    for i in 0..5 {
        assert!(send(&p, &format!("Subject: {i}\r\n\r\nx\r\n")).await);
    }
    assert_eq!(sink.got.lock().unwrap().len(), 5);
    assert_eq!(conns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_server_closed_is_replaced_without_loss_or_duplicate() {
    let (addr, sink, conns) = sink(Duration::from_millis(200)).await;
    let p = pool(addr);
    assert!(send(&p, "Subject: one\r\n\r\nx\r\n").await);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(send(&p, "Subject: two\r\n\r\nx\r\n").await, "delivered on a fresh connection");
    let got = sink.got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "each message exactly once");
    assert_eq!(conns.load(Ordering::SeqCst), 2);
}
