//! A training batch's features: read once before the batch, changed in memory as each message is
//! learnt, written once after it. A batch of 500 messages touches about 100,000 features; when
//! that is a good part of the table, one ordered walk through it beats a search from the root for
//! each (see [`WALK`]).

use heed::RoTxn;

use super::Lmdb;
use crate::model::Counts;
use crate::store::batch::{Batch, Touched};
use crate::store::{Error, Record};

/// A batch touching at least 1/WALK of the table's features reads and writes them in one walk
/// through it (about 25 ns an entry) rather than a search from the root each (about 1 us).
const WALK: u64 = 16;

impl Lmdb {
    /// The records of `keys` (sorted, distinct) as a batch learnt on `day`, with no changes yet.
    pub(super) fn read_sorted(&self, txn: &RoTxn, keys: Vec<u64>, day: u32) -> Result<Batch, Error> {
        let mut touched = Vec::with_capacity(keys.len());
        let found = |v: &[u8]| Touched::stored(Record::decode(v).unwrap_or_default());
        if let (Some(&lo), Some(&hi)) = (keys.first(), keys.last()) {
            if keys.len() as u64 * WALK >= self.tokens.len(txn).map_err(|e| self.err(e))? {
                // The walk and the keys are both in key order: each key is passed once.
                let mut want = keys.iter().copied().peekable();
                for kv in self.tokens.range(txn, &(lo..=hi)).map_err(|e| self.err(e))? {
                    let (k, v) = kv.map_err(|e| self.err(e))?;
                    while want.next_if(|w| *w < k).is_some() {
                        touched.push(Touched::default());
                    }
                    if want.next_if_eq(&k).is_some() {
                        touched.push(found(v));
                    }
                }
                touched.extend(want.map(|_| Touched::default()));
            } else {
                for &k in &keys {
                    touched
                        .push(self.tokens.get(txn, &k).map_err(|e| self.err(e))?.map_or_else(Touched::default, found));
                }
            }
        }
        Ok(Batch::new(keys, touched, day))
    }

    /// Writes the changed records of `batch`, deleting those left at zero.
    pub(super) fn write_sorted(&self, wtxn: &mut heed::RwTxn, batch: Batch) -> Result<(), Error> {
        let day = batch.day;
        let changed: Vec<(u64, Touched)> =
            batch.keys.into_iter().zip(batch.touched).filter(|(_, t)| t.changed()).collect();
        let (Some(&(lo, _)), Some(&(hi, _))) = (changed.first(), changed.last()) else { return Ok(()) };
        let mut fresh: Vec<&(u64, Touched)> = Vec::new();
        if changed.len() as u64 * WALK >= self.tokens.len(wtxn).map_err(|e| self.err(e))? {
            // One walk updates what is stored in place; what is new is inserted after it.
            let mut todo = changed.iter().peekable();
            let mut walk = self.tokens.range_mut(wtxn, &(lo..=hi)).map_err(|e| self.err(e))?;
            while let Some(kv) = walk.next() {
                let k = kv.map_err(|e| self.err(e))?.0;
                while todo.next_if(|(h, _)| *h < k).is_some() {}
                let Some((_, t)) = todo.next_if(|(h, _)| *h == k) else { continue };
                let rec = t.after(day);
                // SAFETY: nothing read from the table is held across the change (the key is a
                // copied integer, the value was not kept), as heed requires.
                #[allow(unsafe_code)]
                let done = if rec.counts == Counts::default() {
                    unsafe { walk.del_current() }
                } else {
                    unsafe { walk.put_current(&k, &rec.encode()) }
                };
                done.map_err(|e| self.err(e))?;
            }
            drop(walk);
            fresh.extend(changed.iter().filter(|(_, t)| !t.stored));
        } else {
            fresh.extend(changed.iter());
        }
        for (h, t) in fresh {
            let rec = t.after(day);
            if rec.counts == Counts::default() {
                if t.stored {
                    self.tokens.delete(wtxn, h).map_err(|e| self.err(e))?;
                }
            } else {
                self.tokens.put(wtxn, h, &rec.encode()).map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::store::lmdb::Lmdb;
    use crate::store::{Class, Item, Store};

    #[test]
    fn walking_the_table_and_searching_it_agree() {
        let d = tempfile::tempdir().unwrap();
        let (l, m) = (Lmdb::open(d.path(), 1 << 26).unwrap(), crate::store::Memory::new());
        // 40 messages of 100 features, each sharing half with the next: 2,050 features.
        let item = |n: u64| {
            let hashes: Vec<u64> = (n * 50..n * 50 + 100).map(|h| h.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
            let class = if n.is_multiple_of(3) { Class::Ham } else { Class::Spam };
            Item::new(format!("Subject: {n}\r\n\r\nbody {n}\r\n").as_bytes(), class, hashes, &Default::default())
        };
        let all: Vec<Item> = (0..40).map(item).collect();
        let same = |what: &str| {
            let hashes: Vec<u64> = (0..2200u64).map(|h| h.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            assert_eq!(l.lookup(&hashes, &mut a).unwrap(), m.lookup(&hashes, &mut b).unwrap(), "{what}");
            assert_eq!(a, b, "{what}");
            assert_eq!(l.stats().unwrap().tokens, m.stats().unwrap().tokens, "{what}");
        };
        let both = |items: &[Item], forget: bool| {
            assert_eq!(l.learn(items, forget).unwrap(), m.learn(items, forget).unwrap());
        };
        both(&all, false);
        same("one batch of everything: a walk");
        both(&[item(41)], false);
        same("one new message, half of it new features: searches");
        both(&all[5..6], true);
        same("one forgotten, some features gone: searches");
        both(&all[10..30], true);
        same("twenty forgotten, many gone: a walk deleting as it goes");
        both(&all[10..30], false);
        same("learnt again: a walk inserting what is new");
    }
}
