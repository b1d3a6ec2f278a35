//! A minimal, allocation-light reader of a message's top-level header fields, for the few facts
//! the spine needs before any MIME parsing (queue id, loop count).

/// One header field: its name and its raw value (folding kept, CRLF of the last line removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field name as written.
    pub name: &'a [u8],
    /// The raw value after the colon, folding line breaks included.
    pub value: &'a [u8],
    /// Byte offset of the field's first byte in the message.
    pub start: usize,
    /// Byte offset just past the field's final CRLF (or the end of the message).
    pub end: usize,
}

impl Field<'_> {
    /// The value unfolded and lossily decoded, trimmed.
    pub fn unfolded(&self) -> String {
        let s = String::from_utf8_lossy(self.value);
        let mut out = String::with_capacity(s.len());
        for part in s.split("\r\n") {
            out.push_str(part);
        }
        out.trim().to_string()
    }
}

/// Length of the header section including the blank line ending it (or the whole message
/// when it has no body).
pub fn header_len(msg: &[u8]) -> usize {
    if msg.starts_with(b"\r\n") {
        return 2;
    }
    match memfind(msg, b"\r\n\r\n") {
        Some(i) => i + 4,
        None => msg.len(),
    }
}

/// Iterates the top-level header fields of a CRLF message. Stops at the first line that is
/// neither a field nor a continuation.
pub fn fields(msg: &[u8]) -> impl Iterator<Item = Field<'_>> {
    let head = &msg[..header_len(msg)];
    let mut pos = 0;
    std::iter::from_fn(move || {
        let rest = &head[pos..];
        let colon = memchr::memchr(b':', rest)?;
        let name = &rest[..colon];
        if name.is_empty() || name.iter().any(|&b| !(33..=126).contains(&b)) {
            return None;
        }
        // The value runs to the first CRLF not followed by white space.
        let mut end = colon + 1;
        loop {
            match find_crlf(&rest[end..]) {
                Some(i) => {
                    end += i;
                    match rest.get(end + 2) {
                        Some(b' ') | Some(b'\t') => end += 2,
                        _ => break,
                    }
                }
                None => {
                    end = rest.len();
                    break;
                }
            }
        }
        let next = (end + 2).min(rest.len());
        let field = Field { name, value: &rest[colon + 1..end], start: pos, end: pos + next };
        pos += next;
        Some(field)
    })
}

/// The first CRLF: a search for CR, which is rare inside a line, costs less than building a
/// substring finder for every line (that showed in the profile).
fn find_crlf(hay: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\r', hay).find(|&i| hay.get(i + 1) == Some(&b'\n'))
}

fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    // A vectorised search: the naive window scan was 8% of scanning a message (callgrind).
    memchr::memmem::find(hay, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_folded_fields() {
        let msg = b"Received: from a\r\n\tby b; date\r\nSubject: hi\r\n\r\nbody\r\nX: no\r\n";
        let f: Vec<_> = fields(msg).collect();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].name, b"Received");
        assert_eq!(f[0].unfolded(), "from a\tby b; date");
        assert_eq!(f[1].unfolded(), "hi");
        assert_eq!(&msg[f[1].start..f[1].end], b"Subject: hi\r\n");
        assert_eq!(f[0].start, 0);
    }

    #[test]
    fn no_body_and_garbage() {
        assert_eq!(fields(b"A: b").count(), 1);
        assert_eq!(fields(b"not a header\r\nA: b\r\n").count(), 0);
        assert_eq!(fields(b"").count(), 0);
        assert_eq!(header_len(b"\r\nbody"), 2);
    }
}
