//! ClamAV wired into serve. The tests marked ignored need the real clamd that
//! tests/e2e/clamd-up.sh starts (scripts/test.sh runs them with STRAINER_CLAMD=127.0.0.1:3310);
//! the others use a dead port or a clamd that never answers.

use std::time::Duration;

use strainer_clamav::OnError;

use crate::fixtures::*;
use crate::support::*;

const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

fn clamd() -> String {
    std::env::var("STRAINER_CLAMD").expect("STRAINER_CLAMD names the clamd from tests/e2e/clamd-up.sh")
}

fn with_clamav(addresses: Vec<String>, on_error: OnError) -> strainer::config::Config {
    let mut cfg = test_config("127.0.0.1:9".parse().unwrap());
    cfg.clamav.enabled = true;
    cfg.clamav.addresses = addresses;
    cfg.clamav.on_error = on_error;
    cfg.clamav.connect_timeout = Duration::from_secs(2);
    cfg.clamav.scan_timeout = Duration::from_secs(3);
    cfg
}

fn eicar_cases() -> Vec<(&'static str, Vec<u8>)> {
    let mut plain = b"From: a@example.org\r\nSubject: plain\r\n\r\n".to_vec();
    plain.extend_from_slice(EICAR);
    plain.extend_from_slice(b"\r\n");
    let att = named("eicar.txt", "application/octet-stream", EICAR);
    // Broken base64 padding: drop the final '=' characters.
    let broken = String::from_utf8(att.clone()).unwrap().replacen("==\r\n--XX--", "\r\n--XX--", 1).replacen(
        "=\r\n--XX--",
        "\r\n--XX--",
        1,
    );
    let zipped = named("e.zip", "application/zip", &zip(&[Entry::new("eicar.txt", EICAR)]));
    let forwarded_zip = forwarded(&zipped);
    let dup_cte = with_attachment(
        "Content-Type: application/octet-stream; name=\"e.bin\"\r\nContent-Transfer-Encoding: 7bit",
        EICAR,
    );
    vec![
        ("as the plain body", plain),
        ("as a base64 attachment", att),
        ("with broken base64 padding", broken.into_bytes()),
        ("inside a zip", zipped),
        ("inside a zip inside a forwarded message", forwarded_zip),
        ("behind a duplicated Content-Transfer-Encoding", dup_cte),
    ]
}

#[tokio::test]
#[ignore = "needs clamd from tests/e2e/clamd-up.sh (STRAINER_CLAMD)"]
async fn eicar_is_found_however_it_is_wrapped() {
    for (what, msg) in eicar_cases() {
        let (r, sink) = send_one_message(with_clamav(vec![clamd()], OnError::Tempfail), &msg).await;
        assert_eq!(r.code, 250, "EICAR {what}: {r}");
        assert!(
            r.text().contains("quarantined id=") && r.text().contains("VIRUS Eicar-Test-Signature"),
            "found by clamd: {what}: {r}"
        );
        assert!(sink.got().is_empty(), "EICAR {what} was delivered");
    }
}

#[tokio::test]
#[ignore = "needs clamd from tests/e2e/clamd-up.sh (STRAINER_CLAMD)"]
async fn clean_mail_passes_with_the_engine_header() {
    let (r, sink) =
        send_one_message(with_clamav(vec![clamd()], OnError::Tempfail), &named("r.pdf", "application/pdf", PDF)).await;
    assert_eq!(r.code, 250, "{r}");
    let m = String::from_utf8_lossy(&sink.got()[0].message).into_owned();
    assert!(m.contains("X-Virus-Scanned: ClamAV "), "{m}");
}

#[tokio::test]
#[ignore = "needs clamd from tests/e2e/clamd-up.sh (STRAINER_CLAMD)"]
async fn second_clamd_is_used_when_the_first_is_down() {
    let (r, sink) = send_one_message(
        with_clamav(vec![dead_port().await.to_string(), clamd()], OnError::Tempfail),
        &named("e.txt", "application/octet-stream", EICAR),
    )
    .await;
    assert_eq!(r.code, 250, "{r}");
    assert!(r.text().contains("VIRUS"), "{r}");
    assert!(sink.got().is_empty());
}

#[tokio::test]
#[ignore = "needs clamd from tests/e2e/clamd-up.sh (STRAINER_CLAMD)"]
async fn parts_over_the_stream_limit_are_not_sent_and_count_as_unchecked() {
    let mut cfg = with_clamav(vec![clamd()], OnError::Tempfail);
    cfg.clamav.max_stream = 100;
    let (r, sink) = send_one_message(cfg, &named("big.bin", "application/octet-stream", &[b'a'; 5000])).await;
    assert_eq!(r.code, 250, "never a 4xx that would retry forever: {r}");
    let m = String::from_utf8_lossy(&sink.got()[0].message).into_owned();
    assert!(m.contains("X-Strainer-Unchecked: CLAMAV_UNSCANNED_SIZE"), "{m}");
}

#[tokio::test]
async fn clamd_down_defers_by_default() {
    let (r, sink) = send_one_message(
        with_clamav(vec![dead_port().await.to_string()], OnError::Tempfail),
        &named("r.pdf", "application/pdf", PDF),
    )
    .await;
    assert_eq!(r.code / 100, 4, "{r}");
    assert!(sink.got().is_empty());
}

#[tokio::test]
async fn clamd_down_passes_tagged_when_configured() {
    let (r, sink) = send_one_message(
        with_clamav(vec![dead_port().await.to_string()], OnError::Pass),
        &named("r.pdf", "application/pdf", PDF),
    )
    .await;
    assert_eq!(r.code, 250, "{r}");
    let m = String::from_utf8_lossy(&sink.got()[0].message).into_owned();
    assert!(m.contains("X-Virus-Scanned: unscanned"), "{m}");
    assert!(m.contains("X-Strainer-Unchecked: CLAMAV_FAILED"), "{m}");
}

#[tokio::test]
async fn clamd_that_never_answers_defers() {
    // Accepts connections and reads forever without a word.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let mut cfg = with_clamav(vec![addr], OnError::Tempfail);
    cfg.clamav.scan_timeout = Duration::from_millis(500);
    let (r, sink) = send_one_message(cfg, &named("r.pdf", "application/pdf", PDF)).await;
    assert_eq!(r.code / 100, 4, "{r}");
    assert!(sink.got().is_empty());
}
