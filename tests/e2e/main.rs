//! End-to-end tests through a real Postfix (started by `tests/e2e/postfix-up.sh`, wired as
//! `strainer postfix-config` says) and the real `strainer` binary.
//!
//! Run by `scripts/test.sh`; by hand: `tests/e2e/postfix-up.sh DIR target/debug/strainer`, then
//! `STRAINER_E2E_DIR=DIR cargo test --test e2e -- --ignored --test-threads=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::*;

#[tokio::test]
#[ignore = "needs the Postfix instance from tests/e2e/postfix-up.sh"]
async fn message_passes_through_postfix_with_original_bytes_below_our_header() {
    let e = E2e::new();
    let _s = e.start_strainer();
    let token = unique("pass");
    let msg = format!(
        "From: Other <other@test.example>\r\nTo: pass@test.example\r\nDate: Wed, 25 Nov 2026 09:00:00 +0000\r\nSubject: {token} caf\u{e9}\r\nMessage-ID: <{token}@test.example>\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\r\n\u{fc}ber 8-bit text\r\n.leading dot\r\n..two dots\r\n.\r\n{}\r\n--b1\r\n\
Content-Type: application/pdf; name=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K\r\n--b1--\r\n",
        "z".repeat(900)
    );
    e.submit("other@test.example", &["pass@test.example"], &msg).await;
    let got = e.wait_for("pass", &token, 1, Duration::from_secs(60));
    let delivered = &got[0];
    // virtual(8) stores LF line ends; compare in that form.
    let original = msg.replace("\r\n", "\n");
    assert!(delivered.ends_with(&original), "original bytes intact:\n{delivered}");
    let added = &delivered[..delivered.len() - original.len()];
    assert!(added.contains("by strainer.localhost (strainer) with ESMTP id"), "{added}");
    assert_eq!(added.matches("(strainer) with").count(), 1);
}

/// A message over `server.spool_threshold` goes through the spool and still arrives byte for byte.
#[tokio::test]
#[ignore = "needs the Postfix instance from tests/e2e/postfix-up.sh"]
async fn a_spooled_large_message_arrives_byte_for_byte() {
    let e = E2e::new();
    let _s = e.start_strainer();
    let token = unique("large");
    let mut msg = format!(
        "From: other@test.example\r\nTo: large@test.example\r\nSubject: {token}\r\nMIME-Version: 1.0\r\n\
Date: Wed, 25 Nov 2026 09:00:00 +0000\r\nMessage-ID: <{token}@test.example>\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee the attachment\r\n.dot line\r\n\
--b\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    );
    let mut i = 0u32;
    while msg.len() < 3_000_000 {
        // Varied lines, so a shifted or dropped piece cannot go unnoticed.
        msg.push_str(&format!("{:076}\r\n", u128::from(i) * 7_919));
        i += 1;
    }
    msg.push_str("--b--\r\n");
    e.submit("other@test.example", &["large@test.example"], &msg).await;
    let got = e.wait_for("large", &token, 1, Duration::from_secs(120));
    let original = msg.replace("\r\n", "\n");
    assert!(got[0].ends_with(&original), "{} bytes arrived, original {} bytes", got[0].len(), original.len());
}

#[tokio::test]
#[ignore = "needs the Postfix instance from tests/e2e/postfix-up.sh"]
async fn message_stays_queued_while_strainer_is_down_and_arrives_after() {
    let e = E2e::new();
    let token = unique("queue");
    let msg = format!("From: other@test.example\r\nTo: queue@test.example\r\nSubject: {token}\r\n\r\nwait for me\r\n");
    e.submit("other@test.example", &["queue@test.example"], &msg).await;
    std::thread::sleep(Duration::from_secs(3));
    assert!(e.messages("queue").iter().all(|m| !m.contains(&token)), "delivered without strainer");
    assert!(e.queued().contains(&token), "Postfix keeps it queued: {}", e.queued());
    let _s = e.start_strainer();
    e.flush();
    let got = e.wait_for("queue", &token, 1, Duration::from_secs(90));
    assert!(got[0].contains("wait for me"));
}

#[tokio::test]
#[ignore = "needs the Postfix instance from tests/e2e/postfix-up.sh"]
async fn two_hundred_messages_over_several_connections_arrive_exactly_once() {
    let e = E2e::new();
    let _s = e.start_strainer();
    let run = unique("bulk");
    let mut tasks = Vec::new();
    for conn in 0..4 {
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let tag = format!("{run}-{conn}-{i}");
                let msg = format!(
                    "From: other@test.example\r\nTo: bulk@test.example\r\nSubject: {tag}\r\n\r\nmessage {tag}\r\n"
                );
                submit("other@test.example", &["bulk@test.example"], &msg).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = E2e::new().wait_for("bulk", &run, 200, Duration::from_secs(180));
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in &got {
        let subject = m.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap().to_string();
        *seen.entry(subject).or_default() += 1;
    }
    assert_eq!(seen.len(), 200, "every message arrived");
    assert!(seen.values().all(|&n| n == 1), "none twice: {seen:?}");
}

#[path = "../fixtures/mod.rs"]
mod fixtures;

#[tokio::test]
#[ignore = "needs the Postfix instance from tests/e2e/postfix-up.sh"]
async fn exe_in_a_zip_is_quarantined_and_release_delivers_the_original_bytes() {
    let e = E2e::new();
    let _s = e.start_strainer();
    let token = unique("banned");
    let body = fixtures::named(
        "invoice.zip",
        "application/zip",
        &fixtures::zip(&[fixtures::Entry::new("invoice.pdf.exe", fixtures::PE)]),
    );
    let msg = format!(
        "Subject: {token}\r\nDate: Wed, 25 Nov 2026 09:00:00 +0000\r\nMessage-ID: <{token}@test.example>\r\n{}",
        String::from_utf8(body).unwrap()
    );
    e.submit("other@test.example", &["virus@test.example"], &msg).await;
    let id = e.wait_quarantined(&token, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    assert!(e.messages("virus").iter().all(|m| !m.contains(&token)), "delivered although banned");
    assert!(e.messages("other").iter().all(|m| !m.contains(&token)), "bounced to a (possibly forged) sender");
    let list = e.cli(&["quarantine", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains(&format!("{id}  ")), "{list:?}");

    // Release: Postfix accepts, the recipient gets the original bytes below our headers.
    let out = e.cli(&["quarantine", "release", &id]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("released"), "{out:?}");
    let got = e.wait_for("virus", &token, 1, Duration::from_secs(60));
    assert!(got[0].ends_with(&msg.replace("\r\n", "\n")), "{}", got[0]);
    assert!(got[0].contains("X-Strainer-Released: "), "{}", got[0]);

    // Twice needs --force; a recipient Postfix refuses makes release fail with Postfix's words.
    let again = e.cli(&["quarantine", "release", &id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"), "{again:?}");
    let refused = e.cli(&["quarantine", "release", &id, "--force", "--to", "no such address"]);
    assert!(!refused.status.success(), "{refused:?}");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("NOT released") && err.contains("5.1."), "{err}");
    let show = e.cli(&["quarantine", "show", &id]);
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.contains("accepted") && show.contains("NOT accepted"), "release history kept: {show}");
}

#[tokio::test]
#[ignore = "needs the Postfix instance from tests/e2e/postfix-up.sh"]
async fn clean_message_with_a_pdf_is_delivered_unchanged() {
    let e = E2e::new();
    let _s = e.start_strainer();
    let token = unique("pdf");
    let body = fixtures::named("report.pdf", "application/pdf", fixtures::PDF);
    let msg = format!(
        "Date: Wed, 25 Nov 2026 09:00:00 +0000\r\nMessage-ID: <{token}@test.example>\r\n{}",
        String::from_utf8(body).unwrap()
    );
    e.submit("other@test.example", &["pass@test.example"], &msg).await;
    let got = e.wait_for("pass", &token, 1, Duration::from_secs(60));
    assert!(got[0].ends_with(&msg.replace("\r\n", "\n")), "{}", got[0]);
    assert!(!got[0].contains("X-Strainer-Unchecked"));
}

const EICAR: &str = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

#[tokio::test]
#[ignore = "needs the Postfix instance from tests/e2e/postfix-up.sh"]
async fn eicar_is_quarantined_not_delivered() {
    let e = E2e::new();
    let _s = e.start_strainer();
    let token = unique("eicar");
    let msg = format!("From: other@test.example\r\nTo: virus@test.example\r\nSubject: {token}\r\n\r\n{EICAR}\r\n");
    e.submit("other@test.example", &["virus@test.example"], &msg).await;
    let id = e.wait_quarantined(&token, Duration::from_secs(60));
    let show = String::from_utf8_lossy(&e.cli(&["quarantine", "show", &id]).stdout).into_owned();
    assert!(show.contains("category:   VIRUS") && show.contains("Eicar-Test-Signature"), "{show}");
    assert!(e.messages("virus").iter().all(|m| !m.contains(&token)), "EICAR was delivered");
}

#[tokio::test]
#[ignore = "needs the Postfix instance from tests/e2e/postfix-up.sh"]
async fn mail_waits_in_postfix_while_clamd_is_down_and_arrives_after() {
    let e = E2e::new();
    let _s = e.start_strainer();
    e.stop_clamd();
    let token = unique("clamdown");
    let msg =
        format!("From: other@test.example\r\nTo: queue@test.example\r\nSubject: {token}\r\n\r\nscan me later\r\n");
    e.submit("other@test.example", &["queue@test.example"], &msg).await;
    std::thread::sleep(Duration::from_secs(3));
    let unscanned = e.messages("queue").into_iter().any(|m| m.contains(&token));
    let queued = e.queued().contains(&token);
    e.start_clamd();
    assert!(!unscanned, "delivered while clamd was down");
    assert!(queued, "Postfix keeps it queued: {}", e.queued());
    e.flush();
    let got = e.wait_for("queue", &token, 1, Duration::from_secs(90));
    assert!(got[0].contains("X-Virus-Scanned: ClamAV"), "{}", got[0]);
}

#[tokio::test]
#[ignore = "needs the Postfix instance from tests/e2e/postfix-up.sh"]
async fn selftest_says_ok_when_wired_and_names_what_is_broken() {
    let e = E2e::new();
    let _s = e.start_strainer();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_strainer"))
            .args(["selftest", "--config"])
            .arg(e.dir.join("strainer.toml"))
            .arg("--postfix-config-dir")
            .arg(e.dir.join("etc"))
            .args(["--send-to", "pass@test.example"])
            .output()
            .unwrap()
    };
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    assert!(text.lines().filter(|l| l.starts_with("OK ")).count() >= 9, "{text}");
    assert!(text.contains("detects EICAR"), "{text}");
    assert!(text.contains("went through strainer and out to the re-injection smtpd"), "{text}");
    e.stop_clamd();
    let out = run();
    e.start_clamd();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success());
    assert!(text.contains("FAIL  clamd at 127.0.0.1:3310"), "{text}");
    assert!(text.contains("start clamd"), "{text}");
}

#[tokio::test]
#[ignore = "needs the Postfix instance from tests/e2e/postfix-up.sh"]
async fn spam_arrives_tagged_reject_bounces_discard_vanishes() {
    let e = E2e::new();
    let _s = e.start_strainer();
    let spam = unique("e2e-spam");
    let msg = format!(
        "From: other@test.example\r\nTo: spam@test.example\r\nX-Spam-Flag: NO\r\nSubject: {spam}\r\n\r\nbuy\r\n"
    );
    e.submit("other@test.example", &["spam@test.example"], &msg).await;
    let got = e.wait_for("spam", &spam, 1, Duration::from_secs(60));
    assert!(got[0].contains("X-Spam-Flag: YES") && !got[0].contains("X-Spam-Flag: NO"), "{}", got[0]);
    assert!(got[0].contains("X-Spam-Status: Yes, score=6.0"), "{}", got[0]);

    let rejected = unique("e2e-reject");
    let msg = format!("From: other@test.example\r\nTo: spam@test.example\r\nSubject: {rejected}\r\n\r\nno\r\n");
    e.submit("other@test.example", &["spam@test.example"], &msg).await;
    let bounce = e.wait_for("other", &rejected, 1, Duration::from_secs(60));
    assert!(bounce[0].contains("554 5.7.1 e2e says no"), "Postfix returns it with our reply: {}", bounce[0]);

    let discarded = unique("e2e-discard");
    let msg = format!("From: other@test.example\r\nTo: spam@test.example\r\nSubject: {discarded}\r\n\r\ngone\r\n");
    e.submit("other@test.example", &["spam@test.example"], &msg).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = std::fs::read_to_string(e.dir.join("maillog")).unwrap_or_default();
        if log.lines().any(|l| l.contains("Ok, discarded")) && !e.queued().contains(&discarded) {
            break log;
        }
        assert!(std::time::Instant::now() < deadline, "no discard in Postfix's log");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(log.contains("status=sent (250 2.7.0 Ok, discarded"), "Postfix logs our 250 text");
    std::thread::sleep(Duration::from_secs(1));
    for user in ["spam", "other"] {
        assert!(e.messages(user).iter().all(|m| !m.contains(&discarded)), "discarded mail arrived at {user}");
    }
}

#[tokio::test]
#[ignore = "needs the Postfix instance from tests/e2e/postfix-up.sh"]
async fn selftest_names_each_postfix_miswiring_and_what_to_do() {
    let e = E2e::new();
    let _s = e.start_strainer();
    let cases: [(&[&str], &str, &str); 6] = [
        (&["-e", "content_filter="], "mail does not go through strainer", "content_filter = scan:[127.0.0.1]:10025"),
        (
            &["-F", "scan/unix/process_limit=100"],
            "maxproc 100 is above strainer's max_sessions 20",
            "set maxproc of `scan` to 20",
        ),
        (&["-PX", "127.0.0.1:10026/inet/content_filter"], "does not clear content_filter", "-o content_filter="),
        (
            &["-PX", "127.0.0.1:10026/inet/smtpd_authorized_xforward_hosts"],
            "does not authorise XFORWARD",
            "smtpd_authorized_xforward_hosts=127.0.0.0/8",
        ),
        (&["-e", "message_size_limit=50000000"], "message_size_limit 50000000 is above", "lower message_size_limit"),
        (&["-e", "myhostname=strainer.localhost"], "Postfix reports a mail loop", "a name of its own"),
    ];
    for (edit, problem, advice) in cases {
        let copy = tempfile::tempdir().unwrap();
        for f in ["main.cf", "master.cf", "vmailbox"] {
            std::fs::copy(e.dir.join("etc").join(f), copy.path().join(f)).unwrap();
        }
        let ok = std::process::Command::new("postconf").arg("-c").arg(copy.path()).args(edit).status().unwrap();
        assert!(ok.success(), "postconf {edit:?}");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_strainer"))
            .args(["selftest", "--config"])
            .arg(e.dir.join("strainer.toml"))
            .arg("--postfix-config-dir")
            .arg(copy.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!out.status.success(), "{edit:?}: {text}");
        assert!(text.contains(problem) && text.contains(advice), "{edit:?}: {text}");
        assert_eq!(text.matches("FAIL").count(), 1, "only that miswiring is reported: {edit:?}: {text}");
    }
}

#[tokio::test]
#[ignore = "needs the Postfix instance from tests/e2e/postfix-up.sh"]
async fn reloading_repeatedly_under_load_delivers_every_message_once() {
    let e = E2e::new();
    let _s = e.start_strainer();
    let run = unique("reload");
    let mut tasks = Vec::new();
    for conn in 0..4 {
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
                let tag = format!("{run}-{conn}-{i}");
                let msg = format!(
                    "From: other@test.example\r\nTo: bulk@test.example\r\nSubject: {tag}\r\n\r\nmessage {tag}\r\n"
                );
                support::submit_to("127.0.0.1:10025", "other@test.example", &["bulk@test.example"], &msg).await;
            }
        }));
    }
    // SIGHUP through `strainer reload` while the load runs; once with a broken table.
    let checks = e.dir.join("header_checks");
    for round in 0..30 {
        if round == 15 {
            std::fs::write(&checks, "/^Subject: (/ REJECT\n").unwrap();
        } else if round == 16 {
            std::fs::write(&checks, support::HEADER_CHECKS).unwrap();
        }
        let out = e.cli(&["reload"]);
        assert!(out.status.success(), "{out:?}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = e.wait_for("bulk", &run, 1000, Duration::from_secs(180));
    let mut subjects: Vec<&str> =
        got.iter().filter_map(|m| m.lines().find_map(|l| l.strip_prefix("Subject: "))).collect();
    subjects.sort_unstable();
    subjects.dedup();
    assert_eq!(subjects.len(), 1000, "every message exactly once");
    let log = std::fs::read_to_string(e.dir.join("strainer.log")).unwrap();
    assert!(log.contains("reload refused, the previous configuration stays in force"), "the broken table was refused");
}

#[tokio::test]
#[ignore = "needs the Postfix instance from tests/e2e/postfix-up.sh"]
async fn bayes_trained_from_the_cli_tags_spam_arriving_through_postfix_and_autolearns_it() {
    let e = E2e::new();
    let strainer = e.start_strainer();
    let probe = |token: &str| {
        format!(
            "From: Best Deals <deals@promo.example.biz>\r\nTo: spam@test.example\r\nDate: Wed, 25 Nov 2026 09:00:00 +0000\r\nSubject: Cheap pills, limited offer {token}\r\n\
Message-ID: <{token}@promo.example.biz>\r\n\r\nBuy cheap pills now, no prescription! Click here: http://cheap-pills.example.biz/order\r\n\
Limited offer, act fast. To unsubscribe click here.\r\n"
        )
    };
    // Written as the spam fixtures are, name and all (the way From: is written is a feature).
    // Untrained: delivered, and the header says Bayes is waiting for training.
    let before = unique("bayes-before");
    e.submit("deals@promo.example.biz", &["spam@test.example"], &probe(&before)).await;
    let got = e.wait_for("spam", &before, 1, Duration::from_secs(60));
    assert!(got[0].contains("BAYES_UNTRAINED") && !got[0].contains("X-Spam-Flag: YES"), "{}", got[0]);

    let spam = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bayes/spam");
    let ham = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bayes/ham");
    let out = e.cli(&["train", "--spam", spam, "--ham", ham]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("spam: 8 learnt"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let after = unique("bayes-after");
    e.submit("deals@promo.example.biz", &["spam@test.example"], &probe(&after)).await;
    let got = e.wait_for("spam", &after, 1, Duration::from_secs(60));
    // Bayes is sure of it (the fixtures put it far above 30): serve queued it for autolearning,
    // and learns the queue when stopped (SIGTERM).
    drop(strainer);
    let stats = String::from_utf8_lossy(&e.cli(&["bayes", "stats", "--json"]).stdout).into_owned();
    let log = std::fs::read_to_string(e.dir.join("strainer.log")).unwrap_or_default();
    // Forget before asserting (the fixtures and the probe serve learnt), so the other tests see
    // an untrained store whatever happens.
    let learnt = e.dir.join("autolearnt-probe.eml");
    std::fs::write(&learnt, probe(&after)).unwrap();
    let learnt = learnt.to_str().unwrap();
    let out = e.cli(&["train", "--forget", "--spam", spam, learnt, "--ham", ham]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(got[0].contains("X-Spam-Flag: YES") && got[0].contains("BAYES_SPAM"), "{}", got[0]);
    assert!(got[0].ends_with(&probe(&after).replace("\r\n", "\n")), "original bytes below our headers: {}", got[0]);
    assert!(stats.contains(r#""totals":{"spam":9,"ham":8}"#), "the probe autolearnt as spam: {stats}");
    // Only this test's trained store autolearns: its message's log line is the one that says so.
    assert!(log.contains("autolearn=\"spam\""), "{log}");
    assert!(log.contains("autolearn: batch learnt spam=1 ham=0"), "{log}");
    let stats = String::from_utf8_lossy(&e.cli(&["bayes", "stats", "--json"]).stdout).into_owned();
    assert!(stats.contains(r#""totals":{"spam":0,"ham":0}"#), "{stats}");
}
