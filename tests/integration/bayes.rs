//! The Bayes scorer wired into serve and the CLI: training moves the score the right way, the
//! store is shared by separate trainer and reader processes, and survives a killed trainer.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const FIXTURES: &str = "tests/fixtures/bayes";

const PROBE_SPAM: &[u8] = b"From: Deals <deals@promo.example.biz>\r\nTo: b@example.net\r\nSubject: Cheap pills, limited offer\r\nMessage-ID: <probe-spam@fixtures.test>\r\n\r\nBuy cheap pills now, no prescription! Click here: http://cheap-pills.example.biz/order\r\nLimited offer, act fast. To unsubscribe click here.\r\n";
const PROBE_HAM: &[u8] = b"From: Alice <alice@work.example.org>\r\nTo: team@work.example.org\r\nSubject: Re: review of the parser patch\r\nMessage-ID: <probe-ham@fixtures.test>\r\n\r\nI reviewed the parser patch; the storage test fails on the release branch.\r\nCan we go over it in Tuesday's meeting?\r\n\r\nThanks, Carol\r\n";

fn cfg_with_bayes() -> strainer::config::Config {
    let mut c = test_config("127.0.0.1:9".parse().unwrap());
    c.bayes.enabled = true;
    c.bayes.min_spam = 5;
    c.bayes.min_ham = 5;
    // Only what the tests teach: serve learning on its own is tested apart.
    c.bayes.autolearn = false;
    c.policy.tag = -999.0;
    c
}

fn header_line(m: &str, name: &str) -> String {
    m.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_string()
}

#[tokio::test]
async fn training_on_a_handful_of_messages_moves_the_score_through_serve() {
    let cfg = cfg_with_bayes();
    // Before any training: silent, and the header says why.
    let (r, sink) = send_one_message(cfg.clone(), PROBE_SPAM).await;
    assert_eq!(r.code, 250, "{r}");
    let m = String::from_utf8_lossy(&sink.got()[0].message).into_owned();
    let status = header_line(&m, "X-Spam-Status:");
    assert!(status.contains("BAYES_UNTRAINED") && status.starts_with("X-Spam-Status: No"), "{status}");

    let store = cfg.bayes.open(Path::new(".")).unwrap();
    let spam = [PathBuf::from(FIXTURES).join("spam")];
    let ham = [PathBuf::from(FIXTURES).join("ham")];
    let (s, h) = strainer::train_cmd::train(&cfg, &*store, &spam, &ham, false).unwrap();
    assert_eq!((s.learned, h.learned), (8, 8));

    let (r, sink) = send_one_message(cfg.clone(), PROBE_SPAM).await;
    assert_eq!(r.code, 250, "{r}");
    let m = String::from_utf8_lossy(&sink.got()[0].message).into_owned();
    let status = header_line(&m, "X-Spam-Status:");
    assert!(status.starts_with("X-Spam-Status: Yes") && status.contains("BAYES_SPAM"), "{status}");
    assert!(m.contains("X-Spam-Flag: YES\r\n"), "{m}");
    assert!(m.ends_with(&String::from_utf8_lossy(PROBE_SPAM).into_owned()), "original bytes below our headers");

    let (r, sink) = send_one_message(cfg.clone(), PROBE_HAM).await;
    assert_eq!(r.code, 250, "{r}");
    let m = String::from_utf8_lossy(&sink.got()[0].message).into_owned();
    let status = header_line(&m, "X-Spam-Status:");
    assert!(status.starts_with("X-Spam-Status: No") && status.contains("BAYES_HAM"), "{status}");

    // Forgetting the spam takes the class below the minimum again: silent.
    let (s, _) = strainer::train_cmd::train(&cfg, &*store, &spam, &[], true).unwrap();
    assert_eq!(s.forgotten, 8);
    let (_, sink) = send_one_message(cfg, PROBE_SPAM).await;
    let m = String::from_utf8_lossy(&sink.got()[0].message).into_owned();
    assert!(header_line(&m, "X-Spam-Status:").contains("BAYES_UNTRAINED"), "{m}");
}

#[tokio::test]
async fn serve_autolearns_what_bayes_is_sure_of_unless_a_rule_disagrees() {
    // LMDB batches are learnt by a `strainer learn-items` process: the binary, not this test.
    strainer::autolearn::set_learner_exe(PathBuf::from(env!("CARGO_BIN_EXE_strainer")));
    let mut cfg = cfg_with_bayes();
    cfg.bayes.autolearn = true;
    // As low as allowed, so the small fixture model is sure enough.
    cfg.bayes.autolearn_spam = cfg.bayes.threshold;
    cfg.bayes.autolearn_ham = -cfg.bayes.threshold;
    let store = cfg.bayes.open(Path::new(".")).unwrap();
    let spam = [PathBuf::from(FIXTURES).join("spam")];
    let ham = [PathBuf::from(FIXTURES).join("ham")];
    strainer::train_cmd::train(&cfg, &*store, &spam, &ham, false).unwrap();
    let totals = || store.stats().unwrap().totals;
    assert_eq!((totals().spam, totals().ham), (8, 8));
    // `strainer scan` says what serve would do, and learns nothing itself.
    let local = strainer::scanners::Local::compile(&cfg, Path::new(".")).unwrap();
    let report = local.scan(PROBE_SPAM);
    let o = strainer::decide::decide(&report, &cfg.policy, PROBE_SPAM, &[]);
    let text = strainer::scan_cmd::render("probe", &report, &o);
    assert!(text.contains("autolearn: serve would learn it as spam"), "{text}");
    drop(local);
    assert_eq!((totals().spam, totals().ham), (8, 8));

    // Sure it is spam, nothing disagrees: learnt (by the time serve has stopped).
    let (r, sink) = send_one_message(cfg.clone(), PROBE_SPAM).await;
    assert_eq!(r.code, 250, "{r}");
    let m = String::from_utf8_lossy(&sink.got()[0].message).into_owned();
    assert!(header_line(&m, "X-Spam-Status:").contains("BAYES_SPAM"), "{m}");
    assert_eq!((totals().spam, totals().ham), (9, 8));
    // The same message again counts once.
    send_one_message(cfg.clone(), PROBE_SPAM).await;
    assert_eq!((totals().spam, totals().ham), (9, 8));
    // Sure it is ham: learnt as ham.
    let (_, sink) = send_one_message(cfg.clone(), PROBE_HAM).await;
    let m = String::from_utf8_lossy(&sink.got()[0].message).into_owned();
    assert!(header_line(&m, "X-Spam-Status:").contains("BAYES_HAM"), "{m}");
    assert_eq!((totals().spam, totals().ham), (9, 9));

    // A rule that takes points away says the administrator wants such mail: not learnt as spam.
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("header_checks");
    std::fs::write(&rules, "/^Subject: Cheap pills/ SCORE -1 newsletter we subscribed to\n").unwrap();
    cfg.rules.header_checks = vec![rules];
    // Another message (its own Message-ID), so "learnt once" is not what keeps it out.
    let other = String::from_utf8_lossy(PROBE_SPAM).replace("probe-spam@", "probe-spam-2@");
    let (_, sink) = send_one_message(cfg.clone(), other.as_bytes()).await;
    let m = String::from_utf8_lossy(&sink.got()[0].message).into_owned();
    assert!(header_line(&m, "X-Spam-Status:").contains("BAYES_SPAM"), "{m}");
    assert_eq!((totals().spam, totals().ham), (9, 9));
    // Without the rule, the same message is learnt.
    cfg.rules.header_checks.clear();
    send_one_message(cfg, other.as_bytes()).await;
    assert_eq!((totals().spam, totals().ham), (10, 9));
}

#[test]
fn learn_items_learns_what_serve_sends_and_refuses_anything_else() {
    use strainer_bayes::Store as _;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("bayes");
    let run = |input: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_strainer"))
            .args(["learn-items", "--path", store.to_str().unwrap(), "--map-size-mb", "64", "--train-passes", "3"])
            .args(["--max-tokens", "1000000", "--max-seen", "1000"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input).unwrap();
        child.wait_with_output().unwrap()
    };
    let items = [
        strainer_bayes::Item::new(PROBE_SPAM, strainer_bayes::Class::Spam, vec![1 << 60, 2 << 60], &Default::default()),
        strainer_bayes::Item::new(PROBE_HAM, strainer_bayes::Class::Ham, vec![3 << 60], &Default::default()),
    ];
    let mut input = strainer_bayes::store::wire::HEADER.to_vec();
    items.iter().for_each(|i| strainer_bayes::store::wire::encode(i, &mut input));
    let out = run(&input);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2 0", "two new, nothing expired");
    // Learnt once: the same batch again is nothing new.
    assert_eq!(String::from_utf8_lossy(&run(&input).stdout).trim(), "0 0");
    let lmdb = strainer_bayes::store::lmdb::Lmdb::open(&store, 64 << 20).unwrap();
    assert_eq!(lmdb.stats().unwrap().totals, strainer_bayes::Totals { spam: 1, ham: 1 });
    drop(lmdb);
    for bad in [&b"From: someone\r\n\r\nhello\r\n"[..], &input[..input.len() - 3]] {
        let out = run(bad);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not a stream of items") || err.contains("cut short"), "{err}");
    }
}

#[tokio::test]
async fn an_unreachable_redis_store_skips_bayes_and_still_delivers() {
    let mut cfg = cfg_with_bayes();
    cfg.bayes.backend = strainer::bayes::Backend::Redis;
    cfg.bayes.redis_url = format!("redis://{}/", dead_port().await);
    cfg.bayes.timeout = Duration::from_millis(500);
    let (r, sink) = send_one_message(cfg, PROBE_SPAM).await;
    assert_eq!(r.code, 250, "{r}");
    let m = String::from_utf8_lossy(&sink.got()[0].message).into_owned();
    assert!(header_line(&m, "X-Spam-Status:").contains("BAYES_UNAVAILABLE"), "{m}");
}

/// A Redis that fails is left alone for a while: the next messages do not wait on it again.
#[tokio::test]
async fn a_failing_redis_store_is_not_retried_for_every_message() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = attempts.clone();
    // Accepts and hangs up at once: every attempt fails, and is counted.
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(s);
        }
    });
    let mut cfg = cfg_with_bayes();
    cfg.bayes.backend = strainer::bayes::Backend::Redis;
    cfg.bayes.redis_url = format!("redis://{addr}/");
    cfg.bayes.timeout = Duration::from_millis(500);
    let sink = Sink::start(Behaviour::Accept).await;
    cfg.relay.address = sink.addr.to_string();
    let s = Strainer::start(cfg).await;
    let (mut c, _) = Client::connect(s.addr).await;
    c.cmd("EHLO postfix.test").await;
    let msg = String::from_utf8_lossy(PROBE_SPAM).into_owned();
    let r = c.transaction("MAIL FROM:<a@b.example>", &["RCPT TO:<c@d.example>"], &msg, false).await;
    assert_eq!(r[0].code, 250, "{r:?}");
    let after_first = attempts.load(std::sync::atomic::Ordering::SeqCst);
    assert!(after_first > 0, "the store was never tried");
    for _ in 0..3 {
        let r = c.transaction("MAIL FROM:<a@b.example>", &["RCPT TO:<c@d.example>"], &msg, false).await;
        assert_eq!(r[0].code, 250, "{r:?}");
    }
    assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), after_first, "retried within the back-off");
    let got = sink.got();
    assert_eq!(got.len(), 4);
    let last = String::from_utf8_lossy(&got[3].message).into_owned();
    assert!(header_line(&last, "X-Spam-Status:").contains("BAYES_UNAVAILABLE"), "{last}");
    s.stop().await;
}

/// `n` small distinct messages in `dir`, spammy or hammy words.
fn synth(dir: &Path, n: usize, spam: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let words: &[&str] = if spam {
        &["cheap", "offer", "click", "free", "winner", "pills", "viagra", "money", "prize", "unsubscribe"]
    } else {
        &["meeting", "patch", "review", "release", "build", "kernel", "design", "lunch", "report", "thanks"]
    };
    for i in 0..n {
        let body: Vec<String> =
            (0..20).map(|k| format!("{}{}", words[(i * 7 + k * 3) % words.len()], (i + k) % 97)).collect();
        std::fs::write(
            dir.join(format!("{i:06}.eml")),
            format!(
                "From: x{i}@example.org\r\nSubject: note {i}\r\nMessage-ID: <{spam}-{i}@synth.test>\r\n\r\n{}\r\n",
                body.join(" ")
            ),
        )
        .unwrap();
    }
}

fn write_config(dir: &Path) -> PathBuf {
    let p = dir.join("strainer.toml");
    std::fs::write(&p, "[bayes]\npath = \"store\"\nmin_spam = 5\nmin_ham = 5\n").unwrap();
    p
}

fn strainer(args: &[&str], config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strainer"));
    c.arg(args[0]).arg("--config").arg(config).args(&args[1..]);
    c
}

/// `strainer train --spam <spam> --ham <ham>`.
fn train(config: &Path, spam: &Path, ham: &Path) -> Command {
    let mut c = strainer(&["train", "--spam"], config);
    c.arg(spam).arg("--ham").arg(ham);
    c
}

fn totals(config: &Path) -> (u64, u64) {
    let out = strainer(&["bayes", "stats", "--json"], config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (v["totals"]["spam"].as_u64().unwrap(), v["totals"]["ham"].as_u64().unwrap())
}

/// A scratch directory holding `spam` and `ham` synthetic messages (in `spam/` and `ham/`) and a
/// configuration, and `strainer train` learning them in another process.
fn training_in_background(spam: usize, ham: usize) -> (tempfile::TempDir, PathBuf, std::process::Child) {
    let d = tempfile::tempdir().unwrap();
    synth(&d.path().join("spam"), spam, true);
    synth(&d.path().join("ham"), ham, false);
    let config = write_config(d.path());
    let trainer = train(&config, &d.path().join("spam"), &d.path().join("ham"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (d, config, trainer)
}

#[test]
fn trainer_and_readers_in_separate_processes_share_the_store() {
    let (d, config, mut trainer) = training_in_background(3000, 3000);
    let spam = d.path().join("spam");
    let mut last = (0, 0);
    let mut reads = 0;
    while trainer.try_wait().unwrap().is_none() {
        if !d.path().join("store/data.mdb").exists() {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let t = totals(&config);
        assert!(t.0 >= last.0 && t.1 >= last.1, "counts never go back: {last:?} then {t:?}");
        assert!((t.0 + t.1).is_multiple_of(500), "a reader sees whole batches only: {t:?}");
        // A scan in another process reads the same store.
        let scan = strainer(&["scan"], &config).arg(spam.join("000001.eml")).output().unwrap();
        assert!(String::from_utf8_lossy(&scan.stdout).contains("BAYES_"), "{}", String::from_utf8_lossy(&scan.stdout));
        last = t;
        reads += 1;
    }
    assert!(trainer.wait().unwrap().success());
    assert!(reads > 0);
    assert_eq!(totals(&config), (3000, 3000));
}

#[test]
fn a_killed_trainer_leaves_a_usable_store_and_training_again_counts_each_message_once() {
    let (d, config, mut trainer) = training_in_background(20_000, 2_000);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if d.path().join("store/data.mdb").exists() && totals(&config).0 + totals(&config).1 >= 1000 {
            break;
        }
        assert!(trainer.try_wait().unwrap().is_none(), "trainer finished before it could be killed");
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    trainer.kill().unwrap(); // SIGKILL
    trainer.wait().unwrap();
    let (s, h) = totals(&config);
    // The classes are interleaved, so a batch holds both.
    assert!(s + h < 22_000 && (s + h) % 500 == 0 && s > 0 && h > 0, "only whole batches were committed: {s} {h}");
    let out = train(&config, &d.path().join("spam"), &d.path().join("ham")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("spam: {} learnt, {s} already learnt", 20_000 - s)), "{text}");
    assert!(text.contains(&format!("ham: {} learnt, {h} already learnt", 2_000 - h)), "{text}");
    assert_eq!(totals(&config), (20_000, 2_000));
}

/// The margin `strainer scan` reports for a message file.
fn scanned_margin(config: &Path, file: &Path) -> f64 {
    let out = strainer(&["scan"], config).arg(file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let at = text.find("margin=").unwrap_or_else(|| panic!("no margin in {text}"));
    text[at + 7..].split_whitespace().next().and_then(|m| m.parse().ok()).unwrap_or_else(|| panic!("{text}"))
}

/// A scratch directory holding `n` synthetic spam and `n` ham and a configuration whose store
/// learnt them; what `strainer train` printed.
fn trained(n: usize) -> (tempfile::TempDir, PathBuf, String) {
    let d = tempfile::tempdir().unwrap();
    synth(&d.path().join("spam"), n, true);
    synth(&d.path().join("ham"), n, false);
    let config = write_config(d.path());
    let out = train(&config, &d.path().join("spam"), &d.path().join("ham")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (d, config, String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn training_teaches_the_linear_layer_and_scan_shows_its_margin() {
    let (d, config, said) = trained(60);
    assert!(said.contains("buckets weighted"), "{said}");
    // Messages never learnt, whose words were only seen with other digits (so as whole words
    // they are new): the 4-grams they share with what was learnt put them on their side.
    let spam = d.path().join("probe-spam.eml");
    let ham = d.path().join("probe-ham.eml");
    std::fs::write(&spam, "From: y@example.org\r\nSubject: note\r\n\r\ncheap5 offer free winner pills money prize\r\n")
        .unwrap();
    std::fs::write(
        &ham,
        "From: y@example.org\r\nSubject: note\r\n\r\nmeeting5 patch review release kernel design lunch\r\n",
    )
    .unwrap();
    let (ms, mh) = (scanned_margin(&config, &spam), scanned_margin(&config, &ham));
    assert!(ms > 0.0 && mh < 0.0, "spam margin {ms}, ham margin {mh}");
    // Scores read as an administrator expects them, to two decimals, not every digit of an f64.
    let out = String::from_utf8_lossy(&strainer(&["scan"], &config).arg(&spam).output().unwrap().stdout).into_owned();
    let two_decimals = |after: &str| {
        let Some(at) = out.find(after) else { return false };
        let n = out[at + after.len()..].split(')').next().unwrap_or_default().to_string();
        n.split_once('.').is_some_and(|(_, d)| d.len() == 2) && n.parse::<f64>().is_ok()
    };
    assert!(two_decimals("verdict: spam (score ") || two_decimals("verdict: clean (score "), "{out}");
    assert!(out.contains("  BAYES_") && two_decimals(" (score "), "{out}");
}

#[test]
fn train_refuses_a_missing_path_with_advice() {
    let d = tempfile::tempdir().unwrap();
    let config = write_config(d.path());
    let out = strainer(&["train", "--spam", "/nonexistent/spam"], &config).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/spam") && err.contains("Maildir"), "{err}");
}

#[test]
fn mbox_and_maildir_are_read_message_by_message() {
    let d = tempfile::tempdir().unwrap();
    let config = write_config(d.path());
    let mbox = d.path().join("spam.mbox");
    std::fs::write(
        &mbox,
        "From a@b Mon Nov  2 10:00:00 2026\nSubject: one\n\ncheap pills\n>From the desk\n\nFrom c@d Mon Nov  2 10:01:00 2026\nSubject: two\n\nfree prize\n",
    )
    .unwrap();
    let md = d.path().join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).unwrap();
    }
    std::fs::write(md.join("cur/1.host:2,S"), "Subject: a\n\nmeeting notes\n").unwrap();
    std::fs::write(md.join("new/2.host"), "Subject: b\n\nrelease plan\n").unwrap();
    std::fs::write(md.join("tmp/3.host"), "Subject: c\n\nhalf written\n").unwrap();
    let out = train(&config, &mbox, &md).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(totals(&config), (2, 2));
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    // `strainer bayes stats | head -1`: the pipe closes before strainer has written everything.
    let (_dir, config, _) = trained(5);
    let mut show = Command::new(env!("CARGO_BIN_EXE_strainer"));
    show.args(["config", "show"]);
    for mut cmd in [strainer(&["bayes", "stats"], &config), show] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = cmd.stdout(writer).stderr(Stdio::piped()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !err.contains("panicked"), "{cmd:?}: {:?} {err}", out.status);
    }
}

#[test]
fn a_backup_taken_while_training_is_a_whole_store_of_whole_batches() {
    let d = tempfile::tempdir().unwrap();
    let config = write_config(d.path());
    for args in [&["bayes", "backup", "early"][..], &["bayes", "stats"], &["bayes", "expire"]] {
        let out = strainer(args, &config).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no Bayes store") && err.contains("strainer train"), "{args:?}: {err}");
        assert!(!d.path().join("store").exists(), "{args:?} does not create a store");
    }

    let (d, config, mut trainer) = training_in_background(3000, 3000);
    let mut copies = Vec::new();
    while trainer.try_wait().unwrap().is_none() {
        if !d.path().join("store/data.mdb").exists() {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let dir = d.path().join(format!("copy{}", copies.len()));
        let out = strainer(&["bayes", "backup"], &config).arg(&dir).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("to restore"));
        copies.push(dir);
    }
    assert!(trainer.wait().unwrap().success());
    assert!(!copies.is_empty());
    // Each copy is a store on its own, holding the batches committed when it was taken.
    for dir in &copies {
        let c = dir.with_extension("toml");
        std::fs::write(&c, format!("[bayes]\npath = {:?}\n", dir.display().to_string())).unwrap();
        let (s, h) = totals(&c);
        assert!((s + h).is_multiple_of(500) && s + h <= 6000, "{dir:?}: {s} {h}");
    }
    // After training, a copy holds everything, and a directory that holds a store is refused.
    let last = d.path().join("last");
    assert!(strainer(&["bayes", "backup"], &config).arg(&last).output().unwrap().status.success());
    std::fs::write(d.path().join("last.toml"), format!("[bayes]\npath = {:?}\n", last.display().to_string())).unwrap();
    assert_eq!(totals(&d.path().join("last.toml")), (3000, 3000));
    let out = strainer(&["bayes", "backup"], &config).arg(&last).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a store"));
}

#[test]
fn an_export_imported_into_a_new_store_scores_the_same_and_bad_files_name_their_line() {
    let (d, config, _) = trained(40);
    let dump = d.path().join("model.txt");
    let out = strainer(&["bayes", "export"], &config).arg(&dump).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("exported"), "{}", String::from_utf8_lossy(&out.stdout));

    let other = d.path().join("other.toml");
    std::fs::write(&other, "[bayes]\npath = \"moved\"\nmin_spam = 5\nmin_ham = 5\n").unwrap();
    let out = strainer(&["bayes", "import"], &other).arg(&dump).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(totals(&other), (40, 40));
    let probe = d.path().join("spam/000003.eml");
    assert_eq!(scanned_margin(&other, &probe), scanned_margin(&config, &probe));
    // Exported again from the copy, through standard output: the same text.
    let again = strainer(&["bayes", "export"], &other).output().unwrap();
    assert_eq!(again.stdout, std::fs::read(&dump).unwrap());
    // The copy remembers what was learnt: training the same mail again counts nothing.
    let out = train(&other, &d.path().join("spam"), &d.path().join("ham")).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("spam: 0 learnt, 40 already learnt"));

    // Into a store that holds something, or from a file that is not an export: refused, saying why.
    let err = |out: std::process::Output| {
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = err(strainer(&["bayes", "import"], &other).arg(&dump).output().unwrap());
    assert!(e.contains("not empty"), "{e}");
    let fresh = d.path().join("fresh.toml");
    std::fs::write(&fresh, "[bayes]\npath = \"fresh\"\n").unwrap();
    let e = err(strainer(&["bayes", "import"], &fresh).arg(&probe).output().unwrap());
    assert!(e.contains(":1:") && e.contains("strainer bayes export"), "{e}");
    let text = std::fs::read_to_string(&dump).unwrap();
    let broken = d.path().join("broken.txt");
    std::fs::write(&broken, text.replacen("\nf ", "\nf zz", 1)).unwrap();
    let e = err(strainer(&["bayes", "import"], &fresh).arg(&broken).output().unwrap());
    assert!(e.contains("broken.txt:3:") && e.contains("16 hex digits"), "{e}");
    assert!(!d.path().join("fresh/data.mdb").exists(), "a refused import leaves no store behind");
}

#[test]
fn a_backup_or_an_export_restores_over_a_store_that_learnt_more_since() {
    let (d, config, _) = trained(40);
    let backup = d.path().join("backup");
    assert!(strainer(&["bayes", "backup"], &config).arg(&backup).output().unwrap().status.success());
    let dump = d.path().join("model.txt");
    assert!(strainer(&["bayes", "export"], &config).arg(&dump).output().unwrap().status.success());
    // Twenty more of each, learnt after the copies were taken.
    let (spam, ham) = (d.path().join("spam2"), d.path().join("ham2"));
    for (dir, is_spam) in [(&spam, true), (&ham, false)] {
        synth(dir, 60, is_spam);
        (0..40).for_each(|i| std::fs::remove_file(dir.join(format!("{i:06}.eml"))).unwrap());
    }
    assert!(train(&config, &spam, &ham).output().unwrap().status.success());
    assert_eq!(totals(&config), (60, 60));

    let out = strainer(&["bayes", "restore"], &config).arg(&backup).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("restored") && said.contains("it held 60 spam and 60 ham"), "{said}");
    assert!(!backup.join("lock.mdb").exists(), "the backup is only read: nothing is written there");
    assert_eq!(totals(&config), (40, 40));
    let exported = strainer(&["bayes", "export"], &config).output().unwrap();
    assert_eq!(exported.stdout, std::fs::read(&dump).unwrap(), "the store is the backup's, record for record");
    // What was learnt after the backup is forgotten with it, so it counts when learnt again.
    let out = train(&config, &spam, &ham).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("spam: 20 learnt"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // From an export file too.
    let out = strainer(&["bayes", "restore"], &config).arg(&dump).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(totals(&config), (40, 40));

    // Refused, saying why, with the store left as it was: a directory that is not a backup, the
    // store itself, a file that is not a whole export.
    let err = |out: std::process::Output| {
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = err(strainer(&["bayes", "restore"], &config).arg(d.path().join("spam")).output().unwrap());
    assert!(e.contains("not a backup") && e.contains("strainer bayes backup"), "{e}");
    let e = err(strainer(&["bayes", "restore"], &config).arg(d.path().join("store")).output().unwrap());
    assert!(e.contains("the store itself"), "{e}");
    let junk = d.path().join("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("data.mdb"), "not a store").unwrap();
    let e = err(strainer(&["bayes", "restore"], &config).arg(&junk).output().unwrap());
    assert!(e.contains("not a readable backup"), "{e}");
    let text = std::fs::read_to_string(&dump).unwrap();
    let cut = d.path().join("cut.txt");
    std::fs::write(&cut, text.lines().filter(|l| !l.starts_with("totals ")).collect::<Vec<_>>().join("\n")).unwrap();
    let e = err(strainer(&["bayes", "restore"], &config).arg(&cut).output().unwrap());
    assert!(e.contains("totals"), "{e}");
    assert_eq!(totals(&config), (40, 40));
}

/// `strainer bayes stats --json`'s feature count.
fn features(config: &Path) -> u64 {
    let out = strainer(&["bayes", "stats", "--json"], config).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["tokens"].as_u64().unwrap()
}

/// Copies of every message in `from` into `to` with `field` on top, as a mailbox would hold
/// them after another filter stamped its verdict.
fn stamped(from: &Path, to: &Path, field: &str) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let mut m = format!("{field}\r\n").into_bytes();
        m.extend(std::fs::read(e.path()).unwrap());
        std::fs::write(to.join(e.file_name()), m).unwrap();
    }
}

#[test]
fn a_field_bayes_ignore_headers_names_is_neither_learnt_nor_scored() {
    let d = tempfile::tempdir().unwrap();
    synth(&d.path().join("spam"), 60, true);
    synth(&d.path().join("ham"), 60, false);
    stamped(&d.path().join("spam"), &d.path().join("spam-box"), "X-Verdict: spam, score=9.9");
    stamped(&d.path().join("ham"), &d.path().join("ham-box"), "X-Verdict: ham, score=-4.2");
    let config = d.path().join("strainer.toml");
    std::fs::write(&config, "[bayes]\npath = \"store\"\nmin_spam = 5\nmin_ham = 5\nignore_headers = [\"X-Verdict\"]\n")
        .unwrap();
    let out = train(&config, &d.path().join("spam-box"), &d.path().join("ham-box")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // `scan` scores a stamped message as the same message without the field.
    let probe = d.path().join("spam").join("000003.eml");
    let stamped_probe = d.path().join("spam-box").join("000003.eml");
    assert_eq!(scanned_margin(&config, &probe), scanned_margin(&config, &stamped_probe));
    // What was learnt from the stamped copies is exactly what the plain ones take back.
    let mut forget = train(&config, &d.path().join("spam"), &d.path().join("ham"));
    let out = forget.arg("--forget").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((totals(&config), features(&config)), ((0, 0), 0));
}

/// A scratch directory whose configuration quarantines into `q` and releases to `relay`, and
/// whose store learnt the fixture corpus; a spam-looking message held in its quarantine, with
/// its id.
fn with_quarantined_probe(relay: std::net::SocketAddr) -> (tempfile::TempDir, PathBuf, String) {
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("strainer.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\naddress = \"{relay}\"\n[quarantine]\ndir = \"q\"\n[bayes]\npath = \"store\"\nmin_spam = 5\nmin_ham = 5\n"
        ),
    )
    .unwrap();
    let out = train(&config, &Path::new(FIXTURES).join("spam"), &Path::new(FIXTURES).join("ham")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut meta = strainer_quarantine::Meta {
        sender: "deals@promo.example.biz".into(),
        recipients: vec![strainer_quarantine::Rcpt { address: "b@example.net".into(), notify: None, orcpt: None }],
        category: "SPAM".into(),
        reason: "SPAM score=12.0".into(),
        size: PROBE_SPAM.len() as u64,
        ..Default::default()
    };
    let id = strainer_quarantine::Store::open(d.path().join("q")).unwrap().put(&mut meta, PROBE_SPAM).unwrap();
    std::fs::write(d.path().join("probe.eml"), PROBE_SPAM).unwrap();
    (d, config, id)
}

#[tokio::test(flavor = "multi_thread")]
async fn quarantine_release_learns_ham_and_delete_learns_spam() {
    let sink = Sink::start(Behaviour::Accept).await;
    let (d, config, id) = with_quarantined_probe(sink.addr);
    let before = scanned_margin(&config, &d.path().join("probe.eml"));
    assert!(before > 0.0, "the fixtures make the probe spammy: {before}");
    let cli = |args: Vec<String>| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            strainer(&args, &config).output().unwrap()
        })
    };
    let out = cli(vec!["quarantine".into(), "release".into(), id.clone(), "--learn-ham".into()]).await.unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("released") && said.contains("bayes: learnt as ham"), "{out:?}");
    assert_eq!(sink.got().len(), 1, "released downstream");
    assert_eq!(totals(&config), (8, 9));
    let after = scanned_margin(&config, &d.path().join("probe.eml"));
    assert!(after < before, "learnt as ham, the margin moves toward ham: {before} -> {after}");

    // Deleting it instead teaches it back as spam; the entry is gone.
    let out = cli(vec!["quarantine".into(), "delete".into(), id.clone(), "--learn-spam".into()]).await.unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("bayes: moved to spam") && said.contains("deleted"), "{out:?}");
    assert_eq!(totals(&config), (9, 8));
    assert!(strainer_quarantine::Store::open(d.path().join("q")).unwrap().list().unwrap().is_empty());
}

#[test]
fn the_quarantine_cli_does_not_create_a_missing_quarantine() {
    // Created by root from the CLI, it would be root's, and `serve` could not hold mail there.
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("strainer.toml");
    std::fs::write(&config, "[quarantine]\ndir = \"q\"\n").unwrap();
    let out = strainer(&["quarantine", "list"], &config).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("does not exist yet"), "{out:?}");
    let out = strainer(&["quarantine", "show", "abcdefghij0123456789"], &config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no quarantine at") && err.contains("--config"), "{err}");
    assert!(!d.path().join("q").exists());
}

#[test]
fn train_does_not_create_a_store_another_user_could_not_open() {
    // As root (CI), in a directory that belongs to another user, as `sudo strainer train` would.
    let d = tempfile::tempdir().unwrap();
    let theirs = d.path().join("lib");
    std::fs::create_dir(&theirs).unwrap();
    let mine = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&theirs).unwrap());
    if std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).is_err() {
        eprintln!("skipped: changing a directory's owner needs root");
        return;
    }
    let config = d.path().join("strainer.toml");
    std::fs::write(&config, "[bayes]\npath = \"lib/bayes\"\n").unwrap();
    let out = train(&config, &Path::new(FIXTURES).join("spam"), &Path::new(FIXTURES).join("ham")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("run this as that user") && err.contains("sudo -u"), "{err}");
    assert!(!theirs.join("bayes").exists());
    // Where the store's directory is the user's own, it is created.
    std::os::unix::fs::chown(&theirs, Some(mine), None).unwrap();
    let out = train(&config, &Path::new(FIXTURES).join("spam"), &Path::new(FIXTURES).join("ham")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
