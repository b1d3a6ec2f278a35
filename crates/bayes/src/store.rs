//! Token stores: what was learnt, per feature hash, and which messages were learnt as what.
//!
//! Three implementations share one contract ([`Store`]) and one test suite: [`Memory`] (tests,
//! benches), [`lmdb::Lmdb`] (the embedded default) and [`redis::Redis`] (shared by several hosts).
//!
//! The contract: learning is per batch and atomic; a message already learnt as the same class is
//! not counted again ([`Learned::Already`]); learnt as the other class, it is moved
//! ([`Learned::Relearned`]); forgetting a message takes back exactly what learning added (the
//! counts exactly, the linear layer's weights up to float rounding: each message's step is kept
//! with its digest). Each
//! feature remembers the day it was last learnt, and [`Store::expire`] drops the rarest, oldest
//! features when the store holds more than its cap.

mod batch;
pub mod dump;
pub mod lmdb;
pub mod redis;
mod table;
pub mod wire;

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

pub use dump::Entry;

use crate::linear::{self, Vector};
use crate::model::{Counts, Params, Totals};

/// Spam or ham.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Unwanted.
    Spam,
    /// Wanted.
    Ham,
}

impl Class {
    /// `spam` or `ham`, as logs and the CLI say it.
    pub fn name(self) -> &'static str {
        match self {
            Class::Spam => "spam",
            Class::Ham => "ham",
        }
    }

    fn byte(self) -> u8 {
        match self {
            Class::Spam => b's',
            Class::Ham => b'h',
        }
    }

    fn from_byte(b: u8) -> Option<Class> {
        match b {
            b's' => Some(Class::Spam),
            b'h' => Some(Class::Ham),
            _ => None,
        }
    }
}

/// Identifies a message for "learnt once": its Message-ID and body, so the copy a user saves
/// from a mailbox (with delivery headers added) is the message that was learnt from quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 16]);

impl Digest {
    /// The digest of a raw message: xxh3-128 of its Message-ID, a zero byte and its body without
    /// carriage returns (line endings differ between a message on the wire and in a mailbox).
    /// Hashed as a stream of the runs between carriage returns: copying the body without them
    /// and finding its start a window at a time were 3.7% of `strainer train`'s instructions
    /// (now 1.3%).
    pub fn of(raw: &[u8]) -> Digest {
        let split = memchr::memmem::find(raw, b"\r\n\r\n")
            .map(|i| (i, 4))
            .or_else(|| memchr::memmem::find(raw, b"\n\n").map(|i| (i, 2)));
        let (head, body) = match split {
            Some((i, n)) => (&raw[..i], &raw[i + n..]),
            None => (raw, &raw[raw.len()..]),
        };
        let mut id: &[u8] = b"";
        for line in head.split(|&b| b == b'\n') {
            if line.len() > 11 && line[..11].eq_ignore_ascii_case(b"message-id:") {
                id = line[11..].trim_ascii();
                break;
            }
        }
        let mut h = xxhash_rust::xxh3::Xxh3Default::new();
        h.update(id);
        h.update(&[0]);
        let mut from = 0;
        for cr in memchr::memchr_iter(b'\r', body) {
            h.update(&body[from..cr]);
            from = cr + 1;
        }
        h.update(&body[from..]);
        Digest(h.digest128().to_le_bytes())
    }
}

/// One message to learn or forget.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its digest.
    pub digest: Digest,
    /// As what.
    pub class: Class,
    /// Its distinct feature hashes.
    pub hashes: Vec<u64>,
    /// What the linear layer sees of it.
    pub vector: Vector,
}

impl Item {
    /// The item for `raw` with its tokenizer features `hashes`, header fields `ignore` skips
    /// left out of its linear vector (as the tokenizer left them out of `hashes`).
    pub fn new(raw: &[u8], class: Class, hashes: Vec<u64>, ignore: &crate::IgnoreHeaders) -> Item {
        let vector = Vector::of(&hashes, raw, ignore);
        Item { digest: Digest::of(raw), class, hashes, vector }
    }
}

/// What learning one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Learned {
    /// Counted.
    Learned,
    /// Already learnt as this class: nothing changed.
    Already,
    /// Had been learnt as the other class: moved.
    Relearned,
    /// Forgotten.
    Forgotten,
    /// Forget asked for a message never learnt: nothing changed.
    Unchanged,
}

/// The cap and what expiry keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// Most features kept; over this, expiry brings the store down to three quarters of it.
    pub max_tokens: u64,
    /// Most remembered message digests; over this, the oldest are forgotten (their counts stay).
    pub max_seen: u64,
}

impl Default for Expiry {
    fn default() -> Self {
        Expiry { max_tokens: 1_000_000, max_seen: 200_000 }
    }
}

/// What expiry did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Expired {
    /// Features removed.
    pub tokens: u64,
    /// Digests removed.
    pub seen: u64,
}

/// Counts and size.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Messages learnt.
    pub totals: Totals,
    /// Features held.
    pub tokens: u64,
    /// Features seen in one message only.
    pub singletons: u64,
    /// Message digests remembered.
    pub seen: u64,
    /// Buckets of the linear layer with a weight (0: untrained, as a store from before it).
    pub weights: u64,
    /// Bytes used (on disk, or Redis memory for our keys when known).
    pub bytes: u64,
    /// Oldest and newest last-learnt day (days since 1970), when any.
    pub days: Option<(u32, u32)>,
}

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// LMDB.
    #[error("bayes store {path}: {source}")]
    Lmdb {
        /// The store's directory.
        path: String,
        /// The error.
        source: heed::Error,
    },
    /// Redis.
    #[error("bayes store redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Files.
    #[error("bayes store {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Anything else.
    #[error("bayes store: {0}")]
    Other(String),
}

/// A token store.
pub trait Store: Send + Sync {
    /// Counts of each hash (in order) into `out`, with the totals, from one consistent snapshot.
    fn lookup(&self, hashes: &[u64], out: &mut Vec<Counts>) -> Result<Totals, Error>;
    /// The linear layer's margin for `x` (0 while untrained).
    fn margin(&self, x: &Vector) -> Result<f64, Error>;
    /// [`Store::lookup`] and [`Store::margin`] together, from one snapshot where the store has
    /// snapshots (so a score never mixes counts and weights of different commits).
    fn evidence(&self, hashes: &[u64], out: &mut Vec<Counts>, x: &Vector) -> Result<(Totals, f64), Error> {
        Ok((self.lookup(hashes, out)?, self.margin(x)?))
    }
    /// The linear layer's weights of `buckets`, in order (to explain a score).
    fn weights(&self, buckets: &[u32]) -> Result<Vec<f32>, Error> {
        buckets.iter().map(|&b| Ok(self.margin(&Vector::unit(b))? as f32)).collect()
    }
    /// Learns (or forgets) a batch atomically, scoring with the default [`Params`].
    fn learn(&self, items: &[Item], forget: bool) -> Result<Vec<Learned>, Error> {
        self.learn_with(items, forget, &Params::default())
    }
    /// Learns (or forgets) a batch atomically; `params` score each message from the counts as
    /// they stand before it (the linear layer learns on top of that score, [`linear::apply`]).
    /// Then the layer goes over the messages the batch learnt `params.revisits` times more,
    /// each scored from the counts as the batch left them less its own, adding to its step.
    fn learn_with(&self, items: &[Item], forget: bool, params: &Params) -> Result<Vec<Learned>, Error>;
    /// Counts and size.
    fn stats(&self) -> Result<Stats, Error>;
    /// Applies the cap now.
    fn expire(&self, limits: &Expiry) -> Result<Expired, Error>;
    /// Hands every record the store holds to `each`, all from one state of the store: the
    /// totals first, then features, messages learnt and weights.
    fn export(&self, each: &mut dyn FnMut(Entry) -> Result<(), Error>) -> Result<(), Error>;
    /// Writes `entries` (an export, from any store) into this store, which must be empty; with
    /// `replace`, what it held is dropped instead, in the same transaction where the store has
    /// them (a restore).
    fn import(&self, entries: &[Entry], replace: bool) -> Result<(), Error>;
    /// Another process is about to commit for this one (autolearning's learner): a copy kept in
    /// memory may lag that commit a round rather than have lookups read the store itself.
    fn expect_commit(&self) {}
}

/// The error for importing into a store that holds something already.
fn not_empty(what: &str) -> Error {
    Error::Other(format!(
        "{what} is not empty: import into a new store (a new bayes.path, or a new bayes.redis_prefix)"
    ))
}

/// The totals of an import; an export always has them, so a file without them was cut short or
/// is something else.
fn imported_totals(entries: &[Entry]) -> Result<Totals, Error> {
    entries
        .iter()
        .find_map(|e| if let Entry::Totals(t) = e { Some(*t) } else { None })
        .ok_or_else(|| Error::Other("the import has no totals line: not a whole export".into()))
}

/// Hashes feature keys by taking them as they are: they are xxh3 outputs already, so SipHash
/// would only cost time (it was the top of the serve profile).
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A map keyed by feature hash.
pub type KeyMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// Today, in days since 1970.
pub fn today() -> u32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    u32::try_from(secs / 86_400).unwrap_or(u32::MAX)
}

/// A feature's record: counts and the day it was last learnt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Record {
    /// Counts.
    pub counts: Counts,
    /// Last learnt, days since 1970.
    pub day: u32,
}

impl Record {
    /// 12 bytes: spam, ham, day (little endian).
    pub fn encode(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&self.counts.spam.to_le_bytes());
        b[4..8].copy_from_slice(&self.counts.ham.to_le_bytes());
        b[8..].copy_from_slice(&self.day.to_le_bytes());
        b
    }

    /// The inverse of [`Record::encode`]; None when the length is wrong.
    pub fn decode(b: &[u8]) -> Option<Record> {
        let b: &[u8; 12] = b.try_into().ok()?;
        let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Record { counts: Counts { spam: w(0), ham: w(4) }, day: w(8) })
    }

    /// Which features expiry removes first: lower is sooner. A feature seen in `n` messages lives
    /// about `14·ln n` days longer than one seen once.
    pub fn keep_rank(&self) -> f64 {
        let n = f64::from(self.counts.spam) + f64::from(self.counts.ham);
        f64::from(self.day) + 14.0 * n.max(1.0).ln()
    }
}

/// Applies `delta` messages of `class` to a record: positive learns (and dates the record),
/// negative takes back, never below zero.
pub fn apply(rec: &mut Record, class: Class, delta: i64, day: u32) {
    let c = match class {
        Class::Spam => &mut rec.counts.spam,
        Class::Ham => &mut rec.counts.ham,
    };
    let n = u32::try_from(delta.unsigned_abs()).unwrap_or(u32::MAX);
    if delta > 0 {
        *c = c.saturating_add(n);
        rec.day = day;
    } else {
        *c = c.saturating_sub(n);
    }
}

/// What a batch does to each message: (item index, class to remove, class to add, outcome).
pub fn plan(item: &Item, seen: Option<Class>, forget: bool) -> (Option<Class>, Option<Class>, Learned) {
    match (forget, seen) {
        (false, Some(c)) if c == item.class => (None, None, Learned::Already),
        (false, Some(c)) => (Some(c), Some(item.class), Learned::Relearned),
        (false, None) => (None, Some(item.class), Learned::Learned),
        (true, Some(c)) => (Some(c), None, Learned::Forgotten),
        (true, None) => (None, None, Learned::Unchanged),
    }
}

/// What the linear layer learns an item on top of: Fisher's score from `counts` (of the item's
/// hashes, in order) and `totals`, less the item itself where they count it as `own`.
pub(crate) fn prior_of(counts: &mut [Counts], mut totals: Totals, own: Option<Class>, params: &Params) -> f64 {
    if let Some(class) = own {
        for c in counts.iter_mut() {
            match class {
                Class::Spam => c.spam = c.spam.saturating_sub(1),
                Class::Ham => c.ham = c.ham.saturating_sub(1),
            }
        }
        bump(&mut totals, class, -1);
    }
    linear::prior(crate::model::classify(counts, totals, params, 0).log_odds)
}

/// Which entries expiry removes: the `count - keep` lowest ranked.
pub fn expiry_victims<K: Copy>(mut ranked: Vec<(f64, K)>, keep: u64) -> Vec<K> {
    let n = ranked.len() as u64;
    if n <= keep {
        return Vec::new();
    }
    let drop = usize::try_from(n - keep).unwrap_or(usize::MAX);
    ranked.select_nth_unstable_by(drop.saturating_sub(1), |a, b| a.0.total_cmp(&b.0));
    ranked.truncate(drop);
    ranked.into_iter().map(|(_, k)| k).collect()
}

/// An in-memory store (tests, benches).
#[derive(Debug, Default)]
pub struct Memory {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    tokens: KeyMap<Record>,
    /// Class, day, linear step.
    seen: HashMap<Digest, (Class, u32, f32)>,
    /// The linear layer (empty until something is learnt).
    weights: Vec<f32>,
    totals: Totals,
    day_override: Option<u32>,
}

impl MemoryInner {
    /// The counts of `hashes`, into `out`; the totals.
    fn counts(&self, hashes: &[u64], out: &mut Vec<Counts>) -> Totals {
        out.clear();
        out.extend(hashes.iter().map(|h| self.tokens.get(h).map(|r| r.counts).unwrap_or_default()));
        self.totals
    }
}

impl Memory {
    /// An empty store.
    pub fn new() -> Memory {
        Memory::default()
    }

    /// Pretends today is `day` for what is learnt next (tests of expiry).
    pub fn set_day(&self, day: u32) {
        if let Ok(mut m) = self.inner.lock() {
            m.day_override = Some(day);
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, MemoryInner>, Error> {
        self.inner.lock().map_err(|_| Error::Other("memory store poisoned".into()))
    }
}

pub(crate) fn bump(totals: &mut Totals, class: Class, sign: i64) {
    let t = match class {
        Class::Spam => &mut totals.spam,
        Class::Ham => &mut totals.ham,
    };
    *t = if sign > 0 { t.saturating_add(1) } else { t.saturating_sub(1) };
}

impl Store for Memory {
    fn lookup(&self, hashes: &[u64], out: &mut Vec<Counts>) -> Result<Totals, Error> {
        Ok(self.lock()?.counts(hashes, out))
    }

    fn margin(&self, x: &Vector) -> Result<f64, Error> {
        let m = self.lock()?;
        Ok(x.dot(|i| m.weights.get(i as usize).copied().unwrap_or(0.0)))
    }

    fn learn_with(&self, items: &[Item], forget: bool, params: &Params) -> Result<Vec<Learned>, Error> {
        let mut guard = self.lock()?;
        let m = &mut *guard;
        let day = m.day_override.unwrap_or_else(today);
        if m.weights.is_empty() {
            m.weights = vec![0.0; linear::DIM];
        }
        let keys = batch::keys_of(items);
        let touched: Vec<batch::Touched> = keys
            .iter()
            .map(|k| m.tokens.get(k).map_or_else(batch::Touched::default, |r| batch::Touched::stored(*r)))
            .collect();
        let mut b = batch::Batch::new(keys, touched, day);
        let seen = &m.seen;
        let learnt = batch::learn(items, forget, params, &mut b, &mut m.totals, &mut m.weights, |d| {
            Ok(seen.get(&Digest(*d)).map(|s| (s.0, Some(s.2))))
        })?;
        for (k, t) in b.keys.iter().zip(&b.touched).filter(|(_, t)| t.changed()) {
            let rec = t.after(day);
            if rec.counts == Counts::default() {
                m.tokens.remove(k);
            } else {
                m.tokens.insert(*k, rec);
            }
        }
        for (d, now) in learnt.seen {
            match now {
                Some((c, alpha)) => m.seen.insert(Digest(d), (c, day, alpha.unwrap_or(0.0))),
                None => m.seen.remove(&Digest(d)),
            };
        }
        Ok(learnt.outcomes)
    }

    fn stats(&self) -> Result<Stats, Error> {
        let m = self.lock()?;
        let days = m.tokens.values().fold(None, |acc: Option<(u32, u32)>, r| {
            Some(acc.map_or((r.day, r.day), |(lo, hi)| (lo.min(r.day), hi.max(r.day))))
        });
        Ok(Stats {
            totals: m.totals,
            tokens: m.tokens.len() as u64,
            singletons: m.tokens.values().filter(|r| r.counts.spam + r.counts.ham == 1).count() as u64,
            seen: m.seen.len() as u64,
            weights: m.weights.iter().filter(|w| **w != 0.0).count() as u64,
            bytes: (m.tokens.len() * 20 + m.seen.len() * 21) as u64,
            days,
        })
    }

    fn expire(&self, limits: &Expiry) -> Result<Expired, Error> {
        let mut m = self.lock()?;
        let mut done = Expired::default();
        if m.tokens.len() as u64 > limits.max_tokens {
            let ranked = m.tokens.iter().map(|(h, r)| (r.keep_rank(), *h)).collect();
            for h in expiry_victims(ranked, limits.max_tokens * 3 / 4) {
                m.tokens.remove(&h);
                done.tokens += 1;
            }
        }
        if m.seen.len() as u64 > limits.max_seen {
            let ranked = m.seen.iter().map(|(d, s)| (f64::from(s.1), *d)).collect();
            for d in expiry_victims(ranked, limits.max_seen * 3 / 4) {
                m.seen.remove(&d);
                done.seen += 1;
            }
        }
        Ok(done)
    }

    fn export(&self, each: &mut dyn FnMut(Entry) -> Result<(), Error>) -> Result<(), Error> {
        let m = self.lock()?;
        each(Entry::Totals(m.totals))?;
        let mut tokens: Vec<(&u64, &Record)> = m.tokens.iter().collect();
        tokens.sort_unstable_by_key(|t| *t.0);
        for (h, r) in tokens {
            each(Entry::Feature(*h, *r))?;
        }
        for (d, &(class, day, step)) in &m.seen {
            each(Entry::Seen(d.0, class, day, Some(step)))?;
        }
        dump::weight_entries(&m.weights).try_for_each(each)
    }

    fn import(&self, entries: &[Entry], replace: bool) -> Result<(), Error> {
        let totals = imported_totals(entries)?;
        let mut m = self.lock()?;
        if replace {
            m.tokens.clear();
            m.seen.clear();
            m.weights = Vec::new();
        } else if m.totals != Totals::default() || !m.tokens.is_empty() || !m.seen.is_empty() {
            return Err(not_empty("the memory store"));
        }
        for e in entries {
            match *e {
                Entry::Feature(h, r) => {
                    m.tokens.insert(h, r);
                }
                Entry::Seen(d, class, day, step) => {
                    m.seen.insert(Digest(d), (class, day, step.unwrap_or(0.0)));
                }
                Entry::Totals(_) | Entry::Weight(..) => {}
            }
        }
        if let Some(w) = dump::dense_weights(entries) {
            m.weights = w;
        }
        m.totals = totals;
        Ok(())
    }
}

impl<S: Store + ?Sized> Store for &S {
    fn lookup(&self, hashes: &[u64], out: &mut Vec<Counts>) -> Result<Totals, Error> {
        (**self).lookup(hashes, out)
    }
    fn margin(&self, x: &Vector) -> Result<f64, Error> {
        (**self).margin(x)
    }
    fn evidence(&self, hashes: &[u64], out: &mut Vec<Counts>, x: &Vector) -> Result<(Totals, f64), Error> {
        (**self).evidence(hashes, out, x)
    }
    fn weights(&self, buckets: &[u32]) -> Result<Vec<f32>, Error> {
        (**self).weights(buckets)
    }
    fn learn_with(&self, items: &[Item], forget: bool, params: &Params) -> Result<Vec<Learned>, Error> {
        (**self).learn_with(items, forget, params)
    }
    fn stats(&self) -> Result<Stats, Error> {
        (**self).stats()
    }
    fn expire(&self, limits: &Expiry) -> Result<Expired, Error> {
        (**self).expire(limits)
    }
    fn export(&self, each: &mut dyn FnMut(Entry) -> Result<(), Error>) -> Result<(), Error> {
        (**self).export(each)
    }
    fn import(&self, entries: &[Entry], replace: bool) -> Result<(), Error> {
        (**self).import(entries, replace)
    }
    fn expect_commit(&self) {
        (**self).expect_commit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest as defined, the plain way: the Message-ID, a zero byte and the body copied
    /// without carriage returns, hashed in one go.
    fn reference_digest(raw: &[u8]) -> Digest {
        let find = |needle: &[u8]| raw.windows(needle.len()).position(|w| w == needle);
        let split = find(b"\r\n\r\n").map(|i| (i, 4)).or_else(|| find(b"\n\n").map(|i| (i, 2)));
        let (head, body) = match split {
            Some((i, n)) => (&raw[..i], &raw[i + n..]),
            None => (raw, &raw[raw.len()..]),
        };
        let id = head
            .split(|&b| b == b'\n')
            .find(|l| l.len() > 11 && l[..11].eq_ignore_ascii_case(b"message-id:"))
            .map_or(&b""[..], |l| l[11..].trim_ascii());
        let mut data = id.to_vec();
        data.push(0);
        data.extend(body.iter().copied().filter(|&b| b != b'\r'));
        Digest(xxhash_rust::xxh3::xxh3_128(&data).to_le_bytes())
    }

    #[test]
    fn a_message_on_the_wire_and_in_a_mailbox_has_one_digest() {
        let wire = b"From: a@example.org\r\nMessage-ID: <x@example.org>\r\n\r\nhello\r\nworld\r\n";
        let mbox = b"From: a@example.org\nMessage-ID: <x@example.org>\n\nhello\nworld\n";
        assert_eq!(Digest::of(wire), Digest::of(mbox));
        assert_eq!(Digest::of(wire), reference_digest(wire));
        let other = b"From: a@example.org\r\nMessage-ID: <y@example.org>\r\n\r\nhello\r\nworld\r\n";
        assert_ne!(Digest::of(wire), Digest::of(other));
    }

    proptest::proptest! {
        #[test]
        fn the_digest_is_the_reference_s(
            head in "((From|Subject|Message-Id|message-id): [a-z<>@.]{0,12}(\r\n|\n)){0,4}",
            sep in "(\r\n|\n)?",
            body in "([a-z \r\n]|\r\n\r\n){0,300}",
        ) {
            let raw = format!("{head}{sep}{body}");
            proptest::prop_assert_eq!(Digest::of(raw.as_bytes()), reference_digest(raw.as_bytes()));
        }
    }
}
