//! The banned-attachments scanner: every file the MIME view found (MIME parts, uuencoded
//! blocks, archive members at any depth) is checked against a rule file of extensions,
//! declared types, sniffed types and name patterns, plus built-in checks for the classic
//! disguises (double extensions, trailing dots, bidi overrides, executables named as documents).
//!
//! Design choice: findings, not verdicts. A hit names the rule kind, the file and the part path;
//! what happens to the message is policy's business.
#![deny(missing_docs)]

use std::collections::HashSet;

use regex::{Regex, RegexBuilder};
use strainer_mime::{Kind, Part, View};
use strainer_rules::regex_error;
use strainer_types::Finding;

pub use strainer_types::RuleError;

/// The compiled banned-file rules.
#[derive(Debug, Default)]
pub struct Banned {
    exts: HashSet<String>,
    types: Vec<String>,
    sniffed: Vec<Kind>,
    names: Vec<Regex>,
    allow: Vec<Regex>,
    double_ext: bool,
    trailing: bool,
    bidi: bool,
    disguised: bool,
}

const BIDI: &[char] = &[
    '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
    '\u{200E}', '\u{200F}',
];

const EXECUTABLE_EXTS: &[&str] =
    &["exe", "com", "scr", "pif", "dll", "sys", "cpl", "ocx", "drv", "efi", "elf", "bin", "so", "dylib", "app", "msi"];

fn pattern(raw: &str, origin: &str, line: usize) -> Result<Regex, RuleError> {
    let err = |message: String| RuleError { origin: origin.into(), line, message };
    let body = raw.strip_prefix('/').and_then(|r| r.rfind('/').map(|i| (&r[..i], &r[i + 1..])));
    let Some((re, flags)) = body else {
        return Err(err(format!("expected /regex/ but found `{raw}`")));
    };
    let mut b = RegexBuilder::new(re);
    b.case_insensitive(true).size_limit(1 << 20);
    for f in flags.chars() {
        match f {
            'i' => {
                b.case_insensitive(false);
            }
            'x' => {
                b.ignore_whitespace(true);
            }
            _ => return Err(err(format!("unknown flag `{f}` (i toggles case, x allows spaces)"))),
        }
    }
    b.build().map_err(|e| err(format!("bad regular expression: {}", regex_error(&e))))
}

impl Banned {
    /// Parses a rule file (syntax in `filters/README.md`); `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Banned, RuleError> {
        let mut b = Banned::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (kw, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            let rest = rest.trim();
            let words = || rest.split_whitespace().map(str::to_ascii_lowercase);
            let err = |message: String| RuleError { origin: origin.into(), line, message };
            match kw {
                "ext" => b.exts.extend(words().map(|w| w.trim_start_matches('.').to_string())),
                "type" => b.types.extend(words()),
                "sniffed" => {
                    for w in words() {
                        b.sniffed.push(Kind::from_name(&w).ok_or_else(|| err(format!("unknown sniffed type `{w}`")))?);
                    }
                }
                "name" => b.names.push(pattern(rest, origin, line)?),
                "allow" => b.allow.push(pattern(rest, origin, line)?),
                "check" => {
                    for w in words() {
                        match w.as_str() {
                            "double-extension" => b.double_ext = true,
                            "trailing-dot-or-space" => b.trailing = true,
                            "bidi" => b.bidi = true,
                            "disguised-executable" => b.disguised = true,
                            _ => return Err(err(format!("unknown check `{w}`"))),
                        }
                    }
                }
                _ => return Err(err(format!("unknown keyword `{kw}` (ext, type, sniffed, name, allow, check)"))),
            }
            if rest.is_empty() {
                return Err(err(format!("`{kw}` needs a value")));
            }
        }
        Ok(b)
    }

    /// Checks every part of the view.
    pub fn check(&self, view: &View) -> Vec<Finding> {
        let mut out = Vec::new();
        for part in &view.parts {
            self.check_part(part, &mut out);
        }
        out
    }

    fn check_part(&self, part: &Part, out: &mut Vec<Finding>) {
        let mut hit = |name: &str, detail: String| out.push(Finding::new(name, detail).at(part.path.clone()));
        for full in &part.names {
            let name = full.rsplit(['/', '\\']).next().unwrap_or(full);
            if self.allow.iter().any(|r| r.is_match(name)) {
                return;
            }
            if self.bidi && name.contains(BIDI) {
                hit("BANNED_BIDI", format!("{:?} hides its real extension with a bidi control", name));
            }
            let cleaned: String = name.chars().filter(|c| !BIDI.contains(c)).collect();
            let trimmed = cleaned.trim_end_matches(|c: char| c == '.' || c.is_whitespace());
            if self.trailing && trimmed.len() != cleaned.len() {
                hit("BANNED_TRAILING", format!("{name:?} ends in a dot or space"));
            }
            let exts: Vec<String> = trimmed.split('.').skip(1).map(|e| e.trim().to_ascii_lowercase()).collect();
            let last = exts.last().cloned().unwrap_or_default();
            if self.exts.contains(&last) {
                hit("BANNED_EXT", format!("{name:?} (.{last})"));
                if self.double_ext && exts.len() >= 2 {
                    let prev = &exts[exts.len() - 2];
                    if (2..=5).contains(&prev.len()) && prev.chars().all(|c| c.is_ascii_alphanumeric()) {
                        hit("BANNED_DOUBLE_EXT", format!("{name:?} (.{prev}.{last})"));
                    }
                }
            }
            if self.names.iter().any(|r| r.is_match(name)) {
                hit("BANNED_NAME", format!("{name:?}"));
            }
            if self.disguised
                && part.sniffed.is_some_and(Kind::is_executable)
                && !EXECUTABLE_EXTS.contains(&last.as_str())
                && !self.exts.contains(&last)
            {
                hit("BANNED_DISGUISED", format!("{name:?} is a {} executable", part.sniffed.map_or("", Kind::name)));
            }
        }
        if !part.content_type.is_empty() && self.types.iter().any(|t| type_matches(t, &part.content_type)) {
            hit("BANNED_TYPE", part.content_type.clone());
        }
        if let Some(k) = part.sniffed.filter(|k| self.sniffed.contains(k)) {
            let named_as = part.names.first().map(|n| format!(" ({n:?})")).unwrap_or_default();
            hit("BANNED_SNIFFED", format!("{}{named_as}", k.name()));
        }
    }
}

fn type_matches(rule: &str, ct: &str) -> bool {
    match rule.strip_suffix("/*") {
        Some(major) => ct.split('/').next() == Some(major),
        None => rule == ct,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_line() {
        let e = Banned::parse("ext exe\n\nbogus x\n", "b.rules").unwrap_err();
        assert_eq!(e.to_string(), "b.rules:3: unknown keyword `bogus` (ext, type, sniffed, name, allow, check)");
        let e = Banned::parse("name /a(/\n", "b.rules").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(Banned::parse("sniffed pe martian\n", "b").is_err());
        assert!(Banned::parse("ext\n", "b").is_err());
    }
}
