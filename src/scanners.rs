//! The local scanners (MIME view, banned attachments, rule maps), compiled from configuration
//! once and shared by every session.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strainer_attachments::Banned;
use strainer_mime::{Limits, View, analyze};
use strainer_rules::{Action, Table};
use strainer_types::{Finding, headers};

/// The banned-attachments rules shipped with strainer (`filters/banned.rules`).
pub const BUILTIN_BANNED: &str = include_str!("../filters/banned.rules");

/// `[banned]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BannedConfig {
    /// Check attachments at all.
    pub enabled: bool,
    /// `builtin` for the shipped rules, or a rule file (relative to the config file).
    pub rules: String,
}

impl Default for BannedConfig {
    fn default() -> Self {
        BannedConfig { enabled: true, rules: "builtin".into() }
    }
}

/// `[rules]`: Postfix regexp tables matched against decoded content.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Tables applied to each top-level header (`Name: value`, decoded and unfolded).
    pub header_checks: Vec<PathBuf>,
    /// Tables applied to the MIME headers of every part.
    pub mime_header_checks: Vec<PathBuf>,
    /// Tables applied to each line of decoded text.
    pub body_checks: Vec<PathBuf>,
    /// Bytes of each text part that body checks see (Postfix: body_checks_size_limit).
    pub body_checks_size_limit: usize,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            header_checks: Vec::new(),
            mime_header_checks: Vec::new(),
            body_checks: Vec::new(),
            body_checks_size_limit: 51200,
        }
    }
}

/// A rule that fired, with where.
#[derive(Debug, Clone, Serialize)]
pub struct RuleHit {
    /// `header_checks`, `mime_header_checks` or `body_checks`.
    pub map: &'static str,
    /// The table file and line.
    pub rule: String,
    /// What it says to do.
    #[serde(serialize_with = "display")]
    pub action: Action,
    /// The input it matched (shortened).
    pub input: String,
    /// Byte range of the top-level header it matched, for IGNORE.
    #[serde(skip)]
    pub header_range: Option<(usize, usize)>,
}

fn display<S: serde::Serializer>(a: &Action, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(a)
}

/// Everything the local scanners found in one message.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The message taken apart.
    pub view: View,
    /// Findings of every scanner, MIME limits included.
    pub findings: Vec<Finding>,
    /// Rule map hits in order: headers, MIME headers, body.
    pub hits: Vec<RuleHit>,
    /// Time spent per scanner: `mime`, `banned`, `rules`, `bayes`.
    #[serde(skip)]
    pub timings: Vec<(&'static str, std::time::Duration)>,
    /// The message as Bayes would autolearn it, when it is sure (`bayes.autolearn`); `serve`
    /// learns it if the other scanners agree ([`crate::autolearn::agrees`]).
    #[serde(skip)]
    pub learn: Option<strainer_bayes::Item>,
}

/// The compiled local scanners.
pub struct Local {
    limits: Limits,
    banned: Option<Banned>,
    header: Vec<Table>,
    mime_header: Vec<Table>,
    body: Vec<Table>,
    body_limit: usize,
    bayes: Option<crate::bayes::Scanner>,
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

fn load_tables(base: &Path, files: &[PathBuf], key: &str) -> anyhow::Result<Vec<Table>> {
    files
        .iter()
        .map(|f| {
            let path = resolve(base, f);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("rules.{key}: cannot read {}: {e}", path.display()))?;
            Table::parse(&text, &path.display().to_string()).map_err(|e| anyhow::anyhow!("rules.{key}: {e}"))
        })
        .collect()
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(120).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

impl Local {
    /// Compiles the scanners; relative paths are taken from `base` (the config file's folder).
    pub fn compile(config: &crate::config::Config, base: &Path) -> anyhow::Result<Local> {
        let banned = if config.banned.enabled {
            let (text, origin) = if config.banned.rules == "builtin" {
                (BUILTIN_BANNED.to_string(), "builtin:filters/banned.rules".to_string())
            } else {
                let path = resolve(base, Path::new(&config.banned.rules));
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("banned.rules: cannot read {}: {e}", path.display()))?;
                (text, path.display().to_string())
            };
            Some(Banned::parse(&text, &origin).map_err(|e| anyhow::anyhow!("banned.rules: {e}"))?)
        } else {
            None
        };
        let r = &config.rules;
        Ok(Local {
            limits: config.mime.clone(),
            banned,
            header: load_tables(base, &r.header_checks, "header_checks")?,
            mime_header: load_tables(base, &r.mime_header_checks, "mime_header_checks")?,
            body: load_tables(base, &r.body_checks, "body_checks")?,
            body_limit: r.body_checks_size_limit,
            bayes: if config.bayes.enabled {
                Some(crate::bayes::Scanner::new(&config.bayes, config.bayes_options()?, base))
            } else {
                None
            },
        })
    }

    /// Loads what the scanners read ahead of the first message (Bayes's copy of its store).
    pub fn warm(&self) {
        if let Some(b) = &self.bayes {
            b.warm();
        }
    }

    /// Runs every local scanner over one message (CRLF bytes as received).
    pub fn scan(&self, message: &[u8]) -> Report {
        let mut clock = std::time::Instant::now();
        let mut timings = Vec::with_capacity(3);
        let mut lap = |name: &'static str| {
            let now = std::time::Instant::now();
            timings.push((name, now - clock));
            clock = now;
        };
        let view = analyze(message, &self.limits);
        lap("mime");
        let mut findings = view.findings.clone();
        if let Some(b) = &self.banned {
            findings.extend(b.check(&view));
        }
        lap("banned");
        let mut hits = Vec::new();
        if !self.header.is_empty() {
            // The view decoded the same fields in the same order; reuse its work.
            for (f, (_, value)) in headers::fields(message).zip(&view.headers) {
                let name = String::from_utf8_lossy(f.name);
                let decoded = format!("{name}: {value}");
                // Old rules written against the encoded form (=?charset?...) still work.
                let hit = lookup(&self.header, &decoded).map(|h| (h, decoded.clone())).or_else(|| {
                    let raw = format!("{name}: {}", f.unfolded());
                    if raw == decoded { None } else { lookup(&self.header, &raw).map(|h| (h, raw)) }
                });
                if let Some((h, input)) = hit {
                    hits.push(RuleHit {
                        map: "header_checks",
                        rule: format!("{}:{}", h.origin, h.line),
                        action: h.action,
                        input: clip(&input),
                        header_range: Some((f.start, f.end)),
                    });
                }
            }
        }
        for part in &view.parts {
            if !self.mime_header.is_empty() {
                for (n, v) in &part.headers {
                    let input = format!("{n}: {v}");
                    if let Some(h) = lookup(&self.mime_header, &input) {
                        hits.push(RuleHit {
                            map: "mime_header_checks",
                            rule: format!("{}:{}", h.origin, h.line),
                            action: h.action,
                            input: clip(&input),
                            header_range: None,
                        });
                    }
                }
            }
            if let (false, Some(text)) = (self.body.is_empty(), &part.text) {
                let mut end = self.body_limit.min(text.len());
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                let text = &text[..end];
                // Per line, the first table (in configuration order) with a matching rule decides.
                let mut per_line: std::collections::BTreeMap<usize, strainer_rules::Hit> = Default::default();
                for table in &self.body {
                    for (i, h) in table.lookup_lines(text) {
                        per_line.entry(i).or_insert(h);
                    }
                }
                if !per_line.is_empty() {
                    let lines: Vec<&str> = text.lines().collect();
                    for (i, h) in per_line {
                        let input = clip(lines.get(i).copied().unwrap_or(""));
                        hits.push(RuleHit {
                            map: "body_checks",
                            rule: format!("{}:{}", h.origin, h.line),
                            action: h.action,
                            input,
                            header_range: None,
                        });
                    }
                }
            }
        }
        for h in &hits {
            let name = format!("RULE_{}", h.action.name());
            let mut f = Finding::new(name, format!("{} {} ({})", h.rule, h.action, h.input));
            if let Action::Score(n, _) = h.action {
                f.score = Some(n);
            }
            if !matches!(h.action, Action::Dunno) {
                findings.push(f);
            }
        }
        lap("rules");
        let mut learn = None;
        if let Some(b) = &self.bayes {
            let scored = b.finding(message, &view);
            findings.push(scored.finding);
            learn = scored.learn;
            lap("bayes");
        }
        Report { view, findings, hits, timings, learn }
    }

    /// Waits until what autolearning queued is learnt (`serve` stopping).
    pub fn finish_learning(&self) {
        if let Some(b) = &self.bayes {
            b.finish_learning();
        }
    }

    /// Queues a message for autolearning (see [`Report::learn`]); false when it was not queued.
    pub fn autolearn(&self, item: strainer_bayes::Item) -> bool {
        self.bayes.as_ref().is_some_and(|b| b.autolearn(item))
    }
}

/// The first table (in configuration order) with a rule for `input`.
fn lookup(tables: &[Table], input: &str) -> Option<strainer_rules::Hit> {
    tables.iter().find_map(|t| t.lookup(input))
}
