//! A read-only table of feature counts, laid out for looking up a whole message's features at
//! once: open addressing with linear probing over one flat array, so that a message's lookups
//! can first touch every home slot (independent loads the processor overlaps) and then probe in
//! cache. A `HashMap` probe branches on what it loads, which serialises the cache misses: 400 of
//! them were the largest part of looking a message up in `serve`'s copy of the store.

use crate::model::Counts;

/// Features looked up together: their home slots are touched before any is probed.
const GROUP: usize = 32;

/// Feature counts by hash, built once and then only read.
#[derive(Debug)]
pub struct CountTable {
    /// (hash, counts); an empty slot is hash 0 with zero counts, which also reads as "unseen"
    /// for the one feature whose hash is 0.
    slots: Vec<(u64, Counts)>,
    len: usize,
}

impl Default for CountTable {
    fn default() -> Self {
        CountTable::with_capacity(0)
    }
}

impl CountTable {
    /// An empty table with room for `n` features.
    pub fn with_capacity(n: usize) -> CountTable {
        // Two in three slots used: a miss probes about five slots, mostly in one cache line,
        // and the table is a little larger than a HashMap's (which fills seven in eight).
        let size = (n.saturating_mul(3) / 2).max(16);
        CountTable { slots: vec![(0, Counts::default()); size], len: 0 }
    }

    fn home(&self, hash: u64) -> usize {
        // The hash's place in [0, size) by multiplication: any size, not only powers of two
        // (which would double the memory at the wrong count). Keys are xxh3 hashes, spread evenly.
        ((u128::from(hash) * self.slots.len() as u128) >> 64) as usize
    }

    /// Whether a slot holds nothing (hash 0 with zero counts).
    fn vacant(slot: (u64, Counts)) -> bool {
        slot == (0, Counts::default())
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() { 0 } else { i + 1 }
    }

    /// Sets the counts of `hash`, growing the table when it gets full.
    pub fn insert(&mut self, hash: u64, counts: Counts) {
        if Self::vacant((hash, counts)) {
            return; // reads as unseen already
        }
        if (self.len + 1) * 3 > self.slots.len() * 2 {
            let mut bigger = CountTable::with_capacity((self.len + 1) * 2);
            for &(h, c) in &self.slots {
                bigger.insert(h, c); // vacant slots are skipped by insert itself
            }
            *self = bigger;
        }
        let mut i = self.home(hash);
        loop {
            if Self::vacant(self.slots[i]) {
                self.slots[i] = (hash, counts);
                self.len += 1;
                return;
            }
            if self.slots[i].0 == hash {
                self.slots[i].1 = counts;
                return;
            }
            i = self.next(i);
        }
    }

    /// The counts of `hash` (zero when unseen).
    pub fn get(&self, hash: u64) -> Counts {
        let mut i = self.home(hash);
        loop {
            let (h, c) = self.slots[i];
            if h == hash || Self::vacant((h, c)) {
                return c;
            }
            i = self.next(i);
        }
    }

    /// Appends the counts of each of `hashes` to `out`.
    pub fn get_many(&self, hashes: &[u64], out: &mut Vec<Counts>) {
        out.reserve(hashes.len());
        for group in hashes.chunks(GROUP) {
            // Touch every home slot first; the sum only keeps the loads from being optimised away.
            let touched = group.iter().fold(0u64, |acc, &h| acc ^ self.slots[self.home(h)].0);
            std::hint::black_box(touched);
            out.extend(group.iter().map(|&h| self.get(h)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(spam: u32, ham: u32) -> Counts {
        Counts { spam, ham }
    }

    #[test]
    fn finds_what_was_inserted_and_nothing_else() {
        let mut t = CountTable::with_capacity(4);
        // Colliding homes, the zero hash, and growth past the first size.
        let keys: Vec<u64> = (0..1000u64).map(|k| k * 16).collect();
        for &k in &keys {
            t.insert(k, c(k as u32 + 1, 2));
        }
        assert_eq!(t.len, 1000);
        for &k in &keys {
            assert_eq!(t.get(k), c(k as u32 + 1, 2));
        }
        assert_eq!(t.get(17), Counts::default());
        t.insert(16, c(9, 9));
        assert_eq!((t.get(16), t.len), (c(9, 9), 1000));
        let mut out = vec![c(7, 7)];
        t.get_many(&[16, 17, 0], &mut out);
        assert_eq!(out, vec![c(7, 7), c(9, 9), Counts::default(), c(1, 2)]);
    }
}
