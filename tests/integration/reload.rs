//! Reload while serving: nothing lost or doubled, new rules apply, a broken file changes nothing.

use std::sync::Arc;

use crate::support::*;

async fn one(addr: std::net::SocketAddr, subject: &str) -> strainer_types::Reply {
    let (mut c, _) = Client::connect(addr).await;
    c.cmd("EHLO mx.test").await;
    let msg = format!("From: a@example.org\r\nSubject: {subject}\r\n\r\nbody\r\n");
    c.transaction("MAIL FROM:<a@example.org>", &["RCPT TO:<b@example.net>"], &msg, false).await.remove(0)
}

#[tokio::test]
async fn reload_under_load_loses_nothing_and_applies_new_rules() {
    let sink = Sink::start(Behaviour::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let checks = dir.path().join("header_checks");
    let file = dir.path().join("strainer.toml");
    let mut cfg = test_config(sink.addr);
    std::fs::write(&checks, "/^Subject: red/ REJECT red is out\n").unwrap();
    cfg.rules.header_checks = vec![checks.clone()];
    std::fs::write(&file, cfg.to_toml()).unwrap();
    let config = strainer::config::Config::load(&file).unwrap();
    let local = Arc::new(strainer::scanners::Local::compile(&config, dir.path()).unwrap());
    let live = strainer::live::Live::new(config, local, Some(file.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(strainer::serve_live(Arc::clone(&live), listener, async move {
        let _ = stop_rx.await;
    }));
    assert_eq!(one(addr, "red").await.code, 554);

    // 4 connections x 100 messages while the configuration is reloaded 20 times.
    let mut senders = Vec::new();
    for conn in 0..4 {
        senders.push(tokio::spawn(async move {
            let (mut c, _) = Client::connect(addr).await;
            c.cmd("EHLO mx.test").await;
            for i in 0..100 {
                let msg = format!("From: a@example.org\r\nSubject: load {conn}-{i}\r\n\r\nbody\r\n");
                let r = c.transaction("MAIL FROM:<a@example.org>", &["RCPT TO:<b@example.net>"], &msg, false).await;
                assert_eq!(r[0].code, 250, "{}", r[0]);
            }
        }));
    }
    for i in 0..20 {
        let rule =
            if i % 2 == 0 { "/^Subject: blue/ REJECT blue is out\n" } else { "/^Subject: red/ REJECT red is out\n" };
        std::fs::write(&checks, rule).unwrap();
        live.reload().unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    for s in senders {
        s.await.unwrap();
    }
    let got = sink.got();
    let mut subjects: Vec<String> = got
        .iter()
        .map(|t| {
            String::from_utf8_lossy(&t.message)
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(String::from))
                .unwrap()
        })
        .collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!((got.len(), subjects.len()), (400, 400), "every message delivered exactly once");

    // The last reload (i = 19) put "red" back.
    assert_eq!(one(addr, "red").await.code, 554);
    std::fs::write(&checks, "/^Subject: blue/ REJECT blue is out\n").unwrap();
    live.reload().unwrap();
    assert_eq!(one(addr, "red").await.code, 250);
    assert_eq!(one(addr, "blue").await.code, 554);

    // A broken table is refused and changes nothing.
    std::fs::write(&checks, "/^Subject: (/ REJECT\n").unwrap();
    let err = live.reload().unwrap_err();
    assert!(format!("{err:#}").contains("header_checks"), "{err:#}");
    assert_eq!(one(addr, "blue").await.code, 554, "the old rules are still in force");
    let _ = stop_tx.send(());
    server.await.unwrap();
}
