//! xtext encoding (RFC 3461 section 4), used by ENVID, ORCPT and XFORWARD values.

/// Decodes xtext; `None` when a `+` is not followed by two upper-case hex digits.
pub fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'+' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hi = hex_val(hex[0])?;
            let lo = hex_val(hex[1])?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Encodes a value as xtext: `+`, `=`, controls, space and non-ASCII become `+XX`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push('+');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        assert_eq!(encode("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(decode("rfc822;a+2Bb@x").as_deref(), Some("rfc822;a+b@x"));
        assert_eq!(decode("bad+4"), None);
        assert_eq!(decode("bad+zz"), None);
    }

    proptest! {
        #[test]
        fn round_trip(s in "\\PC*") {
            prop_assert_eq!(decode(&encode(&s)), Some(s));
        }
    }
}
