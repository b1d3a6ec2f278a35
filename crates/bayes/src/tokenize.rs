//! Turns a message (the MIME view) into the set of features the classifier counts.
//!
//! Every feature is a short string with a prefix saying where it came from (`s:` Subject words,
//! `u:` URL hosts, `H:` header names present, no prefix for body words), hashed with xxh3-64 so
//! the store holds 8-byte keys. Header features, markup and word pairs were each measured on the
//! SpamAssassin corpus and kept because they improved it, and so were the normalisations, each
//! against its absence over six training orders (benches/README.md, "Bayes accuracy"):
//!
//! - body words lower-cased (as written instead: FN at 0.1% FP, median of the orders, 1.95 ->
//!   2.22 on half fold 1, 2.58 -> 2.69 on fold 2, 4.44 -> 7.63 on the time split);
//! - words of 3..=24 bytes, longer ones reduced to a skip token keeping the first 7 characters
//!   and the length in tens, as SpamAssassin does (2 or 4 bytes at least, 16 or 32 at most, were
//!   each worse on one half fold or the other);
//! - digits kept in short tokens, runs of more than five reduced to their length (kept whole: no
//!   better on the half split, a little better on the time split, but every phone and order
//!   number a feature of its own in a store that must stay bounded);
//! - words in any script kept as they are (dropping those with non-ASCII letters: time split
//!   4.44 -> 4.54, 1-AUC 0.066 -> 0.072);
//! - header fields: the names present (`H:`), words of Subject/From/To/Reply-To/Content-Type/
//!   X-Mailer/User-Agent and a few others under their own prefix, the Received chain reduced to
//!   the domains and /16 networks it names;
//! - the `Date:` field against the nearest time a `Received:` field names, in SpamAssassin's
//!   bands (hours ahead, days, months or years behind, missing, not a date: `ds:`), which spamware
//!   gets wrong (time split over twenty training orders: FN at 0.1% FP 4.66 -> 4.32 %, better
//!   in 19; 1-AUC 0.080 -> 0.073 %, better in all 20; the half split unchanged);
//! - where the message entered mail (the lowest `Received:` field an MTA format can be read
//!   from): whether its client's HELO was an IP literal or a bare word, had no reverse DNS, or
//!   named the same domain as its reverse DNS (`helo:`). Legitimate bulk mail comes from
//!   configured servers, spamware does not (hard ham: 68% `same`; spam: 10%). Twenty orders: FN
//!   at 0.1% FP on half fold 2 2.51 -> 2.23 % (better in 16), time split 4.32 -> 4.09 (16),
//!   fold 1 unchanged (1.46 -> 1.43), 1-AUC better on all three splits in all 20. Every hop's
//!   band instead of the lowest one's was worse on the time split (4.09 -> 5.14): the hops
//!   above are the receiving site's own;
//! - the order of the header fields, as pairs of consecutive names (`ho:from>to`, `ho:>received`
//!   for the first): each mail program and list manager writes its fields in an order of its own,
//!   which spamware imitates badly. Twenty orders: FN at 0.1% FP on half fold 2 2.23 -> 1.85 %
//!   (better in 18), fold 1 1.43 -> 1.38, 1-AUC better in all 20 on fold 2 and the time split
//!   (0.069 -> 0.057 %), whose FN at 0.1% FP moved 4.09 -> 4.39 (better in 5, within its spread:
//!   standard error 0.20). Runs of one name count once. Triples of names as well as pairs were
//!   better still on fold 2 (1.47) but worse on fold 1 (1.50) and the time split (5.61): too
//!   close to one sender's fingerprint; the whole sequence as one feature did nothing;
//! - how `From:` is written, with the words and addresses taken out (`fsh:"" <x@x>`, `fsh:x@x`,
//!   `fsh:x x <x@x>`): mail programs write a name and an address; spamware often a bare address,
//!   an empty name or an address in brackets alone (bare address: ham 2.8 %, spam 18 %; a name
//!   of two unquoted words: ham 17 %, spam 3 %). Twenty orders: time split FN at 0.1% FP 4.39 ->
//!   4.20 % (better in 15), 1-AUC better in all 20; fold 1 1.38 -> 1.35, fold 2 1.85 -> 1.83;
//!   the same for `To:` was worse on every split, and so was the shape of `Date:`;
//! - HTML: the hosts of every link and image (also from plain-text URLs), and which tags are used
//!   (`<img>`, `<font>`, `<table>`, scripts, forms, comments) — the markup that text reduction hides;
//! - MIME structure: the content types and file-name extensions of the parts;
//! - adjacent word pairs of the body and Subject (bigrams), which carry phrases single words miss.

use std::collections::HashMap;

use crate::ignore::IgnoreHeaders;
use strainer_mime::View;
use xxhash_rust::xxh3::xxh3_64;

/// Tokenizer settings (each can be turned off to measure what it brings).
#[derive(Debug, Clone)]
pub struct Options {
    /// Shortest body word kept, in bytes.
    pub min_len: usize,
    /// Longest body word kept whole, in bytes.
    pub max_len: usize,
    /// Adjacent word pairs as features.
    pub bigrams: bool,
    /// Header tokens.
    pub headers: bool,
    /// URL hosts and markup signals.
    pub markup: bool,
    /// Most body bytes tokenized per text part (the rest is ignored).
    pub max_text: usize,
    /// Received chain: 0 nothing, 1 networks only, 2 networks and domains.
    pub received: u8,
    /// Recipient (To/Cc) address domains as features.
    pub recipients: bool,
    /// All-capitals words get a marker feature of their own.
    pub caps: bool,
    /// Words of every other header field too, under `name:`.
    pub all_headers: bool,
    /// Words lower-cased (off: kept as written).
    pub lowercase: bool,
    /// Runs of more than five digits (with `.` and `,`) reduced to their length (off: kept).
    pub numbers: bool,
    /// Words with letters beyond ASCII kept (off: dropped).
    pub non_ascii: bool,
    /// How far the `Date:` field lies from the nearest time the `Received:` fields name, in bands.
    pub date_skew: bool,
    /// What the lowest parsable `Received:` field (where the message entered mail) says of the
    /// client's HELO and reverse DNS.
    pub origin_helo: bool,
    /// Pairs of consecutive header field names (the fields' order).
    pub header_order: bool,
    /// How `From:` is written (its shape, words and addresses taken out).
    pub from_shape: bool,
    /// Header fields left out (strainer's own always; see [`crate::ignore`]).
    pub ignore: IgnoreHeaders,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            min_len: 3,
            max_len: 24,
            bigrams: true,
            headers: true,
            markup: true,
            max_text: 256 * 1024,
            received: 2,
            recipients: true,
            caps: false,
            all_headers: false,
            lowercase: true,
            numbers: true,
            non_ascii: true,
            date_skew: true,
            origin_helo: true,
            header_order: true,
            from_shape: true,
            ignore: IgnoreHeaders::default(),
        }
    }
}

/// The features of one message: distinct, sorted hashes, and their names when asked for.
#[derive(Debug, Default, Clone)]
pub struct Tokens {
    /// Distinct feature hashes, sorted.
    pub hashes: Vec<u64>,
    /// Hash -> feature text, filled only when explaining.
    pub names: Option<HashMap<u64, String>>,
}

impl Tokens {
    /// The text of a feature, when names were kept.
    pub fn name(&self, hash: u64) -> Option<&str> {
        self.names.as_ref().and_then(|n| n.get(&hash)).map(String::as_str)
    }
}

/// Header fields whose words are features, with the prefix they get.
const WORD_HEADERS: &[(&str, &str)] = &[
    ("subject", "s:"),
    ("from", "f:"),
    ("to", "t:"),
    ("cc", "t:"),
    ("reply-to", "r:"),
    ("return-path", "rp:"),
    ("sender", "f:"),
    ("content-type", "ct:"),
    ("x-mailer", "xm:"),
    ("user-agent", "xm:"),
    ("x-mimeole", "xm:"),
    ("organization", "o:"),
    ("list-id", "l:"),
    ("precedence", "p:"),
    ("x-priority", "xp:"),
    ("x-msmail-priority", "xp:"),
    ("importance", "xp:"),
    ("content-transfer-encoding", "cte:"),
];

/// Tokenizes a message taken apart by `strainer_mime::analyze`.
pub fn tokenize(view: &View, opts: &Options, explain: bool) -> Tokens {
    let mut t = Tokenizer { opts, buf: String::with_capacity(64), hashes: Vec::with_capacity(512), names: None };
    if explain {
        t.names = Some(HashMap::new());
    }
    if opts.headers {
        t.headers(view);
    }
    for part in &view.parts {
        if !part.content_type.is_empty() {
            t.emit2("mp:", &part.content_type);
        }
        for name in &part.names {
            if let Some((_, ext)) = name.rsplit_once('.')
                && ext.len() <= 8
            {
                t.emit2("ext:", &ext.to_ascii_lowercase());
            }
        }
        if let Some(k) = part.sniffed {
            t.emit2("sn:", k.name());
        }
        if let Some(text) = &part.text {
            let text = clip(text, opts.max_text);
            t.words("", text);
            if opts.markup {
                t.text_urls(text);
            }
        }
        if let (true, Some(html)) = (opts.markup, &part.html) {
            t.markup(clip(html, opts.max_text));
        }
    }
    let mut hashes = t.hashes;
    sort_hashes(&mut hashes);
    hashes.dedup();
    Tokens { hashes, names: t.names }
}

/// How far the `Date:` field lies from the nearest time a `Received:` field (`received`, top
/// first) names after its `;`, in SpamAssassin's bands (`DATE_IN_PAST_96_XX`, `DATE_IN_FUTURE_03_06`
/// and so on), or that it is missing or not a date. Spamware sets the date hours ahead or years
/// behind; a mail client's clock is near the first hop. The nearest hop, not the top one, so a
/// message held in a queue or fetched days later is still near. `None` when no hop has a date.
fn date_skew(date: Option<&str>, received: &[&str]) -> Option<&'static str> {
    let Some(date) = date else { return Some("none") };
    let Some(date) = strainer_mime::parse_date(date) else { return Some("bad") };
    // From the first hop, the likeliest to be near; within three hours the band is settled.
    let mut nearest: Option<i64> = None;
    let times =
        received.iter().rev().filter_map(|v| v.rsplit_once(';').and_then(|(_, t)| strainer_mime::parse_date(t)));
    for t in times {
        let d = date - t;
        if nearest.is_none_or(|n| d.unsigned_abs() < n.unsigned_abs()) {
            nearest = Some(d);
        }
        if d.unsigned_abs() < 3 * 3600 {
            break;
        }
    }
    let nearest = nearest?;
    Some(match nearest / 3600 {
        h if h >= 48 => "future48",
        h if h >= 12 => "future12",
        h if h >= 3 => "future3",
        h if h > -96 => "near",
        h if h > -24 * 30 => "past96",
        h if h > -24 * 365 => "past30d",
        _ => "past1y",
    })
}

/// Appends the shape of an address field to `buf`: quotes and the separators of addresses kept,
/// quoted text dropped, every other run of characters one `x`, runs of spaces one space (`"Ann
/// Lee" <ann@example.org>` -> `"" <x@x>`). At most 200 characters of `value` are read.
fn push_shape(buf: &mut String, value: &str) {
    let mut quoted = false;
    let mut last = '\0';
    for c in value.trim().chars().take(200) {
        let k = match c {
            '"' => {
                quoted = !quoted;
                '"'
            }
            _ if quoted => continue,
            '<' | '>' | '@' | ',' | '(' | ')' | ':' | ';' | ' ' => c,
            _ => 'x',
        };
        if k == last && matches!(k, 'x' | ' ') {
            continue;
        }
        buf.push(k);
        last = k;
    }
}

/// What a `Received:` field says of the client it records: the name it gave in HELO is an IP
/// literal (`literal`) or a bare word (`bare`), it had no reverse DNS (`nordns`), the relay
/// doubted it (`forged`), or its HELO names the same domain as its reverse DNS (`same`) or
/// another (`differs`). Reads Postfix's and sendmail's `from HELO (RDNS [IP])`, Exim's `from
/// RDNS ([IP] helo=HELO)` and qmail's `from RDNS (HELO name)`; `None` for anything else.
fn helo_band(value: &str) -> Option<&'static str> {
    let rest = value.trim_start().strip_prefix("from ")?;
    let first = rest.split_whitespace().next()?;
    let open = rest.find('(')?;
    let close = open + rest[open..].find(')')?;
    let inside = &rest[open + 1..close];
    if inside.contains("forged") {
        return Some("forged");
    }
    let (helo, rdns) = if let Some(i) = inside.find("helo=") {
        (inside[i + 5..].split_whitespace().next().unwrap_or(""), if first.starts_with('[') { "" } else { first })
    } else if let Some(h) = inside.strip_prefix("HELO ") {
        (h.trim(), if first == "unknown" { "" } else { first })
    } else {
        let (rdns, ip) = inside.split_once('[')?;
        if !ip.contains(']') {
            return None;
        }
        (first, rdns.trim())
    };
    let helo = helo.trim_matches(|c| c == '[' || c == ']');
    if helo.is_empty() {
        return None;
    }
    if helo.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Some("literal");
    }
    if rdns.is_empty() || rdns == "unknown" {
        return Some("nordns");
    }
    if !helo.contains('.') {
        return Some("bare");
    }
    if last_labels(helo, 2).eq_ignore_ascii_case(last_labels(rdns, 2)) { Some("same") } else { Some("differs") }
}

/// Sorts feature hashes, which are spread evenly: scattered into about two per bucket by
/// their top bits, the result is sorted but within buckets, which an insertion pass finishes.
/// A comparison sort of a message's 570 hashes was a tenth of tokenizing.
fn sort_hashes(v: &mut Vec<u64>) {
    let n = v.len();
    if n < 64 {
        v.sort_unstable();
        return;
    }
    let bits = (usize::BITS - (n / 2).leading_zeros()).min(16);
    let shift = 64 - bits;
    let mut starts = vec![0usize; (1 << bits) + 1];
    for &h in v.iter() {
        starts[(h >> shift) as usize + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut out = vec![0u64; n];
    for &h in v.iter() {
        let b = (h >> shift) as usize;
        out[starts[b]] = h;
        starts[b] += 1;
    }
    for i in 1..n {
        let h = out[i];
        let mut j = i;
        while j > 0 && out[j - 1] > h {
            out[j] = out[j - 1];
            j -= 1;
        }
        out[j] = h;
    }
    *v = out;
}

fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Tokenizer<'a> {
    opts: &'a Options,
    buf: String,
    hashes: Vec<u64>,
    names: Option<HashMap<u64, String>>,
}

impl Tokenizer<'_> {
    /// Emits what is in `buf`.
    fn flush(&mut self) -> u64 {
        let h = xxh3_64(self.buf.as_bytes());
        self.hashes.push(h);
        if let Some(n) = &mut self.names {
            n.entry(h).or_insert_with(|| self.buf.clone());
        }
        h
    }

    fn emit2(&mut self, prefix: &str, s: &str) {
        self.buf.clear();
        self.buf.push_str(prefix);
        self.buf.push_str(s);
        self.flush();
    }

    fn headers(&mut self, view: &View) {
        let mut date = None;
        let mut received: Vec<&str> = Vec::new();
        // One lower-cased copy of each name, in a buffer kept across fields (an allocation per
        // field showed in the profile).
        let mut lname = String::with_capacity(32);
        // The name before this one, for the order's pairs (empty before the first field).
        let mut prev = String::with_capacity(32);
        for (name, value) in &view.headers {
            if self.opts.ignore.skips(name.as_bytes()) {
                continue;
            }
            lname.clear();
            lname.push_str(name);
            lname.make_ascii_lowercase();
            let lname = lname.as_str();
            self.emit2("H:", lname);
            if self.opts.header_order && prev != lname {
                self.buf.clear();
                self.buf.push_str("ho:");
                self.buf.push_str(&prev);
                self.buf.push('>');
                self.buf.push_str(lname);
                self.flush();
                prev.clear();
                prev.push_str(lname);
            }
            if lname == "received" {
                received.push(value);
                self.received(value);
                continue;
            }
            if lname == "date" && date.is_none() {
                date = Some(value.as_str());
            }
            if lname == "message-id" {
                if let Some((_, dom)) = value.trim().trim_end_matches('>').rsplit_once('@') {
                    self.emit2("mid:", &dom.to_ascii_lowercase());
                } else {
                    self.emit2("mid:", "none");
                }
                continue;
            }
            if lname == "from" && self.opts.from_shape {
                self.buf.clear();
                self.buf.push_str("fsh:");
                push_shape(&mut self.buf, value);
                self.flush();
            }
            if let Some((_, prefix)) = WORD_HEADERS.iter().find(|(n, _)| *n == lname) {
                let value = clip(value, 4096);
                self.words(prefix, value);
                if matches!(*prefix, "f:" | "r:" | "rp:") || (*prefix == "t:" && self.opts.recipients) {
                    self.addresses(prefix, value);
                }
            } else if self.opts.all_headers && !matches!(lname, "date" | "delivered-to" | "x-original-to") {
                let prefix = format!("{lname}:");
                self.words(&prefix, clip(value, 1024));
            }
        }
        self.emit2("rcvd#", &received.len().min(10).to_string());
        if self.opts.date_skew
            && let Some(band) = date_skew(date, &received)
        {
            self.emit2("ds:", band);
        }
        if self.opts.origin_helo
            && let Some(band) = received.iter().rev().find_map(|v| helo_band(v))
        {
            self.emit2("helo:", band);
        }
    }

    /// The Received chain reduced to what generalises: domains (last two labels) and /16 networks.
    fn received(&mut self, value: &str) {
        if self.opts.received == 0 {
            return;
        }
        for word in value.split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | ';' | '<' | '>')) {
            let w = word.trim_matches(|c: char| c == '.' || c == ',');
            if w.len() < 4 {
                continue;
            }
            if let Some(net) = ipv4_net(w) {
                self.emit2("rip:", net);
            } else if self.opts.received >= 2
                && w.contains('.')
                && w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                let dom = last_labels(w, 2);
                if dom.bytes().any(|b| b.is_ascii_alphabetic()) {
                    self.buf.clear();
                    self.buf.push_str("rd:");
                    push_lower(&mut self.buf, dom);
                    self.flush();
                }
            } else if matches!(w, "ESMTP" | "SMTP" | "ESMTPS" | "ESMTPA" | "ESMTPSA" | "LMTP" | "HTTP" | "Microsoft") {
                self.emit2("rw:", w);
            }
        }
    }

    fn addresses(&mut self, prefix: &str, value: &str) {
        for word in value.split(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | ',' | ';' | '"' | '(' | ')')) {
            if let Some((_, dom)) = word.rsplit_once('@') {
                let dom = dom.trim_end_matches('.');
                if !dom.is_empty() {
                    self.buf.clear();
                    self.buf.push_str(prefix);
                    self.buf.push('@');
                    push_lower(&mut self.buf, last_labels(dom, 2));
                    self.flush();
                }
            }
        }
    }

    /// Words of a text, normalised as [`Options`] says, with their bigrams.
    fn words(&mut self, prefix: &str, text: &str) {
        let mut prev: Option<u64> = None;
        split_words(text, |w, ascii| self.word(prefix, w, ascii, &mut prev));
    }

    /// One word (already split and trimmed) and its pair with the word before (`prev`).
    /// `ascii`: whether `w` is all ASCII.
    fn word(&mut self, prefix: &str, w: &str, ascii: bool, prev: &mut Option<u64>) {
        if w.len() < self.opts.min_len || !(ascii || self.opts.non_ascii) {
            return;
        }
        let long = w.len() > self.opts.max_len;
        let number = !long
            && self.opts.numbers
            && w.len() > 5
            && w.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b',');
        let plain = ascii && !long && !number && self.opts.lowercase && !self.opts.caps && self.names.is_none();
        let h = match plain.then(|| hash_lower(prefix, w)).flatten() {
            Some(h) => {
                self.hashes.push(h);
                h
            }
            None => {
                self.buf.clear();
                self.buf.push_str(prefix);
                if long {
                    // Long words: URLs, encoded junk, hashes. Keep a hint of the start and the size.
                    self.buf.push_str("sk:");
                    let end = w.char_indices().nth(7).map_or(w.len(), |(i, _)| i);
                    push_lower(&mut self.buf, &w[..end]);
                    self.buf.push(':');
                    self.buf.push_str(&(w.len() / 10).to_string());
                } else if number {
                    self.buf.push_str("N:");
                    self.buf.push_str(&w.len().to_string());
                } else if !self.opts.lowercase {
                    self.buf.push_str(w);
                } else {
                    push_lower(&mut self.buf, w);
                }
                if self.opts.caps && w.len() >= 4 && w.chars().all(|c| c.is_ascii_uppercase()) {
                    self.buf.insert_str(prefix.len(), "C:");
                }
                self.flush()
            }
        };
        if self.opts.bigrams {
            if let Some(p) = *prev {
                let mut pair = [0u8; 16];
                pair[..8].copy_from_slice(&p.to_le_bytes());
                pair[8..].copy_from_slice(&h.to_le_bytes());
                let b = xxh3_64(&pair);
                self.hashes.push(b);
                if let Some(n) = &mut self.names {
                    let first = n.get(&p).map_or("?", String::as_str);
                    let text = format!("{first} + {}", self.buf);
                    n.entry(b).or_insert(text);
                }
            }
            *prev = Some(h);
        }
    }

    /// Hosts of URLs written in plain text.
    fn text_urls(&mut self, text: &str) {
        for (i, _) in text.match_indices("://") {
            let scheme_start = text[..i]
                .char_indices()
                .rev()
                .find(|(_, c)| !c.is_ascii_alphabetic())
                .map_or(0, |(p, c)| p + c.len_utf8());
            let scheme = &text[scheme_start..i];
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
                self.url_host(&text[i + 3..]);
            }
        }
    }

    fn url_host(&mut self, rest: &str) {
        let end = rest
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | ' ' | '\t' | '\r' | '\n' | ':' | ')' | ']')
            })
            .unwrap_or(rest.len());
        let host = &rest[..end.min(255)];
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h).trim_end_matches('.');
        if host.is_empty() {
            return;
        }
        let host = host.to_ascii_lowercase();
        if ipv4_net(&host).is_some() || host.bytes().all(|b| b.is_ascii_digit()) {
            self.emit2("u:", "IP");
            return;
        }
        self.emit2("u:", last_labels(&host, 2));
        self.emit2("uh:", &host);
    }

    /// Markup signals and link/image hosts of an HTML source.
    fn markup(&mut self, html: &str) {
        // ASCII lower-casing keeps byte offsets, and hosts and tag names are compared lower-cased.
        let lower = html.to_ascii_lowercase();
        let bytes = lower.as_bytes();
        let mut i = 0;
        while let Some(off) = memchr(b'<', &bytes[i..]) {
            let start = i + off + 1;
            let end = memchr(b'>', &bytes[start..]).map_or(bytes.len(), |e| start + e);
            let tag = clip_to_boundary(&lower, start, (end - start).min(2048));
            i = end.max(start);
            if tag.starts_with("!--") {
                self.emit2("html:", "comment");
                continue;
            }
            let name_end = tag.find(|c: char| c.is_whitespace() || c == '/').unwrap_or(tag.len());
            let name = &tag[..name_end];
            if matches!(
                name,
                "img" | "font" | "table" | "script" | "iframe" | "form" | "input" | "style" | "center" | "map" | "base"
            ) {
                self.emit2("html:", name);
            }
            let tb = tag.as_bytes();
            for (p, &b) in tb.iter().enumerate() {
                if b != b'=' && b != b':' {
                    continue;
                }
                let before = &tag[..p];
                let after = &tag[p + 1..];
                if before.ends_with("color") {
                    self.emit2("html:", "color");
                }
                if b == b':' {
                    if (before.ends_with("display") && after.starts_with("none"))
                        || (before.ends_with("visibility") && after.starts_with("hidden"))
                    {
                        self.emit2("html:", "hidden");
                    }
                    continue;
                }
                if before.ends_with("href") || before.ends_with("src") || before.ends_with("action") {
                    let v = after.trim_start_matches(['"', '\'', ' ']);
                    if let Some(rest) = v.strip_prefix("http://").or_else(|| v.strip_prefix("https://")) {
                        self.url_host(rest);
                    } else if v.starts_with("mailto:") {
                        self.emit2("html:", "mailto");
                    }
                }
            }
        }
    }
}

/// Calls `f` with each word of `text` and whether it is all ASCII: runs of word characters
/// (ASCII by [`is_word_byte`], any other alphanumeric character), trimmed at each end of what
/// may not start or end a word (what trims to nothing is skipped). Found byte by byte, a
/// character decoded only where a byte is not ASCII: splitting on decoded characters cost twice
/// as much, and one accent anywhere sent a whole text that way.
fn split_words(text: &str, mut f: impl FnMut(&str, bool)) {
    let bytes = text.as_bytes();
    let class = |b: u8| CLASS[usize::from(b)];
    let mut i = 0;
    while i < bytes.len() {
        // Separators between words are passed over here, not handed to `f` as empty words.
        if class(bytes[i]) & (WORD | NON_ASCII) == 0 {
            i += 1;
            continue;
        }
        let start = i;
        let mut ascii = true;
        // The length of the character that ends the run (none at the end of the text).
        let mut separator = 1;
        loop {
            while let Some(&b) = bytes.get(i)
                && class(b) & WORD != 0
            {
                i += 1;
            }
            if bytes.get(i).is_none_or(|&b| b.is_ascii()) {
                break;
            }
            match text.get(i..).and_then(|t| t.chars().next()) {
                Some(c) if c.is_alphanumeric() => i += c.len_utf8(),
                other => {
                    separator = other.map_or(1, char::len_utf8);
                    break;
                }
            }
            ascii = false;
        }
        // Only ASCII is trimmed: every other character in the run is alphanumeric, which may
        // start and end a word (its bytes are classed as both).
        let (mut a, mut b) = (start, i);
        while a < b && class(bytes[a]) & START == 0 {
            a += 1;
        }
        while a < b && class(bytes[b - 1]) & END == 0 {
            b -= 1;
        }
        if a < b
            && let Some(w) = text.get(a..b)
        {
            f(w, ascii);
        }
        i += separator;
    }
}

/// [`CLASS`] bits: a byte that belongs to a word ([`is_word_byte`]), may start one, may end
/// one, is not ASCII.
const WORD: u8 = 1;
const START: u8 = 2;
const END: u8 = 4;
const NON_ASCII: u8 = 8;

/// What each byte is to [`split_words`], looked up once instead of a chain of comparisons per
/// byte. Bytes beyond ASCII may start and end a word (trimming is of ASCII only) and are
/// decoded to tell whether they belong to one.
static CLASS: [u8; 256] = {
    let mut t = [START | END | NON_ASCII; 256];
    let mut b = 0u8;
    while b < 0x80 {
        t[b as usize] = if is_word_byte(b) { WORD } else { 0 }
            | if starts_word(b) { START } else { 0 }
            | if ends_word(b) { END } else { 0 };
        b += 1;
    }
    t
};

/// ASCII bytes a word may start with (others at its start are trimmed off).
const fn starts_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'$'
}

/// ASCII bytes a word may end with (others at its end are trimmed off).
const fn ends_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'!' || b == b'%'
}

/// ASCII bytes that belong to a word (letters, digits and the punctuation that joins words,
/// as in prices, addresses and URLs).
const fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(b, b'$' | b'\'' | b'-' | b'.' | b'_' | b'!' | b'@' | b'%' | b'/' | b':' | b'&' | b',')
}

/// The hash of `prefix` and the ASCII word `w` lower-cased, as [`Tokenizer::flush`] would give
/// it, made in a stack copy; `None` when they do not fit. Body words are most of a message's
/// features, and copying each into the `String` buffer to lower-case it there was a fifth of
/// tokenizing's instructions.
fn hash_lower(prefix: &str, w: &str) -> Option<u64> {
    let mut key = [0u8; 64];
    let n = prefix.len() + w.len();
    key.get_mut(..prefix.len())?.copy_from_slice(prefix.as_bytes());
    for (d, s) in key.get_mut(prefix.len()..n)?.iter_mut().zip(w.as_bytes()) {
        *d = s.to_ascii_lowercase();
    }
    Some(xxh3_64(&key[..n]))
}

/// Appends `w` lower-cased: ASCII copied whole and lower-cased in place (body words went a
/// character at a time through `String::extend`: 2% more of tokenizing's instructions).
fn push_lower(buf: &mut String, w: &str) {
    if w.is_ascii() {
        let start = buf.len();
        buf.push_str(w);
        buf[start..].make_ascii_lowercase();
    } else {
        for c in w.chars() {
            buf.extend(c.to_lowercase());
        }
    }
}

fn clip_to_boundary(s: &str, start: usize, len: usize) -> &str {
    let mut end = (start + len).min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut st = start.min(end);
    while !s.is_char_boundary(st) {
        st += 1;
    }
    &s[st..end]
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// `a.b.c.d` -> `a.b` when it is an IPv4 address.
fn ipv4_net(w: &str) -> Option<&str> {
    // Most words asked about (a Received line's) are names: they go at their first byte.
    if !w.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let mut parts = 0;
    for p in w.split('.') {
        parts += 1;
        if parts > 4 || p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    let second_dot = w.bytes().enumerate().filter(|&(_, b)| b == b'.').nth(1)?.0;
    (parts == 4).then(|| &w[..second_dot])
}

/// The last `n` labels of a host name.
fn last_labels(host: &str, n: usize) -> &str {
    let mut count = 0;
    for (i, b) in host.bytes().enumerate().rev() {
        if b == b'.' {
            count += 1;
            if count == n {
                return &host[i + 1..];
            }
        }
    }
    host
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_of_from() {
        let shape = |v: &str| {
            let mut s = String::new();
            push_shape(&mut s, v);
            s
        };
        assert_eq!(shape(" \"Ann Lee\" <ann@example.org>"), "\"\" <x@x>");
        assert_eq!(shape("Ann  Lee <ann@example.org>"), "x x <x@x>");
        assert_eq!(shape("ann@example.org (Ann Lee)"), "x@x (x x)");
        assert_eq!(shape("<ann@example.org>"), "<x@x>");
        assert_eq!(shape("ann@example.org"), "x@x");
        assert_eq!(shape("\"unclosed <a@b>"), "\"");
        assert_eq!(shape(""), "");
    }

    #[test]
    fn helo_bands_of_each_mta_format() {
        let band = |v: &str| helo_band(v);
        // Postfix and sendmail: from HELO (RDNS [IP]).
        assert_eq!(band("from mail.example.net (mx2.example.net [198.51.100.7]) by mx"), Some("same"));
        assert_eq!(band("from mail.example.net (relay.isp.example [198.51.100.7]) by mx"), Some("differs"));
        assert_eq!(band("from friend (unknown [198.51.100.7]) by mx"), Some("nordns"));
        assert_eq!(band("from outsrc-em.com ([166.70.149.104]) by dogma.slashnull.org"), Some("nordns"));
        assert_eq!(band("from [198.51.100.7] (host.example.net [198.51.100.7]) by mx"), Some("literal"));
        assert_eq!(band("from desktop (host.example.net [198.51.100.7]) by mx"), Some("bare"));
        assert_eq!(band("from x.example (host.example.net [198.51.100.7] (may be forged)) by mx"), Some("forged"));
        // Exim: from RDNS ([IP] helo=HELO), from [IP] (helo=HELO).
        assert_eq!(band("from host.example.net ([198.51.100.7] helo=mail.example.net) by mx"), Some("same"));
        assert_eq!(band("from [198.51.100.7] (helo=mail.example.net) by mx"), Some("nordns"));
        // qmail: from RDNS (HELO name) (IP).
        assert_eq!(band("from unknown (HELO mail.example.net) (198.51.100.7) by mx"), Some("nordns"));
        assert_eq!(band("from host.example.org (HELO mail.example.net) (198.51.100.7) by mx"), Some("differs"));
        // Nothing to go by.
        assert_eq!(band("by mx with LMTP id 42"), None);
        assert_eq!(band("from localhost by mx"), None);
        assert_eq!(band("from mail.example.net (198.51.100.7) by mx"), None);
    }

    proptest::proptest! {
        /// Any Received: text, MTA-shaped or not, gives a band or nothing, never a panic.
        #[test]
        fn helo_band_takes_any_text(v in "(from |by |helo=|HELO |unknown |\\(|\\)|\\[|\\]|[0-9.]{1,8}|[a-zé.-]{1,8}| ){0,12}") {
            let _ = helo_band(&v);
        }

        /// Any Date: and Received: texts give a band or nothing.
        #[test]
        fn date_skew_takes_any_text(d in "\\PC{0,40}", r in proptest::collection::vec("\\PC{0,30}(; \\PC{0,30})?", 0..4)) {
            let hops: Vec<&str> = r.iter().map(String::as_str).collect();
            let _ = date_skew(Some(&d), &hops);
        }

        /// Any From: text gives a shape of its characters only, one per character read at most.
        #[test]
        fn shape_takes_any_text(v in "(\"|<|>|@|,| |\\PC){0,250}") {
            let mut s = String::new();
            push_shape(&mut s, &v);
            proptest::prop_assert!(s.chars().count() <= 200);
            proptest::prop_assert!(s.chars().all(|c| "\"<>@,():; x".contains(c)), "{s:?}");
        }
    }

    #[test]
    fn date_skew_bands_against_the_nearest_hop() {
        let top = "from localhost by mail.example.com id 2; Sat, 20 Jul 2002 12:00:00 +0000";
        let first = "from mx.example.net (mx.example.net [198.51.100.7]) by mx id 1; Mon, 15 Jul 2002 10:00:00 +0000";
        // Fetched five days later: still near the first hop.
        assert_eq!(date_skew(Some("Mon, 15 Jul 2002 09:58:00 +0000"), &[top, first]), Some("near"));
        // A zone written wrong by an hour or two is near too; from three hours ahead it is not.
        assert_eq!(date_skew(Some("Mon, 15 Jul 2002 12:30:00 +0000"), &[first]), Some("near"));
        assert_eq!(date_skew(Some("Mon, 15 Jul 2002 13:00:00 +0000"), &[first]), Some("future3"));
        assert_eq!(date_skew(Some("Mon, 15 Jul 2002 09:00:00 -0500"), &[first]), Some("future3"));
        assert_eq!(date_skew(Some("Tue, 16 Jul 2002 00:00:00 +0000"), &[first]), Some("future12"));
        assert_eq!(date_skew(Some("Fri, 19 Jul 2002 10:00:00 +0000"), &[first]), Some("future48"));
        // Behind every hop: by days, by months, by years.
        assert_eq!(date_skew(Some("Wed, 10 Jul 2002 10:00:00 +0000"), &[first]), Some("past96"));
        assert_eq!(date_skew(Some("Sat, 1 Jun 2002 10:00:00 +0000"), &[first]), Some("past30d"));
        assert_eq!(date_skew(Some("Fri, 3 Jan 1997 17:24:47 -0700"), &[first, top]), Some("past1y"));
        // No Date, a Date that is not a date, no hop with a date.
        assert_eq!(date_skew(None, &[first]), Some("none"));
        assert_eq!(date_skew(Some("yesterday"), &[first]), Some("bad"));
        assert_eq!(date_skew(Some("Mon, 15 Jul 2002 10:00:00 +0000"), &["from a by mx id 42"]), None);
        assert_eq!(date_skew(Some("Mon, 15 Jul 2002 10:00:00 +0000"), &[]), None);
    }

    #[test]
    fn sorts_hashes_like_a_comparison_sort() {
        // Spread hashes (as xxh3 gives), duplicates, and ones sharing their top bits.
        let mut v: Vec<u64> = (0..1000u64).map(|i| xxh3_64(&i.to_le_bytes())).collect();
        v.extend([0, 0, u64::MAX, u64::MAX - 1, 1 << 63, (1 << 63) + 1, 5, 5]);
        let mut expected = v.clone();
        expected.sort_unstable();
        sort_hashes(&mut v);
        assert_eq!(v, expected);
        let mut short = vec![3, 1, 2];
        sort_hashes(&mut short);
        assert_eq!(short, [1, 2, 3]);
    }

    /// The words as defined, the slow way: split on every character that is not a word
    /// character, then trimmed (as the tokenizer did before splitting byte by byte).
    fn reference_words(text: &str) -> Vec<(String, bool)> {
        let is_word_char = |c: char| if c.is_ascii() { is_word_byte(c as u8) } else { c.is_alphanumeric() };
        // Every character may start and end a word but ASCII punctuation, which only some may.
        let starts = |c: char| c.is_alphanumeric() || c == '$';
        let ends = |c: char| c.is_alphanumeric() || c == '!' || c == '%';
        text.split(|c: char| !is_word_char(c))
            .map(|raw| raw.trim_start_matches(|c: char| !starts(c)).trim_end_matches(|c: char| !ends(c)))
            .filter(|w| !w.is_empty())
            .map(|w| (w.to_string(), w.is_ascii()))
            .collect()
    }

    fn split(text: &str) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        split_words(text, |w, ascii| {
            if !w.is_empty() {
                out.push((w.to_string(), ascii));
            }
        });
        out
    }

    #[test]
    fn splits_words_as_the_reference() {
        for text in [
            "",
            "caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e!",
            "--'hello'-- w\u{f6}rld\u{2019}s $5.00!!",
            "\u{4e2d}\u{6587}\u{3002}ab\u{a0}cd",
        ] {
            assert_eq!(split(text), reference_words(text), "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_splits_as_the_reference(text in "(\\PC|[ a-z$'.,!%-]){0,60}") {
            proptest::prop_assert_eq!(split(&text), reference_words(&text));
        }
    }

    #[test]
    fn last_labels_and_nets() {
        assert_eq!(last_labels("a.b.example.com", 2), "example.com");
        assert_eq!(last_labels("com", 2), "com");
        assert_eq!(ipv4_net("192.168.1.2"), Some("192.168"));
        assert_eq!(ipv4_net("1.2.3.4.5"), None);
        assert_eq!(ipv4_net("192.168.1"), None);
        assert_eq!(ipv4_net("a192.168.1.2"), None);
        assert_eq!(ipv4_net(""), None);
    }
}
