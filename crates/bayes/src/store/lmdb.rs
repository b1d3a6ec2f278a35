//! The embedded store: LMDB (through heed), one directory holding `data.mdb` and `lock.mdb`.
//!
//! LMDB lets any number of processes read while one writes (`serve` classifies while
//! `strainer train` learns), readers never block and see a consistent snapshot, and a commit is
//! durable and atomic: a trainer killed mid-batch leaves the store as the last commit left it.
//! Features are 8-byte integer keys (MDB_INTEGERKEY) with 12-byte records ([`Record`]); a batch's changes are
//! summed in memory first and written in key order, which is what makes training fast
//! (the `batch` module).

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use heed::byteorder::NativeEndian;
use heed::types::{Bytes, U64};
use heed::{Database, Env, EnvFlags, EnvOpenOptions, IntegerComparator, RoTxn};

use super::{Entry, Error, Expired, Expiry, Item, Learned, Record, Stats, Store, expiry_victims, today};
use crate::linear::{self, Vector};
use crate::model::{Counts, Params, Totals};
use crate::store::Class;

mod batch;

/// An LMDB token store (cheap to clone: clones share the environment).
#[derive(Clone)]
pub struct Lmdb(Arc<Inner>);

/// Opened environments by canonical path: LMDB must not be opened twice by one process.
static OPEN: Mutex<Option<HashMap<PathBuf, Weak<Inner>>>> = Mutex::new(None);

impl std::ops::Deref for Lmdb {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The open environment and its databases.
pub struct Inner {
    env: Env,
    path: PathBuf,
    tokens: Database<U64<NativeEndian>, Bytes, IntegerComparator>,
    seen: Database<Bytes, Bytes>,
    meta: Database<Bytes, Bytes>,
}

const TOTALS: &[u8] = b"totals";
/// The linear layer's weights, [`linear::DIM`] little-endian f32.
const LINEAR: &[u8] = b"linear";
const FORMAT: &[u8] = b"format";
const FORMAT_VERSION: &[u8] = b"strainer-bayes-2";

impl Lmdb {
    /// Opens (creating when missing) the store in directory `path`, reserving `map_size` bytes of
    /// address space (the most the file may grow to).
    pub fn open(path: &Path, map_size: usize) -> Result<Lmdb, Error> {
        let io = |source| Error::Io { path: path.display().to_string(), source };
        std::fs::create_dir_all(path).map_err(io)?;
        let canon = std::fs::canonicalize(path).map_err(io)?;
        let mut open = OPEN.lock().map_err(|_| Error::Other("store registry poisoned".into()))?;
        let open = open.get_or_insert_with(HashMap::new);
        if let Some(inner) = open.get(&canon).and_then(Weak::upgrade) {
            return Ok(Lmdb(inner));
        }
        let inner = Arc::new(Inner::open(&canon, map_size)?);
        open.retain(|_, w| w.strong_count() > 0);
        open.insert(canon, Arc::downgrade(&inner));
        Ok(Lmdb(inner))
    }

    /// Opens the store in directory `path` only to read it, writing nothing there: for a copy
    /// made by [`Inner::backup`] (`strainer bayes restore`), which may sit on a read-only file
    /// system or belong to another user. A directory without `lock.mdb` was never opened as a
    /// live store, so it is read without locking; one with it is read through its lock, in case
    /// a process writes there.
    pub fn open_read_only(path: &Path) -> Result<Lmdb, Error> {
        let err = |source| Error::Lmdb { path: path.display().to_string(), source };
        let mut opts = EnvOpenOptions::new();
        opts.max_dbs(4).max_readers(254);
        let flags =
            if path.join("lock.mdb").exists() { EnvFlags::READ_ONLY } else { EnvFlags::READ_ONLY | EnvFlags::NO_LOCK };
        // SAFETY: NO_LOCK only where no lock file says the store was ever live, that is, a
        // backup written whole and renamed into place, which no process writes again; and the
        // environment is opened this once, outside `Lmdb::open`'s registry, read-only.
        #[allow(unsafe_code)]
        let env = unsafe {
            opts.flags(flags);
            opts.open(path)
        }
        .map_err(err)?;
        let rtxn = env.read_txn().map_err(err)?;
        let missing =
            || Error::Other(format!("{}: not a strainer Bayes store (no tokens, seen or meta)", path.display()));
        let tokens = tokens_db(&env).open(&rtxn).map_err(err)?.ok_or_else(missing)?;
        let seen = env.open_database(&rtxn, Some("seen")).map_err(err)?.ok_or_else(missing)?;
        let meta: Database<Bytes, Bytes> = env.open_database(&rtxn, Some("meta")).map_err(err)?.ok_or_else(missing)?;
        check_format(path, meta.get(&rtxn, FORMAT).map_err(err)?)?;
        // Committed, not dropped: the databases opened in a read transaction stay open for the
        // environment's later ones only then.
        rtxn.commit().map_err(err)?;
        Ok(Lmdb(Arc::new(Inner { env, path: path.to_path_buf(), tokens, seen, meta })))
    }
}

/// How the feature table is opened, by a live store and a backup alike: integer keys, which LMDB
/// compares as machine words, not with memcmp (a third of the lookup time in the profile).
fn tokens_db(
    env: &Env,
) -> heed::DatabaseOpenOptions<'_, '_, heed::WithTls, U64<NativeEndian>, Bytes, IntegerComparator> {
    let mut options = env.database_options().types::<U64<NativeEndian>, Bytes>().key_comparator::<IntegerComparator>();
    options.name("tokens");
    options
}

/// Refuses a store written in another format than this strainer's.
fn check_format(path: &Path, format: Option<&[u8]>) -> Result<(), Error> {
    match format {
        Some(v) if v != FORMAT_VERSION => Err(Error::Other(format!(
            "{}: store format {:?}, this strainer reads {:?}; train a new store",
            path.display(),
            String::from_utf8_lossy(v),
            String::from_utf8_lossy(FORMAT_VERSION)
        ))),
        _ => Ok(()),
    }
}

impl Inner {
    fn open(path: &Path, map_size: usize) -> Result<Inner, Error> {
        let err = |source| Error::Lmdb { path: path.display().to_string(), source };
        let mut opts = EnvOpenOptions::new();
        opts.map_size(map_size).max_dbs(4).max_readers(254);
        // SAFETY: heed marks opening unsafe because LMDB's memory map must not be changed behind
        // its back: the directory is ours (only strainer processes open it, always through LMDB),
        // and `Lmdb::open` hands out the environment already open when a process asks twice.
        #[allow(unsafe_code)]
        let env = unsafe { opts.open(path) }.map_err(err)?;
        let mut wtxn = env.write_txn().map_err(err)?;
        let tokens = tokens_db(&env).create(&mut wtxn).map_err(err)?;
        let seen = env.create_database(&mut wtxn, Some("seen")).map_err(err)?;
        let meta: Database<Bytes, Bytes> = env.create_database(&mut wtxn, Some("meta")).map_err(err)?;
        match meta.get(&wtxn, FORMAT).map_err(err)? {
            None => meta.put(&mut wtxn, FORMAT, FORMAT_VERSION).map_err(err)?,
            v => check_format(path, v)?,
        }
        wtxn.commit().map_err(err)?;
        Ok(Inner { env, path: path.to_path_buf(), tokens, seen, meta })
    }

    /// Writes a consistent, compacted copy of the store into directory `dest` (created when
    /// missing; it must not hold a store already), while other processes keep reading and
    /// learning: the copy is of the last commit when it starts. Returns the sizes of the store's
    /// file and of the copy.
    pub fn backup(&self, dest: &Path) -> Result<(u64, u64), Error> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| Error::Io { path, source }
        };
        std::fs::create_dir_all(dest).map_err(io(dest))?;
        let target = dest.join("data.mdb");
        if target.exists() {
            return Err(Error::Other(format!(
                "{} already holds a store; give a new or empty directory",
                dest.display()
            )));
        }
        // Written under another name and renamed once synced: a copy cut short (full disk,
        // killed) never looks like a store.
        let partial = dest.join("data.mdb.partial");
        // Readable by its owner only, as LMDB makes the store itself.
        let mut file = std::fs::File::options()
            .mode(0o600)
            .write(true)
            .read(true)
            .create(true)
            .truncate(true)
            .open(&partial)
            .map_err(io(&partial))?;
        let copied = self
            .env
            .copy_to_file(&mut file, heed::CompactionOption::Enabled)
            .map_err(|e| self.err(e))
            .and_then(|()| file.sync_all().map_err(io(&partial)));
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        std::fs::rename(&partial, &target).map_err(io(&target))?;
        std::fs::File::open(dest).and_then(|d| d.sync_all()).map_err(io(dest))?;
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        Ok((size(&self.path.join("data.mdb")), size(&target)))
    }

    /// Unmaps from this process the store's pages it has read (the kernel keeps them in its page
    /// cache, and reading them again maps them back): `serve` scores from its in-memory copy and
    /// reads the file only to build that copy, yet every page the build touched stayed counted
    /// in its memory, 26 of its 56 MiB at 100 sessions. Linux only; elsewhere, or when the
    /// mapping is not found, it does nothing.
    pub fn release_pages(&self) {
        #[cfg(target_os = "linux")]
        if let Some((start, len)) = self.mapping() {
            // SAFETY: the range is exactly LMDB's read-only, shared mapping of data.mdb, found in
            // /proc/self/maps by its path and inode. MADV_DONTNEED on a shared file mapping only
            // drops this process's page-table entries; the file's contents stay in the page cache
            // and on disk, the mapping stays valid, and any later read (LMDB's own, in any
            // thread, or a slice a reader still holds) faults the page back in unchanged.
            #[allow(unsafe_code)]
            unsafe {
                libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED);
            }
        }
    }

    /// The address and length of this process's mapping of `data.mdb` (no further than the
    /// file's end), from /proc/self/maps.
    #[cfg(target_os = "linux")]
    fn mapping(&self) -> Option<(usize, usize)> {
        use std::os::unix::fs::MetadataExt as _;
        let file = self.path.join("data.mdb");
        let meta = std::fs::metadata(&file).ok()?;
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        maps.lines().find_map(|line| {
            // start-end perms offset dev inode path
            let mut f = line.split_ascii_whitespace();
            let (range, perms, offset, _dev, inode) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
            let path = f.collect::<Vec<_>>().join(" ");
            if Path::new(&path) != file
                || inode.parse::<u64>().ok()? != meta.ino()
                || !perms.starts_with("r-")
                || !perms.contains('s')
                || !offset.trim_start_matches('0').is_empty()
            {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
            let len = (end.checked_sub(start)?).min(usize::try_from(meta.len()).ok()?);
            (len > 0).then_some((start, len))
        })
    }

    fn err(&self, source: heed::Error) -> Error {
        let e = Error::Lmdb { path: self.path.display().to_string(), source };
        if let Error::Lmdb { source: heed::Error::Mdb(heed::MdbError::MapFull), .. } = &e {
            return Error::Other(format!(
                "{}: the store reached its size limit (bayes.map_size); raise it or lower bayes.max_tokens and run `strainer bayes expire`",
                self.path.display()
            ));
        }
        e
    }

    fn totals(&self, txn: &RoTxn) -> Result<Totals, Error> {
        Ok(self.meta.get(txn, TOTALS).map_err(|e| self.err(e))?.map(decode_totals).unwrap_or_default())
    }

    fn lookup_in(&self, txn: &RoTxn, hashes: &[u64], out: &mut Vec<Counts>) -> Result<Totals, Error> {
        out.clear();
        for h in hashes {
            let rec = self.tokens.get(txn, h).map_err(|e| self.err(e))?.and_then(Record::decode);
            out.push(rec.map(|r| r.counts).unwrap_or_default());
        }
        self.totals(txn)
    }

    fn margin_in(&self, txn: &RoTxn, x: &Vector) -> Result<f64, Error> {
        Ok(match self.meta.get(txn, LINEAR).map_err(|e| self.err(e))? {
            Some(bytes) => x.dot(|i| linear::weight_in(bytes, i)),
            None => 0.0,
        })
    }
}

fn decode_totals(b: &[u8]) -> Totals {
    let w = |i: usize| b.get(i..i + 8).and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes);
    Totals { spam: w(0), ham: w(8) }
}

/// Records of the store read between two releases of its pages while `serve` builds its copy
/// (about 450 pages, 1.8 MiB).
const RELEASE_EVERY: usize = 1 << 16;

/// A seen record: class byte, day, and (since the linear layer) its step; records from before
/// it have no step (`None`): the layer has not learnt that message.
fn decode_seen(v: &[u8]) -> Option<(Class, Option<f32>)> {
    let class = Class::from_byte(*v.first()?)?;
    let alpha = v.get(5..9).and_then(|s| s.try_into().ok()).map(f32::from_le_bytes);
    Some((class, alpha))
}

/// The day a seen record was learnt (0 when the record is too short to say).
fn seen_day(v: &[u8]) -> u32 {
    v.get(1..5).and_then(|s| s.try_into().ok()).map_or(0, u32::from_le_bytes)
}

/// The inverse of [`decode_seen`] and [`seen_day`]: class byte, day, and the step when there is one.
fn encode_seen(class: Class, day: u32, step: Option<f32>) -> Vec<u8> {
    let mut v = Vec::with_capacity(9);
    v.push(class.byte());
    v.extend_from_slice(&day.to_le_bytes());
    if let Some(step) = step {
        v.extend_from_slice(&step.to_le_bytes());
    }
    v
}

fn encode_totals(t: Totals) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&t.spam.to_le_bytes());
    b[8..].copy_from_slice(&t.ham.to_le_bytes());
    b
}

impl Store for Lmdb {
    fn lookup(&self, hashes: &[u64], out: &mut Vec<Counts>) -> Result<Totals, Error> {
        let txn = self.env.read_txn().map_err(|e| self.err(e))?;
        self.lookup_in(&txn, hashes, out)
    }

    fn margin(&self, x: &Vector) -> Result<f64, Error> {
        let txn = self.env.read_txn().map_err(|e| self.err(e))?;
        self.margin_in(&txn, x)
    }

    fn evidence(&self, hashes: &[u64], out: &mut Vec<Counts>, x: &Vector) -> Result<(Totals, f64), Error> {
        let txn = self.env.read_txn().map_err(|e| self.err(e))?;
        Ok((self.lookup_in(&txn, hashes, out)?, self.margin_in(&txn, x)?))
    }

    fn learn_with(&self, items: &[Item], forget: bool, params: &Params) -> Result<Vec<Learned>, Error> {
        let day = today();
        let mut wtxn = self.env.write_txn().map_err(|e| self.err(e))?;
        let mut totals = self.totals(&wtxn)?;
        // The records this batch touches, read once in key order (lookups in message order cost
        // three times as much).
        let mut batch = self.read_sorted(&wtxn, super::batch::keys_of(items), day)?;
        let mut weights = linear::decode(self.meta.get(&wtxn, LINEAR).map_err(|e| self.err(e))?);
        let learnt = super::batch::learn(items, forget, params, &mut batch, &mut totals, &mut weights, |d| {
            Ok(self.seen.get(&wtxn, d).map_err(|e| self.err(e))?.and_then(decode_seen))
        })?;
        self.write_sorted(&mut wtxn, batch)?;
        for (digest, class) in learnt.seen {
            match class {
                Some((c, alpha)) => {
                    let v = encode_seen(c, day, Some(alpha.unwrap_or(0.0)));
                    self.seen.put(&mut wtxn, &digest, &v).map_err(|e| self.err(e))?;
                }
                None => {
                    self.seen.delete(&mut wtxn, &digest).map_err(|e| self.err(e))?;
                }
            }
        }
        if learnt.weights_changed {
            self.meta.put(&mut wtxn, LINEAR, &linear::encode(&weights)).map_err(|e| self.err(e))?;
        }
        self.meta.put(&mut wtxn, TOTALS, &encode_totals(totals)).map_err(|e| self.err(e))?;
        wtxn.commit().map_err(|e| self.err(e))?;
        Ok(learnt.outcomes)
    }

    fn stats(&self) -> Result<Stats, Error> {
        let txn = self.env.read_txn().map_err(|e| self.err(e))?;
        let totals = self.totals(&txn)?;
        let mut s = Stats { totals, ..Stats::default() };
        for kv in self.tokens.iter(&txn).map_err(|e| self.err(e))? {
            let (_, v) = kv.map_err(|e| self.err(e))?;
            let Some(r) = Record::decode(v) else { continue };
            s.tokens += 1;
            if u64::from(r.counts.spam) + u64::from(r.counts.ham) == 1 {
                s.singletons += 1;
            }
            s.days = Some(s.days.map_or((r.day, r.day), |(lo, hi)| (lo.min(r.day), hi.max(r.day))));
        }
        s.seen = self.seen.len(&txn).map_err(|e| self.err(e))?;
        let weights = linear::decode(self.meta.get(&txn, LINEAR).map_err(|e| self.err(e))?);
        s.weights = weights.iter().filter(|w| **w != 0.0).count() as u64;
        s.bytes = std::fs::metadata(self.path.join("data.mdb")).map_or(0, |m| m.len());
        Ok(s)
    }

    fn expire(&self, limits: &Expiry) -> Result<Expired, Error> {
        let mut wtxn = self.env.write_txn().map_err(|e| self.err(e))?;
        let mut done = Expired::default();
        if self.tokens.len(&wtxn).map_err(|e| self.err(e))? > limits.max_tokens {
            let mut ranked = Vec::new();
            for kv in self.tokens.iter(&wtxn).map_err(|e| self.err(e))? {
                let (k, v) = kv.map_err(|e| self.err(e))?;
                let Some(r) = Record::decode(v) else { continue };
                ranked.push((r.keep_rank(), k));
            }
            let mut victims = expiry_victims(ranked, limits.max_tokens * 3 / 4);
            victims.sort_unstable();
            for k in victims {
                self.tokens.delete(&mut wtxn, &k).map_err(|e| self.err(e))?;
                done.tokens += 1;
            }
        }
        if self.seen.len(&wtxn).map_err(|e| self.err(e))? > limits.max_seen {
            let mut ranked = Vec::new();
            for kv in self.seen.iter(&wtxn).map_err(|e| self.err(e))? {
                let (k, v) = kv.map_err(|e| self.err(e))?;
                let day = seen_day(v);
                if let Ok(k) = <[u8; 16]>::try_from(k) {
                    ranked.push((f64::from(day), k));
                }
            }
            for k in expiry_victims(ranked, limits.max_seen * 3 / 4) {
                self.seen.delete(&mut wtxn, &k).map_err(|e| self.err(e))?;
                done.seen += 1;
            }
        }
        wtxn.commit().map_err(|e| self.err(e))?;
        Ok(done)
    }

    fn export(&self, each: &mut dyn FnMut(Entry) -> Result<(), Error>) -> Result<(), Error> {
        // One read transaction: the export is of one commit, whatever trainers do meanwhile.
        let txn = self.env.read_txn().map_err(|e| self.err(e))?;
        each(Entry::Totals(self.totals(&txn)?))?;
        for kv in self.tokens.iter(&txn).map_err(|e| self.err(e))? {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            if let Some(r) = Record::decode(v) {
                each(Entry::Feature(k, r))?;
            }
        }
        for kv in self.seen.iter(&txn).map_err(|e| self.err(e))? {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let (Ok(digest), Some((class, step))) = (<[u8; 16]>::try_from(k), decode_seen(v)) else { continue };
            each(Entry::Seen(digest, class, seen_day(v), step))?;
        }
        let weights = linear::decode(self.meta.get(&txn, LINEAR).map_err(|e| self.err(e))?);
        super::dump::weight_entries(&weights).try_for_each(each)
    }

    fn import(&self, entries: &[Entry], replace: bool) -> Result<(), Error> {
        let totals = super::imported_totals(entries)?;
        // One write transaction: a failed import leaves the store as it was, and readers see
        // the old model or the new one, never a mix.
        let mut wtxn = self.env.write_txn().map_err(|e| self.err(e))?;
        if replace {
            self.tokens.clear(&mut wtxn).map_err(|e| self.err(e))?;
            self.seen.clear(&mut wtxn).map_err(|e| self.err(e))?;
            self.meta.delete(&mut wtxn, LINEAR).map_err(|e| self.err(e))?;
        } else {
            let empty = self.tokens.is_empty(&wtxn).map_err(|e| self.err(e))?
                && self.seen.is_empty(&wtxn).map_err(|e| self.err(e))?
                && self.totals(&wtxn)? == Totals::default();
            if !empty {
                return Err(super::not_empty(&format!("the store in {}", self.path.display())));
            }
        }
        for e in entries {
            match *e {
                Entry::Feature(h, r) => self.tokens.put(&mut wtxn, &h, &r.encode()).map_err(|e| self.err(e))?,
                Entry::Seen(digest, class, day, step) => {
                    self.seen.put(&mut wtxn, &digest, &encode_seen(class, day, step)).map_err(|e| self.err(e))?;
                }
                Entry::Totals(_) | Entry::Weight(..) => {}
            }
        }
        if let Some(weights) = super::dump::dense_weights(entries) {
            self.meta.put(&mut wtxn, LINEAR, &linear::encode(&weights)).map_err(|e| self.err(e))?;
        }
        self.meta.put(&mut wtxn, TOTALS, &encode_totals(totals)).map_err(|e| self.err(e))?;
        wtxn.commit().map_err(|e| self.err(e))
    }
}

/// An LMDB store read through an in-memory copy of its feature table, for `serve`: a lookup
/// is a hash-map probe instead of a B-tree descent into a file-backed map (which the profile
/// showed as a third of the filter's CPU). The copy is rebuilt when another process commits
/// (the environment's last transaction id changes): by the next lookup, or, watched
/// ([`Snapshotted::watch`], as `serve` does), by a thread of its own; while it is behind, lookups
/// read LMDB directly, so no message waits for a rebuild. Learning and expiry go to LMDB itself.
pub struct Snapshotted {
    lmdb: Lmdb,
    snap: std::sync::RwLock<Arc<Snap>>,
    building: Mutex<()>,
    /// The map was read directly (during a build, or to learn) since its pages were last given
    /// back: the watcher's next round, or unwatched the next lookup from the copy, gives them
    /// back again ([`Inner::release_pages`]).
    map_read: std::sync::atomic::AtomicBool,
    /// When a thread keeps the copy current ([`Snapshotted::watch`]), its period.
    period: std::sync::OnceLock<std::time::Duration>,
    /// Until when a copy that is behind may still be read: the watcher's last rebuild for a
    /// commit plus two periods (another process is training).
    busy_until: std::sync::RwLock<Option<std::time::Instant>>,
    /// Wakes the watcher before its period is up: set by a lookup that found the copy behind
    /// and read the store itself.
    wake: Arc<Wake>,
}

/// A flag and the condition variable the watcher waits on between rounds.
#[derive(Default)]
struct Wake {
    asked: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Wake {
    /// Asks the watcher for a round now.
    fn ask(&self) {
        if let Ok(mut asked) = self.asked.lock()
            && !*asked
        {
            *asked = true;
            self.cv.notify_one();
        }
    }

    /// Waits until asked or `period` has passed.
    fn wait(&self, period: std::time::Duration) {
        if let Ok(asked) = self.asked.lock()
            && let Ok((mut asked, _)) = self.cv.wait_timeout_while(asked, period, |asked| !*asked)
        {
            *asked = false;
        }
    }
}

struct Snap {
    txn: usize,
    totals: Totals,
    counts: super::table::CountTable,
    weights: Vec<f32>,
}

impl Snap {
    fn lookup(&self, hashes: &[u64], out: &mut Vec<Counts>) -> Totals {
        out.clear();
        self.counts.get_many(hashes, out);
        self.totals
    }

    fn margin(&self, x: &Vector) -> f64 {
        x.dot(|i| self.weights.get(i as usize).copied().unwrap_or(0.0))
    }
}

impl Snapshotted {
    /// Reads `lmdb` through an in-memory copy.
    pub fn new(lmdb: Lmdb) -> Snapshotted {
        let empty = Snap {
            txn: usize::MAX,
            totals: Totals::default(),
            counts: super::table::CountTable::default(),
            weights: Vec::new(),
        };
        Snapshotted {
            lmdb,
            snap: std::sync::RwLock::new(Arc::new(empty)),
            building: Mutex::new(()),
            map_read: std::sync::atomic::AtomicBool::new(false),
            period: std::sync::OnceLock::new(),
            busy_until: std::sync::RwLock::new(None),
            wake: Arc::new(Wake::default()),
        }
    }

    /// Keeps the copy current from a thread of its own, as `serve` wants it: every `period` the
    /// thread rebuilds the copy if another process committed since, and gives back the pages of
    /// the store's file read directly meanwhile. Lookups then never rebuild the copy. While
    /// another process keeps committing (the watcher rebuilt for a commit less than two periods
    /// ago), lookups read the copy even when it is behind: scores from a model a second old,
    /// instead of every message descending the store's B-tree and every commit costing a
    /// rebuild (under load with `strainer train` running: 0.67 -> 0.51-0.55 CPU ms per message,
    /// benches/README.md). Otherwise a copy that is behind is not read: the first messages after
    /// a lone commit read the store itself, as an unwatched copy does, and the first of them
    /// wakes the thread for a round at once rather than at the end of its period (each message
    /// read from the store maps more of its file into `serve`'s memory). The thread ends within
    /// a period of the store being dropped.
    pub fn watch(this: &Arc<Snapshotted>, period: std::time::Duration) -> std::io::Result<()> {
        let weak = Arc::downgrade(this);
        let wake = Arc::clone(&this.wake);
        std::thread::Builder::new().name("bayes-copy".into()).spawn(move || {
            // An eighth of each period is a pause after the round, so that lookups asking again
            // and again (a rebuild that keeps failing) cost at most eight rounds a period.
            let pause = period / 8;
            loop {
                wake.wait(period - pause);
                let Some(s) = weak.upgrade() else { break };
                s.refresh();
                drop(s);
                std::thread::sleep(pause);
            }
        })?;
        let _ = this.period.set(period);
        Ok(())
    }

    /// Whether the copy is of the store's last commit.
    pub fn is_current(&self) -> bool {
        let txn = self.lmdb.env.info().last_txn_id;
        self.snap.read().is_ok_and(|s| s.txn == txn)
    }

    /// The watcher's round (public for tests): rebuild the copy if it is behind, give back the
    /// pages read directly.
    pub fn refresh(&self) {
        if !self.is_current()
            && let Ok(_guard) = self.building.try_lock()
            && let Ok(fresh) = self.build()
            && let Ok(mut w) = self.snap.write()
        {
            let first = w.txn == usize::MAX;
            *w = Arc::new(fresh);
            // Rebuilt for a commit: another process may be training, so its next commits are
            // read behind too.
            if !first {
                self.read_behind_for_two_periods();
            }
        }
        if self.map_read.swap(false, std::sync::atomic::Ordering::Relaxed) {
            self.lmdb.release_pages();
        }
    }

    /// Watched, lets lookups read the copy while it is behind for the next two periods.
    fn read_behind_for_two_periods(&self) {
        if let (Some(period), Ok(mut b)) = (self.period.get().copied(), self.busy_until.write()) {
            *b = Some(std::time::Instant::now() + period * 2);
        }
    }

    fn current(&self) -> Option<Arc<Snap>> {
        let txn = self.lmdb.env.info().last_txn_id;
        let snap = self.snap.read().ok()?.clone();
        let watched = self.period.get().is_some();
        if snap.txn == txn {
            // Pages read directly are given back here, unless a watcher does it in its rounds
            // (off the messages' path).
            use std::sync::atomic::Ordering::Relaxed;
            if !watched && self.map_read.load(Relaxed) && self.map_read.swap(false, Relaxed) {
                self.lmdb.release_pages();
            }
            return Some(snap);
        }
        // Watched, a copy that is behind is the watcher's to rebuild (the first one is built by
        // whoever asks first); meanwhile it is read only while another process is training.
        if snap.txn != usize::MAX && watched {
            let training = self.busy_until.read().is_ok_and(|b| b.is_some_and(|t| std::time::Instant::now() < t));
            if !training {
                self.wake.ask();
            }
            return training.then_some(snap);
        }
        let _guard = self.building.try_lock().ok()?;
        let fresh = Arc::new(self.build().ok()?);
        if let Ok(mut w) = self.snap.write() {
            *w = fresh.clone();
        }
        Some(fresh)
    }

    /// Runs `f` on the store itself (its map, not the copy), noting that the map was read.
    fn direct<T>(&self, f: impl FnOnce(&Lmdb) -> T) -> T {
        let out = f(&self.lmdb);
        self.map_read.store(true, std::sync::atomic::Ordering::Relaxed);
        out
    }

    fn build(&self) -> Result<Snap, Error> {
        let rtxn = self.lmdb.env.read_txn().map_err(|e| self.lmdb.err(e))?;
        // The copy is tagged with the commit it reads, not with the environment's last commit as
        // info() gives it: a writer puts its new meta page (which info() reads) before it tells
        // new readers (the lock file), so for a moment info() is a commit ahead of what a read
        // transaction sees, and a copy tagged that way stayed a commit behind, taken for current,
        // until the next commit.
        let txn = rtxn.id();
        let totals = self.lmdb.totals(&rtxn)?;
        let n = usize::try_from(self.lmdb.tokens.len(&rtxn).map_err(|e| self.lmdb.err(e))?).unwrap_or(0);
        let mut counts = super::table::CountTable::with_capacity(n);
        for (i, kv) in self.lmdb.tokens.iter(&rtxn).map_err(|e| self.lmdb.err(e))?.enumerate() {
            let (k, v) = kv.map_err(|e| self.lmdb.err(e))?;
            if let Some(r) = Record::decode(v) {
                counts.insert(k, r.counts);
            }
            // The pages read so far are in the copy now: give them back as the walk goes, so the
            // copy's build never holds the whole file in this process's memory.
            if i % RELEASE_EVERY == RELEASE_EVERY - 1 {
                self.lmdb.release_pages();
            }
        }
        let weights = linear::decode(self.lmdb.meta.get(&rtxn, LINEAR).map_err(|e| self.lmdb.err(e))?);
        self.lmdb.release_pages();
        Ok(Snap { txn, totals, counts, weights })
    }
}

impl Store for Snapshotted {
    fn lookup(&self, hashes: &[u64], out: &mut Vec<Counts>) -> Result<Totals, Error> {
        match self.current() {
            Some(s) => Ok(s.lookup(hashes, out)),
            None => self.direct(|l| l.lookup(hashes, out)),
        }
    }

    fn margin(&self, x: &Vector) -> Result<f64, Error> {
        match self.current() {
            Some(s) => Ok(s.margin(x)),
            None => self.direct(|l| l.margin(x)),
        }
    }

    fn evidence(&self, hashes: &[u64], out: &mut Vec<Counts>, x: &Vector) -> Result<(Totals, f64), Error> {
        match self.current() {
            Some(s) => Ok((s.lookup(hashes, out), s.margin(x))),
            None => self.direct(|l| l.evidence(hashes, out, x)),
        }
    }

    fn learn_with(&self, items: &[Item], forget: bool, params: &Params) -> Result<Vec<Learned>, Error> {
        self.direct(|l| l.learn_with(items, forget, params))
    }

    fn stats(&self) -> Result<Stats, Error> {
        self.direct(|l| l.stats())
    }

    fn expire(&self, limits: &Expiry) -> Result<Expired, Error> {
        self.direct(|l| l.expire(limits))
    }

    fn export(&self, each: &mut dyn FnMut(Entry) -> Result<(), Error>) -> Result<(), Error> {
        self.direct(|l| l.export(each))
    }

    fn import(&self, entries: &[Entry], replace: bool) -> Result<(), Error> {
        self.direct(|l| l.import(entries, replace))
    }

    /// Watched, the copy is read while behind until two periods from now, as while another
    /// process trains: the commit is the watcher's to pick up, and messages meanwhile do not map
    /// the store's file in (under autolearning that file was most of `serve`'s peak memory).
    fn expect_commit(&self) {
        self.read_behind_for_two_periods();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_backup_is_a_store_with_the_same_counts_weights_and_memory_of_what_was_learnt() {
        let d = tempfile::tempdir().unwrap();
        let s = Lmdb::open(&d.path().join("live"), 1 << 24).unwrap();
        let spam = Item::new(
            b"Subject: cheap\r\n\r\nbuy cheap meds now\r\n",
            Class::Spam,
            vec![1 << 60, 2 << 60],
            &Default::default(),
        );
        let ham = Item::new(b"Subject: lunch\r\n\r\nat noon?\r\n", Class::Ham, vec![3 << 60], &Default::default());
        s.learn(&[spam.clone(), ham.clone()], false).unwrap();
        let dest = d.path().join("copy");
        let (live_bytes, copy_bytes) = s.backup(&dest).unwrap();
        assert!(copy_bytes > 0 && copy_bytes <= live_bytes, "{copy_bytes} of {live_bytes}");
        assert!(!dest.join("data.mdb.partial").exists());
        let margin = s.margin(&spam.vector).unwrap();
        assert!(margin > 0.0);
        // Learning after the backup does not reach the copy.
        let later = Item::new(b"Subject: later\r\n\r\nmore\r\n", Class::Spam, vec![4 << 60], &Default::default());
        s.learn(std::slice::from_ref(&later), false).unwrap();

        let b = Lmdb::open(&dest, 1 << 24).unwrap();
        let hashes = [1 << 60, 2 << 60, 3 << 60, 4 << 60];
        let (mut a, mut c) = (Vec::new(), Vec::new());
        assert_eq!(b.lookup(&hashes, &mut c).unwrap(), Totals { spam: 1, ham: 1 });
        s.lookup(&hashes, &mut a).unwrap();
        assert_eq!(c[..3], a[..3]);
        assert_eq!(c[3], Counts::default());
        assert_eq!(b.margin(&spam.vector).unwrap(), margin);
        // The copy remembers what it learnt: the same message again counts once.
        assert_eq!(b.learn(std::slice::from_ref(&spam), false).unwrap(), vec![Learned::Already]);
        // A directory that holds a store already is refused, and left as it was.
        let again = s.backup(&dest).unwrap_err().to_string();
        assert!(again.contains("already holds a store"), "{again}");
        assert_eq!(b.stats().unwrap().totals, Totals { spam: 1, ham: 1 });
    }

    #[test]
    fn a_message_learnt_before_the_linear_layer_teaches_it_when_trained_again() {
        let d = tempfile::tempdir().unwrap();
        let s = Lmdb::open(d.path(), 1 << 24).unwrap();
        let item = Item::new(
            b"Subject: cheap\r\n\r\nbuy cheap meds now\r\n",
            Class::Spam,
            vec![1 << 60, 2 << 60],
            &Default::default(),
        );
        s.learn(std::slice::from_ref(&item), false).unwrap();
        // As a store from before the linear layer: a 5-byte seen record, no weights.
        let mut w = s.env.write_txn().unwrap();
        s.seen.put(&mut w, &item.digest.0, &[b's', 0, 0, 0, 0]).unwrap();
        s.meta.delete(&mut w, LINEAR).unwrap();
        w.commit().unwrap();
        assert_eq!(s.margin(&item.vector).unwrap(), 0.0);
        // Trained again: not counted twice, but the layer learns it and remembers its step.
        assert_eq!(s.learn(std::slice::from_ref(&item), false).unwrap(), vec![Learned::Already]);
        assert_eq!(s.lookup(&item.hashes, &mut Vec::new()).unwrap(), Totals { spam: 1, ham: 0 });
        let m = s.margin(&item.vector).unwrap();
        assert!((m - 1.0).abs() < 1e-3, "{m}");
        assert_eq!(s.learn(std::slice::from_ref(&item), false).unwrap(), vec![Learned::Already]);
        assert!((s.margin(&item.vector).unwrap() - m).abs() < 1e-6);
        // And forgetting it takes back both.
        assert_eq!(s.learn(std::slice::from_ref(&item), true).unwrap(), vec![Learned::Forgotten]);
        assert!(s.margin(&item.vector).unwrap().abs() < 1e-6);
        assert_eq!(s.lookup(&item.hashes, &mut Vec::new()).unwrap(), Totals::default());
    }
}
