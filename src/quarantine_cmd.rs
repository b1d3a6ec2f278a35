//! `strainer quarantine ...`: list, show, release, delete and purge held messages.

use std::time::Duration;

use anyhow::{Context, bail};
use strainer_quarantine::{Meta, Release, Store, now};
use strainer_relay::{Outgoing, deliver};
use strainer_types::{Body, ClientInfo, Envelope, MailParams, Recipient, Ret};

use crate::config::Config;

/// Filters for `list`.
#[derive(Debug, Default)]
pub struct Filter {
    /// Held within this long.
    pub since: Option<Duration>,
    /// Category, case-insensitive.
    pub category: Option<String>,
    /// Sender contains this.
    pub sender: Option<String>,
    /// A recipient contains this.
    pub recipient: Option<String>,
}

fn when(secs: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(0), 0)
        .map_or_else(|| secs.to_string(), |d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

/// The entries that pass `f`.
pub fn list(store: &Store, f: &Filter) -> anyhow::Result<Vec<Meta>> {
    let cutoff = f.since.map(|d| now().saturating_sub(d.as_secs()));
    Ok(store
        .list()?
        .into_iter()
        .filter(|m| cutoff.is_none_or(|c| m.received >= c))
        .filter(|m| f.category.as_ref().is_none_or(|c| m.category.eq_ignore_ascii_case(c)))
        .filter(|m| f.sender.as_ref().is_none_or(|s| m.sender.contains(s.as_str())))
        .filter(|m| f.recipient.as_ref().is_none_or(|r| m.recipients.iter().any(|x| x.address.contains(r.as_str()))))
        .collect())
}

/// One line per entry, for people.
pub fn render_list(entries: &[Meta]) -> String {
    let mut s = String::new();
    for m in entries {
        let to: Vec<&str> = m.recipients.iter().map(|r| r.address.as_str()).collect();
        let state = if m.released() { " released" } else { "" };
        s.push_str(&format!(
            "{}  {}  {:<7} {}  <{}> -> {}{state}\n",
            m.id,
            when(m.received),
            m.category,
            m.reason,
            m.sender,
            to.join(",")
        ));
    }
    if entries.is_empty() {
        s.push_str("(no quarantined messages)\n");
    }
    s
}

/// Metadata, findings and headers of one entry, for people.
pub fn render_show(m: &Meta, message: &[u8]) -> String {
    let mut s = format!(
        "id:         {}\nheld:       {}\ncategory:   {}\nreason:     {}\nscore:      {}\nsender:     <{}>\nrecipients: {}\nsize:       {} bytes\nqueue id:   {}\n",
        m.id,
        when(m.received),
        m.category,
        m.reason,
        m.score,
        m.sender,
        m.recipients.iter().map(|r| format!("<{}>", r.address)).collect::<Vec<_>>().join(", "),
        m.size,
        if m.queue_id.is_empty() { "-" } else { &m.queue_id },
    );
    for (k, v) in &m.client {
        s.push_str(&format!("client:     {k}={v}\n"));
    }
    s.push_str("findings:\n");
    for f in &m.findings {
        s.push_str(&format!("  {f}\n"));
    }
    for r in &m.releases {
        s.push_str(&format!(
            "released:   {} to {} -> {} ({})\n",
            when(r.at),
            r.recipients.join(","),
            r.reply,
            if r.accepted { "accepted" } else { "NOT accepted" }
        ));
    }
    s.push_str("headers:\n");
    let head = &message[..strainer_types::headers::header_len(message)];
    for line in String::from_utf8_lossy(head).lines() {
        s.push_str(&format!("  {line}\n"));
    }
    s
}

fn envelope(m: &Meta, to: &[String]) -> Envelope {
    let mut params = MailParams::default();
    for (k, v) in &m.params {
        match k.as_str() {
            "BODY" => params.body = Some(if v == "8BITMIME" { Body::EightBitMime } else { Body::SevenBit }),
            "SMTPUTF8" => params.smtputf8 = true,
            "RET" => params.ret = Some(if v == "FULL" { Ret::Full } else { Ret::Hdrs }),
            "ENVID" => params.envid = Some(v.clone()),
            _ => {}
        }
    }
    let recipients = if to.is_empty() {
        m.recipients
            .iter()
            .map(|r| Recipient { address: r.address.clone(), notify: r.notify.clone(), orcpt: r.orcpt.clone() })
            .collect()
    } else {
        to.iter().map(|a| Recipient::new(a.clone())).collect()
    };
    Envelope { sender: m.sender.clone(), params, recipients }
}

/// Re-injects an entry through the relay and records the downstream's answer. Errors (and
/// refusals) are returned so the command exits non-zero and says why.
pub async fn release(config: &Config, store: &Store, id: &str, to: &[String], force: bool) -> anyhow::Result<String> {
    let mut meta = store.meta(id)?;
    if meta.released() && !force {
        let last = meta.releases.iter().rev().find(|r| r.accepted).map(|r| when(r.at)).unwrap_or_default();
        bail!("{id} was already released ({last}); add --force to send it again");
    }
    let message = store.message(id)?;
    let env = envelope(&meta, to);
    let prefix = format!("X-Strainer-Released: {} id={id}\r\n", chrono::Utc::now().to_rfc2822());
    let relay = config.relay();
    let result = deliver(
        &relay,
        Outgoing { envelope: &env, client: &ClientInfo::default(), prefix: prefix.as_bytes(), message: &message },
    )
    .await;
    let recipients: Vec<String> = env.recipients.iter().map(|r| r.address.clone()).collect();
    let (reply, accepted) = match &result {
        Ok(d) => {
            let replies: Vec<String> = env
                .recipients
                .iter()
                .zip(&d.recipients)
                .map(|(r, rep)| format!("<{}>: {}", r.address, rep.one_line()))
                .collect();
            (replies.join("; "), d.all_accepted())
        }
        Err(e) => (format!("not sent: {e}"), false),
    };
    meta.releases.push(Release { at: now(), recipients, reply: reply.clone(), accepted });
    store.update(&meta).context("the release was attempted but its record could not be saved")?;
    if !accepted {
        bail!("{id} was NOT released: {reply} (relay {})", relay.address);
    }
    Ok(format!("{id} released: {reply}"))
}
