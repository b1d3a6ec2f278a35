//! The discriminative layer: a linear model over hashed features, learnt online with the
//! passive-aggressive rule (Crammer et al. 2006), added to Fisher's log-odds.
//!
//! Counting classifiers (Fisher, naive Bayes) treat features as independent evidence, so they
//! cannot use overlapping ones; a linear model learnt by mistakes can. What it sees:
//!
//! - every feature of the tokenizer (words, header words, hosts, pairs), and
//! - the byte 4-grams of the first [`GRAM_BYTES`] of the message as it arrived (headers
//!   included, the ignored fields left out: our own `X-Spam-*`/`X-Strainer-*`, so it never
//!   learns its own verdicts, and those of [`IgnoreHeaders`]), which catch what words miss:
//!   obfuscated spellings, encodings, header layout.
//!
//! Both are hashed into [`DIM`] buckets, binary, each group scaled to half the vector's
//! weight, the vector to unit length (as Sculley and Wachman's online SVMs for the TREC spam track).
//! The layer learns what Fisher misses: learning a message moves the weights just enough that
//! the whole score (Fisher's log-odds, from the counts as they are before this message, plus
//! [`SCALE`] times the margin) reaches [`SCALE`] on its side, so a message Fisher already
//! scores well beyond that teaches the layer nothing. The step (`alpha`) is remembered with the
//! message's digest so forgetting subtracts exactly what learning added. Measured on the
//! SpamAssassin corpus (benches/README.md), learning on the whole score halved 1-AUC on the
//! half split against learning the margin alone, and the pair ranks better than either part.
//!
//! A store learns a batch (up to `bayes.train_batch`, 5,000 messages, from `strainer train`) in
//! one pass and then goes over the messages it learnt [`crate::Params::revisits`] more times (2
//! by default), each scored from the counts as the batch left them less its own: a step taken
//! for a later message may have pushed an earlier one back from its target, and the next pass
//! steps it again (its remembered step grows, so forgetting still takes back everything). On the
//! corpus this cut the time split's FN at 0.1% FP in `strainer train`'s order from 13.7 to 9.7 %
//! and half fold 2's from 4.4 to 3.2 % (benches/README.md). Each extra pass costs about 30 us a
//! message (Fisher's score and the step); the LMDB batch indexes its features so that reading
//! counts is cheap.
//!
//! That run is then averaged with [`crate::Params::orders`] - 1 more (1 more by default): each
//! starts from the weights as they were before the batch, takes the messages in another
//! (seeded) order, scores each on the batch's final counts less its own, and makes as many
//! passes. The weights become the mean of the runs', each message's remembered step the mean
//! of its steps. One run's result depends on the order it met the messages in, and the mean
//! of two runs that differ in order and in what they step against depends on it less. On the
//! corpus, over twenty training orders with the whole training part as one batch, FN at 0.1%
//! FP fell from 1.96 / 2.81 / 5.69 % (means; half folds, time split) to 1.50 / 2.53 / 4.66, and
//! FN at the default threshold on fold 1 from 4.2 to 3.2 %. Both parts count: in batches of
//! 500 the mean of two runs gained nothing on the half split; as one batch, a single run gained
//! nothing on fold 2; four runs were no better than two (benches/README.md). It costs one more
//! set of passes per message in training.
//!
//! Online learning depends on order: the last messages learnt weigh most, and a run of one
//! class (or of one folder of it) drags the weights. Training from folders therefore takes each
//! class's files in a shuffled order ([`shuffle`], seeded, so a run repeats) and interleaves the
//! two classes ([`Mixer`]), as the messages would have arrived.

use crate::ignore::IgnoreHeaders;
use crate::store::Class;

/// Buckets of the hashed feature space (2^18: the weights are 1 MiB of f32).
pub const DIM: usize = 1 << 18;
const BITS: u32 = 18;

/// Bytes of the message (from its start) whose 4-grams are features.
pub const GRAM_BYTES: usize = 10_000;

/// Most a single step may move the weights (the PA-I bound; with unit vectors it only binds
/// on a message that was far on the wrong side).
pub const MAX_STEP: f64 = 10.0;

/// How much the linear margin counts against Fisher's log-odds in the final score.
pub const SCALE: f64 = 20.0;

/// A message as the linear model sees it: the distinct buckets of its tokenizer features and of
/// its 4-grams, each group with one value, scaled so the vector has unit length. A bucket in both
/// groups holds the sum of the two values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vector {
    /// Distinct token buckets, sorted.
    tokens: Vec<u32>,
    /// Distinct 4-gram buckets, in the order first seen.
    grams: Vec<u32>,
    /// The value of a token bucket and of a 4-gram bucket.
    values: (f32, f32),
    /// Buckets in both groups.
    shared: usize,
}

impl Vector {
    /// The vector of a message: its tokenizer `hashes` and the 4-grams of its `raw` bytes,
    /// header fields `ignore` skips left out.
    pub fn of(hashes: &[u64], raw: &[u8], ignore: &IgnoreHeaders) -> Vector {
        let mut tokens: Vec<u32> = hashes.iter().map(|&h| bucket_of_hash(h)).collect();
        // A bucket is the top bits of its hash: the tokenizer's sorted hashes give sorted buckets.
        if !tokens.is_sorted() {
            tokens.sort_unstable();
        }
        tokens.dedup();
        let (grams, shared) = grams_sharing(raw, &tokens, ignore);
        let groups = u8::from(!tokens.is_empty()) + u8::from(!grams.is_empty());
        if groups == 0 {
            return Vector::default();
        }
        let share = |n: usize| (1.0 / (f64::from(groups) * n.max(1) as f64)).sqrt();
        let (a, b) = (share(tokens.len()), share(grams.len()));
        // Buckets shared by a token and a 4-gram make the length a little over 1.
        let sq = tokens.len() as f64 * a * a + grams.len() as f64 * b * b + 2.0 * shared as f64 * a * b;
        let inv = 1.0 / sq.sqrt();
        Vector { tokens, grams, values: ((a * inv) as f32, (b * inv) as f32), shared }
    }

    /// Appends the vector in [`crate::store::wire`]'s form.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        for list in [&self.tokens, &self.grams] {
            out.extend_from_slice(&(list.len() as u32).to_le_bytes());
            list.iter().for_each(|b| out.extend_from_slice(&b.to_le_bytes()));
        }
        out.extend_from_slice(&self.values.0.to_le_bytes());
        out.extend_from_slice(&self.values.1.to_le_bytes());
        out.extend_from_slice(&(self.shared as u32).to_le_bytes());
    }

    /// Reads what [`Vector::encode`] wrote from the front of `input`; `None` when it is cut short,
    /// names a bucket out of range or holds a value that is not a finite number.
    pub(crate) fn decode(input: &mut &[u8]) -> Option<Vector> {
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let n = crate::store::wire::take_u32(input)? as usize;
            if input.len() < n.checked_mul(4)? {
                return None;
            }
            list.reserve_exact(n);
            for _ in 0..n {
                list.push(crate::store::wire::take_u32(input)?);
            }
            if list.iter().any(|&b| b as usize >= DIM) {
                return None;
            }
        }
        let a = f32::from_bits(crate::store::wire::take_u32(input)?);
        let b = f32::from_bits(crate::store::wire::take_u32(input)?);
        if !(a.is_finite() && b.is_finite()) {
            return None;
        }
        let shared = crate::store::wire::take_u32(input)? as usize;
        let [tokens, grams] = lists;
        Some(Vector { tokens, grams, values: (a, b), shared })
    }

    /// A vector of value 1 on one bucket.
    pub fn unit(bucket: u32) -> Vector {
        Vector { tokens: vec![bucket], values: (1.0, 0.0), ..Vector::default() }
    }

    /// Gives back the room the 4-gram list was built in (one slot per byte read, most of it
    /// unused), for a vector kept a while, such as one waiting to be learnt.
    pub fn shrink_to_fit(&mut self) {
        self.grams.shrink_to_fit();
        self.tokens.shrink_to_fit();
    }

    /// Whether nothing was seen.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.grams.is_empty()
    }

    /// Each (bucket, value): tokens, then 4-grams; a bucket in both comes twice, once with each
    /// group's value, so sums over this (dot products, steps) come out right.
    pub fn entries(&self) -> impl Iterator<Item = (u32, f32)> + '_ {
        let (a, b) = self.values;
        self.tokens.iter().map(move |&t| (t, a)).chain(self.grams.iter().map(move |&g| (g, b)))
    }

    /// Each distinct bucket once with its value, sorted by bucket.
    pub fn merged(&self) -> Vec<(u32, f32)> {
        let mut all: Vec<(u32, f32)> = self.entries().collect();
        all.sort_unstable_by_key(|e| e.0);
        all.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 += later.1;
            }
            same
        });
        all
    }

    /// The value a token bucket holds as a token (its 4-gram share, if any, aside).
    pub fn token_value(&self, bucket: u32) -> Option<f32> {
        self.tokens.binary_search(&bucket).ok().map(|_| self.values.0)
    }

    /// The squared length (1, or 0 when empty).
    pub fn norm_sq(&self) -> f64 {
        let (a, b) = (f64::from(self.values.0), f64::from(self.values.1));
        self.tokens.len() as f64 * a * a + self.grams.len() as f64 * b * b + 2.0 * self.shared as f64 * a * b
    }

    /// The dot product with weights read by `w(bucket)`.
    pub fn dot(&self, w: impl Fn(u32) -> f32) -> f64 {
        // Four running sums: one chain of dependent additions kept the loads from running ahead.
        let sum = |buckets: &[u32]| {
            let mut acc = [0f64; 4];
            let mut quads = buckets.chunks_exact(4);
            for q in quads.by_ref() {
                for (a, &i) in acc.iter_mut().zip(q) {
                    *a += f64::from(w(i));
                }
            }
            let rest: f64 = quads.remainder().iter().map(|&i| f64::from(w(i))).sum();
            (acc[0] + acc[1]) + (acc[2] + acc[3]) + rest
        };
        f64::from(self.values.0) * sum(&self.tokens) + f64::from(self.values.1) * sum(&self.grams)
    }

    /// Adds `alpha` times this vector to dense weights.
    pub fn add_to(&self, weights: &mut [f32], alpha: f32) {
        for (i, v) in self.entries() {
            if let Some(w) = weights.get_mut(i as usize) {
                *w += alpha * v;
            }
        }
    }
}

/// The bucket of a tokenizer feature.
pub fn bucket_of_hash(h: u64) -> u32 {
    (h >> (64 - BITS)) as u32
}

/// The distinct buckets of the byte 4-grams of the first [`GRAM_BYTES`] of `raw`, in the order
/// first seen; carriage returns are left out (so a message on the wire and in a mailbox agree)
/// and the header fields `ignore` skips with them.
pub fn grams(raw: &[u8], ignore: &IgnoreHeaders) -> Vec<u32> {
    grams_sharing(raw, &[], ignore).0
}

/// [`grams`], and how many of `tokens` (distinct buckets) are among them.
fn grams_sharing(raw: &[u8], tokens: &[u32], ignore: &IgnoreHeaders) -> (Vec<u32>, usize) {
    // A bit per bucket marks what was seen; each gram is written to the list and the list only
    // grows when the bit was new, without a branch (reading the bits back, or sorting, cost
    // three times the rolling itself).
    let mut seen = Box::new([0u64; DIM / 64]);
    let mut roll = Roll { out: vec![0; raw.len().min(GRAM_BYTES) + 1], ..Roll::default() };
    // Header lines one by one (to skip our own fields), then the body in one go.
    let mut rest = raw;
    let mut skipping = false;
    while !rest.is_empty() && roll.fed < GRAM_BYTES {
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        let (line, after) = rest.split_at(end);
        if line.iter().all(|&b| b == b'\r' || b == b'\n') {
            roll.feed(line, &mut seen);
            roll.feed(after, &mut seen);
            break;
        }
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            skipping = ignore.skips_line(line);
        }
        if !skipping {
            roll.feed(line, &mut seen);
        }
        rest = after;
    }
    let shared =
        tokens.iter().filter(|&&t| seen.get(t as usize / 64).is_some_and(|w| w & (1 << (t % 64)) != 0)).count();
    let mut out = roll.out;
    out.truncate(roll.distinct);
    (out, shared)
}

/// The last four bytes fed (carriage returns left out), how many were fed, and the distinct
/// buckets so far (`out[..distinct]`; `out` has room for one gram per byte plus one).
#[derive(Default)]
struct Roll {
    window: u32,
    fed: usize,
    out: Vec<u32>,
    distinct: usize,
}

impl Roll {
    /// Feeds `bytes` until [`GRAM_BYTES`] were fed, marking the bucket of each 4-gram in `seen`.
    fn feed(&mut self, bytes: &[u8], seen: &mut [u64; DIM / 64]) {
        // Locals, not fields, in the loop: the compiler keeps them in registers.
        let (mut window, mut fed, mut n) = (self.window, self.fed, self.distinct);
        for &b in bytes {
            if fed >= GRAM_BYTES {
                break;
            }
            if b == b'\r' {
                continue;
            }
            // Little-endian order of the last four bytes: the oldest is the lowest.
            window = (window >> 8) | (u32::from(b) << 24);
            fed += 1;
            if fed >= 4 {
                let g = window.wrapping_mul(0x9E37_79B1) >> (32 - BITS);
                let (word, bit) = (&mut seen[(g / 64) as usize], 1u64 << (g % 64));
                let new = *word & bit == 0;
                *word |= bit;
                // At most one gram per byte fed, and fed stops at GRAM_BYTES: n stays in range.
                if let Some(slot) = self.out.get_mut(n) {
                    *slot = g;
                }
                n += usize::from(new);
            }
        }
        (self.window, self.fed, self.distinct) = (window, fed, n);
    }
}

/// Fisher's log-odds for a message in the linear layer's units (the final score is Fisher's
/// log-odds plus [`SCALE`] times the margin): what the layer learns on top of.
pub fn prior(fisher_log_odds: f64) -> f64 {
    if fisher_log_odds.is_finite() { fisher_log_odds / SCALE } else { 0.0 }
}

/// The step that learns `x` as `class` given its current `margin`: `alpha` to add times `x`
/// (0 when the margin is already 1 on the right side).
pub fn step(margin: f64, x: &Vector, class: Class) -> f32 {
    let t = if class == Class::Spam { 1.0 } else { -1.0 };
    let loss = 1.0 - t * margin;
    let sq = x.norm_sq();
    if loss <= 0.0 || sq == 0.0 {
        return 0.0;
    }
    (t * (loss / sq).min(MAX_STEP)) as f32
}

/// Learns or forgets `x` on dense `weights`: takes back the step `remove` (a message learnt
/// before), then, when `add` is given, steps toward that class so that `prior` (what the rest of
/// the score already says, in margin units: see [`prior`]) plus the margin reaches 1 on its
/// side. Returns the new step.
pub fn apply(weights: &mut [f32], x: &Vector, remove: Option<f32>, add: Option<Class>, prior: f64) -> f32 {
    if let Some(a) = remove.filter(|a| *a != 0.0) {
        x.add_to(weights, -a);
    }
    let Some(class) = add else { return 0.0 };
    let margin = x.dot(|i| weights.get(i as usize).copied().unwrap_or(0.0));
    let alpha = step(prior + margin, x, class);
    if alpha != 0.0 {
        x.add_to(weights, alpha);
    }
    alpha
}

/// Dense weights from their stored bytes (little-endian f32); missing or short means untrained.
pub fn decode(bytes: Option<&[u8]>) -> Vec<f32> {
    let mut w = vec![0f32; DIM];
    if let Some(b) = bytes.filter(|b| b.len() == DIM * 4) {
        for (dst, src) in w.iter_mut().zip(b.chunks_exact(4)) {
            *dst = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
        }
    }
    w
}

/// The stored form of dense weights.
pub fn encode(w: &[f32]) -> Vec<u8> {
    w.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The weight of `bucket` in stored bytes, without decoding them all.
pub fn weight_in(bytes: &[u8], bucket: u32) -> f32 {
    let i = bucket as usize * 4;
    bytes.get(i..i + 4).map_or(0.0, |s| f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Shuffles `items` in place, the same way on every run (Fisher-Yates on a fixed-seed LCG).
pub fn shuffle<T>(items: &mut [T]) {
    let mut rng = Mixer::default();
    for k in (1..items.len()).rev() {
        let j = (rng.next() % (k as u64 + 1)) as usize;
        items.swap(k, j);
    }
}

/// Interleaves two classes of training messages: each pick is spam with probability
/// proportional to what is left of it (bytes or messages), from a fixed seed so a run repeats.
#[derive(Debug, Clone)]
pub struct Mixer(u64);

impl Default for Mixer {
    fn default() -> Self {
        Mixer(0x853C_49E6_748F_EA9B)
    }
}

impl Mixer {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        // The high bits of an LCG are the random ones.
        self.0 ^ (self.0 >> 29)
    }

    /// Which class to take next, given what is left of each.
    pub fn pick(&mut self, spam_left: u64, ham_left: u64) -> Class {
        if ham_left == 0 {
            return Class::Spam;
        }
        if spam_left == 0 {
            return Class::Ham;
        }
        let r = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        if r * ((spam_left + ham_left) as f64) < spam_left as f64 { Class::Spam } else { Class::Ham }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &str) -> Vec<u8> {
        format!("From: a@example.org\r\nSubject: hello\r\n\r\n{body}\r\n").into_bytes()
    }

    #[test]
    fn a_vector_has_unit_length_and_distinct_buckets() {
        let x = Vector::of(&[1, 2, 3, u64::MAX], &msg("some words of a body"), &Default::default());
        let merged = x.merged();
        let norm: f64 = merged.iter().map(|e| f64::from(e.1).powi(2)).sum();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert!((x.norm_sq() - 1.0).abs() < 1e-5);
        assert!(merged.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(Vector::of(&[], b"", &Default::default()), Vector::default());
        assert!(Vector::default().is_empty());
    }

    #[test]
    fn a_bucket_both_token_and_gram_holds_both_values() {
        let raw = msg("a body long enough for several grams");
        let g = grams(&raw, &Default::default());
        // A token whose bucket is the first gram's, and one elsewhere.
        let hit = u64::from(g[0]) << (64 - BITS);
        let miss = (0..DIM as u64).map(|b| b << (64 - BITS)).find(|h| !g.contains(&bucket_of_hash(*h))).unwrap();
        let x = Vector::of(&[hit, miss], &raw, &Default::default());
        assert_eq!(x.shared, 1);
        let merged = x.merged();
        assert_eq!(merged.len(), g.len() + 1);
        let (a, b) = x.values;
        let at = |bucket: u32| merged.iter().find(|e| e.0 == bucket).unwrap().1;
        assert!((at(g[0]) - (a + b)).abs() < 1e-7);
        assert!((at(bucket_of_hash(miss)) - a).abs() < 1e-7);
        let norm: f64 = merged.iter().map(|e| f64::from(e.1).powi(2)).sum();
        assert!((norm - 1.0).abs() < 1e-5 && (x.norm_sq() - norm).abs() < 1e-5, "{norm}");
        // The dot product counts the shared bucket once with its summed value.
        let w = |i: u32| if i == g[0] { 1.0 } else { 0.0 };
        assert!((x.dot(w) - f64::from(a + b)).abs() < 1e-6);
    }

    #[test]
    fn grams_are_distinct_and_in_range() {
        let mut raw = msg("repeat repeat repeat repeat");
        raw.extend(std::iter::repeat_n(b'z', 3 * GRAM_BYTES));
        let g = grams(&raw, &Default::default());
        let mut sorted = g.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), g.len());
        assert!(g.iter().all(|&b| (b as usize) < DIM));
        assert!(grams(b"abc", &Default::default()).is_empty());
        assert_eq!(grams(b"abcd", &Default::default()).len(), 1);
    }

    #[test]
    fn our_own_headers_and_carriage_returns_do_not_change_the_grams() {
        let plain = b"From: a@example.org\nSubject: hi\n\nbody text here\n".to_vec();
        let ours = b"X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=9.0\r\n\ttests=[X]\r\nFrom: a@example.org\r\nX-Strainer-Warn: would hold\r\nSubject: hi\r\n\r\nbody text here\r\n".to_vec();
        assert_eq!(grams(&plain, &Default::default()), grams(&ours, &Default::default()));
        assert_ne!(
            grams(&plain, &Default::default()),
            grams(b"From: a@example.org\nSubject: hi\n\nother text\n", &Default::default())
        );
    }

    /// The grams as defined, the slow way: every 4-gram of the first GRAM_BYTES bytes (CR left
    /// out) of the lines that are not ours, distinct buckets in the order first seen.
    fn reference_grams(raw: &[u8]) -> Vec<u32> {
        let text = String::from_utf8_lossy(raw).replace('\r', "");
        // The header ends at its last line's newline; the body starts with the blank line.
        let (head, body) = text.find("\n\n").map_or((text.as_str(), ""), |i| text.split_at(i + 1));
        let mut kept: Vec<u8> = Vec::new();
        let mut skipping = false;
        for line in head.split_inclusive('\n') {
            if !line.starts_with([' ', '\t']) {
                skipping = IgnoreHeaders::default().skips_line(line.as_bytes());
            }
            if !skipping {
                kept.extend_from_slice(line.as_bytes());
            }
        }
        kept.extend_from_slice(body.as_bytes());
        kept.truncate(GRAM_BYTES);
        let mut seen = std::collections::HashSet::new();
        kept.windows(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]).wrapping_mul(0x9E37_79B1) >> (32 - BITS))
            .filter(|g| seen.insert(*g))
            .collect()
    }

    proptest::proptest! {
        /// Message after message, the grams are the reference's.
        #[test]
        fn grams_match_the_reference(
            bodies in proptest::collection::vec("[a-c \\n]{0,300}", 1..4),
            long in 0usize..2,
        ) {
            for body in &bodies {
                let mut raw = format!("From: a@example.org\nX-Spam-Flag: YES\nSubject: s\n\n{body}").into_bytes();
                if long == 1 {
                    raw.extend(std::iter::repeat_n(b'q', GRAM_BYTES));
                }
                proptest::prop_assert_eq!(grams(&raw, &Default::default()), reference_grams(&raw));
            }
        }
    }

    #[test]
    fn only_the_first_gram_bytes_count() {
        let mut long = msg("x");
        long.extend(std::iter::repeat_n(b'a', GRAM_BYTES));
        let mut longer = long.clone();
        longer.extend_from_slice(b"zzzz yyyy completely different tail");
        assert_eq!(grams(&long, &Default::default()), grams(&longer, &Default::default()));
    }

    #[test]
    fn a_step_reaches_the_margin_and_forgetting_takes_it_back() {
        let mut w = vec![0f32; DIM];
        let x = Vector::of(&[10, 20, 30], &msg("cheap pills here"), &Default::default());
        let alpha = apply(&mut w, &x, None, Some(Class::Spam), 0.0);
        assert!(alpha > 0.0);
        let m = x.dot(|i| w[i as usize]);
        assert!((m - 1.0).abs() < 1e-4, "{m}");
        // Already on the right side: no step (beyond float dust).
        assert!(apply(&mut w, &x, None, Some(Class::Spam), 0.0).abs() < 1e-6);
        // Forget: back to zero.
        apply(&mut w, &x, Some(alpha), None, 0.0);
        assert!(w.iter().all(|v| v.abs() < 1e-6));
        // Moved to ham: the margin reaches -1.
        let beta = apply(&mut w, &x, None, Some(Class::Ham), 0.0);
        assert!(beta < 0.0);
        assert!((x.dot(|i| w[i as usize]) + 1.0).abs() < 1e-4);
    }

    #[test]
    fn the_step_learns_what_the_prior_misses() {
        let x = Vector::of(&[10, 20, 30], &msg("cheap pills here"), &Default::default());
        // Fisher already says spam beyond the margin: nothing to learn.
        let mut w = vec![0f32; DIM];
        assert_eq!(apply(&mut w, &x, None, Some(Class::Spam), 1.5), 0.0);
        assert!(w.iter().all(|v| *v == 0.0));
        // Fisher says ham for a spam: the margin makes up the difference, to 1 overall.
        let alpha = apply(&mut w, &x, None, Some(Class::Spam), -0.5);
        assert!(alpha > 0.0);
        assert!((x.dot(|i| w[i as usize]) - 1.5).abs() < 1e-4);
        assert_eq!(prior(40.0), 2.0);
        assert_eq!(prior(f64::NAN), 0.0);
    }

    proptest::proptest! {
        /// Any bytes and features: sorted distinct buckets in range, finite values, unit length
        /// (or nothing at all), and a step that lands the margin on the asked side.
        #[test]
        fn any_message_gives_a_sound_vector(
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
            hashes in proptest::collection::vec(proptest::prelude::any::<u64>(), 0..50),
        ) {
            let x = Vector::of(&hashes, &raw, &Default::default());
            let merged = x.merged();
            proptest::prop_assert!(merged.windows(2).all(|w| w[0].0 < w[1].0));
            proptest::prop_assert!(merged.iter().all(|e| (e.0 as usize) < DIM && e.1.is_finite() && e.1 > 0.0));
            let norm: f64 = merged.iter().map(|e| f64::from(e.1).powi(2)).sum();
            proptest::prop_assert!(x.is_empty() || (norm - 1.0).abs() < 1e-4, "{}", norm);
            proptest::prop_assert!((x.norm_sq() - norm).abs() < 1e-4);
            let mut w = vec![0f32; DIM];
            apply(&mut w, &x, None, Some(Class::Ham), 0.0);
            let m = x.dot(|i| w[i as usize]);
            proptest::prop_assert!(x.is_empty() || (m + 1.0).abs() < 1e-3, "{}", m);
        }
    }

    #[test]
    fn weights_survive_their_stored_form() {
        let mut w = vec![0f32; DIM];
        w[7] = 1.5;
        w[DIM - 1] = -0.25;
        let b = encode(&w);
        assert_eq!(decode(Some(&b)), w);
        assert_eq!(weight_in(&b, 7), 1.5);
        assert_eq!(decode(None), vec![0f32; DIM]);
        assert_eq!(decode(Some(b"short")), vec![0f32; DIM]);
    }

    #[test]
    fn shuffling_repeats_and_keeps_every_item() {
        let mut a: Vec<u32> = (0..100).collect();
        let mut b = a.clone();
        shuffle(&mut a);
        shuffle(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, (0..100).collect::<Vec<_>>());
        a.sort_unstable();
        assert_eq!(a, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn the_mixer_follows_what_is_left() {
        let mut m = Mixer::default();
        assert_eq!(m.pick(0, 5), Class::Ham);
        assert_eq!(m.pick(5, 0), Class::Spam);
        let (mut s, mut h) = (300u64, 700u64);
        let mut first_half_spam = 0;
        while s + h > 0 {
            let c = m.pick(s, h);
            if c == Class::Spam {
                s -= 1;
                if s + h >= 500 {
                    first_half_spam += 1;
                }
            } else {
                h -= 1;
            }
        }
        // Interleaved: about 30% of the first half is spam, not all or none.
        assert!((100..200).contains(&first_half_spam), "{first_half_spam}");
    }
}
