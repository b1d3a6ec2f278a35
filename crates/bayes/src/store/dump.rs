//! A store's whole content as text, one record per line, the same from every backend:
//! `strainer bayes export` writes it and `strainer bayes import` reads it, to move a model from
//! LMDB to Redis (several hosts) or back, or to keep a backup any version can read (as
//! `sa-learn --backup` and `bogoutil -d` do).
//!
//! ```text
//! strainer-bayes-export 1
//! totals 500 2500
//! f 00a3c4e5f6071829 3 0 20418        feature hash, spam, ham, day last learnt
//! s 0f1e2d3c4b5a69788796a5b4c3d2e1f0 spam 20418 0.83    digest, class, day, linear step (- if none)
//! w 1234 0.0123                        linear bucket and weight (buckets at 0 left out)
//! ```
//!
//! Weights and steps are written as the shortest decimal that reads back to the same `f32`, so
//! an export imported gives the same scores to the last bit.

use super::{Class, Record};
use crate::model::{Counts, Totals};

/// The first line of an export: the format and its version.
pub const HEADER: &str = "strainer-bayes-export 1";

/// One record of a store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Entry {
    /// Messages learnt.
    Totals(Totals),
    /// A feature's hash, counts and the day it was last learnt.
    Feature(u64, Record),
    /// A message learnt: digest, class, day, and the linear layer's step for it (none for a
    /// message learnt before the layer existed).
    Seen([u8; 16], Class, u32, Option<f32>),
    /// A bucket of the linear layer and its weight.
    Weight(u32, f32),
}

impl Entry {
    /// The entry as one line of text (without the line end).
    pub fn to_line(&self) -> String {
        match *self {
            Entry::Totals(t) => format!("totals {} {}", t.spam, t.ham),
            Entry::Feature(h, r) => format!("f {h:016x} {} {} {}", r.counts.spam, r.counts.ham, r.day),
            Entry::Seen(d, class, day, step) => {
                let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
                let step = step.map_or_else(|| "-".to_string(), |s| s.to_string());
                format!("s {hex} {} {day} {step}", class.name())
            }
            Entry::Weight(b, w) => format!("w {b} {w}"),
        }
    }

    /// Reads a line written by [`Entry::to_line`]; the error says what was expected.
    pub fn parse(line: &str) -> Result<Entry, String> {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let num = |s: &str, what: &str| s.parse::<u64>().map_err(|_| format!("{what} {s:?} is not a number"));
        let n32 = |s: &str, what: &str| s.parse::<u32>().map_err(|_| format!("{what} {s:?} is not a 32-bit number"));
        let float = |s: &str, what: &str| {
            s.parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("{what} {s:?} is not a finite number"))
        };
        match f.as_slice() {
            ["totals", spam, ham] => {
                Ok(Entry::Totals(Totals { spam: num(spam, "spam total")?, ham: num(ham, "ham total")? }))
            }
            ["f", hash, spam, ham, day] => {
                let h = u64::from_str_radix(hash, 16)
                    .ok()
                    .filter(|_| hash.len() == 16)
                    .ok_or_else(|| format!("feature hash {hash:?} is not 16 hex digits"))?;
                let counts = Counts { spam: n32(spam, "spam count")?, ham: n32(ham, "ham count")? };
                Ok(Entry::Feature(h, Record { counts, day: n32(day, "day")? }))
            }
            ["s", hex, class, day, step] => {
                let mut d = [0u8; 16];
                let ok = hex.len() == 32
                    && d.iter_mut().enumerate().all(|(i, b)| {
                        hex.get(2 * i..2 * i + 2).and_then(|x| u8::from_str_radix(x, 16).ok()).map(|v| *b = v).is_some()
                    });
                if !ok {
                    return Err(format!("digest {hex:?} is not 32 hex digits"));
                }
                let class = match *class {
                    "spam" => Class::Spam,
                    "ham" => Class::Ham,
                    other => return Err(format!("class {other:?} is neither spam nor ham")),
                };
                let step = if *step == "-" { None } else { Some(float(step, "linear step")?) };
                Ok(Entry::Seen(d, class, n32(day, "day")?, step))
            }
            ["w", bucket, weight] => {
                let b = n32(bucket, "bucket")?;
                if b as usize >= crate::linear::DIM {
                    return Err(format!("bucket {b} is outside the linear layer (0..{})", crate::linear::DIM));
                }
                Ok(Entry::Weight(b, float(weight, "weight")?))
            }
            _ => Err("expected `totals`, `f`, `s` or `w` and their fields".into()),
        }
    }
}

/// The entries of a dense table of weights: each bucket that holds one (the inverse of
/// [`dense_weights`]).
pub fn weight_entries(dense: &[f32]) -> impl Iterator<Item = Entry> + '_ {
    dense.iter().enumerate().filter(|(_, w)| **w != 0.0).map(|(b, &w)| Entry::Weight(b as u32, w))
}

/// The linear layer's weights in `entries` as a dense table, or `None` when there are none
/// (a store from before the layer, or one never trained).
pub fn dense_weights(entries: &[Entry]) -> Option<Vec<f32>> {
    let mut dense: Option<Vec<f32>> = None;
    for e in entries {
        if let Entry::Weight(b, w) = *e {
            let table = dense.get_or_insert_with(|| vec![0.0; crate::linear::DIM]);
            if let Some(slot) = table.get_mut(b as usize) {
                *slot = w;
            }
        }
    }
    dense
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn entry() -> impl Strategy<Value = Entry> {
        let class = prop_oneof![Just(Class::Spam), Just(Class::Ham)];
        prop_oneof![
            (any::<u64>(), any::<u64>()).prop_map(|(spam, ham)| Entry::Totals(Totals { spam, ham })),
            (any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>())
                .prop_map(|(h, spam, ham, day)| Entry::Feature(h, Record { counts: Counts { spam, ham }, day })),
            (any::<[u8; 16]>(), class, any::<u32>(), proptest::option::of(-1e6f32..1e6))
                .prop_map(|(d, c, day, step)| Entry::Seen(d, c, day, step)),
            (0..crate::linear::DIM as u32, -1e3f32..1e3).prop_map(|(b, w)| Entry::Weight(b, w)),
        ]
    }

    proptest! {
        #[test]
        fn every_entry_reads_back_exactly(e in entry()) {
            prop_assert_eq!(Entry::parse(&e.to_line()), Ok(e));
        }

        #[test]
        fn any_line_is_an_entry_or_an_error_never_a_panic(line in "\\PC{0,80}") {
            let _ = Entry::parse(&line);
        }
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let err = |l: &str| Entry::parse(l).unwrap_err();
        assert!(err("f 12 1 2 3").contains("16 hex digits"));
        assert!(err("s 00 spam 1 -").contains("32 hex digits"));
        assert!(err(&format!("s {} eggs 1 -", "0".repeat(32))).contains("neither spam nor ham"));
        assert!(err("w 999999999 0.5").contains("outside the linear layer"));
        assert!(err("w 3 NaN").contains("finite"));
        assert!(err("totals 1").contains("expected"));
        assert_eq!(Entry::parse("w 3 -0.25"), Ok(Entry::Weight(3, -0.25)));
    }
}
