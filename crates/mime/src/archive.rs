//! Listing zip, tar and gzip contents in memory, bounded: no extraction to disk, no external
//! programs, every byte decompressed counted against the message's budget.

use std::io::Read;

use flate2::read::{DeflateDecoder, MultiGzDecoder};

/// Limits shared by everything decoded from one message.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    /// Decoded bytes still allowed for the whole message.
    pub bytes_left: u64,
    /// Archive members still allowed for the whole message.
    pub members_left: usize,
    /// Largest allowed decompressed/compressed ratio (beyond the first MiB).
    pub max_ratio: u64,
}

/// One file inside an archive.
#[derive(Debug, Clone, Default)]
pub(crate) struct Member {
    pub name: String,
    pub size: u64,
    pub encrypted: bool,
    /// The member's bytes when they could be read within the budget.
    pub data: Option<Vec<u8>>,
}

/// What listing an archive found.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub members: Vec<Member>,
    /// (finding name, detail)
    pub issues: Vec<(&'static str, String)>,
}

const RATIO_SLACK: u64 = 1 << 20;

/// Counts the compressed bytes a decoder has consumed, to judge the ratio where it stopped.
struct Counting<'a> {
    inner: &'a [u8],
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// Whether `out` bytes from `consumed` compressed bytes is beyond the allowed ratio.
fn is_bomb(out: u64, consumed: u64, max_ratio: u64) -> bool {
    out > consumed.max(1).saturating_mul(max_ratio).saturating_add(RATIO_SLACK)
        || out > RATIO_SLACK && out / consumed.max(1) > max_ratio
}

fn u16le(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn u32le(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn u64le(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// Reads at most `limit` bytes from `r`: `Ok` with everything when it fits, `Err(Some(first
/// limit bytes))` when there was more, `Err(None)` when the stream is broken. The buffer never
/// grows past `limit + 1`, so a bomb costs the budget and not twice it.
fn read_bounded(mut r: impl Read, limit: u64) -> Result<Vec<u8>, Option<Vec<u8>>> {
    let cap = usize::try_from(limit).unwrap_or(usize::MAX).saturating_add(1);
    let mut out: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(None),
        };
        let take = n.min(cap - out.len());
        if out.capacity() - out.len() < take {
            // Grow geometrically, but never beyond the cap.
            let want = out.capacity().max(buf.len()).min(cap - out.len()).max(take);
            out.reserve_exact(want);
        }
        out.extend_from_slice(&buf[..take]);
        if out.len() == cap {
            out.truncate(cap - 1);
            return Err(Some(out));
        }
    }
}

impl Budget {
    /// The most a stream of `compressed` bytes may expand to.
    fn limit_for(&self, compressed: u64) -> u64 {
        self.bytes_left.min(compressed.saturating_mul(self.max_ratio).saturating_add(RATIO_SLACK))
    }

    fn take_member(&mut self, listing: &mut Listing) -> bool {
        if self.members_left == 0 {
            if !listing.issues.iter().any(|(n, _)| *n == "ARCHIVE_LIMIT_MEMBERS") {
                listing
                    .issues
                    .push(("ARCHIVE_LIMIT_MEMBERS", "too many archive members; the rest were not checked".into()));
            }
            return false;
        }
        self.members_left -= 1;
        true
    }

    fn charge(&mut self, n: usize) {
        self.bytes_left = self.bytes_left.saturating_sub(n as u64);
    }
}

/// Lists a zip archive from its central directory.
pub(crate) fn zip(data: &[u8], budget: &mut Budget) -> Listing {
    let mut listing = Listing::default();
    let Some(eocd) = find_eocd(data) else {
        listing.issues.push(("ARCHIVE_CORRUPT", "zip without a central directory".into()));
        return listing;
    };
    let entries = u16le(data, eocd + 10).unwrap_or(0) as usize;
    let mut cd = u32le(data, eocd + 16).unwrap_or(u32::MAX) as usize;
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for _ in 0..entries.max(1) {
        if u32le(data, cd) != Some(0x0201_4b50) {
            if entries > 0 && spans.len() < entries {
                listing.issues.push(("ARCHIVE_CORRUPT", "zip central directory is truncated".into()));
            }
            break;
        }
        if !budget.take_member(&mut listing) {
            break;
        }
        let flags = u16le(data, cd + 8).unwrap_or(0);
        let method = u16le(data, cd + 10).unwrap_or(0);
        let mut csize = u64::from(u32le(data, cd + 20).unwrap_or(0));
        let mut usize_ = u64::from(u32le(data, cd + 24).unwrap_or(0));
        let nlen = u16le(data, cd + 28).unwrap_or(0) as usize;
        let elen = u16le(data, cd + 30).unwrap_or(0) as usize;
        let clen = u16le(data, cd + 32).unwrap_or(0) as usize;
        let mut offset = u64::from(u32le(data, cd + 42).unwrap_or(0));
        let name_bytes = data.get(cd + 46..cd + 46 + nlen).unwrap_or_default();
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        // Zip64: the real values sit in extra field 0x0001, in this order, for those that are maxed.
        if let Some(extra) = data.get(cd + 46 + nlen..cd + 46 + nlen + elen) {
            let mut i = 0;
            while i + 4 <= extra.len() {
                let id = u16le(extra, i).unwrap_or(0);
                let len = u16le(extra, i + 2).unwrap_or(0) as usize;
                if id == 1 {
                    let mut at = i + 4;
                    for field in [&mut usize_, &mut csize, &mut offset] {
                        if *field == u64::from(u32::MAX) {
                            if let Some(v) = u64le(extra, at) {
                                *field = v;
                            }
                            at += 8;
                        }
                    }
                }
                i += 4 + len;
            }
        }
        cd += 46 + nlen + elen + clen;
        let encrypted = flags & 1 == 1 || method == 99;
        let mut member = Member { name, size: usize_, encrypted, data: None };
        // Where the member's data lies, through its local header.
        let local = usize::try_from(offset).unwrap_or(usize::MAX);
        let start = match (u32le(data, local), u16le(data, local + 26), u16le(data, local + 28)) {
            (Some(0x0403_4b50), Some(n), Some(e)) => local + 30 + n as usize + e as usize,
            _ => {
                listing.issues.push(("ARCHIVE_CORRUPT", format!("zip member {} has no local header", member.name)));
                listing.members.push(member);
                continue;
            }
        };
        spans.push((offset, start as u64 + csize));
        if usize_ > csize.saturating_mul(budget.max_ratio).saturating_add(RATIO_SLACK) {
            listing
                .issues
                .push(("ARCHIVE_BOMB", format!("zip member {} claims {usize_} bytes from {csize}", member.name)));
        }
        let body = data.get(start..start.saturating_add(csize as usize)).unwrap_or_default();
        if !encrypted && budget.bytes_left > 0 {
            let limit = budget.limit_for(csize);
            let res = match method {
                0 => {
                    if body.len() as u64 > limit {
                        Err(Some(body[..limit as usize].to_vec()))
                    } else {
                        Ok(body.to_vec())
                    }
                }
                8 => {
                    let read = std::rc::Rc::new(std::cell::Cell::new(0));
                    let r = read_bounded(DeflateDecoder::new(Counting { inner: body, read: read.clone() }), limit);
                    if let Err(Some(p)) = &r
                        && is_bomb(p.len() as u64, read.get(), budget.max_ratio)
                    {
                        listing.issues.push((
                            "ARCHIVE_BOMB",
                            format!("zip member {} expands over {}:1", member.name, budget.max_ratio),
                        ));
                    }
                    r
                }
                m => {
                    listing.issues.push((
                        "ARCHIVE_UNDECIPHERABLE",
                        format!("zip member {} uses compression method {m}", member.name),
                    ));
                    Err(None)
                }
            };
            match res {
                Ok(d) => {
                    budget.charge(d.len());
                    member.data = Some(d);
                }
                Err(Some(partial)) => {
                    budget.charge(partial.len());
                    let what = if limit < budget.bytes_left { "ARCHIVE_BOMB" } else { "MIME_LIMIT_BYTES" };
                    listing.issues.push((what, format!("zip member {} expands beyond {limit} bytes", member.name)));
                    member.data = Some(partial);
                }
                Err(None) if method == 0 || method == 8 => {
                    listing.issues.push(("ARCHIVE_CORRUPT", format!("zip member {} does not decompress", member.name)));
                }
                Err(None) => {}
            }
        }
        if encrypted {
            listing.issues.push(("ARCHIVE_ENCRYPTED", format!("zip member {} is encrypted", member.name)));
        }
        listing.members.push(member);
    }
    // Entries that share or overlap their data are the mark of a quine/overlap bomb.
    spans.sort_unstable();
    if spans.windows(2).any(|w| w[1].0 < w[0].1) {
        listing.issues.push(("ARCHIVE_BOMB", "zip entries overlap".into()));
    }
    listing
}

fn find_eocd(data: &[u8]) -> Option<usize> {
    if data.len() < 22 {
        return None;
    }
    let lowest = data.len().saturating_sub(22 + 65535);
    (lowest..=data.len() - 22).rev().find(|&i| data[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
}

fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256 for large sizes.
        return Some(field[1..].iter().fold(0u64, |a, &b| a.saturating_mul(256).saturating_add(u64::from(b))));
    }
    let s: String = field.iter().take_while(|&&b| b != 0 && b != b' ').map(|&b| b as char).collect();
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Lists a tar archive.
pub(crate) fn tar(data: &[u8], budget: &mut Budget) -> Listing {
    let mut listing = Listing::default();
    let mut pos = 0usize;
    let mut long_name: Option<String> = None;
    while pos.saturating_add(512) <= data.len() {
        let h = &data[pos..pos + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let Some(size) = octal(&h[124..136]) else {
            listing.issues.push(("ARCHIVE_CORRUPT", format!("tar header at {pos} is not valid")));
            break;
        };
        let kind = h[156];
        let body_start = pos + 512;
        let body_end = body_start.saturating_add(usize::try_from(size).unwrap_or(usize::MAX));
        let body = data.get(body_start..body_end.min(data.len())).unwrap_or_default();
        pos = body_start.saturating_add(usize::try_from(size.div_ceil(512).saturating_mul(512)).unwrap_or(usize::MAX));
        match kind {
            b'L' => {
                long_name = Some(cstr(body));
                continue;
            }
            b'x' => {
                for rec in String::from_utf8_lossy(body).lines() {
                    if let Some(p) = rec.split_once(" path=").map(|(_, p)| p) {
                        long_name = Some(p.to_string());
                    }
                }
                continue;
            }
            b'g' => continue,
            _ => {}
        }
        let mut name = long_name.take().unwrap_or_else(|| {
            let prefix = if &h[257..262] == b"ustar" { cstr(&h[345..500]) } else { String::new() };
            let n = cstr(&h[0..100]);
            if prefix.is_empty() { n } else { format!("{prefix}/{n}") }
        });
        if kind == b'5' || name.ends_with('/') {
            continue;
        }
        if !budget.take_member(&mut listing) {
            break;
        }
        if name.is_empty() {
            name = "(unnamed)".into();
        }
        let take = body.len().min(usize::try_from(budget.bytes_left).unwrap_or(usize::MAX));
        if take < body.len() {
            listing.issues.push(("MIME_LIMIT_BYTES", format!("tar member {name} exceeds the decoded-bytes budget")));
        }
        budget.charge(take);
        listing.members.push(Member { name, size, encrypted: false, data: Some(body[..take].to_vec()) });
    }
    listing
}

/// Decompresses gzip (all members) within the budget; the result is one member.
pub(crate) fn gzip(data: &[u8], budget: &mut Budget) -> Listing {
    let mut listing = Listing::default();
    if !budget.take_member(&mut listing) {
        return listing;
    }
    let read = std::rc::Rc::new(std::cell::Cell::new(0));
    let dec = MultiGzDecoder::new(Counting { inner: data, read: read.clone() });
    let name = dec.header().and_then(|h| h.filename()).map(|f| String::from_utf8_lossy(f).into_owned());
    let limit = budget.limit_for(data.len() as u64);
    let mut member = Member { name: name.unwrap_or_else(|| "(gzip content)".into()), ..Member::default() };
    let res = read_bounded(dec, limit);
    if let Err(Some(p)) = &res
        && is_bomb(p.len() as u64, read.get(), budget.max_ratio)
    {
        listing.issues.push(("ARCHIVE_BOMB", format!("gzip expands over {}:1", budget.max_ratio)));
    }
    match res {
        Ok(d) => {
            budget.charge(d.len());
            member.size = d.len() as u64;
            member.data = Some(d);
        }
        Err(Some(partial)) => {
            budget.charge(partial.len());
            let what =
                if limit < budget.bytes_left + partial.len() as u64 { "ARCHIVE_BOMB" } else { "MIME_LIMIT_BYTES" };
            listing.issues.push((what, format!("gzip expands beyond {limit} bytes from {}", data.len())));
            member.size = partial.len() as u64;
            member.data = Some(partial);
        }
        Err(None) => listing.issues.push(("ARCHIVE_CORRUPT", "gzip stream does not decompress".into())),
    }
    listing.members.push(member);
    listing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Budget {
        Budget { bytes_left: 1 << 20, members_left: 100, max_ratio: 100 }
    }

    #[test]
    fn garbage_never_panics() {
        for d in [&b""[..], b"PK\x05\x06", b"PK\x03\x04\x00\x00", &[0u8; 600][..], &[0xffu8; 700][..]] {
            zip(d, &mut budget());
            tar(d, &mut budget());
            gzip(d, &mut budget());
        }
    }

    #[test]
    fn octal_fields() {
        assert_eq!(octal(b"00000001750\0"), Some(1000));
        assert_eq!(octal(b"\0\0\0"), Some(0));
        assert_eq!(octal(b"zz"), None);
    }
}
