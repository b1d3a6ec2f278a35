//! One contract, three stores: the same cases run on Memory, LMDB and (with STRAINER_REDIS set to a
//! URL of a scratch server, as scripts/test.sh does) Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use proptest::prelude::*;
use strainer_bayes::store::{Item, Memory, lmdb::Lmdb, lmdb::Snapshotted, redis::Redis};
use strainer_bayes::{Class, Counts, Digest, Expiry, Learned, Params, Store, Totals, Vector};

fn item(n: u8, class: Class, hashes: &[u64]) -> Item {
    Item { digest: Digest([n; 16]), class, hashes: hashes.to_vec(), vector: spread(hashes, b"") }
}

/// The linear vector of small test hashes spread over the hash space, as real (xxh3) ones are.
fn spread(hashes: &[u64], raw: &[u8]) -> Vector {
    let h: Vec<u64> = hashes.iter().map(|h| h.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
    Vector::of(&h, raw, &Default::default())
}

/// The linear layer: a step puts a message on its side, moving it changes side, forgetting
/// takes the step back.
fn linear(s: &dyn Store) {
    let raw = b"Subject: cheap meds\r\n\r\nbuy cheap meds online now\r\n";
    let x = Item { vector: spread(&[11, 12], raw), ..item(9, Class::Spam, &[11, 12]) };
    let other =
        Item { vector: spread(&[13], b"Subject: minutes\r\n\r\nthe meeting notes\r\n"), ..item(10, Class::Ham, &[13]) };
    assert_eq!(s.margin(&x.vector).unwrap(), 0.0);
    s.learn(&[other.clone(), x.clone()], false).unwrap();
    let m = s.margin(&x.vector).unwrap();
    assert!((m - 1.0).abs() < 1e-3, "learnt as spam: margin {m}");
    // Counts and margin read together agree with each read alone.
    let (mut one, mut two) = (Vec::new(), Vec::new());
    let (totals, both) = s.evidence(&x.hashes, &mut one, &x.vector).unwrap();
    assert_eq!((totals, one), (s.lookup(&x.hashes, &mut two).unwrap(), two));
    assert!((both - m).abs() < 1e-9, "{both} against {m}");
    assert!(s.margin(&other.vector).unwrap() < 0.0);
    assert!(s.stats().unwrap().weights > 0);
    let as_ham = Item { class: Class::Ham, ..x.clone() };
    assert_eq!(s.learn(std::slice::from_ref(&as_ham), false).unwrap(), vec![Learned::Relearned]);
    let m = s.margin(&x.vector).unwrap();
    assert!((m + 1.0).abs() < 1e-3, "moved to ham: margin {m}");
    s.learn(std::slice::from_ref(&as_ham), true).unwrap();
    s.learn(std::slice::from_ref(&other), true).unwrap();
    for v in [&x.vector, &other.vector] {
        let m = s.margin(v).unwrap();
        assert!(m.abs() < 1e-4, "forgotten: margin {m}");
    }
}

/// The linear layer learns what Fisher misses: a message Fisher already scores beyond the
/// margin on its side teaches it nothing; one Fisher gets wrong moves it until the whole score
/// is on the right side.
fn on_top_of_fisher(s: &dyn Store) {
    let shared: Vec<u64> = (1..=12).collect();
    let mut batch = Vec::new();
    for n in 0..30u8 {
        let mut spam = shared.clone();
        spam.push(1000 + u64::from(n));
        batch.push(Item { vector: spread(&spam, b""), ..item(n, Class::Spam, &spam) });
        let ham = [2000 + u64::from(n), 3000];
        batch.push(Item { vector: spread(&ham, b""), ..item(100 + n, Class::Ham, &ham) });
    }
    s.learn(&batch, false).unwrap();
    let prior = |hashes: &[u64]| {
        let (c, t) = counts(s, hashes);
        strainer_bayes::linear::prior(strainer_bayes::model::classify(&c, t, &Params::default(), 0).log_odds)
    };
    let mut hashes = shared.clone();
    hashes.push(5000);
    let x = Item {
        vector: spread(&hashes, b"Subject: more of the same\r\n\r\nbuy\r\n"),
        ..item(200, Class::Spam, &hashes)
    };
    let p = prior(&hashes);
    assert!(p > 1.0, "Fisher should be sure: {p}");
    let before = s.margin(&x.vector).unwrap();
    assert_eq!(s.learn(std::slice::from_ref(&x), false).unwrap(), vec![Learned::Learned]);
    let after = s.margin(&x.vector).unwrap();
    assert!((after - before).abs() < 1e-6, "nothing to learn: {before} -> {after}");
    // The same features as ham: Fisher is wrong, the layer makes up for it.
    let y = Item { vector: spread(&shared, b"Subject: newsletter\r\n\r\nours\r\n"), ..item(201, Class::Ham, &shared) };
    let p = prior(&shared);
    s.learn(std::slice::from_ref(&y), false).unwrap();
    let m = s.margin(&y.vector).unwrap();
    assert!((p + m + 1.0).abs() < 1e-3, "prior {p} + margin {m} should reach -1");
}

/// After a batch, the layer goes over what it learnt again: a message that a later one in the
/// batch pushed back over the line is stepped again, its step growing (so forgetting still
/// takes back all of it).
fn revisits(s: &dyn Store) {
    // Two pairs, far apart in every bucket: a spam and a ham sharing a few features.
    let pair = |base: u64, n: u8| {
        let (f, g): (Vec<u64>, Vec<u64>) = ((base..base + 10).collect(), (base + 6..base + 16).collect());
        // Features only: 4-grams of any two texts would share buckets across the pairs.
        let a = Item { vector: spread(&f, b""), ..item(n, Class::Spam, &f) };
        let b = Item { vector: spread(&g, b""), ..item(n + 1, Class::Ham, &g) };
        (a, b)
    };
    let (a0, b0) = pair(10_000, 1);
    let (a1, b1) = pair(20_000, 3);
    let once = Params { revisits: 0, ..Params::default() };
    s.learn_with(&[a0.clone(), b0.clone()], false, &once).unwrap();
    s.learn_with(&[a1.clone(), b1.clone()], false, &Params::default()).unwrap();
    let score = |x: &Item| {
        let (mut c, t) = counts(s, &x.hashes);
        let own = strainer_bayes::model::classify(&c, t, &Params::default(), 0).log_odds;
        // Less its own count, as the layer scored it.
        for k in &mut c {
            k.spam -= 1;
        }
        let t = Totals { spam: t.spam - 1, ..t };
        let less = strainer_bayes::model::classify(&c, t, &Params::default(), 0).log_odds;
        assert!(own.is_finite() && less.is_finite());
        strainer_bayes::linear::prior(less) + s.margin(&x.vector).unwrap()
    };
    let (once_a, again_a) = (score(&a0), score(&a1));
    assert!(once_a < 0.9, "one pass: the ham after it pushed the spam back from its target: {once_a}");
    assert!(
        (1.0 - again_a).abs() < (1.0 - once_a) / 2.0,
        "passes after the first bring it back: {again_a} against {once_a}"
    );
    // Forgetting takes back every pass.
    s.learn(&[a1.clone(), b1.clone()], true).unwrap();
    for x in [&a1, &b1] {
        let m = s.margin(&x.vector).unwrap();
        assert!(m.abs() < 1e-4, "forgotten: margin {m}");
    }
}

/// A batch is learnt by the linear layer in more than one order, averaged: the weights differ
/// from one run's (`one`, a store learning in the batch's order alone), every run is the same
/// on every store, and forgetting takes all of it back.
fn orders(one: &dyn Store, two: &dyn Store, again: &dyn Store) {
    // Pairs of a spam and a ham sharing features, so the order they are learnt in matters.
    let batch: Vec<Item> = (0..6u8)
        .flat_map(|n| {
            let base = 1_000 * u64::from(n);
            let (f, g): (Vec<u64>, Vec<u64>) = ((base..base + 10).collect(), (base + 5..base + 15).collect());
            [
                Item { vector: spread(&f, b""), ..item(2 * n, Class::Spam, &f) },
                Item { vector: spread(&g, b""), ..item(2 * n + 1, Class::Ham, &g) },
            ]
        })
        .collect();
    let single = Params { orders: 1, ..Params::default() };
    assert_eq!(Params::default().orders, 2);
    one.learn_with(&batch, false, &single).unwrap();
    two.learn_with(&batch, false, &Params::default()).unwrap();
    again.learn_with(&batch, false, &Params::default()).unwrap();
    let margins = |s: &dyn Store| -> Vec<f64> { batch.iter().map(|i| s.margin(&i.vector).unwrap()).collect() };
    let (m1, m2) = (margins(one), margins(two));
    assert!(m1.iter().zip(&m2).any(|(a, b)| (a - b).abs() > 1e-3), "averaged: {m2:?}, one order: {m1:?}");
    assert!(m2.iter().all(|m| m.is_finite()));
    assert_eq!(m2, margins(again), "the runs' orders repeat");
    two.learn_with(&batch, true, &Params::default()).unwrap();
    for m in margins(two) {
        assert!(m.abs() < 1e-4, "forgotten: margin {m}");
    }
}

fn counts(s: &dyn Store, hashes: &[u64]) -> (Vec<Counts>, Totals) {
    let mut out = Vec::new();
    let t = s.lookup(hashes, &mut out).unwrap();
    (out, t)
}

fn contract(s: &dyn Store) {
    let a = item(1, Class::Spam, &[1, 2, 3]);
    let b = item(2, Class::Ham, &[3, 4]);
    assert_eq!(s.learn(&[a.clone(), b.clone()], false).unwrap(), vec![Learned::Learned, Learned::Learned]);
    let (c, t) = counts(s, &[1, 3, 4, 9]);
    assert_eq!(t, Totals { spam: 1, ham: 1 });
    assert_eq!(
        c,
        vec![Counts { spam: 1, ham: 0 }, Counts { spam: 1, ham: 1 }, Counts { spam: 0, ham: 1 }, Counts::default()]
    );
    // Learnt twice counts once.
    assert_eq!(s.learn(std::slice::from_ref(&a), false).unwrap(), vec![Learned::Already]);
    assert_eq!(counts(s, &[1]).0[0], Counts { spam: 1, ham: 0 });
    // The other class moves it.
    let a_ham = Item { class: Class::Ham, ..a.clone() };
    assert_eq!(s.learn(std::slice::from_ref(&a_ham), false).unwrap(), vec![Learned::Relearned]);
    let (c, t) = counts(s, &[1, 3]);
    assert_eq!(t, Totals { spam: 0, ham: 2 });
    assert_eq!(c, vec![Counts { spam: 0, ham: 1 }, Counts { spam: 0, ham: 2 }]);
    // Forgetting takes back exactly that; forgetting again changes nothing.
    assert_eq!(s.learn(std::slice::from_ref(&a_ham), true).unwrap(), vec![Learned::Forgotten]);
    assert_eq!(s.learn(std::slice::from_ref(&a_ham), true).unwrap(), vec![Learned::Unchanged]);
    let (c, t) = counts(s, &[1, 3, 4]);
    assert_eq!(t, Totals { spam: 0, ham: 1 });
    assert_eq!(c, vec![Counts::default(), Counts { spam: 0, ham: 1 }, Counts { spam: 0, ham: 1 }]);
    let st = s.stats().unwrap();
    assert_eq!(st.tokens, 2, "{st:?}");
    assert_eq!(st.seen, 1);
    // The same message twice in one batch counts once.
    let c1 = item(3, Class::Spam, &[7]);
    assert_eq!(s.learn(&[c1.clone(), c1], false).unwrap(), vec![Learned::Learned, Learned::Already]);
    assert_eq!(counts(s, &[7]).0[0], Counts { spam: 1, ham: 0 });
    // Empty lookups work.
    assert_eq!(counts(s, &[]).1, Totals { spam: 1, ham: 1 });
}

fn cap(s: &dyn Store) {
    // 200 singletons learnt long ago would be expired first... all learnt today here, so the
    // frequent features (in every message) must survive and the count must land at 3/4 of the cap.
    let items: Vec<Item> = (0..50u8)
        .map(|i| {
            item(
                i,
                if i % 2 == 0 { Class::Spam } else { Class::Ham },
                &[1000, 1001, u64::from(i) * 10 + 1, u64::from(i) * 10 + 2],
            )
        })
        .collect();
    s.learn(&items, false).unwrap();
    assert_eq!(s.stats().unwrap().tokens, 102);
    let done = s.expire(&Expiry { max_tokens: 40, max_seen: 20 }).unwrap();
    assert_eq!(done.tokens, 72);
    assert_eq!(done.seen, 35);
    let st = s.stats().unwrap();
    assert_eq!((st.tokens, st.seen), (30, 15));
    let (c, _) = counts(s, &[1000, 1001]);
    assert_eq!(c, vec![Counts { spam: 25, ham: 25 }; 2], "frequent features survive");
    // Under the cap, nothing happens.
    assert_eq!(s.expire(&Expiry { max_tokens: 40, max_seen: 20 }).unwrap().tokens, 0);
}

/// What `from` exports, `to` imports: the same counts, totals, margins and memory of what was
/// learnt (so the same message again counts once, and forgetting it takes back its step), and
/// an export of the copy is the export it came from. A store that holds something refuses.
fn transfer(from: &dyn Store, to: &dyn Store) {
    let raw = b"Subject: cheap meds\r\n\r\nbuy cheap meds online now\r\n";
    let spam = Item { vector: spread(&[11, 12, 14], raw), ..item(9, Class::Spam, &[11, 12, 14]) };
    let ham = Item {
        vector: spread(&[13, 14], b"Subject: minutes\r\n\r\nthe meeting notes\r\n"),
        ..item(10, Class::Ham, &[13, 14])
    };
    from.learn(&[spam.clone(), ham.clone()], false).unwrap();
    let mut dump = Vec::new();
    from.export(&mut |e| {
        dump.push(e);
        Ok(())
    })
    .unwrap();
    assert!(matches!(dump[0], strainer_bayes::store::Entry::Totals(_)), "{:?}", dump[0]);
    to.import(&dump, false).unwrap();
    let hashes = [11, 12, 13, 14, 15];
    assert_eq!(counts(to, &hashes), counts(from, &hashes));
    for x in [&spam.vector, &ham.vector] {
        assert_eq!(to.margin(x).unwrap(), from.margin(x).unwrap());
    }
    let (a, b) = (from.stats().unwrap(), to.stats().unwrap());
    assert_eq!((a.totals, a.tokens, a.seen, a.weights), (b.totals, b.tokens, b.seen, b.weights));
    let mut again = Vec::new();
    to.export(&mut |e| {
        again.push(e);
        Ok(())
    })
    .unwrap();
    let sorted = |mut v: Vec<strainer_bayes::store::Entry>| {
        v.sort_by_key(|e| e.to_line());
        v
    };
    assert_eq!(sorted(again), sorted(dump.clone()));
    let err = to.import(&dump, false).unwrap_err().to_string();
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(to.learn(std::slice::from_ref(&spam), false).unwrap(), vec![Learned::Already]);
    to.learn(&[spam.clone(), ham.clone()], true).unwrap();
    assert_eq!(counts(to, &hashes).1, Totals::default());
    assert!(to.margin(&spam.vector).unwrap().abs() < 1e-4);
    // An export cut before its totals is refused.
    let err = Memory::new().import(&dump[1..], false).unwrap_err().to_string();
    assert!(err.contains("totals"), "{err}");
}

/// Every record of `s`, in a stable order.
fn exported(s: &dyn Store) -> Vec<strainer_bayes::store::Entry> {
    let mut v = Vec::new();
    s.export(&mut |e| {
        v.push(e);
        Ok(())
    })
    .unwrap();
    v.sort_by_key(|e| e.to_line());
    v
}

/// A restore puts the store back as it was when the export was taken: what was learnt since
/// is gone (counts, totals, weights and the memory of those messages, so they count again when
/// learnt again), and a restore of a cut export is refused with the store left as it was.
fn restore(s: &dyn Store) {
    let raw = b"Subject: cheap meds\r\n\r\nbuy cheap meds online now\r\n";
    let spam = Item { vector: spread(&[11, 12, 14], raw), ..item(9, Class::Spam, &[11, 12, 14]) };
    let ham = Item {
        vector: spread(&[13, 14], b"Subject: minutes\r\n\r\nthe meeting notes\r\n"),
        ..item(10, Class::Ham, &[13, 14])
    };
    let later =
        Item { vector: spread(&[15, 16], b"Subject: later\r\n\r\nlater\r\n"), ..item(11, Class::Spam, &[15, 16]) };
    s.learn(&[spam.clone(), ham.clone()], false).unwrap();
    let backup = exported(s);
    let hashes = [11, 12, 13, 14, 15, 16];
    let (before, margin, margin_later) =
        (counts(s, &hashes), s.margin(&spam.vector).unwrap(), s.margin(&later.vector).unwrap());
    s.learn(&[later.clone(), Item { class: Class::Ham, ..spam.clone() }], false).unwrap();
    assert_ne!(counts(s, &hashes), before);
    s.import(&backup, true).unwrap();
    assert_eq!(exported(s), backup);
    assert_eq!(counts(s, &hashes), before);
    // (Redis sums a margin in one order or another, depending on whether its copy of the
    // weights is current: the same weights, the last bits may differ.)
    let near = |a: f64, b: f64| (a - b).abs() < 1e-6;
    assert!(near(s.margin(&spam.vector).unwrap(), margin));
    assert!(near(s.margin(&later.vector).unwrap(), margin_later), "weights learnt after the backup are gone");
    assert_eq!(s.learn(std::slice::from_ref(&later), false).unwrap(), vec![Learned::Learned]);
    assert_eq!(s.learn(std::slice::from_ref(&spam), false).unwrap(), vec![Learned::Already]);
    let now = exported(s);
    let cut: Vec<_> =
        backup.iter().filter(|e| !matches!(e, strainer_bayes::store::Entry::Totals(_))).cloned().collect();
    let err = s.import(&cut, true).unwrap_err().to_string();
    assert!(err.contains("totals"), "{err}");
    assert_eq!(exported(s), now, "a refused restore changes nothing");
    // Restoring an empty store's export empties it.
    s.import(&exported(&Memory::new()), true).unwrap();
    assert_eq!(counts(s, &hashes), (vec![Counts::default(); 6], Totals::default()));
    assert_eq!(s.margin(&spam.vector).unwrap(), 0.0);
}

#[test]
fn memory_contract() {
    contract(&Memory::new());
    cap(&Memory::new());
    linear(&Memory::new());
    on_top_of_fisher(&Memory::new());
    revisits(&Memory::new());
    orders(&Memory::new(), &Memory::new(), &Memory::new());
    transfer(&Memory::new(), &Memory::new());
    restore(&Memory::new());
}

#[test]
fn lmdb_contract() {
    let d = tempfile::tempdir().unwrap();
    contract(&Lmdb::open(&d.path().join("a"), 1 << 24).unwrap());
    cap(&Lmdb::open(&d.path().join("b"), 1 << 24).unwrap());
    linear(&Lmdb::open(&d.path().join("l"), 1 << 24).unwrap());
    on_top_of_fisher(&Lmdb::open(&d.path().join("f"), 1 << 24).unwrap());
    on_top_of_fisher(&Snapshotted::new(Lmdb::open(&d.path().join("g"), 1 << 24).unwrap()));
    revisits(&Lmdb::open(&d.path().join("r"), 1 << 24).unwrap());
    orders(
        &Lmdb::open(&d.path().join("o1"), 1 << 24).unwrap(),
        &Lmdb::open(&d.path().join("o2"), 1 << 24).unwrap(),
        &Memory::new(),
    );
    transfer(&Lmdb::open(&d.path().join("x"), 1 << 24).unwrap(), &Lmdb::open(&d.path().join("y"), 1 << 24).unwrap());
    transfer(&Memory::new(), &Snapshotted::new(Lmdb::open(&d.path().join("z"), 1 << 24).unwrap()));
    restore(&Lmdb::open(&d.path().join("p"), 1 << 24).unwrap());
    restore(&Snapshotted::new(Lmdb::open(&d.path().join("q"), 1 << 24).unwrap()));
}

#[test]
fn lmdb_read_through_a_snapshot_sees_every_commit() {
    let d = tempfile::tempdir().unwrap();
    contract(&Snapshotted::new(Lmdb::open(&d.path().join("a"), 1 << 24).unwrap()));
    cap(&Snapshotted::new(Lmdb::open(&d.path().join("b"), 1 << 24).unwrap()));
    linear(&Snapshotted::new(Lmdb::open(&d.path().join("l"), 1 << 24).unwrap()));
    // A commit through another handle (as `strainer train` in another process) is seen next lookup.
    let snap = Snapshotted::new(Lmdb::open(&d.path().join("c"), 1 << 24).unwrap());
    assert_eq!(counts(&snap, &[5]).1, Totals::default());
    let other = Lmdb::open(&d.path().join("c"), 1 << 24).unwrap();
    other.learn(&[item(1, Class::Spam, &[5])], false).unwrap();
    assert_eq!(counts(&snap, &[5]), (vec![Counts { spam: 1, ham: 0 }], Totals { spam: 1, ham: 0 }));
}

/// Resident kilobytes of this process's mapping of `file` (0 when not mapped), from smaps.
#[cfg(target_os = "linux")]
fn mapped_kb(file: &std::path::Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        if line.contains('-') && line.split_ascii_whitespace().count() >= 5 && !line.ends_with(" kB") {
            inside = line.ends_with(&*file.to_string_lossy());
        } else if inside && let Some(kb) = line.strip_prefix("Rss:") {
            return kb.trim().trim_end_matches(" kB").trim().parse().unwrap();
        }
    }
    0
}

#[test]
#[cfg(target_os = "linux")]
fn serve_s_copy_gives_the_store_s_pages_back_and_still_reads_right() {
    let d = tempfile::tempdir().unwrap();
    let path = std::fs::canonicalize(d.path()).unwrap().join("s");
    let writer = Lmdb::open(&path, 1 << 26).unwrap();
    // Features spread over the key space as xxh3 hashes are, in one batch learnt without the
    // linear layer's extra passes (this test is about reading the store, not learning it).
    let key = |i: u64, k: u64| (i * 10_000 + k).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let items: Vec<Item> =
        (0..40u8).map(|i| item(i, Class::Spam, &(0..2500).map(|k| key(u64::from(i), k)).collect::<Vec<_>>())).collect();
    let once = Params { revisits: 0, ..Params::default() };
    writer.learn_with(&items, false, &once).unwrap();
    let file = path.join("data.mdb");
    // Reading the whole store maps its pages into this process...
    assert_eq!(writer.stats().unwrap().tokens, 100_000);
    assert!(mapped_kb(&file) > 1_000, "{} kB mapped after a full read", mapped_kb(&file));
    // ...building serve's copy gives them back, and the copy reads right.
    let snap = Snapshotted::new(writer.clone());
    let probe = [key(0, 0), key(0, 1), key(7, 2499), key(39, 1000), 5];
    let (c, t) = counts(&snap, &probe);
    assert_eq!(t, Totals { spam: 40, ham: 0 });
    assert_eq!(c[..4], [Counts { spam: 1, ham: 0 }; 4]);
    assert_eq!(c[4], Counts::default());
    assert!(mapped_kb(&file) < 200, "{} kB still mapped after the copy was built", mapped_kb(&file));
    // Reading the store itself again (as learning does) maps pages back, with the right data,
    // and the next read from the copy gives them back again.
    let mut direct = Vec::new();
    assert_eq!(writer.lookup(&probe, &mut direct).unwrap(), t);
    assert_eq!(direct, c);
    snap.learn(&[item(250, Class::Ham, &[5])], false).unwrap();
    assert!(mapped_kb(&file) > 0);
    assert_eq!(counts(&snap, &[5]), (vec![Counts { spam: 0, ham: 1 }], Totals { spam: 40, ham: 1 }));
    assert!(mapped_kb(&file) < 200, "{} kB mapped after the copy was rebuilt", mapped_kb(&file));
}

#[test]
fn a_watched_copy_follows_commits_by_itself_and_is_read_behind_only_while_training_goes_on() {
    let d = tempfile::tempdir().unwrap();
    let other = Lmdb::open(&d.path().join("s"), 1 << 24).unwrap();
    other.learn(&[item(1, Class::Spam, &[5])], false).unwrap();
    let at = |n: u32, t: (u64, u64)| (vec![Counts { spam: n, ham: 0 }], Totals { spam: t.0, ham: t.1 });

    // Rounds of the watcher run by hand here (its thread's period is an hour).
    let s = std::sync::Arc::new(Snapshotted::new(Lmdb::open(&d.path().join("s"), 1 << 24).unwrap()));
    Snapshotted::watch(&s, Duration::from_secs(3600)).unwrap();
    assert_eq!(counts(&*s, &[5]), at(1, (1, 0)));
    // A lone commit: the copy is behind, so lookups read the store itself, and the first of
    // them wakes the watcher for a round at once (its period is an hour).
    other.learn(&[item(2, Class::Spam, &[5])], false).unwrap();
    assert!(!s.is_current());
    assert_eq!(counts(&*s, &[5]), at(2, (2, 0)));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !s.is_current() {
        assert!(std::time::Instant::now() < deadline, "the lookup did not wake the watcher");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Another commit soon after the round rebuilt for one: training goes on, so the copy is read
    // although it is behind (a model one round old), until the next round.
    other.learn(&[item(3, Class::Spam, &[5])], false).unwrap();
    assert_eq!(counts(&*s, &[5]), at(2, (2, 0)));
    s.refresh();
    assert_eq!(counts(&*s, &[5]), at(3, (3, 0)));

    // Its own thread comes round by itself.
    let fast = std::sync::Arc::new(Snapshotted::new(Lmdb::open(&d.path().join("s"), 1 << 24).unwrap()));
    Snapshotted::watch(&fast, Duration::from_millis(20)).unwrap();
    assert_eq!(counts(&*fast, &[5]).1, Totals { spam: 3, ham: 0 });
    other.learn(&[item(4, Class::Spam, &[5])], false).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !fast.is_current() {
        assert!(std::time::Instant::now() < deadline, "the watcher never rebuilt the copy");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(counts(&*fast, &[5]), at(4, (4, 0)));

    // Told that a commit is coming (autolearning's learner process): the copy is read behind
    // until a round, where a lone commit would have had lookups read the store itself.
    let told = std::sync::Arc::new(Snapshotted::new(Lmdb::open(&d.path().join("s"), 1 << 24).unwrap()));
    Snapshotted::watch(&told, Duration::from_secs(3600)).unwrap();
    assert_eq!(counts(&*told, &[5]), at(4, (4, 0)));
    told.expect_commit();
    other.learn(&[item(5, Class::Spam, &[5])], false).unwrap();
    assert!(!told.is_current());
    assert_eq!(counts(&*told, &[5]), at(4, (4, 0)));
    told.refresh();
    assert_eq!(counts(&*told, &[5]), at(5, (5, 0)));
}

#[test]
fn lmdb_reopens_with_its_data() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("s");
    {
        let s = Lmdb::open(&p, 1 << 24).unwrap();
        s.learn(&[item(1, Class::Spam, &[5])], false).unwrap();
    }
    let s = Lmdb::open(&p, 1 << 24).unwrap();
    assert_eq!(counts(&s, &[5]).1, Totals { spam: 1, ham: 0 });
}

#[test]
fn lmdb_map_full_is_an_error_not_a_crash() {
    let d = tempfile::tempdir().unwrap();
    let s = Lmdb::open(&d.path().join("s"), 1 << 16).unwrap();
    let items: Vec<Item> = (0..200u8)
        .map(|i| item(i, Class::Spam, &(0..500).map(|k| u64::from(i) * 1000 + k).collect::<Vec<_>>()))
        .collect();
    let err = s.learn(&items, false).unwrap_err().to_string();
    assert!(err.contains("map_size"), "{err}");
    // Still readable.
    assert_eq!(counts(&s, &[1]).1, Totals::default());
}

fn redis_url() -> Option<String> {
    std::env::var("STRAINER_REDIS").ok()
}

fn redis_store(prefix: &str) -> Redis {
    let url = redis_url().unwrap();
    let r = Redis::open(&url, prefix, Duration::from_secs(2)).unwrap();
    let c = redis::Client::open(url.as_str()).unwrap();
    let mut conn = c.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query(&mut conn).unwrap();
    for k in keys {
        let _: () = redis::cmd("DEL").arg(k).query(&mut conn).unwrap();
    }
    r
}

#[test]
#[ignore = "needs a Redis server: STRAINER_REDIS=redis://127.0.0.1:6390/"]
fn redis_contract() {
    contract(&redis_store("strainer-test-a"));
    cap(&redis_store("strainer-test-b"));
    linear(&redis_store("strainer-test-l"));
    on_top_of_fisher(&redis_store("strainer-test-f"));
    revisits(&redis_store("strainer-test-r"));
    orders(&redis_store("strainer-test-o1"), &redis_store("strainer-test-o2"), &Memory::new());
    let d = tempfile::tempdir().unwrap();
    transfer(&Lmdb::open(&d.path().join("x"), 1 << 24).unwrap(), &redis_store("strainer-test-x"));
    transfer(&redis_store("strainer-test-y"), &Lmdb::open(&d.path().join("y"), 1 << 24).unwrap());
    restore(&redis_store("strainer-test-p"));
}

#[test]
#[ignore = "needs a Redis server: STRAINER_REDIS=redis://127.0.0.1:6390/"]
fn redis_a_message_learnt_before_the_linear_layer_teaches_it_when_trained_again() {
    let s = redis_store("strainer-test-u");
    let x = Item { vector: spread(&[21, 22], b"Subject: cheap\r\n\r\nbuy now\r\n"), ..item(7, Class::Spam, &[21, 22]) };
    s.learn(std::slice::from_ref(&x), false).unwrap();
    // As a store from before the linear layer: a seen record without a step, no weights.
    let c = redis::Client::open(redis_url().unwrap().as_str()).unwrap();
    let mut conn = c.get_connection().unwrap();
    let _: () =
        redis::cmd("HSET").arg("strainer-test-u:seen").arg(&x.digest.0[..]).arg("s20000").query(&mut conn).unwrap();
    let _: () = redis::cmd("DEL").arg("strainer-test-u:w").query(&mut conn).unwrap();
    let _: () = redis::cmd("INCR").arg("strainer-test-u:wver").query(&mut conn).unwrap();
    assert_eq!(s.margin(&x.vector).unwrap(), 0.0);
    assert_eq!(s.learn(std::slice::from_ref(&x), false).unwrap(), vec![Learned::Already]);
    assert_eq!(counts(&s, &[21]).1, Totals { spam: 1, ham: 0 });
    let m = s.margin(&x.vector).unwrap();
    assert!((m - 1.0).abs() < 1e-3, "{m}");
    assert_eq!(s.learn(std::slice::from_ref(&x), false).unwrap(), vec![Learned::Already]);
    assert_eq!(s.learn(std::slice::from_ref(&x), true).unwrap(), vec![Learned::Forgotten]);
    assert!(s.margin(&x.vector).unwrap().abs() < 1e-4);
    assert_eq!(counts(&s, &[21]).1, Totals::default());
}

/// Two trainers (two hosts) learning at once into one Redis store: every message counted once,
/// none lost when one trainer's batch is written over the other's (the loser learns it again).
#[test]
#[ignore = "needs a Redis server: STRAINER_REDIS=redis://127.0.0.1:6390/"]
fn redis_two_trainers_at_once_lose_nothing() {
    let prefix = "strainer-test-two";
    let stores = [redis_store(prefix), redis_store(prefix)];
    let memory = Memory::new();
    // Message n: 40 features, half shared with message n + 1, so both trainers touch the same.
    let message = |n: u8| {
        let hashes: Vec<u64> = (u64::from(n) * 20..u64::from(n) * 20 + 40).collect();
        let class = if n.is_multiple_of(3) { Class::Ham } else { Class::Spam };
        Item { vector: spread(&hashes, b""), ..item(n, class, &hashes) }
    };
    let all: Vec<Item> = (0..120).map(message).collect();
    std::thread::scope(|scope| {
        for (t, store) in stores.iter().enumerate() {
            let mine: Vec<Item> = all.iter().skip(t).step_by(2).cloned().collect();
            scope.spawn(move || {
                for batch in mine.chunks(3) {
                    store.learn(batch, false).unwrap();
                }
            });
        }
    });
    memory.learn(&all, false).unwrap();
    let hashes: Vec<u64> = (0..2500).collect();
    assert_eq!(counts(&stores[0], &hashes), counts(&memory, &hashes));
    assert_eq!(stores[1].stats().unwrap().seen, 120);
    assert_eq!(stores[1].learn(&all[..5], false).unwrap(), vec![Learned::Already; 5]);
}

#[test]
fn redis_down_is_an_error() {
    let e = Redis::open("redis://127.0.0.1:1/", "x", Duration::from_millis(500)).err().unwrap();
    assert!(e.to_string().contains("redis"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Learning a batch then forgetting it returns every count to what it was.
    #[test]
    fn learn_then_forget_restores(
        base in prop::collection::vec((any::<bool>(), prop::collection::btree_set(0u64..40, 0..12)), 0..8),
        extra in prop::collection::vec((any::<bool>(), prop::collection::btree_set(0u64..40, 0..12)), 1..8),
    ) {
        let d = tempfile::tempdir().unwrap();
        let lmdb = Lmdb::open(&d.path().join("s"), 1 << 24).unwrap();
        let mem = Memory::new();
        for s in [&lmdb as &dyn Store, &mem] {
            let mk = |off: usize, v: &[(bool, std::collections::BTreeSet<u64>)]| -> Vec<Item> {
                v.iter().enumerate().map(|(i, (spam, hs))| {
                    let hashes: Vec<u64> = hs.iter().copied().collect();
                    Item {
                        digest: Digest([(i + off) as u8; 16]),
                        class: if *spam { Class::Spam } else { Class::Ham },
                        vector: spread(&hashes, b""),
                        hashes,
                    }
                }).collect()
            };
            let margins = |s: &dyn Store, items: &[Item]| -> Vec<f64> {
                items.iter().map(|i| s.margin(&i.vector).unwrap()).collect()
            };
            s.learn(&mk(0, &base), false).unwrap();
            let all: Vec<u64> = (0..40).collect();
            let before = counts(s, &all);
            let more = mk(100, &extra);
            let probes: Vec<Item> = mk(0, &base).into_iter().chain(more.iter().cloned()).collect();
            let margins_before = margins(s, &probes);
            s.learn(&more, false).unwrap();
            // Learning again is idempotent.
            let mid = counts(s, &all);
            s.learn(&more, false).unwrap();
            prop_assert_eq!(&counts(s, &all), &mid);
            s.learn(&more, true).unwrap();
            prop_assert_eq!(counts(s, &all), before);
            for (a, b) in margins(s, &probes).iter().zip(&margins_before) {
                prop_assert!((a - b).abs() < 1e-3, "margin {} after forgetting, {} before", a, b);
            }
        }
    }
}

#[test]
#[ignore = "needs a Redis server: STRAINER_REDIS=redis://127.0.0.1:6390/"]
fn redis_restores_one_at_a_time() {
    let s = redis_store("strainer-test-o");
    s.learn(&[item(1, Class::Spam, &[5])], false).unwrap();
    let backup = exported(&s);
    let c = redis::Client::open(redis_url().unwrap().as_str()).unwrap();
    let mut conn = c.get_connection().unwrap();
    let lock = "strainer-test-o:restore:lock";
    // Another restore holds the lock: this one is refused and changes nothing.
    let _: () = redis::cmd("SET").arg(lock).arg("someone-else").query(&mut conn).unwrap();
    s.learn(&[item(2, Class::Ham, &[6])], false).unwrap();
    let now = exported(&s);
    let err = s.import(&backup, true).unwrap_err().to_string();
    assert!(err.contains("another restore") && err.contains(lock), "{err}");
    assert_eq!(exported(&s), now);
    let held: String = redis::cmd("GET").arg(lock).query(&mut conn).unwrap();
    assert_eq!(held, "someone-else", "a refused restore leaves the other's lock alone");
    // Once it is gone, the restore goes through and lets go of its own lock.
    let _: () = redis::cmd("DEL").arg(lock).query(&mut conn).unwrap();
    s.import(&backup, true).unwrap();
    assert_eq!(exported(&s), backup);
    let exists: bool = redis::cmd("EXISTS").arg(lock).query(&mut conn).unwrap();
    assert!(!exists);
}
