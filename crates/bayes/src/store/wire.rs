//! Messages to learn, as `serve` hands them to the short-lived `strainer` process that learns
//! them (autolearning): a header line, then each [`Item`] in a little-endian binary form. The
//! learning runs in its own process so that the memory LMDB keeps from a write transaction
//! (its dirty pages, about 54 MiB for a batch of 500) goes when it exits instead of staying in
//! `serve` for good.

use super::{Class, Digest, Error, Item};
use crate::linear::Vector;

/// The first bytes of a stream of items.
pub const HEADER: &[u8] = b"strainer-items 1\n";

/// Appends `item`.
pub fn encode(item: &Item, out: &mut Vec<u8>) {
    out.extend_from_slice(&item.digest.0);
    out.push(match item.class {
        Class::Spam => b's',
        Class::Ham => b'h',
    });
    out.extend_from_slice(&(item.hashes.len() as u32).to_le_bytes());
    item.hashes.iter().for_each(|h| out.extend_from_slice(&h.to_le_bytes()));
    item.vector.encode(out);
}

/// Every item of a stream that [`HEADER`] and [`encode`] wrote.
pub fn decode_all(mut input: &[u8]) -> Result<Vec<Item>, Error> {
    input = input.strip_prefix(HEADER).ok_or_else(|| Error::Other("not a stream of items to learn".into()))?;
    let mut items = Vec::new();
    while !input.is_empty() {
        let item = decode(&mut input)
            .ok_or_else(|| Error::Other(format!("item {} to learn is cut short or malformed", items.len() + 1)))?;
        items.push(item);
    }
    Ok(items)
}

fn decode(input: &mut &[u8]) -> Option<Item> {
    let digest = Digest(take::<16>(input)?);
    let class = match take::<1>(input)? {
        [b's'] => Class::Spam,
        [b'h'] => Class::Ham,
        _ => return None,
    };
    let n = take_u32(input)? as usize;
    if input.len() < n.checked_mul(8)? {
        return None;
    }
    let hashes = (0..n).map(|_| take::<8>(input).map(u64::from_le_bytes)).collect::<Option<Vec<u64>>>()?;
    let vector = Vector::decode(input)?;
    Some(Item { digest, class, hashes, vector })
}

/// The first `N` bytes of `input`, taken off it.
fn take<const N: usize>(input: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = input.split_first_chunk::<N>()?;
    *input = rest;
    Some(*head)
}

/// A little-endian u32 taken off the front of `input`.
pub(crate) fn take_u32(input: &mut &[u8]) -> Option<u32> {
    take::<4>(input).map(u32::from_le_bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn item(body: &str, class: Class, hashes: Vec<u64>) -> Item {
        Item::new(format!("Subject: x\r\n\r\n{body}\r\n").as_bytes(), class, hashes, &Default::default())
    }

    fn stream(items: &[Item]) -> Vec<u8> {
        let mut out = HEADER.to_vec();
        items.iter().for_each(|i| encode(i, &mut out));
        out
    }

    #[test]
    fn items_read_back_as_written() {
        let items = vec![
            item("cheap pills", Class::Spam, vec![1 << 60, 2 << 60, 3 << 60]),
            item("lunch at noon?", Class::Ham, vec![]),
            Item { digest: Digest([7; 16]), class: Class::Ham, hashes: vec![9], vector: Vector::default() },
        ];
        let back = decode_all(&stream(&items)).unwrap();
        assert_eq!(back.len(), 3);
        for (a, b) in items.iter().zip(&back) {
            assert_eq!((a.digest, a.class, &a.hashes, &a.vector), (b.digest, b.class, &b.hashes, &b.vector));
        }
        assert!(decode_all(HEADER).unwrap().is_empty());
    }

    #[test]
    fn a_bad_stream_is_an_error() {
        let s = stream(&[item("cheap pills", Class::Spam, vec![1, 2])]);
        assert!(decode_all(&s[HEADER.len()..]).is_err(), "no header");
        for cut in HEADER.len() + 1..s.len() {
            assert!(decode_all(&s[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_class = s.clone();
        bad_class[HEADER.len() + 16] = b'x';
        assert!(decode_all(&bad_class).is_err());
        // The token value (after the two bucket lists: 2 hashes, 1 token bucket, the grams).
        let grams = item("cheap pills", Class::Spam, vec![1, 2]).vector.entries().count() - 1;
        let value_at = HEADER.len() + 16 + 1 + 4 + 16 + 4 + 4 + 4 + 4 * grams;
        let mut nan = s.clone();
        nan[value_at..value_at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(decode_all(&nan).is_err(), "a value that is not a number");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_after_the_header_decode_or_fail(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let mut s = HEADER.to_vec();
            s.extend_from_slice(&bytes);
            let _ = decode_all(&s);
        }

        #[test]
        fn any_message_round_trips(body in "[ -~]{0,300}", hashes in proptest::collection::vec(proptest::num::u64::ANY, 0..50), spam: bool) {
            let it = item(&body, if spam { Class::Spam } else { Class::Ham }, hashes);
            let back = decode_all(&stream(std::slice::from_ref(&it))).unwrap();
            proptest::prop_assert_eq!(&back[0].hashes, &it.hashes);
            proptest::prop_assert_eq!(&back[0].vector, &it.vector);
            proptest::prop_assert_eq!(back[0].digest, it.digest);
        }
    }
}
