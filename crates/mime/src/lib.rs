//! Takes a message apart for the scanners: every MIME part (through multiparts, forwarded
//! messages, uuencoded and BinHex blocks, and zip/tar/gzip archives) flattened into a list with
//! its path, declared type, file names, sniffed type, decoded size, decoded text and bytes.
//!
//! Every limit hit and every ambiguity is a [`Finding`], never a panic, a hang or an unbounded
//! allocation. Design choice: parsing is delegated to mail-parser, the same parser mail clients
//! in Rust use, and this crate only walks its result; a pre-scan refuses structures (deeply
//! nested forwarded messages, tens of thousands of parts) before the parser builds them.
#![deny(missing_docs)]

mod archive;
mod html;
mod inline;
pub mod sniff;

use std::time::{Duration, Instant};

use std::borrow::Cow;

use mail_parser::parsers::MessageStream;
use mail_parser::{HeaderValue, Message, MessageParser, MessagePart, MimeHeaders, PartType};
use serde::{Deserialize, Serialize};
pub use sniff::Kind;
use strainer_types::{Finding, headers};

/// Limits on what one message may cost to take apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// MIME parts (leaves and containers) per message.
    pub max_parts: usize,
    /// Nesting of multiparts and forwarded messages.
    pub max_depth: usize,
    /// Archives inside archives.
    pub max_archive_depth: usize,
    /// Archive members per message.
    pub max_members: usize,
    /// Decoded bytes per message (parts and archive members together).
    pub max_decoded_bytes: u64,
    /// Largest decompression ratio before an archive counts as a bomb.
    pub max_ratio: u64,
    /// Wall time for taking one message apart.
    #[serde(with = "humantime_serde")]
    pub max_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_parts: 1000,
            max_depth: 20,
            max_archive_depth: 4,
            max_members: 5000,
            max_decoded_bytes: 32 * 1024 * 1024,
            max_ratio: 200,
            max_time: Duration::from_secs(10),
        }
    }
}

/// Where a part came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A MIME part.
    Mime,
    /// A uuencoded block in a text part.
    Uuencode,
    /// A BinHex block in a text part.
    Binhex,
    /// A member of an archive.
    Archive,
}

/// One part of the message, flattened.
#[derive(Debug, Clone, Serialize)]
pub struct Part {
    /// Position: `1`, `2.1` as IMAP numbers parts (`0`, `2.0`: a multipart holding numbered
    /// parts), `2!a.zip!b.exe` for archive members, `1~1` for a uuencoded block in part 1.
    pub path: String,
    /// How the part was found.
    pub origin: Origin,
    /// Declared content type, lower case (`application/pdf`); empty for archive members.
    pub content_type: String,
    /// File names: Content-Disposition `filename` and Content-Type `name` (both when they differ),
    /// or the archive member's name.
    pub names: Vec<String>,
    /// The type its bytes show.
    pub sniffed: Option<Kind>,
    /// Decoded size in bytes.
    pub size: u64,
    /// An encrypted archive member.
    pub encrypted: bool,
    /// The part's MIME headers, decoded and unfolded (for mime_header_checks).
    #[serde(skip)]
    pub headers: Vec<(String, String)>,
    /// Decoded text of text parts (HTML reduced to text).
    #[serde(skip)]
    pub text: Option<String>,
    /// The decoded HTML source of HTML parts (links and markup for the Bayes tokenizer).
    #[serde(skip)]
    pub html: Option<String>,
    /// The part's transfer encoding or charset could not be decoded cleanly (decoded lossily).
    #[serde(skip)]
    pub sloppy: bool,
    /// Decoded bytes of leaf parts and archive members, within the decoded-bytes budget.
    #[serde(skip)]
    pub data: Option<Vec<u8>>,
}

/// A message taken apart.
#[derive(Debug, Clone, Default, Serialize)]
pub struct View {
    /// Top-level header fields, decoded (RFC 2047) and unfolded.
    #[serde(skip)]
    pub headers: Vec<(String, String)>,
    /// Every part in tree order.
    pub parts: Vec<Part>,
    /// Limits hit, ambiguities, archive problems.
    #[serde(skip)]
    pub findings: Vec<Finding>,
}

/// Decodes a raw header value: unfolds and decodes RFC 2047 encoded words.
pub fn decode_header_value(raw: &[u8]) -> String {
    // Most values have no '?' at all: a search for it beats building a substring finder per value.
    if !memchr::memchr_iter(b'?', raw).any(|i| i > 0 && raw[i - 1] == b'=') {
        return unfold_plain(raw);
    }
    decode_with_parser(raw)
}

/// The instant an RFC 5322 date (a `Date:` value, or what follows the `;` of a `Received:`)
/// names, in seconds since the Unix epoch; `None` when it is not a valid date.
pub fn parse_date(value: &str) -> Option<i64> {
    mail_parser::DateTime::parse_rfc822(value).filter(|d| d.is_valid()).map(|d| d.to_timestamp())
}

/// `bytes` as text, invalid UTF-8 replaced: `from_utf8_lossy`, but valid text (nearly all
/// header text) goes through the faster validation of `from_utf8` (the lossy walk over every
/// header line was 6% of taking a message apart).
fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// What mail-parser's unstructured parser makes of a value without encoded words, without
/// its token list and copies: each line trimmed of spaces, tabs and CR, the non-empty ones
/// joined by one space, up to a line break not followed by white space. Most header values
/// have no encoded word, and this was a tenth of taking a message apart.
fn unfold_plain(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    loop {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r');
        let start = line.iter().position(|b| !is_ws(b));
        if let Some(start) = start {
            let end = line.iter().rposition(|b| !is_ws(b)).map_or(line.len(), |e| e + 1);
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&lossy(&line[start..end]));
        }
        match next {
            Some(n) if matches!(n.first(), Some(b' ' | b'\t')) => rest = n,
            _ => break,
        }
    }
    let trimmed = out.trim();
    if trimmed.len() == out.len() { out } else { trimmed.to_string() }
}

fn decode_with_parser(raw: &[u8]) -> String {
    let mut v = raw.to_vec();
    v.extend_from_slice(b"\r\n");
    match MessageStream::new(&v).parse_unstructured() {
        HeaderValue::Text(t) => t.trim().to_string(),
        HeaderValue::TextList(l) => l.join(" "),
        _ => String::new(),
    }
}

struct Walk<'l> {
    limits: &'l Limits,
    start: Instant,
    budget: archive::Budget,
    view: View,
    mime_parts: usize,
    /// Boundaries of the multiparts we are inside, outermost first.
    boundaries: Vec<String>,
}

impl Walk<'_> {
    fn flag(&mut self, name: &str, detail: impl Into<String>, part: &str) {
        // One finding per kind and part is enough to act on.
        if self.view.findings.iter().any(|f| f.name == name && f.part.as_deref() == Some(part)) {
            return;
        }
        self.view.findings.push(Finding::new(name, detail).at(part));
    }

    fn once(&mut self, name: &str, detail: impl Into<String>) {
        if !self.view.findings.iter().any(|f| f.name == name) {
            self.view.findings.push(Finding::new(name, detail));
        }
    }

    fn out_of_time(&mut self) -> bool {
        if self.start.elapsed() > self.limits.max_time {
            self.once("MIME_LIMIT_TIME", format!("taking the message apart took over {:?}", self.limits.max_time));
            return true;
        }
        false
    }

    fn walk(&mut self, msg: &mut Message<'_>, id: usize, path: String, child_base: &str, depth: usize) {
        let Some(part) = msg.parts.get(id) else { return };
        if self.out_of_time() {
            return;
        }
        self.mime_parts += 1;
        if self.mime_parts > self.limits.max_parts {
            self.once(
                "MIME_LIMIT_PARTS",
                format!("more than {} MIME parts; the rest were not checked", self.limits.max_parts),
            );
            return;
        }
        if depth > self.limits.max_depth {
            self.once("MIME_LIMIT_DEPTH", format!("MIME nesting deeper than {}", self.limits.max_depth));
            return;
        }
        self.check_ambiguity(msg, part, &path);
        let content_type = part
            .content_type()
            .map(|ct| match ct.subtype() {
                Some(s) => format!("{}/{}", ct.ctype(), s).to_ascii_lowercase(),
                None => ct.ctype().to_ascii_lowercase(),
            })
            .unwrap_or_else(|| "text/plain".into());
        let names = part_names(part);
        let headers = part_headers(msg, part);
        let mut p = Part {
            path: path.clone(),
            origin: Origin::Mime,
            content_type,
            names,
            sniffed: None,
            size: 0,
            encrypted: false,
            headers,
            text: None,
            html: None,
            sloppy: false,
            data: None,
        };
        if matches!(part.body, PartType::Multipart(_)) {
            self.check_boundary(msg, part, &p.path);
        }
        let problem = part.is_encoding_problem;
        // The view takes the decoded body out of the parsed message instead of copying it: a
        // large attachment is held once, not twice (issue #7's memory profile).
        let Some(slot) = msg.parts.get_mut(id) else { return };
        let body = std::mem::replace(&mut slot.body, PartType::Text(Cow::Borrowed("")));
        match body {
            PartType::Multipart(children) => {
                self.view.parts.push(p);
                for (i, child) in children.iter().enumerate() {
                    let cp =
                        if child_base.is_empty() { format!("{}", i + 1) } else { format!("{child_base}.{}", i + 1) };
                    self.walk(msg, *child as usize, cp.clone(), &cp, depth + 1);
                }
            }
            PartType::Message(mut inner) => {
                p.size = inner.raw_message.len() as u64;
                let base = p.path.clone();
                self.view.parts.push(p);
                let inner_root = if matches!(inner.parts.first().map(|r| &r.body), Some(PartType::Multipart(_))) {
                    format!("{base}.0")
                } else {
                    format!("{base}.1")
                };
                // The forwarded message's own headers count as a nesting level.
                self.walk(&mut inner, 0, inner_root, &base, depth + 1);
            }
            PartType::Text(t) => self.text_leaf(p, t.into_owned(), problem),
            PartType::Html(h) => {
                let text = html::html_to_text(&h);
                p.html = Some(h.into_owned());
                self.text_leaf(p, text, problem);
            }
            PartType::Binary(b) | PartType::InlineBinary(b) => {
                if problem {
                    self.flag("MIME_UNDECIPHERABLE", "part could not be decoded", &p.path);
                }
                p.size = b.len() as u64;
                p.sniffed = sniff::sniff(&b);
                let take = b.len().min(usize::try_from(self.budget.bytes_left).unwrap_or(usize::MAX));
                if take < b.len() {
                    self.flag("MIME_LIMIT_BYTES", "decoded size over the limit; part not fully checked", &p.path);
                }
                self.budget.bytes_left -= take as u64;
                let kind = p.sniffed;
                let ppath = p.path.clone();
                let data = if take == b.len() { b.into_owned() } else { b[..take].to_vec() };
                if let Some(k) = kind.filter(|k| k.is_listable_archive()) {
                    self.expand(k, &data, &ppath, 1);
                } else if kind.is_some_and(Kind::is_opaque_archive) {
                    self.flag(
                        "ARCHIVE_UNSUPPORTED",
                        format!("{} archive not opened", kind.map_or("", Kind::name)),
                        &ppath,
                    );
                }
                p.data = Some(data);
                // Keep tree order: the archive's members follow the part.
                let at = self
                    .view
                    .parts
                    .iter()
                    .position(|q| q.path.starts_with(&format!("{ppath}!")))
                    .unwrap_or(self.view.parts.len());
                self.view.parts.insert(at, p);
            }
        }
    }

    fn text_leaf(&mut self, mut p: Part, text: String, problem: bool) {
        // A text part with an unknown charset or sloppy encoding is still scanned as decoded
        // (lossily); flagging it would tag about 1% of legitimate mail in the public corpus.
        p.sloppy = problem;
        p.size = text.len() as u64;
        let inline = inline::find(&text, usize::try_from(self.budget.bytes_left).unwrap_or(usize::MAX));
        let base = p.path.clone();
        p.text = Some(text);
        self.view.parts.push(p);
        for (i, found) in inline.into_iter().enumerate() {
            self.budget.bytes_left = self.budget.bytes_left.saturating_sub(found.data.len() as u64);
            let sniffed = sniff::sniff(&found.data);
            let path = format!("{base}~{}", i + 1);
            self.view.parts.push(Part {
                path: path.clone(),
                origin: if found.kind == "binhex" { Origin::Binhex } else { Origin::Uuencode },
                content_type: String::new(),
                names: vec![found.name],
                sniffed,
                size: found.data.len() as u64,
                encrypted: false,
                headers: Vec::new(),
                text: None,
                html: None,
                sloppy: false,
                data: Some(found.data.clone()),
            });
            if let Some(k) = sniffed.filter(|k| k.is_listable_archive()) {
                self.expand(k, &found.data, &path, 1);
            }
        }
    }

    fn expand(&mut self, kind: Kind, data: &[u8], path: &str, level: usize) {
        if level > self.limits.max_archive_depth {
            self.flag(
                "ARCHIVE_LIMIT_DEPTH",
                format!("archives nested deeper than {}", self.limits.max_archive_depth),
                path,
            );
            return;
        }
        if self.out_of_time() {
            return;
        }
        let listing = match kind {
            Kind::Zip => archive::zip(data, &mut self.budget),
            Kind::Tar => archive::tar(data, &mut self.budget),
            Kind::Gzip => archive::gzip(data, &mut self.budget),
            _ => return,
        };
        for (name, detail) in listing.issues {
            self.flag(name, detail, path);
        }
        for m in listing.members {
            let mpath = format!("{path}!{}", m.name);
            let sniffed = m.data.as_deref().and_then(sniff::sniff);
            let size = m.data.as_ref().map_or(m.size, |d| d.len() as u64).max(m.size);
            let nested = sniffed.filter(|k| k.is_listable_archive());
            let idx = self.view.parts.len();
            self.view.parts.push(Part {
                path: mpath.clone(),
                origin: Origin::Archive,
                content_type: String::new(),
                names: vec![m.name],
                sniffed,
                size,
                encrypted: m.encrypted,
                headers: Vec::new(),
                text: None,
                html: None,
                sloppy: false,
                data: m.data,
            });
            if let Some(k) = nested {
                // Lend the member's bytes to the nested listing rather than copying them.
                let d = self.view.parts[idx].data.take();
                if let Some(d) = &d {
                    self.expand(k, d, &mpath, level + 1);
                }
                self.view.parts[idx].data = d;
            }
        }
    }

    fn check_ambiguity(&mut self, msg: &Message<'_>, part: &MessagePart<'_>, path: &str) {
        let _ = msg;
        for name in ["content-type", "content-transfer-encoding", "content-disposition"] {
            let n = part.headers.iter().filter(|h| h.name().eq_ignore_ascii_case(name)).count();
            if n > 1 {
                self.flag("MIME_AMBIGUOUS", format!("{n} {name} headers in one part"), path);
            }
        }
    }

    /// Checks a multipart's boundary and returns it (empty when missing).
    fn check_boundary(&mut self, msg: &Message<'_>, part: &MessagePart<'_>, path: &str) -> String {
        let Some(boundary) = part.content_type().and_then(|ct| ct.attribute("boundary")) else {
            self.flag("MIME_AMBIGUOUS", "multipart without a boundary", path);
            return String::new();
        };
        // A boundary that starts with an enclosing one (or the reverse) makes where parts end a
        // matter of parser taste: the classic way to hide a part from one parser and not another.
        if self
            .boundaries
            .iter()
            .any(|b| !b.is_empty() && (boundary.starts_with(b.as_str()) || b.starts_with(boundary)))
        {
            self.flag("MIME_AMBIGUOUS", "nested multipart reuses an enclosing boundary", path);
        }
        let raw = msg.raw_message.as_ref();
        let body = raw.get(part.offset_body as usize..).unwrap_or_default();
        let close = format!("--{boundary}--");
        if memchr::memmem::find(body, close.as_bytes()).is_none() {
            // Common in truncated legitimate mail (0.8% of the public corpus), so it has its own name.
            self.flag("MIME_UNCLOSED_BOUNDARY", "multipart without its closing boundary", path);
        }
        boundary.to_string()
    }
}

fn part_names(part: &MessagePart<'_>) -> Vec<String> {
    let mut names = Vec::new();
    let from_cd = part.content_disposition().and_then(|cd| cd.attribute("filename"));
    let from_ct = part.content_type().and_then(|ct| ct.attribute("name"));
    for n in [from_cd, from_ct].into_iter().flatten() {
        if !names.iter().any(|x: &String| x == n) {
            names.push(n.to_string());
        }
    }
    names
}

fn part_headers(msg: &Message<'_>, part: &MessagePart<'_>) -> Vec<(String, String)> {
    let raw = msg.raw_message.as_ref();
    part.headers
        .iter()
        .filter(|h| {
            let n = h.name();
            n.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("content-")) || n.eq_ignore_ascii_case("mime-version")
        })
        .map(|h| {
            let v = raw.get(h.offset_start() as usize..h.offset_end() as usize).unwrap_or_default();
            (h.name().to_string(), decode_header_value(v))
        })
        .collect()
}

/// The lines of `raw` (without their LF), found with a vectorised search: a byte-by-byte split
/// over every message, twice, showed in the profile.
fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut ends = memchr::memchr_iter(b'\n', raw);
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        match ends.next() {
            Some(e) => {
                let line = &raw[start..e];
                start = e + 1;
                Some(line)
            }
            None => {
                done = true;
                Some(&raw[start..])
            }
        }
    })
}

/// Declared boundaries where one is a prefix of another: parsers disagree on where such parts end.
fn confusable_boundaries(raw: &[u8]) -> Option<(String, String)> {
    let mut seen: Vec<String> = Vec::new();
    for line in lines(raw) {
        let header_like = line.first().is_some_and(|b| *b == b' ' || *b == b'\t')
            || line.get(..13).is_some_and(|p| p.eq_ignore_ascii_case(b"content-type:"));
        // Most header-like lines are folded Received lines without '=': no copy, no search.
        if !header_like || memchr::memchr(b'=', line).is_none() {
            continue;
        }
        let lower = line.to_ascii_lowercase();
        let Some(at) = memchr::memmem::find(&lower, b"boundary=") else { continue };
        let rest = &line[at + 9..];
        let value: Vec<u8> = match rest.first() {
            Some(b'"') => rest[1..].iter().take_while(|&&b| b != b'"').copied().collect(),
            _ => rest.iter().take_while(|&&b| !b" ;\r\t".contains(&b)).copied().collect(),
        };
        let value = String::from_utf8_lossy(&value).into_owned();
        if value.is_empty() || seen.contains(&value) {
            continue;
        }
        if let Some(other) = seen.iter().find(|o| value.starts_with(o.as_str()) || o.starts_with(value.as_str())) {
            return Some((other.clone(), value));
        }
        if seen.len() < 1000 {
            seen.push(value);
        }
    }
    None
}

/// Cheap structural counts taken before parsing: lines that start a Content-Type header, and
/// those that declare a forwarded message.
fn prescan(raw: &[u8]) -> (usize, usize) {
    let mut ct = 0;
    let mut msg = 0;
    for line in lines(raw) {
        if line.len() >= 13 && line[..13].eq_ignore_ascii_case(b"content-type:") {
            ct += 1;
            let rest = &line[13..];
            if memchr::memmem::find(&rest.to_ascii_lowercase(), b"message/").is_some() {
                msg += 1;
            }
        }
    }
    (ct, msg)
}

/// Takes `raw` (a whole message, CRLF) apart within `limits`.
pub fn analyze(raw: &[u8], limits: &Limits) -> View {
    let mut w = Walk {
        limits,
        start: Instant::now(),
        budget: archive::Budget {
            bytes_left: limits.max_decoded_bytes,
            members_left: limits.max_members,
            max_ratio: limits.max_ratio,
        },
        view: View::default(),
        mime_parts: 0,
        boundaries: Vec::new(),
    };
    w.view.headers = headers::fields(raw)
        .take(limits.max_parts.max(100))
        .map(|f| (lossy(f.name).into_owned(), decode_header_value(f.value)))
        .collect();
    let (ct, nested) = prescan(raw);
    if nested > limits.max_depth {
        w.once("MIME_LIMIT_DEPTH", format!("{nested} forwarded messages; message not taken apart"));
        return w.view;
    }
    if ct > limits.max_parts.saturating_mul(2) {
        w.once("MIME_LIMIT_PARTS", format!("{ct} Content-Type headers; message not taken apart"));
        return w.view;
    }
    if let Some((a, b)) = confusable_boundaries(raw) {
        w.once("MIME_AMBIGUOUS", format!("boundary {b:?} overlaps boundary {a:?}"));
    }
    // Only the MIME headers are parsed into structure: the view decodes top-level fields itself,
    // and parsing Received, addresses and dates for nothing cost ~10% of the walk.
    let parser = MessageParser::new().with_mime_headers().default_header_ignore();
    let Some(mut msg) = parser.parse(raw) else {
        w.once("MIME_UNDECIPHERABLE", "not a parseable message");
        return w.view;
    };
    let root = if matches!(msg.parts.first().map(|r| &r.body), Some(PartType::Multipart(_))) { "0" } else { "1" };
    w.walk(&mut msg, 0, root.to_string(), "", 0);
    w.view
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_to_the_instant_they_name() {
        assert_eq!(parse_date("Thu, 1 Jan 1970 00:00:00 +0000"), Some(0));
        assert_eq!(parse_date(" Mon, 15 Jul 2002 12:00:00 +0200 (CEST)"), Some(1_026_727_200));
        assert_eq!(parse_date("15 Jul 2002 10:00:00 GMT"), Some(1_026_727_200));
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(parse_date(""), None);
    }

    #[test]
    fn decodes_encoded_words() {
        assert_eq!(decode_header_value(b" =?utf-8?q?caf=C3=A9?= ok"), "café ok");
        assert_eq!(decode_header_value(b" plain\r\n\tfolded"), "plain folded");
    }

    proptest::proptest! {
        #[test]
        fn lines_split_like_slice_split(raw in proptest::collection::vec(proptest::sample::select(vec![b'a', b'\n', b'\r']), 0..30)) {
            let want: Vec<&[u8]> = raw.split(|&b| b == b'\n').collect();
            proptest::prop_assert_eq!(lines(&raw).collect::<Vec<_>>(), want);
        }

        /// The fast path for values without encoded words says what mail-parser says.
        #[test]
        fn plain_unfolding_matches_the_parser(raw in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::sample::select(vec![b' ', b'\t', b'\r', b'\n', b'=', b'?', b'a', b'Z', 0xc3, 0xa9, 0xff, 0x0b]),
                proptest::num::u8::ANY,
            ],
            0..40,
        )) {
            proptest::prop_assert_eq!(decode_header_value(&raw), decode_with_parser(&raw));
        }
    }
}
