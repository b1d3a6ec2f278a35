//! Delivery status notifications (RFC 3464) for recipients the downstream refused permanently
//! after we had already accepted the message from Postfix.

use chrono::Utc;
use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::mime::MimePart;
use strainer_types::{Envelope, Recipient, Reply, Ret, headers};

/// Builds a failure DSN to the envelope sender for the given refused recipients, or `None`
/// when none is owed (null sender, or every recipient asked for no failure notice).
pub fn build(
    reporting_mta: &str,
    queue_id: &str,
    env: &Envelope,
    failed: &[(&Recipient, &Reply)],
    message: &[u8],
) -> Option<Vec<u8>> {
    if env.sender.is_empty() {
        return None;
    }
    let failed: Vec<_> = failed.iter().filter(|(r, _)| r.wants_failure_notice()).collect();
    if failed.is_empty() {
        return None;
    }

    let mut human = format!(
        "This is the mail system at host {reporting_mta}.\r\n\r\n\
         I'm sorry to have to inform you that your message could not\r\n\
         be delivered to one or more recipients.\r\n\r\n"
    );
    for (r, reply) in &failed {
        human.push_str(&format!("<{}>: host refused the recipient: {}\r\n", r.address, reply.one_line()));
    }

    let now = Utc::now().to_rfc2822();
    let mut status =
        format!("Reporting-MTA: dns; {reporting_mta}\r\nX-Strainer-Queue-ID: {queue_id}\r\nArrival-Date: {now}\r\n");
    if let Some(envid) = &env.params.envid {
        status.push_str(&format!("Original-Envelope-Id: {envid}\r\n"));
    }
    for (r, reply) in &failed {
        status.push_str("\r\n");
        if let Some(orcpt) = &r.orcpt {
            status.push_str(&format!("Original-Recipient: {orcpt}\r\n"));
        }
        let code = reply.enhanced.map(|e| e.to_string()).unwrap_or_else(|| "5.0.0".into());
        status.push_str(&format!(
            "Final-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {code}\r\nDiagnostic-Code: smtp; {}\r\n",
            r.address,
            reply.one_line()
        ));
    }

    // RET=FULL returns the whole message; otherwise only its headers (as Postfix does by default).
    let returned = if env.params.ret == Some(Ret::Full) {
        MimePart::new("message/rfc822", message.to_vec())
    } else {
        let head = &message[..headers::header_len(message)];
        MimePart::new("text/rfc822-headers", String::from_utf8_lossy(head).into_owned())
    };

    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            MimePart::new("text/plain", human).inline(),
            MimePart::new("message/delivery-status", status).inline(),
            returned.inline(),
        ],
    );
    MessageBuilder::new()
        .from(("Mail Delivery System", format!("MAILER-DAEMON@{reporting_mta}").as_str()))
        .to(env.sender.as_str())
        .subject("Undelivered Mail Returned to Sender")
        .header("Auto-Submitted", mail_builder::headers::raw::Raw::new("auto-replied"))
        .body(report)
        .write_to_vec()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strainer_types::Enhanced;

    fn env() -> Envelope {
        Envelope {
            sender: "alice@example.org".into(),
            params: Default::default(),
            recipients: vec![Recipient::new("bob@example.net"), Recipient::new("carol@example.net")],
        }
    }

    #[test]
    fn names_each_refused_recipient() {
        let e = env();
        let reply = Reply::new(550, Enhanced(5, 1, 1), "User unknown");
        let dsn =
            build("filter.example", "ABC", &e, &[(&e.recipients[1], &reply)], b"Subject: hi\r\n\r\nbody\r\n").unwrap();
        let text = String::from_utf8_lossy(&dsn);
        assert!(text.contains("multipart/report"), "{text}");
        assert!(text.contains("report-type"));
        assert!(text.contains("Final-Recipient: rfc822; carol@example.net"));
        assert!(text.contains("Status: 5.1.1"));
        assert!(!text.contains("bob@example.net"));
        assert!(text.contains("Subject: hi"), "headers returned");
        assert!(!text.contains("body\r\n--"), "body not returned without RET=FULL");
    }

    #[test]
    fn none_owed_for_null_sender_or_notify_never() {
        let mut e = env();
        let reply = Reply::new(550, Enhanced(5, 1, 1), "no");
        e.recipients[0].notify = Some("NEVER".into());
        assert!(build("f", "A", &e, &[(&e.recipients[0], &reply)], b"").is_none());
        e.sender.clear();
        assert!(build("f", "A", &e, &[(&e.recipients[1], &reply)], b"").is_none());
    }
}
