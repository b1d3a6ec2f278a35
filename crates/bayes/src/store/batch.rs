//! A training batch in memory, whatever the store: the features it touches, read once before
//! it, changed as each message is learnt and written once after it; and the learning itself
//! ([`learn`]), shared by the LMDB and Redis stores so that both learn exactly alike.

use std::collections::{HashMap, HashSet};

use super::{Class, Error, Item, Learned, Record, apply, bump, plan, prior_of};
use crate::linear;
use crate::model::{Counts, Params, Totals};

/// A feature a batch touches: its record before the batch (whether there was one) and the
/// batch's net change.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Touched {
    pub(crate) before: Record,
    pub(crate) stored: bool,
    pub(crate) spam: i64,
    pub(crate) ham: i64,
}

impl Touched {
    /// A feature held in the store as `before`.
    pub(crate) fn stored(before: Record) -> Touched {
        Touched { before, stored: true, ..Touched::default() }
    }

    /// The record as the batch has left it so far (learnt on `day`).
    pub(crate) fn after(&self, day: u32) -> Record {
        let mut rec = self.before;
        for (class, d) in [(Class::Spam, self.spam), (Class::Ham, self.ham)] {
            if d != 0 {
                apply(&mut rec, class, d, day);
            }
        }
        rec
    }

    /// Whether the batch changed it.
    pub(crate) fn changed(&self) -> bool {
        (self.spam, self.ham) != (0, 0)
    }
}

/// The features of a batch in key order: each one's record and changes, its counts as the
/// batch has left them so far, and where each key is.
pub(crate) struct Batch {
    pub(crate) keys: Vec<u64>,
    pub(crate) touched: Vec<Touched>,
    counts: Vec<Counts>,
    slot: super::KeyMap<u32>,
    pub(crate) day: u32,
}

impl Batch {
    /// The batch of `keys` (sorted, distinct) as they are stored (`touched`, in the same order),
    /// learnt on `day`.
    pub(crate) fn new(keys: Vec<u64>, touched: Vec<Touched>, day: u32) -> Batch {
        let counts = touched.iter().map(|t| t.after(day).counts).collect();
        let mut slot = super::KeyMap::with_capacity_and_hasher(keys.len(), Default::default());
        slot.extend(keys.iter().enumerate().map(|(i, k)| (*k, i as u32)));
        Batch { keys, touched, counts, slot, day }
    }

    /// Where each of `hashes` is (each must be one of the batch's keys), for [`Batch::add`] and
    /// [`Batch::counts`]: looked up once per message, not once per use.
    pub(crate) fn slots(&self, hashes: &[u64]) -> Vec<u32> {
        hashes.iter().filter_map(|h| self.slot.get(h).copied()).collect()
    }

    /// Counts a message of `class` once more (`sign` 1) or once less (-1).
    pub(crate) fn add(&mut self, slots: &[u32], class: Class, sign: i64) {
        for &i in slots {
            let (Some(t), Some(c)) = (self.touched.get_mut(i as usize), self.counts.get_mut(i as usize)) else {
                continue;
            };
            match class {
                Class::Spam => t.spam += sign,
                Class::Ham => t.ham += sign,
            }
            *c = t.after(self.day).counts;
        }
    }

    /// The counts at `slots` as the batch has left them so far, into `out`.
    pub(crate) fn counts(&self, slots: &[u32], out: &mut Vec<Counts>) {
        out.clear();
        out.extend(slots.iter().map(|&i| self.counts.get(i as usize).copied().unwrap_or_default()));
    }
}

/// The distinct feature hashes of `items`, sorted: the keys of their batch.
pub(crate) fn keys_of(items: &[Item]) -> Vec<u64> {
    let mut keys: Vec<u64> = items.iter().flat_map(|i| i.hashes.iter().copied()).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// What a store remembers of a learnt message: its class and the linear layer's step (none for
/// a message learnt before the layer existed).
pub(crate) type Seen = (Class, Option<f32>);

/// What learning a batch leaves for the store to write, besides the batch's counts, the totals
/// and the weights (changed in place).
pub(crate) struct Learnt {
    /// What became of each item, in order.
    pub(crate) outcomes: Vec<Learned>,
    /// Digest -> what to remember of the message now (`None`: forget it).
    pub(crate) seen: HashMap<[u8; 16], Option<Seen>>,
    /// Whether the linear layer moved.
    pub(crate) weights_changed: bool,
}

/// Learns (or, with `forget`, unlearns) `items` into `batch` (their features), `totals` and the
/// dense linear `weights`; `seen_before` says what the store remembers of a digest before the
/// batch. Each message's linear step is taken on top of Fisher's score from the counts as the
/// batch has left them before it; then the layer goes over the messages it learnt
/// `params.revisits` more times (see [`crate::linear`]).
pub(crate) fn learn(
    items: &[Item],
    forget: bool,
    params: &Params,
    batch: &mut Batch,
    totals: &mut Totals,
    weights: &mut [f32],
    mut seen_before: impl FnMut(&[u8; 16]) -> Result<Option<Seen>, Error>,
) -> Result<Learnt, Error> {
    let slots: Vec<Vec<u32>> = items.iter().map(|i| batch.slots(&i.hashes)).collect();
    let mut counts = Vec::new();
    let mut weights_changed = false;
    // Digest -> class and linear step, as this batch leaves them.
    let mut seen_now: HashMap<[u8; 16], Option<Seen>> = HashMap::new();
    let mut outcomes = Vec::with_capacity(items.len());
    for (item, at) in items.iter().zip(&slots) {
        let seen = match seen_now.get(&item.digest.0) {
            Some(s) => *s,
            None => seen_before(&item.digest.0)?,
        };
        let (remove, add, outcome) = plan(item, seen.map(|s| s.0), forget);
        if let Some(c) = remove {
            batch.add(at, c, -1);
            bump(totals, c, -1);
        }
        // Counted before the linear layer existed: training again teaches it to the layer.
        let legacy = outcome == Learned::Already && seen.is_some_and(|s| s.1.is_none());
        let prior = if add.is_some() || legacy {
            batch.counts(at, &mut counts);
            prior_of(&mut counts, *totals, legacy.then_some(item.class), params)
        } else {
            0.0
        };
        if let Some(c) = add {
            batch.add(at, c, 1);
            bump(totals, c, 1);
        }
        if remove.is_some() || add.is_some() {
            let alpha = linear::apply(weights, &item.vector, seen.and_then(|s| s.1), add, prior);
            weights_changed = true;
            seen_now.insert(item.digest.0, add.map(|c| (c, Some(alpha))));
        } else if legacy {
            let alpha = linear::apply(weights, &item.vector, None, Some(item.class), prior);
            weights_changed = true;
            seen_now.insert(item.digest.0, Some((item.class, Some(alpha))));
        }
        outcomes.push(outcome);
    }
    // The passes after the first: each message the batch learnt, as it left it.
    let mut learnt = Vec::new();
    let mut once = HashSet::new();
    for (item, at) in items.iter().zip(&slots) {
        if matches!(seen_now.get(&item.digest.0), Some(Some((c, Some(_)))) if *c == item.class)
            && once.insert(item.digest.0)
        {
            learnt.push((item, at));
        }
    }
    for _ in 0..params.revisits {
        for (item, at) in &learnt {
            let more = step_on_final_counts(item, at, batch, *totals, params, weights, &mut counts);
            if let Some(Some((_, Some(alpha)))) = seen_now.get_mut(&item.digest.0) {
                *alpha += more;
            }
        }
    }
    if params.orders > 1 && !learnt.is_empty() {
        average_orders(&learnt, params, batch, *totals, weights, &mut seen_now);
    }
    Ok(Learnt { outcomes, seen: seen_now, weights_changed })
}

/// A linear step for a message the batch learnt, against the batch's final counts less its own
/// (the revisits and the other runs); returns it.
fn step_on_final_counts(
    item: &Item,
    at: &[u32],
    batch: &Batch,
    totals: Totals,
    params: &Params,
    weights: &mut [f32],
    counts: &mut Vec<Counts>,
) -> f32 {
    batch.counts(at, counts);
    let prior = prior_of(counts, totals, Some(item.class), params);
    linear::apply(weights, &item.vector, None, Some(item.class), prior)
}

/// The linear layer's other runs over what a batch learnt (see [`crate::linear`]): from the
/// weights as they were before the batch's steps, `params.orders - 1` more runs, each over the
/// messages in another order and each message scored on the batch's final counts less its own,
/// `1 + params.revisits` passes each. The weights become the average of every run's, and
/// each message's remembered step the average of its steps, so forgetting still takes back
/// exactly what learning added. The runs take turns on `weights` itself, each first taking
/// back the steps of the one before, so nothing dense is copied (a batch of one from
/// autolearning or a release costs a few of its own vectors, not the whole table).
fn average_orders(
    learnt: &[(&Item, &Vec<u32>)],
    params: &Params,
    batch: &Batch,
    totals: Totals,
    weights: &mut [f32],
    seen_now: &mut HashMap<[u8; 16], Option<Seen>>,
) {
    let first: Vec<f32> = learnt
        .iter()
        .map(|(item, _)| match seen_now.get(&item.digest.0) {
            Some(Some((_, Some(alpha)))) => *alpha,
            _ => 0.0,
        })
        .collect();
    let mut sum = first.clone();
    let mut last = first;
    let mut order: Vec<usize> = (0..learnt.len()).collect();
    let mut counts = Vec::new();
    for _ in 1..params.orders {
        for ((item, _), a) in learnt.iter().zip(&last) {
            item.vector.add_to(weights, -a);
        }
        linear::shuffle(&mut order);
        let mut run = vec![0f32; learnt.len()];
        for _ in 0..=params.revisits {
            for &i in &order {
                let (item, at) = learnt[i];
                run[i] += step_on_final_counts(item, at, batch, totals, params, weights, &mut counts);
            }
        }
        for (s, r) in sum.iter_mut().zip(&run) {
            *s += r;
        }
        last = run;
    }
    let k = params.orders as f32;
    for (i, (item, _)) in learnt.iter().enumerate() {
        let mean = sum[i] / k;
        item.vector.add_to(weights, mean - last[i]);
        if let Some(Some((_, Some(alpha)))) = seen_now.get_mut(&item.digest.0) {
            *alpha = mean;
        }
    }
}
