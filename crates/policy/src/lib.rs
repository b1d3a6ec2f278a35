//! Policy, without I/O: findings and their scores in, a category, an action and the headers to add
//! out. Thresholds and per-category actions are amavisd-new's model (tag, spam, quarantine and
//! reject levels; a destiny per category); `warn` is Postfix's `warn_if_reject`.
//!
//! Design choice: content outcomes never defer by default. A 4xx makes Postfix retry the same
//! content for days and answer the same way each time; 4xx is for infrastructure faults, which
//! never reach this crate. `tempfail` exists as an action only for an administrator who asks.
#![deny(missing_docs)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strainer_types::Finding;

/// What happens to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Deliver with the usual headers.
    Deliver,
    /// Deliver marked (X-Spam-Flag: YES and the subject tag for spam; a visible unchecked tag).
    Tag,
    /// Hold in the quarantine.
    Quarantine,
    /// Accept and drop.
    Discard,
    /// Refuse (5xx: Postfix returns it to the sender).
    Reject,
    /// Defer (4xx).
    Tempfail,
}

impl Action {
    /// Lower-case name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Action::Deliver => "deliver",
            Action::Tag => "tag",
            Action::Quarantine => "quarantine",
            Action::Discard => "discard",
            Action::Reject => "reject",
            Action::Tempfail => "tempfail",
        }
    }
}

/// What kind of message it is, most serious first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// A scanner found a virus.
    Virus,
    /// A banned file.
    Banned,
    /// A rule map said REJECT, DISCARD or HOLD.
    Rule,
    /// Ambiguous MIME structure (parsers may disagree on what it contains).
    Ambiguous,
    /// Something could not be checked completely (limits, scanner failure under `pass`).
    Unchecked,
    /// The score reached the spam level.
    Spam,
    /// Nothing found.
    Clean,
}

impl Category {
    /// Upper-case name for replies, the quarantine and headers.
    pub fn name(self) -> &'static str {
        match self {
            Category::Virus => "VIRUS",
            Category::Banned => "BANNED",
            Category::Rule => "RULE",
            Category::Ambiguous => "AMBIGUOUS",
            Category::Unchecked => "UNCHECKED",
            Category::Spam => "SPAM",
            Category::Clean => "CLEAN",
        }
    }
}

/// An explicit rule-map outcome, which comes before scores.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleOutcome {
    /// REJECT with this text.
    Reject(String),
    /// DISCARD.
    Discard,
    /// HOLD.
    Hold,
}

/// The action for each category.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Actions {
    /// Viruses: held, never bounced (the sender is almost always forged).
    pub virus: Action,
    /// Banned files: held.
    pub banned: Action,
    /// Ambiguous MIME: held (what one parser hides another may show).
    pub ambiguous: Action,
    /// Incompletely checked: delivered with a visible tag.
    pub unchecked: Action,
    /// Score at or above `spam`: tagged.
    pub spam: Action,
    /// Clean: delivered.
    pub clean: Action,
}

impl Default for Actions {
    fn default() -> Self {
        Actions {
            virus: Action::Quarantine,
            banned: Action::Quarantine,
            ambiguous: Action::Quarantine,
            unchecked: Action::Tag,
            spam: Action::Tag,
            clean: Action::Deliver,
        }
    }
}

/// `[policy]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Add X-Spam-Score/Level/Status at or above this score (amavisd-new's tag level).
    pub tag: f64,
    /// Spam at or above this score: X-Spam-Flag: YES and the spam action.
    pub spam: f64,
    /// Hold spam at or above this score.
    pub quarantine: f64,
    /// Refuse spam at or above this score (5xx).
    pub reject: f64,
    /// Prepended to the Subject of spam; empty for none (rewriting Subject breaks DKIM signatures
    /// that cover it).
    pub subject_tag: String,
    /// Compute and log every decision but deliver everything with headers (warn_if_reject).
    pub warn: bool,
    /// Categories in warn mode on their own (`virus`, `banned`, `ambiguous`, `unchecked`, `spam`, `rule`).
    pub warn_categories: Vec<String>,
    /// Action per category.
    pub actions: Actions,
    /// Score per finding name (e.g. `MIME_UNCLOSED_BOUNDARY = 0.5`); findings with their own
    /// score (rule SCORE, Bayes) add that instead.
    pub scores: BTreeMap<String, f64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tag: -999.0,
            spam: 5.0,
            quarantine: 15.0,
            reject: 999.0,
            subject_tag: String::new(),
            warn: false,
            warn_categories: Vec::new(),
            actions: Actions::default(),
            scores: BTreeMap::new(),
        }
    }
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The category.
    pub category: Category,
    /// The total score.
    pub score: f64,
    /// What to do.
    pub action: Action,
    /// What would have been done, when warn mode turned it into delivery.
    pub warned: Option<Action>,
    /// A short reason (finding code and detail, or rule) for logs and the quarantine.
    pub reason: String,
    /// The names of the findings that scored or decided, for X-Spam-Status tests=[...].
    pub tests: Vec<String>,
    /// Header lines to add on top when delivering (CRLF-terminated), from our own vocabulary.
    pub headers: Vec<String>,
    /// The Subject prefix to apply, when the message is tagged spam and a tag is configured.
    pub subject_tag: Option<String>,
}

/// Findings that mean "could not be checked completely".
pub fn is_unchecked(name: &str) -> bool {
    (name.starts_with("MIME_") && name != "MIME_AMBIGUOUS")
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

/// Header names strainer owns; any copies that arrive from outside are removed before delivery.
pub const OWN_HEADERS: [&str; 6] =
    ["X-Spam-Flag", "X-Spam-Score", "X-Spam-Level", "X-Spam-Status", "X-Strainer-Unchecked", "X-Strainer-Warn"];

impl Config {
    /// Decides about a message from its findings and any explicit rule outcome.
    pub fn decide(&self, findings: &[Finding], rule: Option<(&RuleOutcome, &str)>) -> Verdict {
        let mut score = 0.0;
        let mut tests: Vec<String> = Vec::new();
        for f in findings {
            let s = f.score.or_else(|| self.scores.get(&f.name).copied());
            if let Some(s) = s {
                score += s;
            }
            if (s.is_some() || !f.name.starts_with("RULE_WARN")) && !tests.contains(&f.name) {
                tests.push(f.name.clone());
            }
        }
        let first = |pred: &dyn Fn(&Finding) -> bool| findings.iter().find(|f| pred(f)).map(|f| f.to_string());
        let (category, action, reason) = if let Some(r) = first(&|f| f.name == "CLAMAV_VIRUS") {
            (Category::Virus, self.actions.virus, r)
        } else if let Some(r) = first(&|f| f.name.starts_with("BANNED_")) {
            (Category::Banned, self.actions.banned, r)
        } else if let Some((outcome, why)) = rule {
            let a = match outcome {
                RuleOutcome::Reject(_) => Action::Reject,
                RuleOutcome::Discard => Action::Discard,
                RuleOutcome::Hold => Action::Quarantine,
            };
            (Category::Rule, a, why.to_string())
        } else if let Some(r) = first(&|f| f.name == "MIME_AMBIGUOUS") {
            (Category::Ambiguous, self.actions.ambiguous, r)
        } else if let Some(r) = first(&|f| is_unchecked(&f.name)) {
            (Category::Unchecked, self.actions.unchecked, r)
        } else if score >= self.spam {
            let a = if score >= self.reject {
                Action::Reject
            } else if score >= self.quarantine {
                Action::Quarantine
            } else {
                self.actions.spam
            };
            (Category::Spam, a, format!("score {score:.1} >= {}", self.spam))
        } else {
            (Category::Clean, self.actions.clean, String::new())
        };
        let warn_this = self.warn || self.warn_categories.iter().any(|c| c.eq_ignore_ascii_case(category.name()));
        let (action, warned) =
            if warn_this && action > Action::Tag { (Action::Tag, Some(action)) } else { (action, None) };
        let is_spam = score >= self.spam;
        let mut headers = Vec::new();
        if score >= self.tag || is_spam {
            let stars = "*".repeat(score.clamp(0.0, 50.0) as usize);
            headers.push(format!("X-Spam-Flag: {}\r\n", if is_spam { "YES" } else { "NO" }));
            headers.push(format!("X-Spam-Score: {score:.1}\r\n"));
            headers.push(format!("X-Spam-Level: {stars}\r\n"));
            headers.push(format!(
                "X-Spam-Status: {}, score={score:.1} required={:.1} tests=[{}]\r\n",
                if is_spam { "Yes" } else { "No" },
                self.spam,
                tests.join(",")
            ));
        }
        let unchecked: Vec<&str> = {
            let mut v: Vec<&str> = findings
                .iter()
                .map(|f| f.name.as_str())
                .filter(|n| is_unchecked(n) || *n == "MIME_AMBIGUOUS")
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        if !unchecked.is_empty() {
            headers.push(format!("X-Strainer-Unchecked: {}\r\n", unchecked.join(" ")));
        }
        if let Some(w) = warned {
            headers.push(format!("X-Strainer-Warn: would {} ({})\r\n", w.name(), category.name()));
        }
        let subject_tag =
            (is_spam && action == Action::Tag && !self.subject_tag.is_empty()).then(|| self.subject_tag.clone());
        Verdict { category, score, action, warned, reason, tests, headers, subject_tag }
    }
}

#[cfg(test)]
mod tests;
