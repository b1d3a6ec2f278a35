use std::fmt;

/// An RFC 3463 enhanced status code such as `2.0.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enhanced(pub u8, pub u16, pub u16);

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Whether a reply accepts, defers or refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyClass {
    /// 2xx or 3xx.
    Positive,
    /// 4xx: try again later.
    Transient,
    /// 5xx: do not try again.
    Permanent,
}

/// An SMTP reply: code, optional enhanced status code, one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The enhanced status code, when the reply carries one.
    pub enhanced: Option<Enhanced>,
    /// Text lines, without code or status code; never empty.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, enhanced: Enhanced, text: impl Into<String>) -> Self {
        Reply { code, enhanced: Some(enhanced), lines: vec![text.into()] }
    }

    /// A one-line reply without an enhanced status code (greetings, 354).
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Reply { code, enhanced: None, lines: vec![text.into()] }
    }

    /// The generic temporary failure every internal error maps to.
    pub fn tempfail(text: impl Into<String>) -> Self {
        Reply::new(451, Enhanced(4, 3, 0), text)
    }

    /// Whether this reply accepts, defers or refuses.
    pub fn class(&self) -> ReplyClass {
        match self.code {
            200..=399 => ReplyClass::Positive,
            400..=499 => ReplyClass::Transient,
            _ => ReplyClass::Permanent,
        }
    }

    /// True for 2xx and 3xx.
    pub fn is_positive(&self) -> bool {
        self.class() == ReplyClass::Positive
    }

    /// The text lines joined with a space, for logs and for quoting in other replies.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// The reply as one line for logs: `250 2.0.0 text`.
    pub fn one_line(&self) -> String {
        match self.enhanced {
            Some(e) => format!("{} {} {}", self.code, e, self.text()),
            None => format!("{} {}", self.code, self.text()),
        }
    }

    /// Parses reply lines as read from a server (each without CRLF), taking the enhanced
    /// status code from the first line when present; `None` when the lines are not a reply.
    pub fn parse(lines: &[String]) -> Option<Reply> {
        let first = lines.first()?;
        let code = parse_code(first)?;
        let mut enhanced = None;
        let mut out = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            if parse_code(line)? != code {
                return None;
            }
            let mut text = line.get(4..).unwrap_or("");
            if let Some((e, rest)) = split_enhanced(text, code) {
                if i == 0 {
                    enhanced = Some(e);
                }
                if enhanced == Some(e) {
                    text = rest;
                }
            }
            out.push(text.to_string());
        }
        Some(Reply { code, enhanced, lines: out })
    }

    /// Writes the reply in wire form, `NNN-` for all but the last line, CRLF-terminated.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let n = self.lines.len().max(1);
        for i in 0..n {
            let line = self.lines.get(i).map(String::as_str).unwrap_or("");
            let sep = if i + 1 == n { ' ' } else { '-' };
            let mut s = format!("{}{}", self.code, sep);
            if let Some(e) = self.enhanced {
                s.push_str(&e.to_string());
                s.push(' ');
            }
            // Never let text from elsewhere break the reply framing.
            s.extend(line.chars().map(|c| if c.is_control() { ' ' } else { c }));
            s.push_str("\r\n");
            out.extend_from_slice(s.as_bytes());
        }
    }

    /// The reply in wire form.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.one_line())
    }
}

fn parse_code(line: &str) -> Option<u16> {
    let b = line.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    if b.len() > 3 && b[3] != b' ' && b[3] != b'-' {
        return None;
    }
    let code: u16 = line[..3].parse().ok()?;
    (200..600).contains(&code).then_some(code)
}

fn split_enhanced(text: &str, code: u16) -> Option<(Enhanced, &str)> {
    let (head, rest) = match text.split_once(' ') {
        Some((h, r)) => (h, r),
        None => (text, ""),
    };
    let mut it = head.split('.');
    let class: u8 = it.next()?.parse().ok()?;
    let subject: u16 = it.next()?.parse().ok()?;
    let detail: u16 = it.next()?.parse().ok()?;
    if it.next().is_some() || u16::from(class) != code / 100 {
        return None;
    }
    Some((Enhanced(class, subject, detail), rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn multiline_wire_form() {
        let r = Reply { code: 250, enhanced: None, lines: vec!["mx".into(), "PIPELINING".into(), "SIZE 10".into()] };
        assert_eq!(r.to_wire(), b"250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
    }

    #[test]
    fn parses_enhanced_code() {
        let r = Reply::parse(&["250 2.0.0 Ok: queued as ABC".into()]).unwrap();
        assert_eq!(r.enhanced, Some(Enhanced(2, 0, 0)));
        assert_eq!(r.text(), "Ok: queued as ABC");
        assert!(Reply::parse(&["hello".into()]).is_none());
        assert!(Reply::parse(&["250-a".into(), "251 b".into()]).is_none());
        // A status code whose class does not match the reply code is text.
        let r = Reply::parse(&["550 2.0.0 odd".into()]).unwrap();
        assert_eq!(r.enhanced, None);
    }

    #[test]
    fn control_characters_cannot_break_framing() {
        let r = Reply::new(550, Enhanced(5, 7, 1), "a\r\n250 injected");
        assert_eq!(r.to_wire(), b"550 5.7.1 a  250 injected\r\n");
    }

    proptest! {
        #[test]
        fn wire_form_parses_back(code in 200u16..600, lines in proptest::collection::vec("[ -~]{0,40}", 1..5)) {
            let r = Reply { code, enhanced: None, lines: lines.clone() };
            let wire = String::from_utf8(r.to_wire()).unwrap();
            let read: Vec<String> = wire.split("\r\n").filter(|l| !l.is_empty()).map(String::from).collect();
            let back = Reply::parse(&read).unwrap();
            prop_assert_eq!(back.code, code);
            prop_assert_eq!(back.lines.len(), lines.len());
        }
    }
}
