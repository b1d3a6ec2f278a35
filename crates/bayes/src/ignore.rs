//! Header fields the scorer leaves out, as SpamAssassin's `bayes_ignore_header`: strainer's own
//! (`X-Spam-*`, `X-Strainer-*`) always, and those the configuration names.
//!
//! A field that another filter adds (its verdict, its queue id, its scan stamp) says nothing
//! about the sender; learnt from a mailbox it becomes a short cut: the model credits the old
//! filter's verdict instead of the message, and mail arriving without that field scores as if
//! part of its evidence were missing (benches/README.md measures it). Neither the tokenizer nor
//! the linear layer's 4-grams see an ignored field, in learning and in classifying alike.

/// Patterns of header field names to leave out: a name, or a prefix ending in `*`; matched
/// without regard to case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoreHeaders {
    /// Lower-cased whole names.
    names: Vec<Box<[u8]>>,
    /// Lower-cased prefixes (the pattern without its `*`).
    prefixes: Vec<Box<[u8]>>,
    /// A bit for each (lower-cased, ASCII) first byte of a pattern: most fields (Received, From,
    /// Subject...) are passed on one test.
    first: u128,
}

/// The fields strainer itself adds to the mail it passes; never learnt from.
const OURS: [&str; 2] = ["X-Spam-*", "X-Strainer-*"];

impl Default for IgnoreHeaders {
    /// Strainer's own fields only.
    fn default() -> Self {
        IgnoreHeaders::new(OURS).unwrap_or(IgnoreHeaders { names: Vec::new(), prefixes: Vec::new(), first: 0 })
    }
}

impl IgnoreHeaders {
    /// Strainer's own fields and `patterns` (a field name, or a prefix followed by `*`); an
    /// error says which pattern is not one and why.
    pub fn new<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> Result<IgnoreHeaders, String> {
        let mut out = IgnoreHeaders { names: Vec::new(), prefixes: Vec::new(), first: 0 };
        for p in OURS.iter().map(|s| s.to_string()).chain(patterns.into_iter().map(|s| s.as_ref().to_string())) {
            let (body, prefix) = match p.strip_suffix('*') {
                Some(b) => (b, true),
                None => (p.as_str(), false),
            };
            if body.is_empty() {
                return Err(format!("{p:?} would match every field; name a field, or a prefix followed by *"));
            }
            if let Some(c) = body.chars().find(|c| !c.is_ascii_graphic() || *c == ':' || *c == '*') {
                return Err(format!(
                    "{p:?} holds {c:?}; a field name is printable ASCII without ':' (a '*' may only end it)"
                ));
            }
            let lower: Box<[u8]> = body.to_ascii_lowercase().into_bytes().into();
            out.first |= 1 << (lower[0] & 0x7f);
            let list = if prefix { &mut out.prefixes } else { &mut out.names };
            if !list.contains(&lower) {
                list.push(lower);
            }
        }
        Ok(out)
    }

    /// Whether the field named `name` is left out.
    #[inline]
    pub fn skips(&self, name: &[u8]) -> bool {
        self.may_skip(name) && self.matches(name)
    }

    /// Whether the header line `line` (a field's first line, `Name: value`) starts a field that
    /// is left out.
    #[inline]
    pub fn skips_line(&self, line: &[u8]) -> bool {
        // The first byte turns most lines away before the colon is looked for.
        self.may_skip(line) && {
            let name = memchr::memchr(b':', line).map_or(line, |i| &line[..i]);
            self.matches(name.trim_ascii_end())
        }
    }

    /// False when no pattern starts with the first byte of `name`.
    #[inline]
    fn may_skip(&self, name: &[u8]) -> bool {
        name.first().is_some_and(|&b| b < 0x80 && self.first & (1 << b.to_ascii_lowercase()) != 0)
    }

    /// Whether a pattern matches `name`.
    fn matches(&self, name: &[u8]) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
            || self.prefixes.iter().any(|p| name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_fields_are_always_left_out() {
        for ignore in [IgnoreHeaders::default(), IgnoreHeaders::new(["X-Amavis-*"]).unwrap()] {
            assert!(ignore.skips(b"X-Spam-Flag"));
            assert!(ignore.skips(b"x-spam-status"));
            assert!(ignore.skips(b"X-Strainer-Released"));
            assert!(!ignore.skips(b"X-Spam"));
            assert!(!ignore.skips(b"Subject"));
        }
    }

    #[test]
    fn names_and_prefixes_match_without_case() {
        let ignore = IgnoreHeaders::new(["X-Bogosity", "x-amavis-*", "X-Virus-Scanned"]).unwrap();
        assert!(ignore.skips(b"x-bogosity"));
        assert!(!ignore.skips(b"X-Bogosity-Extra"));
        assert!(ignore.skips(b"X-Amavis-Alert"));
        assert!(ignore.skips(b"X-AMAVIS-"));
        assert!(!ignore.skips(b"X-Amavis"));
        assert!(ignore.skips_line(b"X-Virus-Scanned: by ClamAV\r\n"));
        assert!(ignore.skips_line(b"X-Virus-Scanned : odd spacing\n"));
        assert!(!ignore.skips_line(b"X-Virus-Status: Clean\n"));
        assert!(!ignore.skips_line(b"Subject: X-Bogosity: Spam\n"));
    }

    proptest::proptest! {
        /// The first-byte filter never changes the answer of the plain definition.
        #[test]
        fn skips_as_defined(
            name in "[xXaA-][a-zA-Z-]{0,6}",
            patterns in proptest::collection::vec("[xXaAbB][a-zA-Z-]{0,4}\\*?", 0..4),
        ) {
            let ignore = IgnoreHeaders::new(&patterns).unwrap();
            let lower = name.to_ascii_lowercase();
            let want = OURS.iter().map(|s| s.to_string()).chain(patterns.iter().cloned()).any(|p| {
                let p = p.to_ascii_lowercase();
                match p.strip_suffix('*') {
                    Some(prefix) => lower.starts_with(prefix),
                    None => lower == p,
                }
            });
            proptest::prop_assert_eq!(ignore.skips(name.as_bytes()), want);
        }
    }

    #[test]
    fn bad_patterns_say_why() {
        for bad in ["", "*", "X-Spam:", "X Spam", "X-*-Flag", "Ünicode"] {
            let e = IgnoreHeaders::new([bad]).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
