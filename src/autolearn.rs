//! Autolearning (`bayes.autolearn`): `serve` learns the messages Bayes is sure of, when the
//! other scanners agree, so the model follows the mail as it changes without anyone sorting it
//! (SpamAssassin's `bayes_auto_learn`, rspamd's `autolearn`). Learning is best effort and off
//! the message's path: a message is answered first and queued for learning after; a queue that
//! is full, or a store that refuses a batch, costs the learning, never the message.
//!
//! The messages wait on a thread of their own and are learnt a batch at a time, like
//! `strainer train`'s batches, then the store's cap is applied (`bayes.max_tokens`). Each batch
//! is one LMDB commit, after which `serve`'s in-memory copy of the store is rebuilt once (by the
//! thread that keeps it current); so a batch is learnt when it has [`BATCH`] messages or its
//! first one has waited [`FLUSH_AFTER`].
//!
//! An LMDB batch is learnt by a `strainer learn-items` process started for it ([`Target::Child`],
//! the items sent on its standard input in [`strainer_bayes::store::wire`]'s form): LMDB keeps
//! the pages a write transaction dirtied for the next one, which in `serve` held about 54 MiB
//! for good; in the child they go when it exits. `serve`'s copy is told the commit is coming and
//! is read a round behind it, so messages do not read (and map in) the store's file meanwhile.
//! A Redis store learns in `serve` itself.
//!
//! It is off by default for what it costs under a flood of new mail: about 40% more CPU per
//! message (children included) and 30 MiB more peak memory in `serve` (benches/README.md).

use std::ffi::OsString;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strainer_bayes::store::wire;
use strainer_bayes::{Class, Expiry, Item, Learned, Params, Store};
use strainer_types::Finding;

/// Most messages learnt in one batch.
pub const BATCH: usize = 500;

/// Longest a queued message waits to be learnt.
pub const FLUSH_AFTER: Duration = Duration::from_secs(60);

/// Most messages waiting while a batch is learnt; past it, new ones are not learnt (each holds
/// its features and 4-grams: 20 KB for a corpus message, 45 KB at most).
const QUEUE: usize = BATCH;

/// What Bayes is sure enough of to learn a message scoring `score` as: spam at or above
/// `spam_at`, ham at or below `ham_at` (`bayes.autolearn_spam`, `bayes.autolearn_ham`).
pub fn sure(score: f64, spam_at: f64, ham_at: f64) -> Option<Class> {
    if score >= spam_at {
        Some(Class::Spam)
    } else if score <= ham_at {
        Some(Class::Ham)
    } else {
        None
    }
}

/// Whether a message Bayes would learn as `class` is learnt, given every finding (Bayes's
/// own included) and the category the policy gave it: only when nothing else makes it doubtful.
/// Spam: the other scanners took no points away (an administrator's negative rule says the
/// mail is wanted) and nothing else decided the message (a virus, a banned attachment, a rule
/// action, or a part that could not be checked says nothing about its words). Ham: the other
/// scanners added no points either way and the message is clean.
pub fn agrees(class: Class, findings: &[Finding], category: &str) -> bool {
    let others: f64 = findings.iter().filter(|f| !f.name.starts_with("BAYES_")).filter_map(|f| f.score).sum();
    match class {
        Class::Spam => others >= 0.0 && matches!(category, "clean" | "spam"),
        Class::Ham => others == 0.0 && category == "clean",
    }
}

/// Where a batch is learnt.
pub enum Target {
    /// In this process, into the store (Redis; tests).
    Store(Arc<dyn Store>),
    /// In a `strainer learn-items` process started per batch, with these arguments (LMDB);
    /// the store `serve` reads is told of each commit coming ([`Store::expect_commit`]).
    Child(Vec<OsString>, Arc<dyn Store>),
}

/// The queue and the thread that learns what it is given.
pub struct Learner {
    /// `None` once [`Learner::finish`] closed it.
    queue: Mutex<Option<SyncSender<Item>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    dropped: AtomicU64,
}

impl Learner {
    /// Starts the learning thread, learning into `target` with `params` and keeping `cap`.
    pub fn start(target: Target, params: Params, cap: Expiry) -> std::io::Result<Learner> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let thread =
            std::thread::Builder::new().name("autolearn".into()).spawn(move || run(&target, &params, &cap, &rx))?;
        Ok(Learner { queue: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)), dropped: AtomicU64::new(0) })
    }

    /// Closes the queue and waits until what was queued is learnt (`serve` stopping). Without
    /// it the queue closes when the learner is dropped and the thread learns the rest unwaited.
    pub fn finish(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread
            && t.join().is_err()
        {
            tracing::warn!("autolearn: its thread panicked");
        }
    }

    /// Queues `item` to be learnt; false when the queue is full (the store is slow or held by
    /// `strainer train`) and it was let go.
    pub fn offer(&self, item: Item) -> bool {
        let sent = self.queue.lock().is_ok_and(|q| q.as_ref().is_some_and(|q| q.try_send(item).is_ok()));
        if !sent {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // 1, 2, 4, 8...: the log says so without a line per message.
            if n.is_power_of_two() {
                tracing::warn!(
                    not_learnt = n,
                    "autolearn queue full: messages go unlearnt (more mail than the store learns, or `strainer train` holding it)"
                );
            }
        }
        sent
    }
}

fn run(target: &Target, params: &Params, cap: &Expiry, rx: &Receiver<Item>) {
    let mut batch: Vec<Item> = Vec::new();
    let mut due: Option<Instant> = None;
    loop {
        let next = match due {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        match next {
            Ok(item) => {
                due.get_or_insert_with(|| Instant::now() + FLUSH_AFTER);
                batch.push(item);
                if batch.len() < BATCH {
                    continue;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // The filter was replaced (reload) or is stopping: learn what is left.
                learn(target, params, cap, &mut batch);
                return;
            }
        }
        learn(target, params, cap, &mut batch);
        due = None;
    }
}

fn learn(target: &Target, params: &Params, cap: &Expiry, batch: &mut Vec<Item>) {
    if batch.is_empty() {
        return;
    }
    let spam = batch.iter().filter(|i| i.class == Class::Spam).count();
    let ham = batch.len() - spam;
    let done = match target {
        Target::Store(store) => learn_here(&**store, params, cap, batch),
        Target::Child(args, store) => {
            // Before (a quick child commits within the window) and after (a slow one, held up
            // by `strainer train`, committed just now).
            store.expect_commit();
            let done = learn_in_child(args, batch);
            store.expect_commit();
            done
        }
    };
    match done {
        Ok((new, expired)) => tracing::info!(spam, ham, new, expired, "autolearn: batch learnt"),
        Err(e) => tracing::warn!(
            error = %e,
            spam,
            ham,
            "autolearn: batch not learnt (serve must be able to write the store; bayes.autolearn = false only reads it)"
        ),
    }
    batch.clear();
}

/// Learns `batch` into `store` and applies the cap: (messages newly learnt, features expired).
pub fn learn_here(store: &dyn Store, params: &Params, cap: &Expiry, batch: &[Item]) -> anyhow::Result<(usize, u64)> {
    let results = store.learn_with(batch, false, params)?;
    let new = results.iter().filter(|r| **r == Learned::Learned).count();
    let expired = store.expire(cap).map(|e| e.tokens).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "autolearn: expiry failed");
        0
    });
    Ok((new, expired))
}

/// What `strainer learn-items` does: learns the items read from `input` into the LMDB store
/// `bayes` names (`bayes.path` as `serve` resolved it; a relative one is taken from the working
/// directory, which the child shares with `serve`) and applies its cap.
pub fn learn_items(bayes: &crate::bayes::BayesConfig, mut input: impl std::io::Read) -> anyhow::Result<(usize, u64)> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
    let items = wire::decode_all(&bytes)?;
    drop(bytes);
    let store = bayes.open_lmdb(Path::new(""))?;
    learn_here(&store, &bayes.params(), &bayes.expiry(), &items)
}

/// The `strainer` binary a batch is learnt by, when not this process's own ([`learner_exe`]).
static LEARNER_EXE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Makes `strainer learn-items` run from `exe` instead of this process's own binary: for a
/// process that is not `strainer` itself, such as a test running `serve` in process.
pub fn set_learner_exe(exe: std::path::PathBuf) {
    let _ = LEARNER_EXE.set(exe);
}

/// This very binary, as `/proc/self/exe` names it even after a package upgrade replaced the
/// file, unless [`set_learner_exe`] said otherwise.
fn learner_exe() -> &'static Path {
    LEARNER_EXE.get().map_or(Path::new("/proc/self/exe"), |p| p.as_path())
}

/// Learns `batch` in a `strainer learn-items` process and reads back what it did.
fn learn_in_child(args: &[OsString], batch: &[Item]) -> anyhow::Result<(usize, u64)> {
    let mut child = Command::new(learner_exe())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start strainer learn-items: {e}"))?;
    // Written item by item; a child that stopped reading (it failed) makes the write fail, and
    // its standard error then says why.
    let sent = child.stdin.take().map_or(Ok(()), |mut stdin| {
        let mut buf = wire::HEADER.to_vec();
        batch.iter().try_for_each(|item| {
            wire::encode(item, &mut buf);
            let r = stdin.write_all(&buf);
            buf.clear();
            r
        })
    });
    let out = child.wait_with_output()?;
    let said = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    if !out.status.success() {
        anyhow::bail!("strainer learn-items: {} ({})", said(&out.stderr), out.status);
    }
    sent?;
    let stdout = said(&out.stdout);
    let mut nums = stdout.split_whitespace().map(str::parse::<u64>);
    match (nums.next(), nums.next()) {
        (Some(Ok(new)), Some(Ok(expired))) => Ok((usize::try_from(new).unwrap_or(usize::MAX), expired)),
        _ => anyhow::bail!("strainer learn-items said {stdout:?}, not what it learnt"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn f(name: &str, score: Option<f64>) -> Finding {
        let mut f = Finding::new(name, "");
        f.score = score;
        f
    }

    #[test]
    fn learns_only_when_the_other_scanners_agree() {
        let bayes_spam = f("BAYES_SPAM", Some(12.0));
        let bayes_ham = f("BAYES_HAM", Some(-5.0));
        assert!(agrees(Class::Spam, std::slice::from_ref(&bayes_spam), "spam"));
        assert!(agrees(Class::Spam, &[bayes_spam.clone(), f("RULE_SCORE", Some(3.0))], "spam"));
        // A negative rule says the mail is wanted; a virus or banned part is not about words.
        assert!(!agrees(Class::Spam, &[bayes_spam.clone(), f("RULE_SCORE", Some(-2.0))], "spam"));
        assert!(!agrees(Class::Spam, std::slice::from_ref(&bayes_spam), "virus"));
        assert!(!agrees(Class::Spam, std::slice::from_ref(&bayes_spam), "unchecked"));
        assert!(agrees(Class::Ham, std::slice::from_ref(&bayes_ham), "clean"));
        assert!(agrees(Class::Ham, &[bayes_ham.clone(), f("MIME_NOTE", None)], "clean"));
        // Any rule points at all, or anything but clean, and ham is not learnt.
        assert!(!agrees(Class::Ham, &[bayes_ham.clone(), f("RULE_SCORE", Some(1.0))], "clean"));
        assert!(!agrees(Class::Ham, &[bayes_ham.clone(), f("RULE_SCORE", Some(-1.0))], "clean"));
        assert!(!agrees(Class::Ham, std::slice::from_ref(&bayes_ham), "banned"));
    }

    #[test]
    fn learns_what_it_is_given_when_the_queue_closes() {
        let store: Arc<dyn Store> = Arc::new(strainer_bayes::store::Memory::default());
        let cap = Expiry { max_tokens: 1_000_000, max_seen: 1_000_000 };
        let learner = Learner::start(Target::Store(Arc::clone(&store)), Params::default(), cap).unwrap();
        let spam =
            Item::new(b"Subject: win\r\n\r\ncheap pills\r\n", Class::Spam, vec![1 << 60, 2 << 60], &Default::default());
        let ham = Item::new(b"Subject: lunch\r\n\r\nat noon?\r\n", Class::Ham, vec![3 << 60], &Default::default());
        assert!(learner.offer(spam.clone()));
        assert!(learner.offer(ham));
        // Far from a full batch and from FLUSH_AFTER: learnt because the queue closes.
        learner.finish();
        assert_eq!(store.stats().unwrap().totals, strainer_bayes::Totals { spam: 1, ham: 1 });
        assert!(!learner.offer(spam), "a finished learner takes nothing more");
    }
}
