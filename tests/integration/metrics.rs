//! After a known mix of messages the counters say exactly that, over HTTP too.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fixtures::*;
use crate::support::*;

#[tokio::test]
async fn counters_match_a_known_mix_and_are_served_over_http() {
    let sink = Sink::start(Behaviour::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let checks = dir.path().join("header_checks");
    std::fs::write(&checks, "/^Subject: reject me/ REJECT no\n").unwrap();
    let mut cfg = test_config(sink.addr);
    cfg.rules.header_checks = vec![checks];
    let running = Running::start(cfg, dir.path()).await;
    let (live, addr) = (Arc::clone(&running.live), running.addr);
    let banned = String::from_utf8(named("a.zip", "application/zip", &zip(&[Entry::new("a.exe", PE)]))).unwrap();
    let msgs = [
        "Subject: one\r\n\r\nx\r\n".to_string(),
        "Subject: two\r\n\r\nx\r\n".to_string(),
        "Subject: reject me\r\n\r\nx\r\n".to_string(),
        banned,
    ];
    let (mut c, _) = Client::connect(addr).await;
    c.cmd("EHLO mx.test").await;
    let mut bytes = 0;
    for m in &msgs {
        c.transaction("MAIL FROM:<a@example.org>", &["RCPT TO:<b@example.net>"], m, false).await;
        bytes += m.len();
    }
    let text = live.metrics().render();
    for want in [
        "strainer_messages_total{action=\"relayed\",category=\"clean\"} 2",
        "strainer_messages_total{action=\"reject\",category=\"rule\"} 1",
        "strainer_messages_total{action=\"quarantine\",category=\"banned\"} 1",
        &format!("strainer_message_bytes_total {bytes}"),
        "strainer_sessions_in_flight 1",
        "strainer_quarantine_messages 1",
        "strainer_stage_seconds_count{stage=\"relay\"} 2",
        "strainer_stage_seconds_count{stage=\"total\"} 4",
        "strainer_stage_seconds_count{stage=\"receive\"} 4",
        "strainer_stage_seconds_count{stage=\"mime\"} 4",
        "strainer_stage_seconds_count{stage=\"rules\"} 4",
        "strainer_stage_seconds_count{stage=\"policy\"} 4",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // The same text over HTTP.
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let haddr = http.local_addr().unwrap();
    tokio::spawn(strainer::metrics::serve_http(http, live.metrics()));
    let mut s = tokio::net::TcpStream::connect(haddr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
    assert!(resp.contains("strainer_messages_total{action=\"relayed\",category=\"clean\"} 2"), "{resp}");
    drop(c);
    running.stop().await;
}

/// Sends `n` messages through a filter running `cfg` and gives back its metrics text.
async fn metrics_after(cfg: strainer::config::Config, n: usize) -> String {
    let sink = Sink::start(Behaviour::Accept).await;
    let mut cfg = cfg;
    cfg.relay.address = sink.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(cfg, dir.path()).await;
    let (mut c, _) = Client::connect(running.addr).await;
    c.cmd("EHLO mx.test").await;
    for i in 0..n {
        let m = format!("Subject: note {i}\r\n\r\ncheap offer {i}\r\n");
        let r = c.transaction("MAIL FROM:<a@example.org>", &["RCPT TO:<b@example.net>"], &m, false).await;
        assert_eq!(r[0].code, 250, "{r:?}");
    }
    let text = running.live.metrics().render();
    drop(c);
    running.stop().await;
    text
}

/// A filter running a configuration on a loopback port, its metrics at hand.
struct Running {
    live: Arc<strainer::live::Live>,
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(cfg: strainer::config::Config, base: &std::path::Path) -> Running {
        let local = Arc::new(strainer::scanners::Local::compile(&cfg, base).unwrap());
        let live = strainer::live::Live::new(cfg, local, None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(strainer::serve_live(Arc::clone(&live), listener, async move {
            let _ = stop_rx.await;
        }));
        Running { live, addr, stop, server }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap();
    }
}

#[tokio::test]
async fn bayes_results_are_counted_and_an_unreadable_store_is_a_scanner_error() {
    let mut cfg = test_config("127.0.0.1:9".parse().unwrap());
    cfg.bayes.enabled = true;
    let text = metrics_after(cfg.clone(), 2).await;
    assert!(text.contains("strainer_bayes_total{result=\"untrained\"} 2"), "{text}");
    assert!(!text.contains("scanner=\"bayes\""), "{text}");

    cfg.bayes.backend = strainer::bayes::Backend::Redis;
    cfg.bayes.redis_url = format!("redis://{}/", dead_port().await);
    cfg.bayes.timeout = std::time::Duration::from_millis(500);
    let text = metrics_after(cfg, 3).await;
    assert!(text.contains("strainer_bayes_total{result=\"unavailable\"} 3"), "{text}");
    assert!(text.contains("strainer_scanner_errors_total{scanner=\"bayes\"} 3"), "{text}");
}
