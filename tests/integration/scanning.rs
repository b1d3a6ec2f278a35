//! Scanners wired into serve: what Postfix sees and what reaches the downstream.

use std::io::Write;

use crate::fixtures::*;
use crate::support::*;

fn base() -> strainer::config::Config {
    test_config("127.0.0.1:9".parse().unwrap())
}

#[tokio::test]
async fn banned_attachment_is_quarantined_not_delivered_not_bounced() {
    let msg = named("docs.zip", "application/zip", &zip(&[Entry::new("setup.exe", PE)]));
    let cfg = base();
    let store = strainer_quarantine::Store::open(&cfg.quarantine.dir).unwrap();
    let (r, sink) = send_one_message(cfg, &msg).await;
    assert_eq!((r.code, r.enhanced.map(|e| e.to_string())), (250, Some("2.7.0".into())), "{r}");
    assert!(r.text().contains("quarantined id=") && r.text().contains("BANNED BANNED_EXT"), "{r}");
    assert!(!r.text().contains("setup.exe"), "no file names from the message in the reply");
    assert!(sink.got().is_empty());
    let held = store.list().unwrap();
    assert_eq!(held.len(), 1);
    assert!(r.text().contains(&held[0].id));
    assert_eq!(store.message(&held[0].id).unwrap(), msg, "the exact bytes received");
    assert_eq!(held[0].recipients[0].address, "b@example.net");
    assert!(held[0].findings.iter().any(|f| f.contains("setup.exe")));
}

#[tokio::test]
async fn an_unwritable_quarantine_defers_instead_of_losing_mail() {
    let msg = named("docs.zip", "application/zip", &zip(&[Entry::new("setup.exe", PE)]));
    let mut cfg = base();
    // A file where the directory should be: the store cannot open.
    let f = tempfile::NamedTempFile::new().unwrap();
    cfg.quarantine.dir = f.path().join("q");
    let (r, sink) = send_one_message(cfg, &msg).await;
    assert_eq!(r.code / 100, 4, "{r}");
    assert!(sink.got().is_empty());
}

#[tokio::test]
async fn clean_attachment_is_delivered_unchanged() {
    let msg = named("report.pdf", "application/pdf", PDF);
    let (r, sink) = send_one_message(base(), &msg).await;
    assert_eq!(r.code, 250, "{r}");
    let got = sink.got();
    assert!(got[0].message.ends_with(&msg));
    assert!(!String::from_utf8_lossy(&got[0].message).contains("X-Strainer-Unchecked"));
}

fn with_tables(header: &str, body: &str) -> (strainer::config::Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let h = dir.path().join("header_checks");
    let b = dir.path().join("body_checks");
    std::fs::File::create(&h).unwrap().write_all(header.as_bytes()).unwrap();
    std::fs::File::create(&b).unwrap().write_all(body.as_bytes()).unwrap();
    let mut cfg = base();
    cfg.rules.header_checks = vec![h];
    cfg.rules.body_checks = vec![b];
    (cfg, dir)
}

#[tokio::test]
async fn rule_maps_match_decoded_content() {
    let (cfg, _d) = with_tables("/^Subject:.*für dich/ REJECT no thanks\n", "/cheap p[i1]lls/ DISCARD\n");
    // The subject is RFC 2047 encoded: Postfix's own header_checks would see only =?utf-8?...
    let enc = b"From: a@example.org\r\nSubject: =?utf-8?q?Angebot_f=C3=BCr_dich?=\r\n\r\nhello\r\n";
    let (r, sink) = send_one_message(cfg.clone(), enc).await;
    assert_eq!((r.code, r.text()), (554, "no thanks".to_string()));
    assert!(sink.got().is_empty());
    // The body is base64: body_checks see the decoded text.
    let body = format!(
        "From: a@example.org\r\nSubject: hi\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        b64(b"buy cheap pills now\r\n")
    );
    let (r, sink) = send_one_message(cfg, body.as_bytes()).await;
    assert_eq!(r.code, 250, "{r}");
    assert!(r.text().contains("discarded"), "{r}");
    assert!(sink.got().is_empty(), "discarded mail goes nowhere");
}

#[tokio::test]
async fn prepend_and_ignore_edit_only_headers() {
    let (cfg, _d) = with_tables("/^X-Internal:/ IGNORE\n/^Subject:.*offer/ PREPEND X-Offer: yes\n", "");
    let msg = b"From: a@example.org\r\nX-Internal: secret\r\nSubject: an offer\r\n\r\nbody stays\r\n";
    let (r, sink) = send_one_message(cfg, msg).await;
    assert_eq!(r.code, 250, "{r}");
    let m = String::from_utf8(sink.got()[0].message.clone()).unwrap();
    assert!(m.contains("X-Offer: yes\r\n"), "{m}");
    assert!(!m.contains("X-Internal"), "{m}");
    assert!(m.ends_with("From: a@example.org\r\nSubject: an offer\r\n\r\nbody stays\r\n"), "{m}");
}

#[tokio::test]
async fn ambiguous_mime_is_quarantined_by_default_and_tagged_when_configured() {
    let msg = with_attachment(
        "Content-Type: application/octet-stream; name=\"a.bin\"\r\nContent-Transfer-Encoding: 7bit",
        b"data",
    );
    let (r, sink) = send_one_message(base(), &msg).await;
    assert_eq!(r.code, 250, "{r}");
    assert!(r.text().contains("quarantined") && r.text().contains("AMBIGUOUS MIME_AMBIGUOUS"), "{r}");
    assert!(sink.got().is_empty());
    let mut cfg = base();
    cfg.policy.actions.ambiguous = strainer_policy::Action::Tag;
    let (r, sink) = send_one_message(cfg, &msg).await;
    assert_eq!(r.code, 250, "{r}");
    let m = String::from_utf8_lossy(&sink.got()[0].message).into_owned();
    assert!(m.contains("X-Strainer-Unchecked: MIME_AMBIGUOUS\r\n"), "{m}");
    assert!(m.ends_with(&String::from_utf8_lossy(&msg).into_owned()));
}

#[tokio::test]
async fn spam_headers_are_ours_and_outside_copies_are_removed() {
    let (mut cfg, _d) = with_tables("/^Subject:.*cheap/ SCORE 6 cheap subject\n", "");
    cfg.policy.subject_tag = "[SPAM]".into();
    let msg = b"From: a@example.org\r\nX-Spam-Flag: NO\r\nX-Spam-Status: No, score=-100\r\nSubject: cheap stuff\r\n\r\nbuy\r\n";
    let (r, sink) = send_one_message(cfg.clone(), msg).await;
    assert_eq!(r.code, 250, "{r}");
    let m = String::from_utf8_lossy(&sink.got()[0].message).into_owned();
    assert!(m.contains("X-Spam-Flag: YES\r\n") && !m.contains("X-Spam-Flag: NO"), "{m}");
    assert!(m.contains("X-Spam-Status: Yes, score=6.0 required=5.0 tests=[RULE_SCORE]\r\n"), "{m}");
    assert!(!m.contains("score=-100"), "a spammer's pre-set status is gone: {m}");
    assert!(m.contains("Subject: [SPAM] cheap stuff\r\n") && m.matches("Subject:").count() == 1, "{m}");
    assert!(m.ends_with("\r\n\r\nbuy\r\n"));
    // Warn mode: what would be held is delivered, and says so.
    cfg.policy.quarantine = 5.5;
    cfg.policy.warn = true;
    let (r, sink) = send_one_message(cfg, msg).await;
    assert_eq!(r.code, 250, "{r}");
    let m = String::from_utf8_lossy(&sink.got()[0].message).into_owned();
    assert!(m.contains("X-Strainer-Warn: would quarantine (SPAM)\r\n"), "{m}");
}

#[tokio::test]
async fn high_spam_is_quarantined_and_very_high_spam_rejected() {
    let (mut cfg, _d) = with_tables("/^Subject:.*cheap/ SCORE 16 cheap subject\n", "");
    let msg = b"From: a@example.org\r\nSubject: cheap stuff\r\n\r\nbuy\r\n";
    let (r, sink) = send_one_message(cfg.clone(), msg).await;
    assert!(r.code == 250 && r.text().contains("quarantined") && r.text().contains("SPAM score=16.0"), "{r}");
    assert!(sink.got().is_empty());
    cfg.policy.reject = 16.0;
    let (r, _) = send_one_message(cfg, msg).await;
    assert_eq!((r.code, r.text()), (554, "Error: message content rejected".to_string()));
}

#[tokio::test]
async fn a_bomb_is_a_finding_not_a_crash() {
    let msg = named("zeros.gz", "application/gzip", &gzip_zeros(200));
    let (r, sink) = send_one_message(base(), &msg).await;
    assert_eq!(r.code, 250, "{r}");
    let m = String::from_utf8_lossy(&sink.got()[0].message).into_owned();
    assert!(m.contains("X-Strainer-Unchecked: "), "delivered visibly unchecked");
}

#[tokio::test]
#[ignore = "needs root to mount a small tmpfs (scripts/test.sh runs it)"]
async fn a_full_disk_defers_instead_of_losing_mail() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(ok.success(), "mount a 64 KiB tmpfs");
    let mut cfg = base();
    cfg.quarantine.dir = mnt.join("q");
    let big = vec![b'x'; 300 * 1024];
    let msg = named("setup.exe", "application/octet-stream", &big);
    let (r, sink) = send_one_message(cfg, &msg).await;
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    assert_eq!(r.code / 100, 4, "no space for the quarantine copy: {r}");
    assert!(sink.got().is_empty());
}
