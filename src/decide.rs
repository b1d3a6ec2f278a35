//! From a scan report to what happens to the message: the policy crate decides, this module turns
//! its verdict into bytes (headers to add, header fields to remove) and replies.

use strainer_policy::{Action as PolicyAction, OWN_HEADERS, RuleOutcome};
use strainer_rules::Action;
use strainer_types::{Enhanced, Reply, headers};

use crate::scanners::Report;

/// What to do with one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Re-inject, with these header lines added on top and these header byte ranges removed.
    Deliver {
        /// Complete header lines (CRLF-terminated).
        add: Vec<String>,
        /// Top-level header fields to drop, as byte ranges of the message.
        remove: Vec<(usize, usize)>,
    },
    /// Refuse with this reply (5xx: Postfix returns the mail to its sender).
    Reject(Reply),
    /// Accept and drop.
    Discard(String),
    /// Hold in the quarantine (250 once it is stored durably).
    Quarantine {
        /// `VIRUS`, `BANNED`, `RULE`, `AMBIGUOUS`, `UNCHECKED` or `SPAM`.
        category: &'static str,
        /// A short reason from our own vocabulary or the scanner's (signature name, finding code).
        reason: String,
    },
    /// Defer (only when an administrator configured `tempfail` for a category).
    Tempfail,
}

/// The decision and the words for the log.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What to do.
    pub decision: Decision,
    /// The category, lower case: `clean`, `virus`, `banned`, `rule`, `ambiguous`, `unchecked`, `spam`.
    pub verdict: &'static str,
    /// The total score.
    pub score: f64,
    /// Why, for logs; says what warn mode held back.
    pub reason: String,
}

fn generic_reject(text: &str) -> Reply {
    let t = if text.is_empty() { "Error: message content rejected" } else { text };
    Reply::new(554, Enhanced(5, 7, 1), t.to_string())
}

/// Header fields of our own vocabulary that arrived from outside, to be removed.
fn foreign_copies(message: &[u8], extra: &[&str]) -> Vec<(usize, usize)> {
    headers::fields(message)
        .filter(|f| OWN_HEADERS.iter().chain(extra).any(|n| f.name.eq_ignore_ascii_case(n.as_bytes())))
        .map(|f| (f.start, f.end))
        .collect()
}

/// Decides what happens to a scanned message. `extra_own` names more headers we own (the
/// virus-scan header), whose outside copies are removed too.
pub fn decide(report: &Report, policy: &strainer_policy::Config, message: &[u8], extra_own: &[&str]) -> Outcome {
    // Postfix semantics: the first final rule action met, in message order, decides.
    let rule = report.hits.iter().find_map(|h| {
        let o = match &h.action {
            Action::Reject(t) => RuleOutcome::Reject(t.clone()),
            Action::Discard(_) => RuleOutcome::Discard,
            Action::Hold(_) => RuleOutcome::Hold,
            _ => return None,
        };
        Some((o, format!("{} {} ({})", h.rule, h.action, h.input), h.rule.clone()))
    });
    let v = policy.decide(&report.findings, rule.as_ref().map(|(o, why, _)| (o, why.as_str())));
    let verdict: &'static str = match v.category {
        strainer_policy::Category::Virus => "virus",
        strainer_policy::Category::Banned => "banned",
        strainer_policy::Category::Rule => "rule",
        strainer_policy::Category::Ambiguous => "ambiguous",
        strainer_policy::Category::Unchecked => "unchecked",
        strainer_policy::Category::Spam => "spam",
        strainer_policy::Category::Clean => "clean",
    };
    let mut reason = v.reason.clone();
    if let Some(w) = v.warned {
        reason = format!("WARN would {}: {reason}", w.name());
    }
    // The short reason for the reply and the quarantine: our codes, the signature, the rule.
    let short = match v.category {
        strainer_policy::Category::Virus => {
            report.findings.iter().find(|f| f.name == "CLAMAV_VIRUS").map(|f| f.detail.clone()).unwrap_or_default()
        }
        strainer_policy::Category::Rule => rule.as_ref().map(|(_, _, r)| r.clone()).unwrap_or_default(),
        strainer_policy::Category::Spam => format!("score={:.1}", v.score),
        _ => report
            .findings
            .iter()
            .map(|f| f.name.as_str())
            .find(|n| {
                n.starts_with("BANNED_")
                    || n.starts_with("MIME_")
                    || n.starts_with("ARCHIVE_")
                    || n.starts_with("CLAMAV_")
            })
            .unwrap_or("")
            .to_string(),
    };
    let decision = match v.action {
        PolicyAction::Deliver | PolicyAction::Tag => {
            let mut add: Vec<String> = report
                .hits
                .iter()
                .filter_map(|h| match &h.action {
                    Action::Prepend(line) => Some(format!("{line}\r\n")),
                    _ => None,
                })
                .collect();
            add.extend(v.headers.iter().cloned());
            let mut remove: Vec<(usize, usize)> = report
                .hits
                .iter()
                .filter(|h| matches!(h.action, Action::Ignore))
                .filter_map(|h| h.header_range)
                .collect();
            remove.extend(foreign_copies(message, extra_own));
            if let Some(tag) = &v.subject_tag {
                if let Some(f) = headers::fields(message).find(|f| f.name.eq_ignore_ascii_case(b"Subject")) {
                    remove.push((f.start, f.end));
                    add.push(format!("Subject: {tag} {}\r\n", String::from_utf8_lossy(f.value).trim_start()));
                } else {
                    add.push(format!("Subject: {tag}\r\n"));
                }
            }
            remove.sort_unstable();
            remove.dedup();
            Decision::Deliver { add, remove }
        }
        PolicyAction::Quarantine => Decision::Quarantine { category: v.category.name(), reason: short },
        PolicyAction::Discard => Decision::Discard(reason.clone()),
        PolicyAction::Reject => {
            let text = match &rule {
                Some((RuleOutcome::Reject(t), _, _)) if v.category == strainer_policy::Category::Rule => t.clone(),
                _ => String::new(),
            };
            Decision::Reject(generic_reject(&text))
        }
        PolicyAction::Tempfail => Decision::Tempfail,
    };
    Outcome { decision, verdict, score: v.score, reason }
}
