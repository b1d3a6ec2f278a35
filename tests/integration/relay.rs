//! The reply contract: what Postfix sees for each downstream outcome, and that the message is
//! neither lost nor delivered twice.

use std::time::Duration;

use strainer_types::ReplyClass;

use crate::support::*;

const POSTFIX_MAIL: &str = "MAIL FROM:<alice@example.org> SIZE=900 BODY=8BITMIME RET=HDRS ENVID=env+2B1";

async fn send_one(cfg: strainer::config::Config, rcpts: &[&str], lmtp: bool) -> Vec<strainer_types::Reply> {
    let s = Strainer::start(cfg).await;
    let (mut c, g) = Client::connect(s.addr).await;
    assert_eq!(g.code, 220);
    let hello = if lmtp { "LHLO" } else { "EHLO" };
    assert_eq!(c.cmd(&format!("{hello} mx.test")).await.code, 250);
    let x = c.cmd("XFORWARD NAME=mail.example ADDR=192.0.2.1 PORT=4711 PROTO=ESMTP HELO=mail.example").await;
    assert_eq!(x.code, 250);
    assert_eq!(c.cmd("XFORWARD IDENT=4XyZq1AbCd SOURCE=REMOTE").await.code, 250);
    let rc: Vec<String> = rcpts.iter().map(|r| format!("RCPT TO:<{r}> NOTIFY=FAILURE ORCPT=rfc822;{r}")).collect();
    let rc: Vec<&str> = rc.iter().map(String::as_str).collect();
    let replies = c.transaction(POSTFIX_MAIL, &rc, MESSAGE, lmtp).await;
    s.stop().await;
    replies
}

#[tokio::test]
async fn accepted_downstream_is_250_with_queue_id_and_exact_bytes() {
    let sink = Sink::start(Behaviour::Accept).await;
    let r = send_one(test_config(sink.addr), &["bob@test"], false).await;
    assert_eq!(r[0].code, 250, "{}", r[0]);
    assert!(r[0].text().contains("queued as SINK1"), "Postfix logs the downstream queue id: {}", r[0]);
    let got = sink.got();
    assert_eq!(got.len(), 1, "delivered exactly once");
    let m = &got[0].message;
    assert!(m.ends_with(MESSAGE.as_bytes()), "original bytes intact below the added header");
    let added = &m[..m.len() - MESSAGE.len()];
    let added = String::from_utf8_lossy(added);
    assert!(
        added.starts_with("Received: from mx.test ([127.0.0.1])\r\n\tby filter.test (strainer) with ESMTP id "),
        "{added}"
    );
    // Envelope, parameters and client facts carried through.
    let e = &got[0].envelope;
    assert_eq!(e.sender, "alice@example.org");
    assert_eq!(e.params.body, Some(strainer_types::Body::EightBitMime));
    assert_eq!(e.params.ret, Some(strainer_types::Ret::Hdrs));
    assert_eq!(e.params.envid.as_deref(), Some("env+1"));
    assert_eq!(e.params.size, Some(m.len() as u64), "SIZE is what we actually send");
    assert_eq!(e.recipients[0].notify.as_deref(), Some("FAILURE"));
    assert_eq!(e.recipients[0].orcpt.as_deref(), Some("rfc822;bob@test"));
    let cl = &got[0].client;
    assert_eq!(cl.addr.as_deref(), Some("192.0.2.1"));
    assert_eq!(cl.name.as_deref(), Some("mail.example"));
    assert_eq!(cl.ident.as_deref(), Some("4XyZq1AbCd"));
    assert_eq!(cl.port.as_deref(), Some("4711"));
    assert_eq!(cl.source.as_deref(), Some("REMOTE"));
}

#[tokio::test]
async fn refused_connection_defers() {
    let r = send_one(test_config(dead_port().await), &["bob@test"], false).await;
    assert_eq!(r[0].class(), ReplyClass::Transient, "{}", r[0]);
}

#[tokio::test]
async fn tempfail_at_mail_rcpt_or_data_defers_and_delivers_nothing() {
    for b in [Behaviour::TempfailMail, Behaviour::TempfailRcpt, Behaviour::TempfailData] {
        let sink = Sink::start(b).await;
        let r = send_one(test_config(sink.addr), &["bob@test", "carol@test"], false).await;
        assert_eq!(r[0].class(), ReplyClass::Transient, "{}", r[0]);
        assert!(sink.got().is_empty());
    }
}

#[tokio::test]
async fn downstream_that_hangs_defers_after_the_timeout() {
    let sink = Sink::start(Behaviour::Hang).await;
    let mut cfg = test_config(sink.addr);
    cfg.relay.data_timeout = Duration::from_millis(500);
    let r = send_one(cfg, &["bob@test"], false).await;
    assert_eq!(r[0].class(), ReplyClass::Transient, "{}", r[0]);
    assert!(sink.got().is_empty());
}

#[tokio::test]
async fn one_of_three_refused_in_smtp_mode_gets_250_and_a_dsn() {
    let sink = Sink::start(Behaviour::RefuseRcpt("carol@test")).await;
    let r = send_one(test_config(sink.addr), &["bob@test", "carol@test", "dave@test"], false).await;
    assert_eq!(r[0].code, 250, "{}", r[0]);
    let got = sink.got();
    assert_eq!(got.len(), 2, "the message once, and one DSN");
    let rcpts: Vec<&str> = got[0].envelope.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(rcpts, ["bob@test", "dave@test"]);
    let dsn = &got[1];
    assert_eq!(dsn.envelope.sender, "", "DSNs go out from the null sender");
    assert_eq!(dsn.envelope.recipients[0].address, "alice@example.org");
    let text = String::from_utf8_lossy(&dsn.message);
    assert!(text.contains("report-type=\"delivery-status\"") || text.contains("report-type=delivery-status"), "{text}");
    assert!(text.contains("Final-Recipient: rfc822; carol@test"));
    assert!(text.contains("Original-Recipient: rfc822;carol@test"));
    assert!(text.contains("Status: 5.1.1"));
    assert!(!text.contains("Final-Recipient: rfc822; bob@test"));
}

#[tokio::test]
async fn one_of_three_refused_in_lmtp_mode_gets_per_recipient_replies() {
    let sink = Sink::start(Behaviour::RefuseRcpt("carol@test")).await;
    let mut cfg = test_config(sink.addr);
    cfg.server.protocol = strainer::config::Protocol::Lmtp;
    let r = send_one(cfg, &["bob@test", "carol@test", "dave@test"], true).await;
    let codes: Vec<u16> = r.iter().map(|r| r.code).collect();
    assert_eq!(codes, [250, 550, 250]);
    let got = sink.got();
    assert_eq!(got.len(), 1, "no DSN: Postfix bounces carol itself");
}

#[tokio::test]
async fn all_refused_passes_the_5xx_back() {
    let sink = Sink::start(Behaviour::RefuseAll).await;
    let r = send_one(test_config(sink.addr), &["bob@test", "carol@test"], false).await;
    assert_eq!(r[0].code, 550, "{}", r[0]);
    assert!(sink.got().is_empty());
}

#[tokio::test]
async fn looping_message_is_refused() {
    let sink = Sink::start(Behaviour::Accept).await;
    let s = Strainer::start(test_config(sink.addr)).await;
    let (mut c, _) = Client::connect(s.addr).await;
    c.cmd("EHLO mx.test").await;
    let hop = "Received: from localhost ([127.0.0.1])\r\n\tby filter.test (strainer) with ESMTP id X;\r\n\tWed, 25 Nov 2026 09:00:00 +0000\r\n";
    let msg = format!("{hop}{hop}{hop}Subject: loop\r\n\r\nbody\r\n");
    let r = c.transaction("MAIL FROM:<a@b>", &["RCPT TO:<c@d>"], &msg, false).await;
    assert_eq!((r[0].code, r[0].enhanced.map(|e| e.to_string())), (554, Some("5.4.6".into())));
    // Two passes are still fine.
    let msg = format!("{hop}{hop}Subject: ok\r\n\r\nbody\r\n");
    let r = c.transaction("MAIL FROM:<a@b>", &["RCPT TO:<c@d>"], &msg, false).await;
    assert_eq!(r[0].code, 250);
    assert_eq!(sink.got().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_large_message_with_dot_lines_across_send_chunks_arrives_byte_for_byte() {
    // Lines starting with a dot land at, just before and just after the 256 KiB send chunks.
    let mut msg = b"From: a@example.org\r\nSubject: big\r\n\r\n".to_vec();
    let mut i = 0;
    while msg.len() < 1_200_000 {
        let line =
            if i % 997 == 0 { format!(".dot line {i}\r\n") } else { format!("line {i} {}\r\n", "x".repeat(i % 90)) };
        msg.extend_from_slice(line.as_bytes());
        i += 1;
    }
    for at in [262_144usize, 524_288, 786_432] {
        // Force a line start exactly at a chunk edge of the message (the prefix shifts it; the
        // property test in crates/receive covers every cut).
        let p = msg[..at].iter().rposition(|&b| b == b'\n').unwrap() + 1;
        msg.splice(p..p, b"..two dots\r\n".iter().copied());
    }
    msg.extend_from_slice(b"last line without CRLF");
    let (r, sink) = send_one_message(test_config("127.0.0.1:9".parse().unwrap()), &msg).await;
    assert_eq!(r.code, 250, "{r}");
    let got = sink.got();
    assert_eq!(got.len(), 1);
    let m = &got[0].message;
    let mut want = msg.clone();
    want.extend_from_slice(b"\r\n");
    assert!(m.ends_with(&want), "original bytes (plus the final CRLF SMTP needs) below our header");
}
