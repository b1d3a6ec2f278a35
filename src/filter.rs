//! The after-queue filter: what strainer does with each message Postfix hands it: loop check,
//! local scanners, a decision, then re-injection with our headers on top (or a refusal).

use std::sync::Arc;
use std::time::Instant;

use strainer_receive::{DataReply, Handler};

use crate::decide::{Decision, decide};
use crate::scanners::Local;
use strainer_relay::{Delivery, Outgoing, RelayConfig, RelayError, deliver, dsn};
use strainer_types::{ClientInfo, Enhanced, Envelope, Recipient, Reply, ReplyClass, Transaction, headers};
use tracing::{info, warn};

/// The after-queue handler shared by all sessions.
pub struct Filter {
    hostname: String,
    max_passes: usize,
    pool: strainer_relay::Pool,
    local: Arc<Local>,
    clam: Option<strainer_clamav::Client>,
    quarantine: Option<strainer_quarantine::Store>,
    policy: strainer_policy::Config,
    metrics: Arc<crate::metrics::Metrics>,
}

/// What happened to one message, for the log line.
struct Outcome {
    reply: DataReply,
    action: &'static str,
    downstream_id: Option<String>,
    detail: String,
}

/// What the scanners said, for the log line.
struct Verdict {
    verdict: &'static str,
    score: f64,
    /// The message to autolearn once it has a final answer (`bayes.autolearn`).
    learn: Option<strainer_bayes::Item>,
    /// What it was queued to be learnt as: `spam`, `ham` or `-`.
    autolearn: &'static str,
}

impl Filter {
    /// A filter from the effective configuration and its compiled scanners.
    pub fn new(config: &crate::config::Config, local: Arc<Local>, metrics: Arc<crate::metrics::Metrics>) -> Arc<Self> {
        Arc::new(Filter {
            hostname: config.server.hostname.clone(),
            max_passes: config.server.max_passes,
            pool: strainer_relay::Pool::new(config.relay(), config.relay.max_idle, config.relay.idle_timeout),
            local,
            clam: config.clamav.enabled.then(|| strainer_clamav::Client::new(config.clamav.clone())),
            policy: config.policy.clone(),
            metrics,
            quarantine: match strainer_quarantine::Store::open(&config.quarantine.dir) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(error = %e, "quarantine unusable: messages to hold will get 4xx until this is fixed");
                    None
                }
            },
        })
    }

    /// Waits until what autolearning queued is learnt (`serve` stopping).
    pub fn finish_learning(&self) {
        self.local.finish_learning();
    }

    /// Where mail is re-injected (the pool's settings).
    fn relay(&self) -> &RelayConfig {
        self.pool.config()
    }

    /// The Received header we put on top; it also marks the message as having passed us.
    fn received(&self, tx: &Transaction) -> String {
        let proto = if tx.lmtp { "LMTP" } else { "ESMTP" };
        let for_rcpt = match tx.envelope.recipients.as_slice() {
            [one] => format!("\r\n\tfor <{}>", one.address),
            _ => String::new(),
        };
        format!(
            "Received: from {} ([{}])\r\n\tby {} (strainer) with {proto} id {}{for_rcpt};\r\n\t{}\r\n",
            sanitize(&tx.peer_helo),
            tx.peer.ip(),
            self.hostname,
            tx.id,
            chrono::Local::now().to_rfc2822()
        )
    }

    async fn process(&self, tx: &Arc<Transaction>, v: &mut Verdict) -> Outcome {
        let passes = passes(&tx.message);
        if passes >= self.max_passes {
            return Outcome {
                reply: DataReply::One(Reply::new(554, Enhanced(5, 4, 6), "Error: mail forwarding loop detected")),
                action: "reject",
                downstream_id: None,
                detail: format!("loop: already passed strainer {passes} times"),
            };
        }
        // Taking the message apart is CPU work: keep it off the threads that serve sessions.
        let (local, t) = (Arc::clone(&self.local), Arc::clone(tx));
        let started = Instant::now();
        let scanned = tokio::task::spawn_blocking(move || local.scan(&t.message)).await;
        self.metrics.stage("scan", started.elapsed());
        self.metrics.stage("receive", tx.receive_time);
        if let Ok(r) = &scanned {
            r.timings.iter().for_each(|(name, d)| self.metrics.stage(name, *d));
        }
        let mut report = match scanned {
            Ok(r) => r,
            Err(e) => {
                v.verdict = "none";
                return Outcome {
                    reply: DataReply::One(Reply::tempfail("Error: content check failed, try again later")),
                    action: "tempfail",
                    downstream_id: None,
                    detail: format!("scanner crashed: {e}"),
                };
            }
        };
        if let Some(bayes) = report.findings.iter().find_map(|f| f.name.strip_prefix("BAYES_")) {
            let result = bayes.to_ascii_lowercase();
            self.metrics.bayes(&result);
            if result == "unavailable" {
                self.metrics.scanner_error("bayes");
            }
        }
        let mut av_header = None;
        if let Some(clam) = &self.clam {
            let name = &clam.config().header;
            let started = Instant::now();
            let result = crate::antivirus::scan(clam, &tx.message, &report).await;
            self.metrics.stage("clamav", started.elapsed());
            if result.is_err() {
                self.metrics.scanner_error("clamav");
            }
            match result {
                Ok(found) => {
                    report.findings.extend(found);
                    if !name.is_empty() {
                        let engine = clam.version().await.unwrap_or_else(|_| "ClamAV".into());
                        av_header = Some(format!("{name}: {engine} at {}\r\n", self.hostname));
                    }
                }
                Err(e) if clam.config().on_error == strainer_clamav::OnError::Tempfail => {
                    v.verdict = "none";
                    return Outcome {
                        reply: DataReply::One(Reply::new(
                            451,
                            Enhanced(4, 3, 0),
                            "Error: virus scanner unavailable, try again later",
                        )),
                        action: "tempfail",
                        downstream_id: None,
                        detail: format!("clamav: {e}"),
                    };
                }
                Err(e) => {
                    warn!(error = %e, "clamd failed; delivering unscanned as clamav.on_error = \"pass\" says");
                    report.findings.push(strainer_types::Finding::new("CLAMAV_FAILED", e.to_string()));
                    if !name.is_empty() {
                        av_header =
                            Some(format!("{name}: unscanned, virus scanner unavailable at {}\r\n", self.hostname));
                    }
                }
            }
        }
        let own: Vec<&str> = self.clam.iter().map(|c| c.config().header.as_str()).filter(|h| !h.is_empty()).collect();
        let started = Instant::now();
        let decided = decide(&report, &self.policy, &tx.message, &own);
        self.metrics.stage("policy", started.elapsed());
        v.verdict = decided.verdict;
        v.score = decided.score;
        v.learn = report.learn.take().filter(|i| crate::autolearn::agrees(i.class, &report.findings, decided.verdict));
        let (add, remove) = match decided.decision {
            Decision::Quarantine { category, reason } => {
                return self.hold(tx, category, &reason, &report, decided.score).await.with_reason(&decided.reason);
            }
            Decision::Reject(r) => {
                return Outcome {
                    reply: DataReply::One(r),
                    action: "reject",
                    downstream_id: None,
                    detail: decided.reason,
                };
            }
            Decision::Discard(why) => {
                let r = Reply::new(250, Enhanced(2, 7, 0), format!("Ok, discarded, id={}", tx.id));
                return Outcome { reply: DataReply::One(r), action: "discard", downstream_id: None, detail: why };
            }
            Decision::Tempfail => {
                let r = Reply::new(451, Enhanced(4, 7, 1), "Error: message deferred by policy");
                return Outcome {
                    reply: DataReply::One(r),
                    action: "tempfail",
                    downstream_id: None,
                    detail: decided.reason,
                };
            }
            Decision::Deliver { mut add, remove } => {
                add.extend(av_header);
                (add, remove)
            }
        };
        let mut prefix = self.received(tx);
        add.iter().for_each(|h| prefix.push_str(h));
        let trimmed;
        let message: &[u8] = if remove.is_empty() {
            &tx.message
        } else {
            trimmed = without(&tx.message, &remove);
            &trimmed
        };
        let out = Outgoing { envelope: &tx.envelope, client: &tx.client, prefix: prefix.as_bytes(), message };
        let started = Instant::now();
        let delivered = self.pool.deliver(out).await;
        self.metrics.stage("relay", started.elapsed());
        match delivered {
            Err(e) => Outcome {
                reply: DataReply::One(tempfail_for(&e)),
                action: "tempfail",
                downstream_id: None,
                detail: format!("relay {}: {e}", self.relay().address),
            },
            Ok(d) if tx.lmtp => self.per_recipient(d),
            Ok(d) => self.smtp_outcome(tx, d).await,
        }
        .with_reason(&decided.reason)
    }

    /// The downstream's reply, passed back with its code and where it came from.
    fn quoted(&self, r: &Reply) -> Reply {
        Reply {
            code: r.code,
            enhanced: r.enhanced,
            lines: vec![format!("from MTA([{}]): {}", self.relay().address, r.text())],
        }
    }

    fn accepted_reply(&self, tx_id: &str, d: &Delivery) -> Reply {
        let fin = d.data.as_ref().map(Reply::one_line).unwrap_or_default();
        Reply::new(250, Enhanced(2, 0, 0), format!("Ok, id={tx_id}, from MTA([{}]): {fin}", self.relay().address))
    }

    fn per_recipient(&self, d: Delivery) -> Outcome {
        let replies = d
            .recipients
            .iter()
            .map(|r| {
                if r.is_positive() {
                    Reply::new(
                        250,
                        Enhanced(2, 0, 0),
                        format!("Ok, from MTA([{}]): {}", self.relay().address, r.one_line()),
                    )
                } else {
                    r.clone()
                }
            })
            .collect::<Vec<_>>();
        let accepted = d.recipients.iter().filter(|r| r.is_positive()).count();
        Outcome {
            action: if accepted == replies.len() { "relayed" } else { "partial" },
            detail: format!("{accepted}/{} recipients accepted", replies.len()),
            reply: DataReply::PerRecipient(replies),
            downstream_id: d.queue_id,
        }
    }

    async fn smtp_outcome(&self, tx: &Transaction, d: Delivery) -> Outcome {
        let classes: Vec<ReplyClass> = d.recipients.iter().map(Reply::class).collect();
        let accepted = classes.iter().filter(|c| **c == ReplyClass::Positive).count();
        if accepted == classes.len() {
            return Outcome {
                reply: DataReply::One(self.accepted_reply(&tx.id, &d)),
                action: "relayed",
                detail: String::new(),
                downstream_id: d.queue_id,
            };
        }
        // SMTP has one reply for all recipients: any deferral defers the whole message.
        // Postfix retries it; recipients already accepted downstream may get it twice, never zero times.
        if let Some(r) = d.recipients.iter().find(|r| r.class() == ReplyClass::Transient) {
            return Outcome {
                reply: DataReply::One(self.quoted(r)),
                action: "tempfail",
                detail: format!("downstream deferred a recipient ({accepted} accepted, may duplicate on retry)"),
                downstream_id: d.queue_id,
            };
        }
        if accepted == 0 {
            let r = &d.recipients[0];
            return Outcome {
                reply: DataReply::One(self.quoted(r)),
                action: "rejected",
                detail: "downstream refused all recipients".into(),
                downstream_id: None,
            };
        }
        // Some accepted, the rest refused for good: accept and tell the sender about the rest.
        let failed: Vec<(&Recipient, &Reply)> =
            tx.envelope.recipients.iter().zip(&d.recipients).filter(|(_, r)| !r.is_positive()).collect();
        let names = failed.iter().map(|(r, _)| r.address.as_str()).collect::<Vec<_>>().join(",");
        if let Some(msg) = dsn::build(&self.hostname, &tx.id, &tx.envelope, &failed, &tx.message) {
            let env = Envelope {
                sender: String::new(),
                params: Default::default(),
                recipients: vec![Recipient::new(tx.envelope.sender.clone())],
            };
            let out = Outgoing { envelope: &env, client: &ClientInfo::default(), prefix: b"", message: &msg };
            match deliver(self.relay(), out).await {
                Ok(dd) if dd.all_accepted() => {}
                other => {
                    let why = match other {
                        Ok(dd) => dd.recipients.first().map(Reply::one_line).unwrap_or_default(),
                        Err(e) => e.to_string(),
                    };
                    return Outcome {
                        reply: DataReply::One(Reply::tempfail(
                            "Error: cannot send delivery status notification, try again later",
                        )),
                        action: "tempfail",
                        detail: format!(
                            "DSN for refused {names} not accepted ({why}); accepted recipients may duplicate on retry"
                        ),
                        downstream_id: d.queue_id,
                    };
                }
            }
        }
        Outcome {
            reply: DataReply::One(self.accepted_reply(&tx.id, &d)),
            action: "partial",
            detail: format!("refused {names}, DSN sent"),
            downstream_id: d.queue_id,
        }
    }
}

impl Filter {
    /// Stores the message in the quarantine; 250 only once it is durable, 4xx otherwise.
    async fn hold(
        &self,
        tx: &Arc<Transaction>,
        category: &'static str,
        reason: &str,
        report: &crate::scanners::Report,
        score: f64,
    ) -> Outcome {
        let Some(store) = self.quarantine.clone() else {
            return cannot_hold("quarantine unusable (see the start-up log)".into());
        };
        let mut meta = quarantine_meta(tx, category, reason, report, score);
        let t = Arc::clone(tx);
        let started = Instant::now();
        let stored = tokio::task::spawn_blocking(move || store.put(&mut meta, &t.message)).await;
        self.metrics.stage("quarantine", started.elapsed());
        match stored {
            Ok(Ok(id)) => {
                let text: String = format!("Ok, quarantined id={id} {category} {reason}")
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect();
                Outcome {
                    reply: DataReply::One(Reply::new(250, Enhanced(2, 7, 0), text)),
                    action: "quarantine",
                    downstream_id: Some(id),
                    detail: String::new(),
                }
            }
            Ok(Err(e)) => cannot_hold(format!("quarantine write failed: {e}")),
            Err(e) => cannot_hold(format!("quarantine write crashed: {e}")),
        }
    }
}

/// A message that should be held but cannot be stored: 4xx, Postfix keeps it.
fn cannot_hold(detail: String) -> Outcome {
    Outcome {
        reply: DataReply::One(Reply::tempfail("Error: cannot hold the message, try again later")),
        action: "tempfail",
        downstream_id: None,
        detail,
    }
}

fn quarantine_meta(
    tx: &Transaction,
    category: &str,
    reason: &str,
    report: &crate::scanners::Report,
    score: f64,
) -> strainer_quarantine::Meta {
    let e = &tx.envelope;
    let mut params = Vec::new();
    if let Some(b) = e.params.body {
        params.push((
            "BODY".to_string(),
            if b == strainer_types::Body::EightBitMime { "8BITMIME" } else { "7BIT" }.to_string(),
        ));
    }
    if e.params.smtputf8 {
        params.push(("SMTPUTF8".into(), String::new()));
    }
    if let Some(r) = e.params.ret {
        params.push(("RET".into(), if r == strainer_types::Ret::Full { "FULL" } else { "HDRS" }.into()));
    }
    if let Some(id) = &e.params.envid {
        params.push(("ENVID".into(), id.clone()));
    }
    strainer_quarantine::Meta {
        received: strainer_quarantine::now(),
        sender: e.sender.clone(),
        recipients: e
            .recipients
            .iter()
            .map(|r| strainer_quarantine::Rcpt {
                address: r.address.clone(),
                notify: r.notify.clone(),
                orcpt: r.orcpt.clone(),
            })
            .collect(),
        params,
        client: tx.client.attributes().into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        queue_id: postfix_queue_id(tx).unwrap_or_default(),
        category: category.into(),
        reason: reason.into(),
        findings: report.findings.iter().map(ToString::to_string).collect(),
        score,
        ..Default::default()
    }
}

impl Outcome {
    fn with_reason(mut self, reason: &str) -> Self {
        if !reason.is_empty() {
            self.detail =
                if self.detail.is_empty() { reason.to_string() } else { format!("{}; {reason}", self.detail) };
        }
        self
    }
}

/// The message without the given byte ranges (header fields an IGNORE rule removed).
fn without(message: &[u8], ranges: &[(usize, usize)]) -> Vec<u8> {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut out = Vec::with_capacity(message.len());
    let mut at = 0;
    for (s, e) in sorted {
        if s >= at && e <= message.len() {
            out.extend_from_slice(&message[at..s]);
            at = e;
        }
    }
    out.extend_from_slice(&message[at..]);
    out
}

impl Handler for Filter {
    async fn data(&self, tx: Transaction) -> DataReply {
        let start = Instant::now();
        let tx = Arc::new(tx);
        let mut v = Verdict { verdict: "clean", score: 0.0, learn: None, autolearn: "-" };
        let outcome = self.process(&tx, &mut v).await;
        // Learnt only once answered for good: a deferred message comes back and is scanned again.
        if let Some(item) = v.learn.take().filter(|_| outcome.action != "tempfail") {
            let class = item.class.name();
            let queued = self.local.autolearn(item);
            self.metrics.autolearn(class, queued);
            if queued {
                v.autolearn = class;
            }
        }
        self.metrics.stage("total", start.elapsed());
        self.metrics.message(outcome.action, v.verdict, tx.message.len());
        log_message(&tx, &outcome, &v, start);
        outcome.reply
    }
}

fn tempfail_for(e: &RelayError) -> Reply {
    match e {
        RelayError::Connect { .. } => {
            Reply::new(451, Enhanced(4, 4, 1), "Error: cannot reach the re-injection service, try again later")
        }
        RelayError::Timeout(_) => Reply::new(451, Enhanced(4, 4, 2), "Error: re-injection timed out, try again later"),
        RelayError::NoSmtputf8 => {
            Reply::new(451, Enhanced(4, 6, 7), "Error: re-injection service does not offer SMTPUTF8")
        }
        _ => Reply::new(451, Enhanced(4, 3, 0), "Error: re-injection failed, try again later"),
    }
}

fn log_message(tx: &Transaction, o: &Outcome, v: &Verdict, start: Instant) {
    let queue_id = postfix_queue_id(tx).unwrap_or_else(|| "-".into());
    let client = client_label(&tx.client, tx);
    let to = tx.envelope.recipients.iter().map(|r| format!("<{}>", r.address)).collect::<Vec<_>>().join(",");
    let reply = match &o.reply {
        DataReply::One(r) => r.one_line(),
        DataReply::PerRecipient(rs) => rs.iter().map(Reply::one_line).collect::<Vec<_>>().join(" | "),
    };
    let elapsed_ms = start.elapsed().as_millis() as u64;
    let fields = (queue_id, client, format!("<{}>", tx.envelope.sender), to, tx.message.len());
    // For a held message the id is the quarantine's; otherwise the downstream queue id.
    let held = o.action == "quarantine";
    let downstream_id = if held { "-" } else { o.downstream_id.as_deref().unwrap_or("-") };
    let quarantine_id = if held { o.downstream_id.as_deref().unwrap_or("-") } else { "-" };
    if o.action == "tempfail" {
        warn!(queue_id = %fields.0, id = %tx.id, client = %fields.1, from = %fields.2, to = %fields.3, size = fields.4,
            category = v.verdict, score = v.score, action = o.action, downstream_id, quarantine_id,
            elapsed_ms, detail = %o.detail, reply = %reply, "message");
    } else {
        info!(queue_id = %fields.0, id = %tx.id, client = %fields.1, from = %fields.2, to = %fields.3, size = fields.4,
            category = v.verdict, score = v.score, action = o.action, downstream_id, quarantine_id,
            autolearn = v.autolearn, elapsed_ms, detail = %o.detail, reply = %reply, "message");
    }
}

fn client_label(c: &ClientInfo, tx: &Transaction) -> String {
    match (&c.name, &c.addr) {
        (Some(n), Some(a)) => format!("{n}[{a}]"),
        (None, Some(a)) => format!("unknown[{a}]"),
        _ => format!("{}[{}]", sanitize(&tx.peer_helo), tx.peer.ip()),
    }
}

/// The Postfix queue id: from XFORWARD IDENT, else from the top Received header (`id XXXX`).
pub fn postfix_queue_id(tx: &Transaction) -> Option<String> {
    if let Some(id) = &tx.client.ident {
        return Some(id.clone());
    }
    let top = headers::fields(&tx.message).find(|f| f.name.eq_ignore_ascii_case(b"Received"))?;
    let v = top.unfolded();
    let mut words = v.split_whitespace();
    while let Some(w) = words.next() {
        if w == "id" {
            let id: String = words.next()?.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            return (!id.is_empty()).then_some(id);
        }
    }
    None
}

/// How many of our own Received headers the message already carries.
pub fn passes(message: &[u8]) -> usize {
    headers::fields(message)
        .filter(|f| f.name.eq_ignore_ascii_case(b"Received") && f.unfolded().contains(" (strainer) with "))
        .count()
}

/// Keeps a client-supplied name safe for a header: visible ASCII only.
fn sanitize(s: &str) -> String {
    let t: String = s.chars().filter(|c| c.is_ascii_graphic()).take(255).collect();
    if t.is_empty() { "unknown".into() } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_our_received_headers() {
        let m = b"Received: from a (b) by mx (Postfix) with ESMTP id ABC;\r\n x\r\nReceived: from l ([127.0.0.1])\r\n\tby f (strainer) with ESMTP id Q;\r\n\td\r\n\r\nReceived: from x (strainer) with body\r\n";
        assert_eq!(passes(m), 1);
    }
}
