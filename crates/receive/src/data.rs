//! The DATA phase, sans I/O: dot-unstuffing, the end-of-data marker, bare CR/LF normalisation
//! and the size limit, fed with whatever chunks the socket delivers.

use memchr::memchr2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// After a real CRLF (or at the start): a dot here may stuff or end the data.
    LineStart,
    /// Saw a dot at line start.
    Dot,
    /// Inside a line.
    Mid,
    /// Saw CR; `dot` when the line so far is a single dot.
    Cr { dot: bool },
}

/// Decodes the DATA stream into the message bytes.
///
/// Only `CRLF . CRLF` ends the data. A bare LF or CR is stored as CRLF, but does not start a line
/// for the end marker: `LF . CRLF` is message content, never a second message (SMTP smuggling).
#[derive(Debug)]
pub struct DataDecoder {
    state: State,
    out: Vec<u8>,
    limit: usize,
    overflow: bool,
    bare_newlines: u64,
    /// Bytes already handed to [`DataDecoder::drain_to`].
    drained: usize,
}

/// What [`DataDecoder::feed`] found in a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Bytes of the chunk consumed; when `done`, the rest belongs to the next command.
    pub consumed: usize,
    /// The end-of-data marker was seen.
    pub done: bool,
}

impl DataDecoder {
    /// A decoder that keeps at most `limit` message bytes (more marks it oversized).
    pub fn new(limit: usize) -> Self {
        DataDecoder::with_capacity(limit, 64 * 1024)
    }

    /// A decoder whose buffer starts at `capacity` bytes (the client's SIZE, say).
    pub fn with_capacity(limit: usize, capacity: usize) -> Self {
        DataDecoder {
            state: State::LineStart,
            out: Vec::with_capacity(limit.min(capacity)),
            limit,
            overflow: false,
            bare_newlines: 0,
            drained: 0,
        }
    }

    /// Message bytes decoded so far, drained ones included.
    pub fn len(&self) -> usize {
        self.drained + self.out.len()
    }

    /// True before any message byte was decoded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes decoded but not yet drained.
    pub fn buffered(&self) -> usize {
        self.out.len()
    }

    /// Writes the buffered bytes to `w` and empties the buffer (spooling a large message).
    pub fn drain_to<W: std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(&self.out)?;
        self.drained += self.out.len();
        self.out.clear();
        Ok(())
    }

    /// True when the message was larger than the limit; its bytes were dropped.
    pub fn oversized(&self) -> bool {
        self.overflow
    }

    /// How many bare CR or LF were normalised to CRLF.
    pub fn bare_newlines(&self) -> u64 {
        self.bare_newlines
    }

    /// The decoded message (what was not drained).
    pub fn into_message(self) -> Vec<u8> {
        self.out
    }

    fn emit(&mut self, bytes: &[u8]) {
        if self.overflow {
            return;
        }
        if self.drained + self.out.len() + bytes.len() > self.limit {
            self.overflow = true;
            self.out = Vec::new();
            return;
        }
        self.out.extend_from_slice(bytes);
    }

    /// Consumes bytes from `chunk` up to and including the end marker.
    pub fn feed(&mut self, chunk: &[u8]) -> Fed {
        let mut i = 0;
        while i < chunk.len() {
            match self.state {
                State::Mid => {
                    // Fast path: copy the run up to the next CR or LF in one go.
                    match memchr2(b'\r', b'\n', &chunk[i..]) {
                        None => {
                            self.emit(&chunk[i..]);
                            i = chunk.len();
                        }
                        Some(n) => {
                            self.emit(&chunk[i..i + n]);
                            i += n;
                            if chunk[i] == b'\r' {
                                self.state = State::Cr { dot: false };
                            } else {
                                self.bare_newlines += 1;
                                self.emit(b"\r\n");
                            }
                            i += 1;
                        }
                    }
                }
                State::LineStart => {
                    let b = chunk[i];
                    i += 1;
                    match b {
                        b'.' => self.state = State::Dot,
                        b'\r' => self.state = State::Cr { dot: false },
                        b'\n' => {
                            self.bare_newlines += 1;
                            self.emit(b"\r\n");
                            self.state = State::Mid;
                        }
                        _ => {
                            self.emit(&[b]);
                            self.state = State::Mid;
                        }
                    }
                }
                State::Dot => {
                    let b = chunk[i];
                    i += 1;
                    match b {
                        b'\r' => self.state = State::Cr { dot: true },
                        b'\n' => {
                            // ".LF" is content: keep the dot, normalise the newline.
                            self.bare_newlines += 1;
                            self.emit(b".\r\n");
                            self.state = State::Mid;
                        }
                        // A leading dot followed by anything else is a stuffed dot: drop it.
                        _ => {
                            self.emit(&[b]);
                            self.state = State::Mid;
                        }
                    }
                }
                State::Cr { dot } => {
                    let b = chunk[i];
                    if b == b'\n' {
                        i += 1;
                        if dot {
                            self.state = State::LineStart;
                            return Fed { consumed: i, done: true };
                        }
                        self.emit(b"\r\n");
                        self.state = State::LineStart;
                    } else {
                        // Bare CR: store it as CRLF and read `b` again as line content.
                        self.bare_newlines += 1;
                        if dot {
                            self.emit(b".");
                        }
                        self.emit(b"\r\n");
                        self.state = State::Mid;
                    }
                }
            }
        }
        Fed { consumed: i, done: false }
    }
}

/// Dot-stuffs CRLF message bytes for sending: a line starting with `.` gets another `.`.
/// Appends a final CRLF when the message lacks one, and the end marker.
pub fn stuff(message: &[u8], out: &mut Vec<u8>) {
    let mut s = Stuffer::new();
    s.push(message, out);
    s.finish(out);
}

/// Dot-stuffs a message given in pieces (so a large message is sent without a stuffed copy of
/// the whole); the pieces may be cut anywhere and the output is what [`stuff`] gives for the whole.
#[derive(Debug, Clone)]
pub struct Stuffer {
    at_line_start: bool,
    last_two: [u8; 2],
    seen: usize,
}

impl Default for Stuffer {
    fn default() -> Self {
        Stuffer::new()
    }
}

impl Stuffer {
    /// A stuffer at the start of a message.
    pub fn new() -> Stuffer {
        Stuffer { at_line_start: true, last_two: [0, 0], seen: 0 }
    }

    /// Stuffs the next bytes of the message into `out`.
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        let mut rest = piece;
        while !rest.is_empty() {
            if self.at_line_start && rest[0] == b'.' {
                out.push(b'.');
            }
            match memchr::memchr(b'\n', rest) {
                Some(n) => {
                    out.extend_from_slice(&rest[..=n]);
                    rest = &rest[n + 1..];
                    self.at_line_start = true;
                }
                None => {
                    out.extend_from_slice(rest);
                    rest = &[];
                    self.at_line_start = false;
                }
            }
        }
        match piece.len() {
            0 => {}
            1 => self.last_two = [self.last_two[1], piece[0]],
            n => self.last_two = [piece[n - 2], piece[n - 1]],
        }
        self.seen += piece.len();
    }

    /// The final CRLF when the message lacked one, and the end marker.
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.seen > 0 && (self.seen < 2 || self.last_two != *b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Stuffing in pieces cut anywhere gives the bytes stuffing the whole gives.
        #[test]
        fn stuffing_in_pieces_equals_stuffing_the_whole(
            msg in prop::collection::vec(prop::sample::select(vec![b'.', b'\r', b'\n', b'a']), 0..200),
            cuts in prop::collection::vec(0usize..200, 0..6),
        ) {
            let mut whole = Vec::new();
            stuff_reference(&msg, &mut whole);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(msg.len())).collect();
            cuts.sort_unstable();
            let mut s = Stuffer::new();
            let mut out = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([msg.len()]) {
                s.push(&msg[at..c], &mut out);
                at = c;
            }
            s.finish(&mut out);
            prop_assert_eq!(&out, &whole);
            let mut one = Vec::new();
            stuff(&msg, &mut one);
            prop_assert_eq!(one, whole);
        }
    }

    /// The straightforward definition the streaming stuffer must match.
    fn stuff_reference(message: &[u8], out: &mut Vec<u8>) {
        let mut at_line_start = true;
        for &b in message {
            if at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            at_line_start = b == b'\n';
        }
        if !message.is_empty() && !message.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }

    fn decode_all(input: &[u8]) -> (Vec<u8>, usize, bool) {
        let mut d = DataDecoder::new(1 << 20);
        let fed = d.feed(input);
        (d.into_message(), fed.consumed, fed.done)
    }

    #[test]
    fn ends_only_on_crlf_dot_crlf() {
        let (m, n, done) = decode_all(b"a\r\n..b\r\n.\r\nQUIT\r\n");
        assert!(done);
        assert_eq!(m, b"a\r\n.b\r\n");
        assert_eq!(n, 11);
        // Empty message.
        assert_eq!(decode_all(b".\r\n"), (Vec::new(), 3, true));
    }

    #[test]
    fn smuggling_forms_do_not_end_data() {
        for evil in [&b"a\n.\nMAIL FROM:<x>\r\n"[..], b"a\r\n.\nX\r\n", b"a\n.\r\nX\r\n", b"a\r.\r\nX\r\n"] {
            let (m, _, done) = decode_all(evil);
            assert!(!done, "{:?} ended data", String::from_utf8_lossy(evil));
            // Every newline in the stored message is CRLF.
            let bare = m.windows(2).filter(|w| w[1] == b'\n' && w[0] != b'\r').count();
            assert_eq!(bare, 0);
            assert!(!m.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'));
        }
    }

    #[test]
    fn keeps_eight_bit_and_long_lines() {
        let mut input = "Subject: héllo\r\n\r\n".as_bytes().to_vec();
        input.extend(std::iter::repeat_n(b'x', 100_000));
        input.extend_from_slice(b"\xff\xfe\r\n.\r\n");
        let (m, _, done) = decode_all(&input);
        assert!(done);
        assert_eq!(&m[..], &input[..input.len() - 3]);
    }

    #[test]
    fn split_anywhere() {
        let input = b"a\r\n..b\r\n\r\nc\r\n.\r\n";
        let whole = decode_all(input).0;
        for cut in 0..input.len() {
            let mut d = DataDecoder::new(1 << 20);
            let f1 = d.feed(&input[..cut]);
            assert!(!f1.done);
            let f2 = d.feed(&input[cut..]);
            assert!(f2.done);
            assert_eq!(d.into_message(), whole, "cut at {cut}");
        }
    }

    #[test]
    fn oversize_is_flagged_and_data_still_ends() {
        let mut d = DataDecoder::new(10);
        let f = d.feed(b"0123456789abc\r\n.\r\n");
        assert!(f.done);
        assert!(d.oversized());
    }

    fn crlf_text() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b".".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b"..".to_vec()),
                "[a-z \\x80-\\xff]{0,5}".prop_map(|s| s.into_bytes())
            ],
            0..40,
        )
        .prop_map(|parts| parts.concat())
        .prop_map(|mut v| {
            // Only CRLF newlines: what the decoder produces.
            v.retain(|&b| b != b'\n');
            let s = String::from_utf8_lossy(&v).replace('\r', "\r\n");
            s.into_bytes()
        })
    }

    proptest! {
        #[test]
        fn stuffing_round_trips(msg in crlf_text()) {
            let mut wire = Vec::new();
            stuff(&msg, &mut wire);
            let mut d = DataDecoder::new(1 << 20);
            let f = d.feed(&wire);
            prop_assert!(f.done);
            prop_assert_eq!(f.consumed, wire.len());
            let mut expect = msg.clone();
            if !expect.is_empty() && !expect.ends_with(b"\r\n") {
                expect.extend_from_slice(b"\r\n");
            }
            prop_assert_eq!(d.into_message(), expect);
        }

        #[test]
        fn draining_anywhere_keeps_the_bytes(msg in crlf_text(), cuts in proptest::collection::vec(0usize..200, 0..6)) {
            let mut wire = Vec::new();
            stuff(&msg, &mut wire);
            let whole = decode_all(&wire).0;
            let mut d = DataDecoder::with_capacity(1 << 20, 16);
            let mut spooled = Vec::new();
            let mut at = 0;
            let mut done = false;
            for c in cuts.iter().chain(std::iter::once(&usize::MAX)) {
                let end = c.saturating_add(at).min(wire.len());
                let f = d.feed(&wire[at..end]);
                at += f.consumed;
                done |= f.done;
                d.drain_to(&mut spooled).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(d.buffered(), 0);
                prop_assert_eq!(d.len(), spooled.len());
            }
            prop_assert!(done);
            spooled.extend(d.into_message());
            prop_assert_eq!(spooled, whole);
        }

        #[test]
        fn drained_bytes_count_towards_the_limit(n in 1usize..64) {
            let mut d = DataDecoder::new(n);
            let body = vec![b'x'; n];
            d.feed(&body[..n / 2 + 1]);
            d.drain_to(&mut std::io::sink()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let f = d.feed(&[&body[n / 2 + 1..], &b"y\r\n.\r\n"[..]].concat());
            prop_assert!(f.done);
            prop_assert!(d.oversized());
        }

        #[test]
        fn decoder_never_panics_and_output_is_crlf(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut d = DataDecoder::new(1 << 20);
            let f = d.feed(&input);
            prop_assert!(f.consumed <= input.len());
            let m = d.into_message();
            prop_assert!(!m.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
        }
    }
}
