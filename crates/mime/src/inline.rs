//! Attachments hidden in text: uuencoded blocks and BinHex 4.0.

/// An inline attachment: its name and (bounded) decoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inline {
    pub kind: &'static str,
    pub name: String,
    pub data: Vec<u8>,
}

/// Finds uuencoded and BinHex blocks in decoded text, decoding at most `limit` bytes each.
pub(crate) fn find(text: &str, limit: usize) -> Vec<Inline> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("begin ") {
            let mut it = rest.splitn(2, ' ');
            let (Some(mode), Some(name)) = (it.next(), it.next()) else { continue };
            if !(3..=4).contains(&mode.len()) || !mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                continue;
            }
            let mut data = Vec::new();
            for l in lines.by_ref() {
                if l == "end" || l == "`" {
                    break;
                }
                if data.len() < limit {
                    uudecode_line(l.as_bytes(), &mut data);
                }
            }
            data.truncate(limit);
            out.push(Inline { kind: "uuencode", name: name.trim().to_string(), data });
        } else if line.starts_with("(This file must be converted with BinHex") {
            let rest: String = lines.by_ref().collect::<Vec<_>>().join("");
            if let Some(b) = binhex(&rest, limit) {
                out.push(b);
            }
            break;
        }
    }
    out
}

fn uudecode_line(l: &[u8], out: &mut Vec<u8>) {
    let Some(&first) = l.first() else { return };
    let n = usize::from(first.wrapping_sub(32) & 63);
    let chars: Vec<u8> = l[1..].iter().map(|c| c.wrapping_sub(32) & 63).collect();
    let mut got = Vec::with_capacity(n);
    for q in chars.chunks(4) {
        let g = |i: usize| q.get(i).copied().unwrap_or(0);
        got.push(g(0) << 2 | g(1) >> 4);
        got.push(g(1) << 4 | g(2) >> 2);
        got.push(g(2) << 6 | g(3));
    }
    got.truncate(n);
    out.extend_from_slice(&got);
}

const BINHEX: &[u8; 64] = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr";

fn binhex(s: &str, limit: usize) -> Option<Inline> {
    let start = s.find(':')? + 1;
    let end = s[start..].find(':').map_or(s.len(), |e| start + e);
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut raw = Vec::new();
    for c in s[start..end].bytes() {
        if c.is_ascii_whitespace() {
            continue;
        }
        let v = BINHEX.iter().position(|&b| b == c)? as u32;
        bits = bits << 6 | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            raw.push((bits >> nbits) as u8);
        }
        if raw.len() > limit + 64 {
            break;
        }
    }
    // Run-length decoding: 0x90 n repeats the previous byte n-1 more times (n = 0: a literal 0x90).
    let mut data = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() && data.len() < limit + 64 {
        if raw[i] == 0x90 {
            let n = *raw.get(i + 1)?;
            if n == 0 {
                data.push(0x90);
            } else {
                let prev = *data.last()?;
                data.extend(std::iter::repeat_n(prev, usize::from(n) - 1));
            }
            i += 2;
        } else {
            data.push(raw[i]);
            i += 1;
        }
    }
    let nlen = usize::from(*data.first()?);
    let name = String::from_utf8_lossy(data.get(1..1 + nlen)?).into_owned();
    // name, version(1), type(4), creator(4), flags(2), data length(4), resource length(4), crc(2)
    let fork = 1 + nlen + 1 + 4 + 4 + 2;
    let dlen = u32::from_be_bytes(data.get(fork..fork + 4)?.try_into().ok()?) as usize;
    let body_start = fork + 4 + 4 + 2;
    let body = data.get(body_start..).unwrap_or_default();
    let body = &body[..body.len().min(dlen).min(limit)];
    Some(Inline { kind: "binhex", name, data: body.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_uuencoded_files() {
        // "MZ\x90\x00" uuencoded.
        let text = "see attached\nbegin 644 invoice.pdf.exe\n$35J0`\n`\nend\nbye\n";
        let found = find(text, 1000);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "invoice.pdf.exe");
        assert_eq!(found[0].data, b"MZ\x90\x00");
        assert!(find("begin the story\nend\n", 100).is_empty());
    }

    #[test]
    fn garbage_binhex_is_ignored() {
        assert!(find("(This file must be converted with BinHex 4.0)\n:zzzz~~~:\n", 100).is_empty());
    }
}
