//! The shared store: Redis, for several strainer hosts scoring with one model (as rspamd does).
//!
//! Layout under a key prefix (default `strainer:bayes`): hashes `:s` and `:h` (feature -> spam and
//! ham counts), `:d` (feature -> day last learnt; every feature held has one), `:seen` (digest ->
//! class, day and linear step), `:w` (bucket -> linear weight), `:wver` (counts learning steps,
//! so readers know when their copy of `:w` is current) and `:totals` (`spam`, `ham`).
//! Feature, digest and bucket fields are the raw 8, 16 and 4 bytes (big-endian). Learning one
//! message is one Lua script, so it is atomic per message (a batch is not); lookups read counts
//! and totals in one MULTI so they come from one moment. Learning is slower than with LMDB
//! (about 27 messages/s with two revisits, 60 without: each linear step reads and writes a few
//! thousand weights).

use std::sync::Mutex;
use std::time::Duration;

use redis::{Commands, Connection, Script};

use super::{Class, Error, Expired, Expiry, Item, Learned, Stats, Store, expiry_victims, today};
use crate::linear::{self, Vector};
use crate::model::{Counts, Params, Totals};

const LEARN: &str = r"
local s, h, d, seen, tot, w, ver = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
-- Mode: '0' learn, '1' forget, '2' a pass after the first over a batch (step the layer again).
local forget = ARGV[1] == '1'
local again = ARGV[1] == '2'
local day = ARGV[2]
local digest = ARGV[3]
local class = ARGV[4]
local nh = tonumber(ARGV[5])
local maxstep = tonumber(ARGV[6])
local prior = tonumber(ARGV[7])
local xs = 8 + nh
local prev = redis.call('HGET', seen, digest)
local prevc, preva = nil, 0
if prev then
  prevc = string.sub(prev, 1, 1)
  preva = tonumber(string.match(prev, '|(.+)$') or '0') or 0
end
-- The linear layer: the message's weights read once, changed here, written back once (a
-- HINCRBYFLOAT per bucket cost three times as much).
local fields, vals, cur, read, changed = {}, {}, {}, false, false
for i = xs, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  vals[#vals + 1] = tonumber(ARGV[i + 1])
end
local function load()
  if read then return end
  read = true
  for c = 1, #fields, 500 do
    local got = redis.call('HMGET', w, unpack(fields, c, math.min(c + 499, #fields)))
    for j = 1, #got do cur[c + j - 1] = tonumber(got[j]) or 0 end
  end
end
local function step(a)
  load()
  for j = 1, #vals do cur[j] = cur[j] + a * vals[j] end
  changed = true
end
-- Sets on hash `k` the n field-value pairs that pair(1..n) returns, 500 to a call.
local function hset_many(k, n, pair)
  for c = 1, n, 500 do
    local args = {}
    for j = c, math.min(c + 499, n) do
      local f, v = pair(j)
      args[#args + 1] = f
      args[#args + 1] = v
    end
    redis.call('HSET', k, unpack(args))
  end
end
local remove, add, outcome, counted = nil, nil, nil, false
-- A record without a step was learnt before the linear layer existed.
local legacy = prev and not string.find(prev, '|', 1, true)
local kept = 0
if again then
  -- Only a message learnt as this class: its step grows.
  if prevc ~= class or legacy then return 'unchanged' end
  counted = true
  kept = preva
  add = class
  outcome = 'again'
elseif not forget then
  if prevc == class then
    if not legacy then return 'already' end
    -- Counted already: only the linear layer learns it now.
    counted = true
    outcome = 'taught'
  elseif prevc then remove = prevc; outcome = 'relearned' else outcome = 'learned' end
  add = class
else
  if not prevc then return 'unchanged' end
  remove = prevc; outcome = 'forgotten'
end
local function key(c) if c == 's' then return s else return h end end
local function total(c) if c == 's' then return 'spam' else return 'ham' end end
if remove then
  local k = key(remove)
  local other = h
  if remove == 'h' then other = s end
  if tonumber(redis.call('HINCRBY', tot, total(remove), -1)) < 0 then redis.call('HSET', tot, total(remove), 0) end
  for i = 8, xs - 1 do
    if tonumber(redis.call('HINCRBY', k, ARGV[i], -1)) <= 0 then
      redis.call('HDEL', k, ARGV[i])
      if redis.call('HEXISTS', other, ARGV[i]) == 0 then redis.call('HDEL', d, ARGV[i]) end
    end
  end
  if preva ~= 0 then step(-preva) end
end
if add then
  local k = key(add)
  if not counted then
    redis.call('HINCRBY', tot, total(add), 1)
    for i = 8, xs - 1 do redis.call('HINCRBY', k, ARGV[i], 1) end
    hset_many(d, nh, function(j) return ARGV[7 + j], day end)
  end
  -- The linear layer's passive-aggressive step on top of the prior (crate::linear::apply).
  load()
  local margin, sq = prior, 0
  for j = 1, #vals do
    margin = margin + cur[j] * vals[j]
    sq = sq + vals[j] * vals[j]
  end
  local t = -1
  if add == 's' then t = 1 end
  local alpha = 0
  if 1 - t * margin > 0 and sq > 0 then
    alpha = t * math.min((1 - t * margin) / sq, maxstep)
    step(alpha)
  end
  redis.call('HSET', seen, digest, add .. day .. '|' .. (kept + alpha))
else
  redis.call('HDEL', seen, digest)
end
if changed then
  hset_many(w, #fields, function(j) return fields[j], string.format('%.17g', cur[j]) end)
end
redis.call('INCR', ver)
return outcome
";

/// Spam counts, ham counts, totals, the weights' version.
type Looked = (Vec<Option<u32>>, Vec<Option<u32>>, (Option<u64>, Option<u64>), Option<u64>);

/// A Redis token store.
pub struct Redis {
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    script: Script,
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
        let client = redis::Client::open(url)?;
        let r = Redis {
            client,
            prefix: prefix.to_string(),
            timeout,
            idle: Mutex::new(Vec::new()),
            script: Script::new(LEARN),
            weights: Mutex::new(None),
        };
        r.with(|c| redis::cmd("PING").query::<String>(c))?;
        Ok(r)
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

    /// The weights of `buckets`, in order, in one HMGET (0 where none is held).
    fn read_weights(&self, buckets: impl Iterator<Item = u32>) -> Result<Vec<f64>, Error> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.key("w"));
        let mut n = 0;
        for b in buckets {
            cmd.arg(&b.to_be_bytes()[..]);
            n += 1;
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let got: Vec<Option<f64>> = self.with(|c| cmd.query(c))?;
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

    fn learn_with(&self, items: &[Item], forget: bool, params: &Params) -> Result<Vec<Learned>, Error> {
        let day = today().to_string();
        let keys = [
            self.key("s"),
            self.key("h"),
            self.key("d"),
            self.key("seen"),
            self.key("totals"),
            self.key("w"),
            self.key("wver"),
        ];
        // One script call: `mode` as the script's; counts are sent only when they change.
        let run = |mode: &str, item: &Item, prior: f64| -> Result<String, Error> {
            let class = if item.class == Class::Spam { "s" } else { "h" };
            let hashes: &[u64] = if mode == "2" { &[] } else { &item.hashes };
            self.with(|c| {
                let mut inv = self.script.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                inv.arg(mode).arg(&day).arg(&item.digest.0[..]).arg(class);
                inv.arg(hashes.len()).arg(linear::MAX_STEP).arg(prior);
                for h in hashes {
                    inv.arg(&h.to_be_bytes()[..]);
                }
                // Each bucket once: the script also sums the squares of the values.
                for (bucket, v) in item.vector.merged() {
                    inv.arg(&bucket.to_be_bytes()[..]).arg(v.to_string());
                }
                inv.invoke(c)
            })
        };
        let mut out = Vec::with_capacity(items.len());
        let mut counts = Vec::new();
        let mut stepped = Vec::new();
        for item in items {
            // Fisher's score from the counts before this message (less its own, when it was
            // learnt before): read here, as the script cannot compute it.
            let prior = if forget {
                0.0
            } else {
                let prev: Option<Vec<u8>> = self.with(|c| c.hget(self.key("seen"), &item.digest.0[..]))?;
                let own = match prev.as_deref().and_then(|p| p.first()) {
                    Some(b's') => Some(Class::Spam),
                    Some(b'h') => Some(Class::Ham),
                    _ => None,
                };
                let totals = self.lookup(&item.hashes, &mut counts)?;
                super::prior_of(&mut counts, totals, own, params)
            };
            let r = run(if forget { "1" } else { "0" }, item, prior)?;
            if matches!(r.as_str(), "learned" | "relearned" | "taught") {
                stepped.push(item);
            }
            out.push(match r.as_str() {
                "learned" => Learned::Learned,
                "already" | "taught" => Learned::Already,
                "relearned" => Learned::Relearned,
                "forgotten" => Learned::Forgotten,
                _ => Learned::Unchanged,
            });
        }
        // The passes after the first: each message the batch learnt, as it left it (the script
        // refuses one the batch went on to learn as the other class).
        let mut once = std::collections::HashSet::new();
        stepped.retain(|i| once.insert((i.digest, i.class == Class::Spam)));
        for _ in 0..params.revisits {
            for item in &stepped {
                let totals = self.lookup(&item.hashes, &mut counts)?;
                run("2", item, super::prior_of(&mut counts, totals, Some(item.class), params))?;
            }
        }
        Ok(out)
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
            let mut spam: std::collections::HashMap<Vec<u8>, u32> = std::collections::HashMap::new();
            for (f, v) in c.hscan::<_, (Vec<u8>, u32)>(self.key("s"))? {
                spam.insert(f, v);
            }
            let mut ham: std::collections::HashMap<Vec<u8>, u32> = std::collections::HashMap::new();
            for (f, v) in c.hscan::<_, (Vec<u8>, u32)>(self.key("h"))? {
                ham.insert(f, v);
            }
            for (f, day) in c.hscan::<_, (Vec<u8>, u32)>(self.key("d"))? {
                if spam.get(&f).copied().unwrap_or(0) + ham.get(&f).copied().unwrap_or(0) == 1 {
                    singletons += 1;
                }
                days = Some(days.map_or((day, day), |(lo, hi)| (lo.min(day), hi.max(day))));
            }
            Ok(Stats { totals: Redis::totals_of(tot), tokens, singletons, seen, weights, bytes, days })
        })
    }

    fn expire(&self, limits: &Expiry) -> Result<Expired, Error> {
        self.with(|c| {
            let mut done = Expired::default();
            let tokens: u64 = c.hlen(self.key("d"))?;
            if tokens > limits.max_tokens {
                let mut counts: std::collections::HashMap<Vec<u8>, u32> = std::collections::HashMap::new();
                for k in ["s", "h"] {
                    for (f, v) in c.hscan::<_, (Vec<u8>, u32)>(self.key(k))? {
                        *counts.entry(f).or_default() += v;
                    }
                }
                let mut ranked = Vec::new();
                let mut names = Vec::new();
                for (f, day) in c.hscan::<_, (Vec<u8>, u32)>(self.key("d"))? {
                    let n = f64::from(counts.get(&f).copied().unwrap_or(0).max(1));
                    ranked.push((f64::from(day) + 14.0 * n.ln(), names.len()));
                    names.push(f);
                }
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
                    // "s20412" or, with the linear step, "s20412|0.83".
                    let day: u32 = std::str::from_utf8(v.get(1..).unwrap_or_default())
                        .ok()
                        .and_then(|s| s.split('|').next())
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
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
}
