//! The shared store: Redis, for several strainer hosts scoring with one model (as rspamd does).
//!
//! Layout under a key prefix (default `strainer:bayes`): hashes `:s` and `:h` (feature -> spam and
//! ham counts), `:d` (feature -> day last learnt; every feature held has one), `:seen` (digest ->
//! class, day and linear step), `:w` (bucket -> linear weight), `:wver` (counts learning steps,
//! so readers know when their copy of `:w` is current) and `:totals` (`spam`, `ham`).
//! Feature, digest and bucket fields are the raw 8, 16 and 4 bytes (big-endian).
//!
//! Learning reads what a batch touches (counts, seen records, the weights of its buckets), learns
//! it in memory with the same code as LMDB (`store::batch`), and writes the changes in one
//! MULTI/EXEC, watching every key it writes (optimistic locking): a batch is atomic, and when
//! another trainer or expiry wrote in between, nothing is written and the batch is learnt again
//! from what is there now, so two hosts training at once lose nothing and count nothing twice.
//! Lookups read counts, totals and the weights' version in one MULTI so they come from one
//! moment. On the SpamAssassin corpus this learns about 450 messages/s (LMDB: about 2,000),
//! against 20-23 when each message was one Lua script; the figures are LMDB's to the last digit.

use std::sync::Mutex;
use std::time::Duration;

use redis::{Commands, Connection, FromRedisValue};

use super::batch::{self, Batch, Seen, Touched};
use super::{Class, Entry, Error, Expired, Expiry, Item, Learned, Record, Stats, Store, expiry_victims, today};
use crate::linear::{self, Vector};
use crate::model::{Counts, Params, Totals};

/// Spam counts, ham counts, totals, the weights' version.
type Looked = (Vec<Option<u32>>, Vec<Option<u32>>, (Option<u64>, Option<u64>), Option<u64>);

/// A Redis token store.
pub struct Redis {
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    /// The weights as of a version of `:wver`, and when they were read.
    weights: Mutex<Option<Weights>>,
}

/// A copy of the linear layer's weights.
struct Weights {
    version: u64,
    read: std::time::Instant,
    dense: std::sync::Arc<Vec<f32>>,
}

/// Least time between two full reads of the weights while they keep changing (training): in
/// between, margins are read bucket by bucket, so they are never stale.
const WEIGHTS_REREAD: Duration = Duration::from_secs(10);

impl Redis {
    /// Connects to `url` (`redis://127.0.0.1:6379/0`) with keys under `prefix`; checks the server
    /// answers within `timeout`.
    pub fn open(url: &str, prefix: &str, timeout: Duration) -> Result<Redis, Error> {
        let r = Redis::on(redis::Client::open(url)?, prefix, timeout);
        r.with(|c| redis::cmd("PING").query::<String>(c))?;
        Ok(r)
    }

    /// A store under `prefix` through `client`, with no connection made yet.
    fn on(client: redis::Client, prefix: &str, timeout: Duration) -> Redis {
        Redis { client, prefix: prefix.to_string(), timeout, idle: Mutex::new(Vec::new()), weights: Mutex::new(None) }
    }

    fn key(&self, k: &str) -> String {
        format!("{}:{k}", self.prefix)
    }

    /// Runs `f` on a pooled connection; a connection that failed is dropped, not reused.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>) -> Result<T, Error> {
        let pooled = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let c = self.client.get_connection_with_timeout(self.timeout)?;
                c.set_read_timeout(Some(self.timeout))?;
                c.set_write_timeout(Some(self.timeout))?;
                c
            }
        };
        let out = f(&mut conn)?;
        if let Ok(mut v) = self.idle.lock()
            && v.len() < 16
        {
            v.push(conn);
        }
        Ok(out)
    }

    /// The weights of `buckets`, in order (0 where none is held).
    fn read_weights(&self, buckets: impl Iterator<Item = u32>) -> Result<Vec<f64>, Error> {
        let got: Vec<Option<f64>> = self.with(|c| hmget(c, &self.key("w"), buckets.map(u32::to_be_bytes)))?;
        Ok(got.into_iter().map(|w| w.unwrap_or(0.0)).collect())
    }

    fn totals_of(v: (Option<u64>, Option<u64>)) -> Totals {
        Totals { spam: v.0.unwrap_or(0), ham: v.1.unwrap_or(0) }
    }

    /// The counts of `hashes`, the totals and the weights' version, in one round trip (one
    /// MULTI): the version tells `margin_at` whether its copy of the weights matches the counts.
    fn lookup_versioned(&self, hashes: &[u64], out: &mut Vec<Counts>) -> Result<(Totals, u64), Error> {
        out.clear();
        let (s, h, tot, version): Looked = self.with(|c| {
            let mut p = redis::pipe();
            p.atomic();
            if hashes.is_empty() {
                p.hget(self.key("totals"), &["spam", "ham"]);
                p.get(self.key("wver"));
                let (tot, version): ((Option<u64>, Option<u64>), Option<u64>) = p.query(c)?;
                return Ok((Vec::new(), Vec::new(), tot, version));
            }
            // Each field straight into the command's buffer, not a vector of its own first.
            for key in ["s", "h"] {
                p.cmd("HMGET").arg(self.key(key));
                for h in hashes {
                    p.arg(&h.to_be_bytes()[..]);
                }
            }
            p.hget(self.key("totals"), &["spam", "ham"]);
            p.get(self.key("wver"));
            p.query(c)
        })?;
        out.extend(s.iter().zip(&h).map(|(s, h)| Counts { spam: s.unwrap_or(0), ham: h.unwrap_or(0) }));
        Ok((Redis::totals_of(tot), version.unwrap_or(0)))
    }

    /// The margin of `x` under the weights at `version`: from a copy of all weights when it is
    /// of that version, else from the message's buckets (one HMGET); the copy is re-read at
    /// most every 10 s (`WEIGHTS_REREAD`: a HGETALL of up to [`linear::DIM`] fields).
    fn margin_at(&self, version: u64, x: &Vector) -> Result<f64, Error> {
        if x.is_empty() {
            return Ok(0.0);
        }
        let cached = self.weights.lock().ok().and_then(|w| {
            w.as_ref().map(|w| (w.version == version, w.read.elapsed() >= WEIGHTS_REREAD, w.dense.clone()))
        });
        let dense = match cached {
            Some((true, _, dense)) => dense,
            Some((false, false, _)) => {
                let got = self.read_weights(x.entries().map(|e| e.0))?;
                return Ok(x.entries().zip(got).map(|(e, w)| f64::from(e.1) * w).sum());
            }
            _ => {
                // The version was read before the weights: a step landing in between makes the
                // copy newer than its tag, so it is read again, never used stale.
                let all: Vec<(Vec<u8>, f64)> = self.with(|c| c.hgetall(self.key("w")))?;
                let mut dense = vec![0f32; linear::DIM];
                for (field, w) in all {
                    if let Ok(b) = <[u8; 4]>::try_from(field.as_slice())
                        && let Some(slot) = dense.get_mut(u32::from_be_bytes(b) as usize)
                    {
                        *slot = w as f32;
                    }
                }
                let dense = std::sync::Arc::new(dense);
                if let Ok(mut w) = self.weights.lock() {
                    *w = Some(Weights { version, read: std::time::Instant::now(), dense: dense.clone() });
                }
                dense
            }
        };
        Ok(x.dot(|i| dense.get(i as usize).copied().unwrap_or(0.0)))
    }
}

/// Most times an export is read again because the store changed while it was read.
const EXPORT_ATTEMPTS: usize = 5;

/// What moves when a host learns or expires: the weights' version, the totals, the sizes.
type State = (Option<u64>, (Option<u64>, Option<u64>), u64, u64);

impl Redis {
    fn state(&self, c: &mut Connection) -> redis::RedisResult<State> {
        let mut p = redis::pipe();
        p.atomic();
        p.get(self.key("wver"));
        p.hget(self.key("totals"), &["spam", "ham"]);
        p.hlen(self.key("d"));
        p.hlen(self.key("seen"));
        p.query(c)
    }

    /// Calls `each(feature, day, spam, ham)` for every feature held, a scan page at a time with
    /// its counts read alongside, so walking the model (stats, expiry) holds a page in memory,
    /// not three maps of the whole model.
    fn each_feature(&self, c: &mut Connection, mut each: impl FnMut(&[u8], u32, u32, u32)) -> redis::RedisResult<()> {
        let mut cursor = 0u64;
        loop {
            let (next, page): (u64, Vec<(Vec<u8>, u32)>) =
                redis::cmd("HSCAN").arg(self.key("d")).arg(cursor).arg("COUNT").arg(CHUNK).query(c)?;
            if !page.is_empty() {
                let mut p = redis::pipe();
                for k in ["s", "h"] {
                    p.cmd("HMGET").arg(self.key(k));
                    for (f, _) in &page {
                        p.arg(&f[..]);
                    }
                }
                let (spam, ham): (Vec<Option<u32>>, Vec<Option<u32>>) = p.query(c)?;
                for (((f, day), s), h) in page.iter().zip(spam).zip(ham) {
                    each(f, *day, s.unwrap_or(0), h.unwrap_or(0));
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Every record, features in hash order.
    fn read_all(&self, c: &mut Connection) -> redis::RedisResult<Vec<Entry>> {
        let tot: (Option<u64>, Option<u64>) = c.hget(self.key("totals"), &["spam", "ham"])?;
        let mut out = vec![Entry::Totals(Redis::totals_of(tot))];
        // Every feature with counts has a day (they are written and deleted together).
        let mut features: Vec<(u64, Record)> = Vec::new();
        self.each_feature(c, |f, day, spam, ham| {
            if let Ok(b) = <[u8; 8]>::try_from(f) {
                features.push((u64::from_be_bytes(b), Record { counts: Counts { spam, ham }, day }));
            }
        })?;
        features.sort_unstable_by_key(|f| f.0);
        out.extend(features.into_iter().map(|(k, r)| Entry::Feature(k, r)));
        // Digests in order too, as LMDB gives them: an export reads the same from either store.
        let mut seen: Vec<Entry> = Vec::new();
        for (f, v) in c.hscan::<_, (Vec<u8>, Vec<u8>)>(self.key("seen"))? {
            if let (Ok(d), Some(((class, step), day))) = (<[u8; 16]>::try_from(f.as_slice()), decode_seen(&v)) {
                seen.push(Entry::Seen(d, class, day, step));
            }
        }
        seen.sort_unstable_by_key(|e| if let Entry::Seen(d, ..) = e { *d } else { [0; 16] });
        out.extend(seen);
        let mut weights: Vec<(u32, f32)> = Vec::new();
        for (f, w) in c.hgetall::<_, Vec<(Vec<u8>, f64)>>(self.key("w"))? {
            if let Ok(b) = <[u8; 4]>::try_from(f.as_slice())
                && w != 0.0
            {
                weights.push((u32::from_be_bytes(b), w as f32));
            }
        }
        weights.sort_unstable_by_key(|w| w.0);
        out.extend(weights.into_iter().map(|(b, w)| Entry::Weight(b, w)));
        Ok(out)
    }
}

/// Most times a batch is read, learnt and written again because another writer changed the
/// store in between.
const COMMIT_ATTEMPTS: usize = 50;

/// Most fields in one HMGET, HSET or HDEL.
const CHUNK: usize = 10_000;

impl Redis {
    /// One attempt at learning a batch on connection `c`, whose written keys are watched: the
    /// outcomes, or `None` when another writer got in first. `want` is the batch's features,
    /// digests and linear buckets, each sorted and distinct.
    fn learn_watched(
        &self,
        c: &mut Connection,
        items: &[Item],
        forget: bool,
        params: &Params,
        want: (&[u64], &[[u8; 16]], &[u32]),
    ) -> redis::RedisResult<Result<Option<Vec<Learned>>, Error>> {
        let (keys, digests, buckets) = want;
        let day = today();
        let spam: Vec<Option<u32>> = hmget(c, &self.key("s"), keys.iter().map(|k| k.to_be_bytes()))?;
        let ham: Vec<Option<u32>> = hmget(c, &self.key("h"), keys.iter().map(|k| k.to_be_bytes()))?;
        let seen: Vec<Option<Vec<u8>>> = hmget(c, &self.key("seen"), digests.iter().copied())?;
        let weights: Vec<Option<f64>> = hmget(c, &self.key("w"), buckets.iter().map(|b| b.to_be_bytes()))?;
        let tot: (Option<u64>, Option<u64>) = c.hget(self.key("totals"), &["spam", "ham"])?;
        let touched = spam
            .iter()
            .zip(&ham)
            .map(|(s, h)| match (s, h) {
                (None, None) => Touched::default(),
                _ => Touched::stored(Record { counts: Counts { spam: s.unwrap_or(0), ham: h.unwrap_or(0) }, day: 0 }),
            })
            .collect();
        let mut batch = Batch::new(keys.to_vec(), touched, day);
        let seen: std::collections::HashMap<[u8; 16], Seen> =
            digests.iter().zip(seen).filter_map(|(d, v)| Some((*d, decode_seen(&v?)?.0))).collect();
        let before: Vec<f32> = weights.iter().map(|w| w.unwrap_or(0.0) as f32).collect();
        let mut dense = vec![0f32; linear::DIM];
        for (&b, &w) in buckets.iter().zip(&before) {
            if let Some(slot) = dense.get_mut(b as usize) {
                *slot = w;
            }
        }
        let mut totals = Redis::totals_of(tot);
        let learnt = match batch::learn(items, forget, params, &mut batch, &mut totals, &mut dense, |d| {
            Ok(seen.get(d).copied())
        }) {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        let mut p = redis::pipe();
        p.atomic();
        self.write_counts(&mut p, &batch);
        let mut set: Vec<([u8; 16], String)> = Vec::new();
        let mut del: Vec<[u8; 16]> = Vec::new();
        for (digest, now) in learnt.seen {
            match now {
                Some((class, alpha)) => set.push((digest, encode_seen(class, day, Some(alpha.unwrap_or(0.0))))),
                None => del.push(digest),
            }
        }
        hset(&mut p, &self.key("seen"), set);
        hdel(&mut p, &self.key("seen"), del);
        if learnt.weights_changed {
            let changed = buckets.iter().zip(&before).filter_map(|(&b, &old)| {
                let now = dense.get(b as usize).copied().unwrap_or(0.0);
                (now != old).then(|| (b.to_be_bytes(), now.to_string()))
            });
            hset(&mut p, &self.key("w"), changed.collect());
        }
        p.hset_multiple(self.key("totals"), &[("spam", totals.spam), ("ham", totals.ham)]).ignore();
        p.incr(self.key("wver"), 1).ignore();
        let written: Option<()> = p.query(c)?;
        Ok(Ok(written.map(|()| learnt.outcomes)))
    }

    /// Adds to `p` the writes of the features `batch` changed: counts set, or deleted at zero
    /// (with their day when both are); the day set for each one learnt again.
    fn write_counts(&self, p: &mut redis::Pipeline, batch: &Batch) {
        let (mut set_s, mut set_h, mut set_d) = (Vec::new(), Vec::new(), Vec::new());
        let (mut del_s, mut del_h, mut del_d) = (Vec::new(), Vec::new(), Vec::new());
        for (k, t) in batch.keys.iter().zip(&batch.touched).filter(|(_, t)| t.changed()) {
            let field = k.to_be_bytes();
            let after = t.after(batch.day);
            for (now, was, set, del) in [
                (after.counts.spam, t.before.counts.spam, &mut set_s, &mut del_s),
                (after.counts.ham, t.before.counts.ham, &mut set_h, &mut del_h),
            ] {
                if now > 0 {
                    set.push((field, now));
                } else if was > 0 {
                    del.push(field);
                }
            }
            if after.counts == Counts::default() {
                if t.stored {
                    del_d.push(field);
                }
            } else if t.spam > 0 || t.ham > 0 {
                set_d.push((field, batch.day));
            }
        }
        hset(p, &self.key("s"), set_s);
        hset(p, &self.key("h"), set_h);
        hset(p, &self.key("d"), set_d);
        hdel(p, &self.key("s"), del_s);
        hdel(p, &self.key("h"), del_h);
        hdel(p, &self.key("d"), del_d);
    }
}

/// HMGET of `fields` on hash `key`, [`CHUNK`] at a time: a value or nothing for each, in order.
fn hmget<T: FromRedisValue, F: AsRef<[u8]>>(
    c: &mut Connection,
    key: &str,
    fields: impl Iterator<Item = F>,
) -> redis::RedisResult<Vec<Option<T>>> {
    let fields: Vec<F> = fields.collect();
    let mut out = Vec::with_capacity(fields.len());
    for chunk in fields.chunks(CHUNK) {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(key);
        for f in chunk {
            cmd.arg(f.as_ref());
        }
        out.extend(cmd.query::<Vec<Option<T>>>(c)?);
    }
    Ok(out)
}

/// Adds to `p` the HSETs of `pairs` on hash `key`, [`CHUNK`] fields to a command.
fn hset<F: AsRef<[u8]>, V: redis::ToRedisArgs>(p: &mut redis::Pipeline, key: &str, pairs: Vec<(F, V)>) {
    for chunk in pairs.chunks(CHUNK) {
        p.cmd("HSET").arg(key);
        for (f, v) in chunk {
            p.arg(f.as_ref()).arg(v);
        }
        p.ignore();
    }
}

/// Adds to `p` the HDELs of `fields` on hash `key`, [`CHUNK`] to a command.
fn hdel<F: AsRef<[u8]>>(p: &mut redis::Pipeline, key: &str, fields: Vec<F>) {
    for chunk in fields.chunks(CHUNK) {
        p.cmd("HDEL").arg(key);
        for f in chunk {
            p.arg(f.as_ref());
        }
        p.ignore();
    }
}

/// The inverse of [`decode_seen`]: "s20412|0.83" (class, day, linear step), or "s20412" without
/// a step.
fn encode_seen(class: Class, day: u32, step: Option<f32>) -> String {
    let c = char::from(class.byte());
    step.map_or_else(|| format!("{c}{day}"), |a| format!("{c}{day}|{a}"))
}

/// A `:seen` value, "s20412" (learnt before the linear layer) or "s20412|0.83": what is
/// remembered of the message, and the day it was learnt.
fn decode_seen(v: &[u8]) -> Option<(Seen, u32)> {
    let class = Class::from_byte(*v.first()?)?;
    let text = std::str::from_utf8(v.get(1..)?).ok()?;
    let (day, step) = match text.split_once('|') {
        Some((day, step)) => (day, Some(step.parse::<f32>().unwrap_or(0.0))),
        None => (text, None),
    };
    Some(((class, step), day.parse().unwrap_or(0)))
}

/// The keys that hold the model (`wver` only counts changes to it).
const MODEL_KEYS: [&str; 6] = ["s", "h", "d", "seen", "w", "totals"];

/// How long a restore's lock outlives a restore that was killed.
const RESTORE_LOCK_SECS: u64 = 600;

impl Redis {
    /// Replaces the model with `entries`: imported under a staging prefix first, then swapped in
    /// by one MULTI/EXEC (the old keys unlinked, the staged ones renamed), so hosts scoring
    /// meanwhile read the old model or the new one, and a trainer writing meanwhile finds its
    /// watched keys changed and learns its batch again on the new model. One restore at a time
    /// (a lock key, expiring after ten minutes should its holder be killed): two staging into
    /// the same keys at once would swap in a mix of both.
    fn replace_with(&self, entries: &[Entry]) -> Result<(), Error> {
        let lock = self.key("restore:lock");
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let token = format!("{}-{nanos}", std::process::id());
        let got: Option<String> = self
            .with(|c| redis::cmd("SET").arg(&lock).arg(&token).arg("NX").arg("EX").arg(RESTORE_LOCK_SECS).query(c))?;
        if got.is_none() {
            return Err(Error::Other(format!(
                "another restore into {} is running (it holds the key {lock}); wait for it to finish, or delete that key if it was killed (it expires by itself within {} minutes)",
                self.prefix,
                RESTORE_LOCK_SECS / 60
            )));
        }
        let done = self.stage_and_swap(entries);
        // Let go of the lock only if it is still ours (it may have expired and been taken).
        let release = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        );
        let released = self.with(|c| release.key(&lock).arg(&token).invoke::<i64>(c));
        done.and(released.map(|_| ()))
    }

    /// [`Redis::replace_with`] under its lock.
    fn stage_and_swap(&self, entries: &[Entry]) -> Result<(), Error> {
        let staging = Redis::on(self.client.clone(), &format!("{}:restore", self.prefix), self.timeout);
        // What an earlier restore cut short may have left there.
        let mut leftovers: Vec<String> = MODEL_KEYS.map(|k| staging.key(k)).to_vec();
        leftovers.push(staging.key("wver"));
        staging.with(|c| redis::cmd("UNLINK").arg(&leftovers).query::<()>(c))?;
        let cut_short = |e: Error| {
            Error::Other(format!(
                "the restore stopped before the swap ({e}): the store under {} is as it was",
                self.prefix
            ))
        };
        staging.import(entries, false).map_err(cut_short)?;
        let staged: Vec<bool> =
            staging.with(|c| MODEL_KEYS.iter().map(|k| c.exists(staging.key(k))).collect::<redis::RedisResult<_>>())?;
        self.with(|c| {
            let mut p = redis::pipe();
            p.atomic();
            // UNLINK, not DEL: the old hashes are freed in the background (DEL of a model of
            // 300,000 features held the server for a third of a second).
            p.cmd("UNLINK").arg(MODEL_KEYS.map(|k| self.key(k)).to_vec()).ignore();
            for (k, _) in MODEL_KEYS.iter().zip(&staged).filter(|(_, there)| **there) {
                p.rename(staging.key(k), self.key(k)).ignore();
            }
            p.del(staging.key("wver")).ignore();
            p.incr(self.key("wver"), 1).ignore();
            p.query::<()>(c)
        })
    }
}

impl Store for Redis {
    fn lookup(&self, hashes: &[u64], out: &mut Vec<Counts>) -> Result<Totals, Error> {
        Ok(self.lookup_versioned(hashes, out)?.0)
    }

    /// Counts, totals and the weights' version in one round trip; in the steady state (the
    /// weights copy current) that is the only one.
    fn evidence(&self, hashes: &[u64], out: &mut Vec<Counts>, x: &Vector) -> Result<(Totals, f64), Error> {
        let (totals, version) = self.lookup_versioned(hashes, out)?;
        Ok((totals, self.margin_at(version, x)?))
    }

    fn weights(&self, buckets: &[u32]) -> Result<Vec<f32>, Error> {
        Ok(self.read_weights(buckets.iter().copied())?.into_iter().map(|w| w as f32).collect())
    }

    fn margin(&self, x: &Vector) -> Result<f64, Error> {
        if x.is_empty() {
            return Ok(0.0);
        }
        let version: u64 = self.with(|c| c.get::<_, Option<u64>>(self.key("wver")))?.unwrap_or(0);
        self.margin_at(version, x)
    }

    /// Reads what the batch touches, learns it in memory (`store::batch`, as LMDB does) and
    /// writes the changes in one MULTI, watching every key it writes: when another trainer (or
    /// expiry) changed one in between, nothing is written and the batch is read and learnt again.
    fn learn_with(&self, items: &[Item], forget: bool, params: &Params) -> Result<Vec<Learned>, Error> {
        let keys = batch::keys_of(items);
        let mut digests: Vec<[u8; 16]> = items.iter().map(|i| i.digest.0).collect();
        digests.sort_unstable();
        digests.dedup();
        let mut buckets: Vec<u32> = items.iter().flat_map(|i| i.vector.entries().map(|e| e.0)).collect();
        buckets.sort_unstable();
        buckets.dedup();
        let watched: Vec<String> = ["s", "h", "d", "seen", "totals", "w", "wver"].map(|k| self.key(k)).to_vec();
        for _ in 0..COMMIT_ATTEMPTS {
            let done = self.with(|c| {
                redis::cmd("WATCH").arg(&watched).query::<()>(c)?;
                let attempt = self.learn_watched(c, items, forget, params, (&keys, &digests, &buckets));
                if !matches!(attempt, Ok(Ok(Some(_)))) {
                    // EXEC clears the watch; anything else leaves it on the pooled connection.
                    redis::cmd("UNWATCH").query::<()>(c)?;
                }
                attempt
            })??;
            if let Some(outcomes) = done {
                return Ok(outcomes);
            }
        }
        Err(Error::Other(format!(
            "the Redis store kept changing while this batch was learnt ({COMMIT_ATTEMPTS} attempts); try again"
        )))
    }

    fn stats(&self) -> Result<Stats, Error> {
        self.with(|c| {
            let tot: (Option<u64>, Option<u64>) = c.hget(self.key("totals"), &["spam", "ham"])?;
            let tokens: u64 = c.hlen(self.key("d"))?;
            let seen: u64 = c.hlen(self.key("seen"))?;
            let weights: u64 = c.hlen(self.key("w"))?;
            let mut bytes = 0u64;
            for k in ["s", "h", "d", "seen", "totals", "w"] {
                let b: Option<u64> = redis::cmd("MEMORY").arg("USAGE").arg(self.key(k)).query(c).unwrap_or(None);
                bytes += b.unwrap_or(0);
            }
            let mut singletons = 0u64;
            let mut days: Option<(u32, u32)> = None;
            self.each_feature(c, |_, day, spam, ham| {
                if spam.saturating_add(ham) == 1 {
                    singletons += 1;
                }
                days = Some(days.map_or((day, day), |(lo, hi)| (lo.min(day), hi.max(day))));
            })?;
            Ok(Stats { totals: Redis::totals_of(tot), tokens, singletons, seen, weights, bytes, days })
        })
    }

    fn expire(&self, limits: &Expiry) -> Result<Expired, Error> {
        self.with(|c| {
            let mut done = Expired::default();
            let tokens: u64 = c.hlen(self.key("d"))?;
            if tokens > limits.max_tokens {
                let mut ranked = Vec::new();
                let mut names = Vec::new();
                self.each_feature(c, |f, day, spam, ham| {
                    let n = f64::from(spam.saturating_add(ham).max(1));
                    ranked.push((f64::from(day) + 14.0 * n.ln(), names.len()));
                    names.push(f.to_vec());
                })?;
                let victims = expiry_victims(ranked, limits.max_tokens * 3 / 4);
                for chunk in victims.chunks(1000) {
                    let fields: Vec<&Vec<u8>> = chunk.iter().map(|&i| &names[i]).collect();
                    let mut p = redis::pipe();
                    p.atomic();
                    for k in ["s", "h", "d"] {
                        p.cmd("HDEL").arg(self.key(k)).arg(&fields).ignore();
                    }
                    p.query::<()>(c)?;
                    done.tokens += chunk.len() as u64;
                }
            }
            let seen: u64 = c.hlen(self.key("seen"))?;
            if seen > limits.max_seen {
                let mut ranked = Vec::new();
                let mut names = Vec::new();
                for (f, v) in c.hscan::<_, (Vec<u8>, Vec<u8>)>(self.key("seen"))? {
                    let day = decode_seen(&v).map_or(0, |s| s.1);
                    ranked.push((f64::from(day), names.len()));
                    names.push(f);
                }
                for chunk in expiry_victims(ranked, limits.max_seen * 3 / 4).chunks(1000) {
                    let fields: Vec<&Vec<u8>> = chunk.iter().map(|&i| &names[i]).collect();
                    let _: () = redis::cmd("HDEL").arg(self.key("seen")).arg(&fields).query(c)?;
                    done.seen += chunk.len() as u64;
                }
            }
            Ok(done)
        })
    }

    fn export(&self, each: &mut dyn FnMut(Entry) -> Result<(), Error>) -> Result<(), Error> {
        // Redis cannot scan several hashes as of one moment, so the export is taken again when
        // a host learnt or expired while it was read (the version, totals and sizes moved).
        for _ in 0..EXPORT_ATTEMPTS {
            let before = self.with(|c| self.state(c))?;
            let entries = self.with(|c| self.read_all(c))?;
            if self.with(|c| self.state(c))? == before {
                return entries.into_iter().try_for_each(each);
            }
        }
        Err(Error::Other(format!(
            "the store under {} kept changing while it was read ({EXPORT_ATTEMPTS} tries): export while no host trains",
            self.prefix
        )))
    }

    fn import(&self, entries: &[Entry], replace: bool) -> Result<(), Error> {
        let totals = super::imported_totals(entries)?;
        if replace {
            return self.replace_with(entries);
        }
        let keys: Vec<String> = MODEL_KEYS.map(|k| self.key(k)).to_vec();
        if self.with(|c| redis::cmd("EXISTS").arg(&keys).query::<u64>(c))? > 0 {
            return Err(super::not_empty(&format!("the store under {}", self.prefix)));
        }
        // Written a chunk at a time, the totals last: until then the store reads as untrained.
        let written = entries.chunks(CHUNK).try_for_each(|chunk| {
            let (mut s, mut h, mut d, mut seen, mut w) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for e in chunk {
                match *e {
                    Entry::Totals(_) => {}
                    Entry::Feature(k, r) => {
                        let f = k.to_be_bytes();
                        if r.counts.spam > 0 {
                            s.push((f, r.counts.spam));
                        }
                        if r.counts.ham > 0 {
                            h.push((f, r.counts.ham));
                        }
                        d.push((f, r.day));
                    }
                    Entry::Seen(digest, class, day, step) => seen.push((digest, encode_seen(class, day, step))),
                    Entry::Weight(b, v) => w.push((b.to_be_bytes(), v.to_string())),
                }
            }
            let mut p = redis::pipe();
            hset(&mut p, &self.key("s"), s);
            hset(&mut p, &self.key("h"), h);
            hset(&mut p, &self.key("d"), d);
            hset(&mut p, &self.key("seen"), seen);
            hset(&mut p, &self.key("w"), w);
            self.with(|c| p.query::<()>(c))
        });
        written
            .and_then(|()| {
                self.with(|c| {
                    let mut p = redis::pipe();
                    p.atomic();
                    p.hset_multiple(self.key("totals"), &[("spam", totals.spam), ("ham", totals.ham)]).ignore();
                    p.incr(self.key("wver"), 1).ignore();
                    p.query::<()>(c)
                })
            })
            .map_err(|e| {
                Error::Other(format!(
                    "the import stopped part way ({e}): delete the keys {}:* and import again",
                    self.prefix
                ))
            })
    }
}
