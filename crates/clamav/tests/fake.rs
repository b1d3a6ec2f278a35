//! The client against a scripted fake clamd: every answer that is not OK or FOUND is an error,
//! deadlines hold, and a dead first address fails over to the second.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use strainer_clamav::{ClamError, Client, Config, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A clamd that reads one INSTREAM (or other z-command) and answers `reply` (raw bytes).
async fn fake(reply: &'static [u8], hang: bool) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut cmd = Vec::new();
                let mut b = [0u8; 1];
                while s.read_exact(&mut b).await.is_ok() && b[0] != 0 {
                    cmd.push(b[0]);
                }
                if cmd == b"zINSTREAM" {
                    loop {
                        let mut len = [0u8; 4];
                        if s.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let n = u32::from_be_bytes(len) as usize;
                        if n == 0 {
                            break;
                        }
                        let mut chunk = vec![0u8; n];
                        if s.read_exact(&mut chunk).await.is_err() {
                            return;
                        }
                    }
                }
                if hang {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let _ = s.write_all(reply).await;
            });
        }
    });
    addr
}

fn client(addresses: Vec<String>) -> Client {
    Client::new(Config {
        enabled: true,
        addresses,
        connect_timeout: Duration::from_millis(500),
        scan_timeout: Duration::from_millis(500),
        ..Config::default()
    })
}

#[tokio::test]
async fn ok_and_found_are_verdicts() {
    let c = client(vec![fake(b"stream: OK\0", false).await]);
    assert_eq!(c.scan(&vec![7u8; 200_000]).await.unwrap(), Verdict::Clean, "several chunks");
    let c = client(vec![fake(b"stream: Eicar-Test-Signature FOUND\0", false).await]);
    assert_eq!(c.scan(b"x").await.unwrap(), Verdict::Virus("Eicar-Test-Signature".into()));
}

#[tokio::test]
async fn anything_else_is_an_error() {
    for reply in [&b"INSTREAM size limit exceeded. ERROR\0"[..], b"stream: OK", b"", b"garbage\0", b"stream: x ERROR\0"]
    {
        let c = client(vec![fake(reply, false).await]);
        assert!(c.scan(b"x").await.is_err(), "{:?}", String::from_utf8_lossy(reply));
    }
}

#[tokio::test]
async fn a_clamd_that_never_answers_times_out() {
    let c = client(vec![fake(b"stream: OK\0", true).await]);
    assert!(matches!(c.scan(b"x").await, Err(ClamError::Timeout(_))));
}

#[tokio::test]
async fn the_second_address_is_used_when_the_first_is_down() {
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().to_string()
    };
    let c = client(vec![dead.clone(), fake(b"stream: OK\0", false).await]);
    assert_eq!(c.scan(b"x").await.unwrap(), Verdict::Clean);
    let c = client(vec![dead]);
    assert!(matches!(c.scan(b"x").await, Err(ClamError::Connect { .. })));
}

#[tokio::test]
async fn ping_and_version() {
    let c = client(vec![fake(b"PONG\0", false).await]);
    c.ping().await.unwrap();
    let c = client(vec![fake(b"ClamAV 1.0.7/27000/Mon Nov 23 09:00:00 2026\0", false).await]);
    assert!(c.version().await.unwrap().starts_with("ClamAV 1.0.7/27000"));
}
