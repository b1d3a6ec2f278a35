//! From findings to what happens to the message. A fixed, conservative mapping until the policy
//! issue brings configurable scores, thresholds and actions: viruses, banned files and rule HOLD
//! are quarantined (never bounced: the sender is usually forged), rule REJECT is refused, DISCARD
//! drops, limits and ambiguous structure pass with a visible tag.

use strainer_rules::Action;
use strainer_types::{Enhanced, Reply};

use crate::scanners::Report;

/// What to do with one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Re-inject, with these header lines added on top and these header byte ranges removed.
    Deliver {
        /// Complete header lines (CRLF-terminated).
        add: Vec<String>,
        /// Top-level header fields to drop (IGNORE), as byte ranges of the message.
        remove: Vec<(usize, usize)>,
    },
    /// Refuse with this reply (5xx: Postfix returns the mail to its sender).
    Reject(Reply),
    /// Accept and drop.
    Discard(String),
    /// Hold in the quarantine (250 once it is stored durably).
    Quarantine {
        /// `VIRUS`, `BANNED` or `HELD`.
        category: &'static str,
        /// A short reason from our own vocabulary or the scanner's (signature name, finding code).
        reason: String,
    },
}

/// The decision and the words for the log.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What to do.
    pub decision: Decision,
    /// `clean`, `virus`, `banned`, `rejected`, `held`, `discarded` or `unchecked`.
    pub verdict: &'static str,
    /// Sum of rule scores.
    pub score: f64,
    /// Why, for logs.
    pub reason: String,
}

/// Findings that mean "could not be checked completely".
pub fn is_unchecked(name: &str) -> bool {
    name.starts_with("MIME_")
        || matches!(
            name,
            "ARCHIVE_BOMB"
                | "ARCHIVE_ENCRYPTED"
                | "ARCHIVE_CORRUPT"
                | "ARCHIVE_UNDECIPHERABLE"
                | "ARCHIVE_LIMIT_MEMBERS"
                | "ARCHIVE_LIMIT_DEPTH"
                | "CLAMAV_UNSCANNED_SIZE"
                | "CLAMAV_FAILED"
        )
}

fn generic_reject(text: &str) -> Reply {
    let t = if text.is_empty() { "Error: message content rejected" } else { text };
    Reply::new(554, Enhanced(5, 7, 1), t.to_string())
}

/// Decides what happens to a scanned message.
pub fn decide(report: &Report) -> Outcome {
    let score: f64 = report.findings.iter().filter_map(|f| f.score).fold(0.0, |a, b| a + b);
    if let Some(v) = report.findings.iter().find(|f| f.name == "CLAMAV_VIRUS") {
        return Outcome {
            decision: Decision::Quarantine { category: "VIRUS", reason: v.detail.clone() },
            verdict: "virus",
            score,
            reason: v.to_string(),
        };
    }
    if let Some(b) = report.findings.iter().find(|f| f.name.starts_with("BANNED_")) {
        return Outcome {
            decision: Decision::Quarantine { category: "BANNED", reason: b.name.clone() },
            verdict: "banned",
            score,
            reason: b.to_string(),
        };
    }
    // Postfix semantics: the first final action met, in message order, decides.
    for h in &report.hits {
        let reason = format!("{} {} ({})", h.rule, h.action, h.input);
        match &h.action {
            Action::Reject(t) => {
                return Outcome { decision: Decision::Reject(generic_reject(t)), verdict: "rejected", score, reason };
            }
            Action::Hold(_) => {
                let decision = Decision::Quarantine { category: "HELD", reason: h.rule.clone() };
                return Outcome { decision, verdict: "held", score, reason };
            }
            Action::Discard(_) => {
                return Outcome { decision: Decision::Discard(reason.clone()), verdict: "discarded", score, reason };
            }
            _ => {}
        }
    }
    let mut add: Vec<String> = report
        .hits
        .iter()
        .filter_map(|h| match &h.action {
            Action::Prepend(line) => Some(format!("{line}\r\n")),
            _ => None,
        })
        .collect();
    let remove: Vec<(usize, usize)> =
        report.hits.iter().filter(|h| matches!(h.action, Action::Ignore)).filter_map(|h| h.header_range).collect();
    let mut unchecked: Vec<&str> =
        report.findings.iter().map(|f| f.name.as_str()).filter(|n| is_unchecked(n)).collect();
    unchecked.sort_unstable();
    unchecked.dedup();
    let verdict = if unchecked.is_empty() { "clean" } else { "unchecked" };
    if !unchecked.is_empty() {
        // Only our own finding names go into the header, never text from the message.
        add.push(format!("X-Strainer-Unchecked: {}\r\n", unchecked.join(" ")));
    }
    let reason = report.findings.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(" ");
    Outcome { decision: Decision::Deliver { add, remove }, verdict, score, reason }
}
