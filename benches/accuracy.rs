//! Bayes accuracy and speed on the SpamAssassin corpus, with the protocol of
//! ../shared/corpus/README.md: the half split (two folds) and the time split, each trained from
//! scratch, every message learnt once, by `strainer train`'s own training loop. Prints FP%, FN%, FN% at 0 FP and at 0.1% FP, 1-AUC% and the
//! milliseconds per message for training and classifying.
//!
//!     benches/fetch-corpus.sh
//!     cargo bench --bench accuracy                      # in-memory store
//!     cargo bench --bench accuracy -- --store lmdb      # the LMDB store in a temporary directory
//!     cargo bench --bench accuracy -- --store redis     # Redis at STRAINER_REDIS (slow: minutes)
//!
//! Knobs for measuring variants (environment): BAYES_METHOD=fisher|nb, BAYES_S, BAYES_MINDEV,
//! BAYES_MAXF, BAYES_CAP, BAYES_BIGRAMS=0, BAYES_HEADERS=0, BAYES_MARKUP=0, BAYES_MINLEN,
//! BAYES_MAXLEN, BAYES_LOWER=0 (words as written), BAYES_NUMBERS=0 (long digit runs kept),
//! BAYES_NONASCII=0 (words with non-ASCII letters dropped), BAYES_DATESKEW=0 (no `ds:` band),
//! BAYES_HELO=0 (no `helo:` band), BAYES_HORDER=0 (no `ho:` pairs of header names),
//! BAYES_FROMSHAPE=0 (no `fsh:` shape of From:), BAYES_IGNORE=0 (only strainer's own header
//! fields left out, not the default configuration's `bayes.ignore_headers`),
//! BAYES_TRAIN_ROOT=dir (train from dir/FOLDER/NAME instead of the corpus file, e.g. copies
//! stamped as a mailbox would hold them; the test messages stay as they are),
//! BAYES_RECEIVED=0|1|2, BAYES_RECIPIENTS=0, BAYES_CAPS=1, BAYES_THRESHOLD, BAYES_LINEAR=0
//! (Fisher alone), BAYES_LSCALE (the linear margin's weight, 1 = as shipped), BAYES_REVISITS
//! (the linear layer's passes over each training batch after the first), BAYES_ORDERS (its runs
//! over each batch, averaged), BAYES_BATCH (messages per training batch), BAYES_SHUFFLE=seed
//! (another training order), BAYES_EXPORT=file (each message's features, one line each, for
//! exploring elsewhere), BAYES_DUMP=1 (the worst-ranked messages and their strongest features),
//! BAYES_STAGES=1 (time MIME, tokenizing, the linear vector, the lookup and the combination
//! apart, best of five rounds; `only`: then stop, as for a profiler), BAYES_SCORES=dir (each
//! split's test scores, one line per message: score, spam, folder, file),
//! BAYES_AUTOLEARN=30,-30 (the test part as a stream, learning what scores at least 30 as spam
//! and at most -30 as ham, as `serve`'s autolearning does; the classify time then includes that
//! learning).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest as _, Sha256};
use strainer_bayes::store::{Memory, lmdb::Lmdb, lmdb::Snapshotted, redis::Redis};
use strainer_bayes::{Method, Options, Params, Store, Tokens, Vector, tokenize};

struct Msg {
    folder: String,
    name: String,
    path: PathBuf,
    raw: Vec<u8>,
    spam: bool,
}

fn load(root: &Path) -> Vec<Msg> {
    let mut out = Vec::new();
    for folder in ["easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(folder))
            .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "txt")).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            let raw = strainer::scan_cmd::as_received(std::fs::read(&f).unwrap());
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            out.push(Msg { folder: folder.to_string(), name, path: f, raw, spam: folder.starts_with("spam") });
        }
    }
    out
}

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

/// Even (fold 0) or odd (fold 1) rank within its folder by sha256("spam-acc-v1:" + name).
fn half_ranks(msgs: &[Msg]) -> Vec<usize> {
    let mut rank = vec![0; msgs.len()];
    let mut by_folder: std::collections::BTreeMap<&str, Vec<(String, usize)>> = Default::default();
    for (i, m) in msgs.iter().enumerate() {
        let h = Sha256::digest(format!("spam-acc-v1:{}", m.name).as_bytes());
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        by_folder.entry(&m.folder).or_default().push((hex, i));
    }
    for v in by_folder.values_mut() {
        v.sort();
        for (r, (_, i)) in v.iter().enumerate() {
            rank[*i] = r;
        }
    }
    rank
}

struct Metrics {
    fp: f64,
    fn_: f64,
    fn_at0: f64,
    fn_at01: f64,
    one_minus_auc: f64,
}

fn metrics(scores: &[(f64, bool)], threshold: f64) -> Metrics {
    let hams: Vec<f64> = scores.iter().filter(|s| !s.1).map(|s| s.0).collect();
    let spams: Vec<f64> = scores.iter().filter(|s| s.1).map(|s| s.0).collect();
    let fp = hams.iter().filter(|&&s| s >= threshold).count() as f64 / hams.len() as f64 * 100.0;
    let fn_ = spams.iter().filter(|&&s| s < threshold).count() as f64 / spams.len() as f64 * 100.0;
    let mut hs = hams.clone();
    hs.sort_by(|a, b| b.total_cmp(a));
    // FN at a ham budget: the threshold is just above the (budget+1)-th highest ham; spam must
    // score strictly above it (ties count against the filter).
    let fn_at = |allowed: usize| -> f64 {
        let t = hs.get(allowed).copied().unwrap_or(f64::NEG_INFINITY);
        spams.iter().filter(|&&s| s <= t).count() as f64 / spams.len() as f64 * 100.0
    };
    let allowed01 = (hams.len() as f64 * 0.001).floor() as usize;
    // AUC: P(spam > ham) + 0.5 P(tie).
    let mut all: Vec<(f64, bool)> = scores.to_vec();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut i, mut hams_below, mut wins) = (0, 0f64, 0f64);
    while i < all.len() {
        let mut j = i;
        let (mut h, mut s) = (0f64, 0f64);
        while j < all.len() && all[j].0 == all[i].0 {
            if all[j].1 {
                s += 1.0
            } else {
                h += 1.0
            }
            j += 1;
        }
        wins += s * (hams_below + 0.5 * h);
        hams_below += h;
        i = j;
    }
    let auc = wins / (hams.len() as f64 * spams.len() as f64);
    Metrics { fp, fn_, fn_at0: fn_at(0), fn_at01: fn_at(allowed01), one_minus_auc: (1.0 - auc) * 100.0 }
}

fn new_store(kind: &str, dir: &Path) -> Box<dyn Store> {
    match kind {
        "lmdb" => {
            let p = dir.join(format!("s{}", rand_suffix()));
            // Read as serve reads it: through the in-memory copy of the features.
            Box::new(Snapshotted::new(Lmdb::open(&p, 1 << 30).unwrap()))
        }
        "redis" => {
            // A scratch prefix per split on the server STRAINER_REDIS names (default: the test
            // script's port), so runs never see each other's model.
            let url = std::env::var("STRAINER_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6390/".into());
            let prefix = format!("acc{}:", rand_suffix());
            Box::new(Redis::open(&url, &prefix, std::time::Duration::from_secs(30)).unwrap())
        }
        _ => Box::new(Memory::new()),
    }
}

/// CPU seconds this process has used (user + system, from /proc; 0 where there is none): the
/// VM's wall-clock speed varies by a third from run to run, its CPU accounting much less.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split(' ').map(|x| x.parse().unwrap_or(0.0)).collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; in ticks of 1/100 s.
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// The training files of one class, as given to `strainer train` (which shuffles them with its
/// fixed seed); with BAYES_SHUFFLE=seed permuted first, for another training order.
/// Where a training message is read from: the corpus, or with BAYES_TRAIN_ROOT=dir the copy
/// under dir/folder/name (e.g. as saved in a mailbox after delivery).
fn train_path(m: &Msg) -> PathBuf {
    match std::env::var("BAYES_TRAIN_ROOT") {
        Ok(root) => Path::new(&root).join(&m.folder).join(&m.name),
        Err(_) => m.path.clone(),
    }
}

fn class_files(msgs: &[Msg], train: &[usize], spam: bool) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        train.iter().filter(|&&i| msgs[i].spam == spam).map(|&i| train_path(&msgs[i])).collect();
    if let Some(mut seed) = std::env::var("BAYES_SHUFFLE").ok().and_then(|v| v.parse::<u64>().ok()) {
        for k in (1..files.len()).rev() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            files.swap(k, (seed >> 33) as usize % (k + 1));
        }
    }
    files
}

/// Whether message i is in the training part.
type Split<'a> = Box<dyn Fn(usize) -> Option<bool> + 'a>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let store_kind =
        args.iter().position(|a| a == "--store").and_then(|i| args.get(i + 1)).cloned().unwrap_or_default();
    let root =
        std::env::var_os("STRAINER_CORPUS").map_or_else(|| PathBuf::from("benches/corpus/package/data"), PathBuf::from);
    let msgs = load(&root);
    if msgs.is_empty() {
        eprintln!("no corpus under {}: run benches/fetch-corpus.sh", root.display());
        return;
    }
    let opts = Options {
        bigrams: env("BAYES_BIGRAMS", 1) == 1,
        headers: env("BAYES_HEADERS", 1) == 1,
        markup: env("BAYES_MARKUP", 1) == 1,
        min_len: env("BAYES_MINLEN", Options::default().min_len),
        max_len: env("BAYES_MAXLEN", Options::default().max_len),
        received: env("BAYES_RECEIVED", Options::default().received),
        recipients: env("BAYES_RECIPIENTS", 1) == 1,
        caps: env("BAYES_CAPS", 0) == 1,
        all_headers: env("BAYES_ALLHEADERS", 0) == 1,
        lowercase: env("BAYES_LOWER", 1) == 1,
        numbers: env("BAYES_NUMBERS", 1) == 1,
        non_ascii: env("BAYES_NONASCII", 1) == 1,
        date_skew: env("BAYES_DATESKEW", 1) == 1,
        origin_helo: env("BAYES_HELO", 1) == 1,
        header_order: env("BAYES_HORDER", 1) == 1,
        from_shape: env("BAYES_FROMSHAPE", 1) == 1,
        // As shipped: the default configuration's ignored header fields (BAYES_IGNORE=0: only
        // strainer's own).
        ..if env("BAYES_IGNORE", 1) == 1 {
            strainer::config::Config::default().bayes_options().unwrap()
        } else {
            Options::default()
        }
    };
    let d = Params::default();
    let params = Params {
        strength: env("BAYES_S", d.strength),
        min_dev: env("BAYES_MINDEV", d.min_dev),
        max_features: env("BAYES_MAXF", d.max_features),
        evidence_cap: env("BAYES_CAP", d.evidence_cap),
        revisits: env("BAYES_REVISITS", d.revisits),
        orders: env("BAYES_ORDERS", d.orders),
        method: match env("BAYES_METHOD", String::from("fisher")).as_str() {
            "nb" => Method::NaiveBayes,
            "combined" => Method::Combined(env("BAYES_W", 0.1), env("BAYES_NBCAP", 30)),
            _ => Method::Fisher,
        },
        ..d
    };
    let threshold = env("BAYES_THRESHOLD", strainer_bayes::DEFAULT_THRESHOLD);
    let batch_size = env("BAYES_BATCH", strainer::bayes::DEFAULT_TRAIN_BATCH);
    let linear = env("BAYES_LINEAR", 1) == 1;
    // How much the margin counts, relative to what ships (1.0).
    let lscale: f64 = env("BAYES_LSCALE", 1.0);
    let limits = strainer_mime::Limits::default();
    let t0 = Instant::now();
    let toks: Vec<Tokens> =
        msgs.iter().map(|m| tokenize(&strainer_mime::analyze(&m.raw, &limits), &opts, false)).collect();
    let tok_secs = t0.elapsed().as_secs_f64();
    if std::env::var_os("BAYES_STAGES").is_some() {
        // The lookup and combine stages score against a model of the whole corpus (memory store).
        let store = Memory::new();
        let items: Vec<_> = msgs
            .iter()
            .zip(&toks)
            .map(|(m, t)| {
                let class = if m.spam { strainer_bayes::Class::Spam } else { strainer_bayes::Class::Ham };
                strainer_bayes::Item::new(&m.raw, class, t.hashes.clone(), &opts.ignore)
            })
            .collect();
        store.learn_with(&items, false, &params).unwrap();
        stages(&msgs, &toks, &limits, &opts, &store, &params);
        if std::env::var("BAYES_STAGES").is_ok_and(|v| v == "only") {
            return;
        }
    }
    if let Ok(path) = std::env::var("BAYES_EXPORT") {
        // Exploration aid: one line per message, "folder name spam hash hash ...".
        use std::io::Write as _;
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        for (m, t) in msgs.iter().zip(&toks) {
            write!(f, "{} {} {}", m.folder, m.name, u8::from(m.spam)).unwrap();
            for h in &t.hashes {
                write!(f, " {h:x}").unwrap();
            }
            writeln!(f).unwrap();
        }
    }
    let mean_tokens = toks.iter().map(|t| t.hashes.len()).sum::<usize>() as f64 / toks.len() as f64;
    println!(
        "{} messages; MIME + tokenize {:.3} ms/msg; {:.0} features/msg; store {}; {:?}",
        msgs.len(),
        tok_secs * 1000.0 / msgs.len() as f64,
        mean_tokens,
        if store_kind.is_empty() { "memory" } else { &store_kind },
        params
    );
    let tmp = tempfile::tempdir().unwrap();
    let ranks = half_ranks(&msgs);
    let splits: Vec<(String, Split)> = vec![
        ("half fold 1".into(), Box::new(|i: usize| Some(ranks[i].is_multiple_of(2)))),
        ("half fold 2".into(), Box::new(|i: usize| Some(ranks[i] % 2 == 1))),
        (
            "time".into(),
            Box::new(|i: usize| Some(matches!(msgs[i].folder.as_str(), "easy-ham-1" | "hard-ham-1" | "spam-1"))),
        ),
    ];
    println!("| split | FP % | FN % | FN % at 0 FP | FN % at 0.1% FP | 1-AUC % | ms/msg train | ms/msg classify |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, is_train) in &splits {
        let store = new_store(&store_kind, tmp.path());
        let train: Vec<usize> = (0..msgs.len()).filter(|&i| is_train(i) == Some(true)).collect();
        let test: Vec<usize> = (0..msgs.len()).filter(|&i| is_train(i) == Some(false)).collect();
        // Training is `strainer train`'s own loop on the training files: read, MIME, tokenize,
        // learn in batches, the classes interleaved in its order.
        let (t, cpu) = (Instant::now(), cpu_secs());
        let (spam, ham) = (class_files(&msgs, &train, true), class_files(&msgs, &train, false));
        let setup = strainer::train_cmd::Setup { limits: &limits, opts: &opts, params: &params, batch: batch_size };
        let (s, h) = strainer::train_cmd::train_with(&setup, &*store, &spam, &ham, false).unwrap();
        assert_eq!((s.total() + h.total()) as usize, train.len(), "every training message learnt");
        let train_ms = t.elapsed().as_secs_f64() * 1000.0 / train.len() as f64;
        let train_cpu = (cpu_secs() - cpu) * 1000.0 / train.len() as f64;
        // serve's in-memory copy of the store is rebuilt once after a trainer commits: timed
        // apart, as it is not paid per message.
        let t = Instant::now();
        store.lookup(&[], &mut Vec::new()).unwrap();
        let reload_ms = t.elapsed().as_secs_f64() * 1000.0;
        // Classifying as `serve` does: MIME, tokenize, lookup, combine.
        let (t, cpu) = (Instant::now(), cpu_secs());
        let mut scores = Vec::with_capacity(test.len());
        let mut names = Vec::with_capacity(test.len());
        let mut counts = Vec::new();
        let (mut lookup_secs, mut combine_secs) = (0.0, 0.0);
        // BAYES_AUTOLEARN=spam,ham: the test part arrives as a stream (classes interleaved,
        // seeded) and each message scoring at least `spam` (at most `ham`) is learnt as that
        // class, a batch at a time, as `serve`'s autolearning would (the corpus has no other
        // scanners to agree); each score is taken before its message is learnt.
        let autolearn: Option<(f64, f64)> = std::env::var("BAYES_AUTOLEARN").ok().and_then(|v| {
            let (a, b) = v.split_once(',')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        });
        let mut test = test;
        if autolearn.is_some() {
            strainer_bayes::linear::shuffle(&mut test);
        }
        let mut pending: Vec<strainer_bayes::Item> = Vec::new();
        let mut autolearnt = (0usize, 0usize, 0usize);
        for &i in &test {
            let view = strainer_mime::analyze(&msgs[i].raw, &limits);
            let tk = tokenize(&view, &opts, false);
            let x = if linear { Vector::of(&tk.hashes, &msgs[i].raw, &opts.ignore) } else { Vector::default() };
            let te = Instant::now();
            let (totals, margin) = store.evidence(&tk.hashes, &mut counts, &x).unwrap();
            lookup_secs += te.elapsed().as_secs_f64();
            let te = Instant::now();
            let mut s = strainer_bayes::model::classify(&counts, totals, &params, 0);
            combine_secs += te.elapsed().as_secs_f64();
            s.add_margin(lscale * margin);
            if let Some((spam_at, ham_at)) = autolearn {
                if let Some(c) = strainer::autolearn::sure(s.log_odds, spam_at, ham_at) {
                    let wrong = (c == strainer_bayes::Class::Spam) != msgs[i].spam;
                    autolearnt = (
                        autolearnt.0 + usize::from(c == strainer_bayes::Class::Spam),
                        autolearnt.1 + usize::from(c == strainer_bayes::Class::Ham),
                        autolearnt.2 + usize::from(wrong),
                    );
                    pending.push(strainer_bayes::Item::new(&msgs[i].raw, c, tk.hashes.clone(), &opts.ignore));
                }
                if pending.len() >= strainer::autolearn::BATCH {
                    store.learn_with(&pending, false, &params).unwrap();
                    pending.clear();
                }
            }
            scores.push((s.log_odds, msgs[i].spam));
            names.push(i);
        }
        let classify_ms = t.elapsed().as_secs_f64() * 1000.0 / test.len() as f64;
        let classify_cpu = (cpu_secs() - cpu) * 1000.0 / test.len() as f64;
        let m = metrics(&scores, threshold);
        if autolearn.is_some() {
            eprintln!(
                "  autolearnt {} as spam, {} as ham, {} of them wrongly",
                autolearnt.0, autolearnt.1, autolearnt.2
            );
        }
        if let Ok(dir) = std::env::var("BAYES_SCORES") {
            use std::io::Write as _;
            let mut f = std::fs::File::create(format!("{dir}/{}.txt", name.replace(' ', "_"))).unwrap();
            for (k, &(sc, sp)) in scores.iter().enumerate() {
                writeln!(f, "{sc} {} {} {}", u8::from(sp), msgs[names[k]].folder, msgs[names[k]].name).unwrap();
            }
        }
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} | {:.3} |",
            m.fp, m.fn_, m.fn_at0, m.fn_at01, m.one_minus_auc, train_ms, classify_ms
        );
        eprintln!(
            "  {name}: CPU ms/msg train {train_cpu:.3} classify {classify_cpu:.3} (lookup {:.3}, combine {:.3}); store copy rebuilt in {reload_ms:.0} ms before classifying",
            lookup_secs * 1000.0 / test.len() as f64,
            combine_secs * 1000.0 / test.len() as f64,
        );
        if std::env::var_os("BAYES_DUMP").is_some() {
            let mut order: Vec<usize> = (0..scores.len()).collect();
            order.sort_by(|&a, &b| scores[a].0.total_cmp(&scores[b].0));
            let worst_ham: Vec<_> = order
                .iter()
                .rev()
                .filter(|&&k| !scores[k].1)
                .take(5)
                .map(|&k| (scores[k].0, &msgs[names[k]].name, &msgs[names[k]].folder))
                .collect();
            let worst_spam: Vec<_> = order
                .iter()
                .filter(|&&k| scores[k].1)
                .take(5)
                .map(|&k| (scores[k].0, &msgs[names[k]].name, &msgs[names[k]].folder))
                .collect();
            println!("  worst hams: {worst_ham:?}");
            let bayes = strainer_bayes::Bayes { store: &*store, options: opts.clone(), params };
            for &k in order
                .iter()
                .rev()
                .filter(|&&k| !scores[k].1)
                .take(2)
                .chain(order.iter().filter(|&&k| scores[k].1).take(2))
            {
                let view = strainer_mime::analyze(&msgs[names[k]].raw, &limits);
                let c = bayes.classify(&msgs[names[k]].raw, &view, 20).unwrap();
                println!(
                    "  {} {:.1}: {:?}",
                    msgs[names[k]].name,
                    c.score.log_odds,
                    c.explain.iter().map(|(n, f, c)| format!("{n}={f:.3}({}/{})", c.spam, c.ham)).collect::<Vec<_>>()
                );
            }
            println!("  worst spams: {worst_spam:?}");
            let mut s = scores.clone();
            s.sort_by(|a, b| a.0.total_cmp(&b.0));
            let hams: Vec<f64> = s.iter().filter(|x| !x.1).map(|x| x.0).collect();
            let spams: Vec<f64> = s.iter().filter(|x| x.1).map(|x| x.0).collect();
            println!("  top hams: {:?}", &hams[hams.len().saturating_sub(8)..]);
            println!("  bottom spams: {:?}", &spams[..8.min(spams.len())]);
        }
    }
}

/// Exploration aid: microseconds per message for each stage of classifying (MIME, tokenize,
/// the linear vector, the store's lookup and margin, Fisher's combination), best of five rounds
/// over the whole corpus (the VM's speed wanders).
fn stages(
    msgs: &[Msg],
    toks: &[Tokens],
    limits: &strainer_mime::Limits,
    opts: &Options,
    store: &dyn Store,
    params: &Params,
) {
    let views: Vec<_> = msgs.iter().map(|m| strainer_mime::analyze(&m.raw, limits)).collect();
    let best = |f: &dyn Fn(usize)| {
        (0..5)
            .map(|_| {
                let t = Instant::now();
                (0..msgs.len()).for_each(f);
                t.elapsed().as_secs_f64() * 1e6 / msgs.len() as f64
            })
            .fold(f64::INFINITY, f64::min)
    };
    let mime = best(&|i| drop(std::hint::black_box(strainer_mime::analyze(&msgs[i].raw, limits))));
    let tok = best(&|i| drop(std::hint::black_box(tokenize(&views[i], opts, false))));
    let vec = best(&|i| drop(std::hint::black_box(Vector::of(&toks[i].hashes, &msgs[i].raw, &opts.ignore))));
    let vectors: Vec<Vector> =
        (0..msgs.len()).map(|i| Vector::of(&toks[i].hashes, &msgs[i].raw, &opts.ignore)).collect();
    let mut evidence = Vec::with_capacity(msgs.len());
    let lookup = {
        let t = Instant::now();
        for i in 0..msgs.len() {
            let mut counts = Vec::new();
            let (totals, margin) = store.evidence(&toks[i].hashes, &mut counts, &vectors[i]).unwrap();
            evidence.push((counts, totals, margin));
        }
        t.elapsed().as_secs_f64() * 1e6 / msgs.len() as f64
    };
    let combine = best(&|i| {
        let (counts, totals, _) = &evidence[i];
        drop(std::hint::black_box(strainer_bayes::model::classify(counts, *totals, params, 0)));
    });
    eprintln!(
        "stages, us/msg: MIME {mime:.1}, tokenize {tok:.1}, linear vector {vec:.1}, lookup and margin {lookup:.1}, combine {combine:.1}"
    );
}
