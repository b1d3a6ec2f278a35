//! Postfix regexp tables (`regexp_table(5)`): `/pattern/flags ACTION text`, `!/pattern/`,
//! `if`/`endif`, continuation lines and comments, with the actions Postfix administrators know
//! from `header_checks`/`body_checks` plus `SCORE n` for the spam score.
//!
//! Design choice: an aho-corasick prefilter. From each pattern we extract literals one of which
//! every match must contain (its prefixes or suffixes, whichever are more selective); one
//! automaton over all of them scans an input once, and only rules whose literal occurred (or
//! that have none) run their regex, lazily, in table order. Hundreds of rules then cost about
//! one pass over the input, and Postfix's first-match and `if` semantics stay exact because the
//! prefilter can only rule a pattern out, never in.
#![deny(missing_docs)]

use std::fmt;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::{Regex, RegexBuilder};
use regex_syntax::hir::literal::{ExtractKind, Extractor};

/// What a matching rule says to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Refuse the message with this text.
    Reject(String),
    /// Accept and drop the message.
    Discard(String),
    /// Log only (WARN and INFO).
    Warn(String),
    /// Remove the matched header.
    Ignore,
    /// Add this header line on top.
    Prepend(String),
    /// Hold the message (quarantine).
    Hold(String),
    /// Add to the spam score.
    Score(f64, String),
    /// Stop looking: no action (OK and DUNNO).
    Dunno,
}

impl Action {
    /// The upper-case action name.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Reject(_) => "REJECT",
            Action::Discard(_) => "DISCARD",
            Action::Warn(_) => "WARN",
            Action::Ignore => "IGNORE",
            Action::Prepend(_) => "PREPEND",
            Action::Hold(_) => "HOLD",
            Action::Score(..) => "SCORE",
            Action::Dunno => "DUNNO",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Reject(t) | Action::Discard(t) | Action::Warn(t) | Action::Prepend(t) | Action::Hold(t)
                if !t.is_empty() =>
            {
                write!(f, "{} {t}", self.name())
            }
            Action::Score(n, t) if !t.is_empty() => write!(f, "SCORE {n} {t}"),
            Action::Score(n, _) => write!(f, "SCORE {n}"),
            _ => f.write_str(self.name()),
        }
    }
}

pub use strainer_types::RuleError;

#[derive(Debug)]
enum Rule {
    Match { pat: usize, negate: bool, action: Action, line: usize },
    If { pat: usize, negate: bool, end: usize },
    Endif,
}

/// A compiled table.
#[derive(Debug)]
pub struct Table {
    origin: String,
    rules: Vec<Rule>,
    regexes: Vec<Regex>,
    /// One automaton over the required literals of every pattern that has them.
    prefilter: Option<AhoCorasick>,
    /// For each automaton pattern: the table pattern and which of its literal sets it belongs to.
    literal_owner: Vec<(usize, u32)>,
    /// For each table pattern, the bit mask of all its literal sets (0: its regex always runs).
    required: Vec<u32>,
    /// True when an input none of whose literals occur can still hit a rule (a pattern without
    /// literals, or a negated pattern).
    walk_without_literals: bool,
}

/// Sets of literals such that every match of `pattern` contains at least one literal of each
/// set: the prefixes and suffixes of the whole pattern and of each part of a top-level
/// concatenation. Empty when nothing useful can be said (the regex then always runs).
fn required_literal_sets(pattern: &str, multi_line: bool, extended: bool, case_insensitive: bool) -> Vec<Vec<Vec<u8>>> {
    let Ok(hir) =
        regex_syntax::ParserBuilder::new().multi_line(multi_line).ignore_whitespace(extended).build().parse(pattern)
    else {
        return Vec::new();
    };
    let mut pieces = vec![(&hir, ExtractKind::Prefix), (&hir, ExtractKind::Suffix)];
    if let regex_syntax::hir::HirKind::Concat(children) = hir.kind() {
        pieces.extend(children.iter().map(|c| (c, ExtractKind::Prefix)));
    }
    let mut sets: Vec<Vec<Vec<u8>>> = Vec::new();
    for (h, kind) in pieces {
        let mut ex = Extractor::new();
        ex.kind(kind).limit_total(64);
        let seq = ex.extract(h);
        let Some(lits) = seq.literals() else { continue };
        let mut lits: Vec<Vec<u8>> = lits.iter().map(|l| l.as_bytes().to_vec()).collect();
        // Short literals occur everywhere and only cost automaton matches; the automaton folds
        // ASCII case only.
        if lits.is_empty()
            || lits.iter().any(|l| l.len() < 3)
            || (case_insensitive && lits.iter().any(|l| !l.is_ascii()))
        {
            continue;
        }
        lits.sort();
        lits.dedup();
        if !sets.contains(&lits) {
            sets.push(lits);
        }
    }
    // The two most selective sets (longest shortest literal) are enough to rule most inputs out.
    sets.sort_by_key(|s| std::cmp::Reverse(s.iter().map(Vec::len).min().unwrap_or(0)));
    sets.truncate(2);
    sets
}

/// A rule that matched an input.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The action, `$n` substituted.
    pub action: Action,
    /// The table's file.
    pub origin: String,
    /// The rule's line.
    pub line: usize,
}

/// Splits `/pattern/flags rest` (any delimiter) into its parts.
fn split_pattern(s: &str) -> Option<(&str, &str, &str)> {
    let delim = s.chars().next()?;
    if delim.is_alphanumeric() || delim.is_whitespace() {
        return None;
    }
    let body = &s[delim.len_utf8()..];
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == delim {
            let pattern = &body[..i];
            let after = &body[i + c.len_utf8()..];
            let flags_end = after.find(char::is_whitespace).unwrap_or(after.len());
            return Some((pattern, &after[..flags_end], after[flags_end..].trim()));
        }
    }
    None
}

fn parse_action(s: &str) -> Result<Action, String> {
    let (word, text) = s.split_once(char::is_whitespace).map_or((s, ""), |(w, t)| (w, t.trim()));
    let text = text.to_string();
    Ok(match word.to_ascii_uppercase().as_str() {
        "REJECT" => Action::Reject(text),
        "DISCARD" => Action::Discard(text),
        "WARN" | "INFO" => Action::Warn(text),
        "IGNORE" => Action::Ignore,
        "PREPEND" => {
            let ok = text
                .split_once(':')
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b':'));
            if !ok {
                return Err(format!("PREPEND needs a header line `Name: value`, not `{text}`"));
            }
            Action::Prepend(text)
        }
        "HOLD" => Action::Hold(text),
        "OK" | "DUNNO" => Action::Dunno,
        "SCORE" => {
            let (n, rest) = text.split_once(char::is_whitespace).map_or((text.as_str(), ""), |(n, r)| (n, r.trim()));
            let n: f64 = n.parse().map_err(|_| format!("SCORE needs a number, not `{n}`"))?;
            if !n.is_finite() {
                return Err("SCORE needs a finite number".into());
            }
            Action::Score(n, rest.to_string())
        }
        "" => return Err("missing action".into()),
        "FILTER" | "REDIRECT" | "BCC" | "REPLACE" | "STRIP" | "BOUNCE" => {
            return Err(format!("{word} is a Postfix cleanup action; use it in Postfix's own header_checks"));
        }
        _ => {
            return Err(format!(
                "unknown action `{word}` (REJECT, DISCARD, WARN, INFO, IGNORE, PREPEND, HOLD, OK, DUNNO, SCORE)"
            ));
        }
    })
}

impl Table {
    /// Parses and compiles a table; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Table, RuleError> {
        // Join continuation lines into logical lines, remembering where each starts.
        let mut logical: Vec<(usize, String)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if let Some((_, last)) = logical.last_mut().filter(|_| raw.starts_with(char::is_whitespace)) {
                last.push(' ');
                last.push_str(trimmed);
                continue;
            }
            logical.push((i + 1, trimmed.to_string()));
        }
        let mut patterns = Vec::new();
        let mut rules = Vec::new();
        let mut open: Vec<(usize, usize)> = Vec::new();
        for (line, l) in logical {
            let err = |message: String| RuleError { origin: origin.into(), line, message };
            if l.eq_ignore_ascii_case("endif") {
                let (idx, _) = open.pop().ok_or_else(|| err("endif without if".into()))?;
                let end = rules.len();
                if let Some(Rule::If { end: e, .. }) = rules.get_mut(idx) {
                    *e = end;
                }
                rules.push(Rule::Endif);
                continue;
            }
            let (is_if, rest) = match l.get(..3) {
                Some(p) if p.eq_ignore_ascii_case("if ") => (true, l[3..].trim_start()),
                _ => (false, l.as_str()),
            };
            let (negate, rest) = match rest.strip_prefix('!') {
                Some(r) => (true, r),
                None => (false, rest),
            };
            let (pat, flags, tail) =
                split_pattern(rest).ok_or_else(|| err(format!("expected /pattern/ but found `{rest}`")))?;
            let mut b = RegexBuilder::new(pat);
            b.case_insensitive(true).size_limit(1 << 20);
            for f in flags.chars() {
                match f {
                    'i' => b.case_insensitive(false),
                    'm' => b.multi_line(true),
                    'x' => b.ignore_whitespace(true),
                    _ => return Err(err(format!("unknown flag `{f}` (i, m, x)"))),
                };
            }
            let re = b.build().map_err(|e| err(format!("bad regular expression: {}", regex_error(&e))))?;
            let idx = patterns.len();
            let sets = required_literal_sets(pat, flags.contains('m'), flags.contains('x'), !flags.contains('i'));
            patterns.push((re, sets));
            if is_if {
                if !tail.is_empty() {
                    return Err(err("`if` takes only a pattern".into()));
                }
                open.push((rules.len(), line));
                rules.push(Rule::If { pat: idx, negate, end: usize::MAX });
            } else {
                let action = parse_action(tail).map_err(err)?;
                rules.push(Rule::Match { pat: idx, negate, action, line });
            }
        }
        if let Some((_, line)) = open.pop() {
            return Err(RuleError { origin: origin.into(), line, message: "if without endif".into() });
        }
        let mut literals = Vec::new();
        let mut literal_owner = Vec::new();
        let mut required = Vec::with_capacity(patterns.len());
        for (i, (_, sets)) in patterns.iter().enumerate() {
            let mut mask = 0u32;
            for (k, set) in sets.iter().enumerate() {
                mask |= 1 << k;
                for l in set {
                    literals.push(l.clone());
                    literal_owner.push((i, 1u32 << k));
                }
            }
            required.push(mask);
        }
        let prefilter = if literals.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(&literals)
                    .map_err(|e| RuleError {
                        origin: origin.into(),
                        line: 0,
                        message: format!("cannot build the literal prefilter: {e}"),
                    })?,
            )
        };
        let regexes = patterns.into_iter().map(|(r, _)| r).collect();
        let negated =
            rules.iter().any(|r| matches!(r, Rule::Match { negate: true, .. } | Rule::If { negate: true, .. }));
        let walk_without_literals = negated || required.contains(&0);
        Ok(Table { origin: origin.into(), rules, regexes, prefilter, literal_owner, required, walk_without_literals })
    }

    /// Number of rules (if/endif included).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True for a table without rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule that applies to `input`, as Postfix's lookup would find it.
    pub fn lookup(&self, input: &str) -> Option<Hit> {
        if self.rules.is_empty() {
            return None;
        }
        // Which patterns can match at all: those with a literal of every required set present,
        // and those without literals.
        let mut found = Vec::new();
        if let Some(ac) = &self.prefilter {
            found.extend(ac.find_overlapping_iter(input).map(|m| self.literal_owner[m.pattern().as_usize()]));
        }
        self.walk(input, &found)
    }

    /// Looks up every line of `text` (as `str::lines` splits it) with one automaton pass over
    /// the whole text; returns the hits with their 0-based line numbers.
    pub fn lookup_lines(&self, text: &str) -> Vec<(usize, Hit)> {
        let mut hits = Vec::new();
        if self.rules.is_empty() {
            return hits;
        }
        // (line start, line end without CR/LF) for every line.
        let mut spans = Vec::new();
        let mut start = 0;
        for line in text.split_inclusive('\n') {
            let body = line.strip_suffix('\n').unwrap_or(line);
            let body = body.strip_suffix('\r').unwrap_or(body);
            spans.push((start, start + body.len()));
            start += line.len();
        }
        let mut per_line: Vec<Vec<(usize, u32)>> = vec![Vec::new(); spans.len()];
        if let Some(ac) = &self.prefilter {
            for m in ac.find_overlapping_iter(text) {
                let i = spans.partition_point(|&(s, _)| s <= m.start()).saturating_sub(1);
                if let Some(v) = per_line.get_mut(i) {
                    v.push(self.literal_owner[m.pattern().as_usize()]);
                }
            }
        }
        for (i, (&(s, e), found)) in spans.iter().zip(&per_line).enumerate() {
            if let Some(h) = self.walk(&text[s..e], found) {
                hits.push((i, h));
            }
        }
        hits
    }

    fn walk(&self, input: &str, found: &[(usize, u32)]) -> Option<Hit> {
        if found.is_empty() && !self.walk_without_literals {
            // The common case: no literal of any rule occurs, so no rule can apply.
            return None;
        }
        let mut seen = vec![0u32; self.required.len()];
        found.iter().for_each(|&(p, bit)| seen[p] |= bit);
        let possible: Vec<bool> = seen.iter().zip(&self.required).map(|(s, r)| s == r).collect();
        // Regexes run lazily, at most once each, in table order.
        let mut known: Vec<Option<bool>> = vec![None; self.regexes.len()];
        let mut matched = |pat: usize| -> bool {
            *known[pat].get_or_insert_with(|| possible[pat] && self.regexes[pat].is_match(input))
        };
        let mut i = 0;
        while i < self.rules.len() {
            match &self.rules[i] {
                Rule::If { pat, negate, end } => {
                    if matched(*pat) == *negate {
                        i = *end;
                    }
                }
                Rule::Endif => {}
                Rule::Match { pat, negate, action, line } => {
                    if matched(*pat) != *negate {
                        let action =
                            if *negate { action.clone() } else { substitute(action, &self.regexes[*pat], input) };
                        return Some(Hit { action, origin: self.origin.clone(), line: *line });
                    }
                }
            }
            i += 1;
        }
        None
    }
}

fn substitute(action: &Action, re: &Regex, input: &str) -> Action {
    let text = match action {
        Action::Reject(t)
        | Action::Discard(t)
        | Action::Warn(t)
        | Action::Prepend(t)
        | Action::Hold(t)
        | Action::Score(_, t) => t,
        _ => return action.clone(),
    };
    if !text.contains('$') {
        return action.clone();
    }
    let Some(caps) = re.captures(input) else { return action.clone() };
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let braced = chars.peek() == Some(&'{');
        if braced {
            chars.next();
        }
        let mut num = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            num.push(*d);
            chars.next();
        }
        if braced {
            chars.next_if_eq(&'}');
        }
        match num.parse::<usize>() {
            Ok(n) => out.push_str(caps.get(n).map_or("", |m| m.as_str())),
            Err(_) => out.push('$'),
        }
    }
    // Matched text must not break a header or a reply.
    let out: String = out.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match action {
        Action::Reject(_) => Action::Reject(out),
        Action::Discard(_) => Action::Discard(out),
        Action::Warn(_) => Action::Warn(out),
        Action::Prepend(_) => Action::Prepend(out),
        Action::Hold(_) => Action::Hold(out),
        Action::Score(n, _) => Action::Score(*n, out),
        other => other.clone(),
    }
}

/// A regex error in one line: the regex crate's is several (pattern, caret, message), logs want one.
pub fn regex_error(e: &regex::Error) -> String {
    let s = e.to_string();
    let last = s.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("");
    last.strip_prefix("error: ").unwrap_or(last).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> Table {
        Table::parse(s, "t").unwrap()
    }

    #[test]
    fn first_match_wins_and_case_is_ignored_by_default() {
        let tb = t("/^Subject:.*viagra/ REJECT no pills\n/^Subject:/ WARN subject seen\n");
        assert_eq!(tb.lookup("Subject: VIAGRA now").unwrap().action, Action::Reject("no pills".into()));
        assert_eq!(tb.lookup("subject: hello").unwrap().action, Action::Warn("subject seen".into()));
        assert!(tb.lookup("From: x").is_none());
        let cs = t("/^Subject: ABC/i REJECT\n");
        assert!(cs.lookup("Subject: abc").is_none(), "flag i makes it case-sensitive");
    }

    #[test]
    fn negation_if_endif_and_continuations() {
        let tb = t("# comment\nif /^Received:/\n!/from trusted/ SCORE 1.5 untrusted\n  hop\nendif\n/./ DUNNO\n");
        assert_eq!(tb.lookup("Received: from evil").unwrap().action, Action::Score(1.5, "untrusted hop".into()));
        assert_eq!(tb.lookup("Received: from trusted").unwrap().action, Action::Dunno);
        assert_eq!(tb.lookup("X: y").unwrap().line, 6);
        let nested = t("if /a/\nif !/b/\n/c/ HOLD\nendif\nendif\n");
        assert!(nested.lookup("ac").is_some());
        assert!(nested.lookup("abc").is_none());
        assert!(nested.lookup("c").is_none());
    }

    #[test]
    fn prefilter_never_rules_a_match_out() {
        let tb = t(
            "/^Subject:.*\\bviagra\\b/ REJECT a\n/gr[aä]n/ REJECT b\n/(foo|bar)baz$/ REJECT c\n/x{2,}y/ REJECT d\n/ü/ REJECT e\n",
        );
        assert!(tb.lookup("SUBJECT: buy VIAGRA").is_some());
        assert_eq!(tb.lookup("GRÄN").unwrap().action, Action::Reject("b".into()), "Unicode case folding");
        assert_eq!(tb.lookup("gRän").unwrap().action, Action::Reject("b".into()));
        assert_eq!(tb.lookup("xxFOObaz").unwrap().action, Action::Reject("c".into()));
        assert_eq!(tb.lookup("xxxy").unwrap().action, Action::Reject("d".into()));
        assert_eq!(tb.lookup("Ü").unwrap().action, Action::Reject("e".into()), "non-ASCII case folding still matches");
    }

    #[test]
    fn substitution_and_other_delimiters() {
        let tb = t("%^Subject: (\\w+) (\\w+)% REJECT bad $2 and ${1}$\n");
        assert_eq!(tb.lookup("Subject: cheap pills").unwrap().action, Action::Reject("bad pills and cheap$".into()));
    }

    #[test]
    fn errors_name_file_and_line() {
        for (src, line, part) in [
            ("/a/ REJECT\n\n/b/ FROB\n", 3, "unknown action"),
            ("/a(/ REJECT\n", 1, "bad regular expression"),
            ("if /a/\n/b/ REJECT\n", 1, "if without endif"),
            ("endif\n", 1, "endif without if"),
            ("/a/q REJECT\n", 1, "unknown flag"),
            ("/a/ PREPEND nonsense\n", 1, "PREPEND needs"),
            ("/a/ SCORE x\n", 1, "SCORE needs"),
            ("/a/ REDIRECT x@y\n", 1, "Postfix cleanup action"),
            ("/unterminated REJECT\n", 1, "expected /pattern/"),
            ("/a/\n", 1, "missing action"),
        ] {
            let e = Table::parse(src, "checks").unwrap_err();
            assert_eq!(e.line, line, "{src}: {e}");
            assert!(e.message.contains(part), "{src}: {e}");
            assert!(e.to_string().starts_with(&format!("checks:{line}: ")));
        }
    }

    proptest! {
        #[test]
        fn prefilter_agrees_with_plain_regex(pat in "[a-cA-C.|()*?\\\\bü]{1,8}", input in "[a-cA-C üÜ]{0,12}") {
            let Ok(tb) = Table::parse(&format!("/{pat}/ REJECT\n"), "p") else { return Ok(()) };
            let Ok(re) = RegexBuilder::new(&pat).case_insensitive(true).build() else { return Ok(()) };
            prop_assert_eq!(tb.lookup(&input).is_some(), re.is_match(&input));
        }

        #[test]
        fn lookup_lines_agrees_with_lookup(text in "(viagra|free|[a-z ]{0,6}|\r?\n){0,12}") {
            let tb = t("/\\bviagra\\b/ REJECT a\n/free [a-z]+/ SCORE 1 b\n!/e/ WARN c\n");
            let want: Vec<(usize, Hit)> = text.lines().enumerate().filter_map(|(i, l)| tb.lookup(l).map(|h| (i, h))).collect();
            prop_assert_eq!(tb.lookup_lines(&text), want);
        }

        #[test]
        fn parsing_never_panics(s in "(\\PC|\\n|/|!| |#|\\$){0,200}") {
            if let Ok(tb) = Table::parse(&s, "p") {
                let _ = tb.lookup(&s);
            }
        }

        #[test]
        fn lookup_never_panics(lines in proptest::collection::vec("[a-z/!$ ]{0,12} (REJECT|WARN|SCORE 1|DUNNO) ?\\$?[0-9]?", 0..10), input in "\\PC{0,50}") {
            if let Ok(tb) = Table::parse(&lines.join("\n"), "p") {
                let _ = tb.lookup(&input);
            }
        }
    }
}
