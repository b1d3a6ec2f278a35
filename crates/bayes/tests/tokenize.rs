//! Tokenizer cases as data: each `tests/tokenize/NAME.eml` is tokenized and its features (by
//! name, sorted) compared with `NAME.tokens`. STRAINER_BLESS=1 rewrites the expected files after a
//! deliberate change (review the diff). Plus property tests over any input.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;

use proptest::prelude::*;
use strainer_bayes::store::{Item, Memory};
use strainer_bayes::{Bayes, Class, IgnoreHeaders, Options, Store, Vector, tokenize};

fn names(raw: &[u8]) -> Vec<String> {
    let view = strainer_mime::analyze(raw, &strainer_mime::Limits::default());
    let t = tokenize(&view, &Options::default(), true);
    let mut v: Vec<String> = t.hashes.iter().map(|h| t.name(*h).unwrap().to_string()).collect();
    v.sort();
    v
}

#[test]
fn cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tokenize");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "eml") {
            continue;
        }
        let got = names(&std::fs::read(&p).unwrap()).join("\n") + "\n";
        let want_path = p.with_extension("tokens");
        if std::env::var_os("STRAINER_BLESS").is_some() {
            std::fs::write(&want_path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&want_path).unwrap_or_default();
        assert_eq!(got, want, "{}: tokens differ (STRAINER_BLESS=1 to accept)", p.display());
        n += 1;
    }
    assert!(n >= 3);
}

/// A message's features and linear vector under `opts`, with the features' names.
fn features(raw: &[u8], opts: &Options) -> (Vec<u64>, Vector, Vec<String>) {
    let view = strainer_mime::analyze(raw, &strainer_mime::Limits::default());
    let t = tokenize(&view, opts, true);
    let vector = Vector::of(&t.hashes, raw, &opts.ignore);
    let names = t.hashes.iter().map(|h| t.name(*h).unwrap().to_string()).collect();
    (t.hashes, vector, names)
}

/// The copy a user saves from a mailbox, stamped by strainer and by the filter before it, has
/// the features of the message as it arrived: an ignored field (and strainer's own, always)
/// gives no feature and no 4-gram, so a model trained from mailboxes cannot lean on an old
/// filter's verdict that fresh mail will not carry.
#[test]
fn ignored_header_fields_are_neither_tokenized_nor_in_the_vector() {
    let fresh = b"From: a@example.org\r\nSubject: lunch\r\n\r\nat noon?\r\n".as_slice();
    let stamped = b"X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=9.1\r\n\ttests=[BAYES_SPAM]\r\n\
        X-Bogosity: Spam, tests=bogofilter\r\nX-Virus-Scanned: ClamAV at mx\r\n\
        From: a@example.org\r\nSubject: lunch\r\n\r\nat noon?\r\n"
        .as_slice();
    let opts = Options { ignore: IgnoreHeaders::new(["x-bogosity", "X-Virus-*"]).unwrap(), ..Options::default() };
    let (h, v, _) = features(stamped, &opts);
    let (fresh_h, fresh_v, _) = features(fresh, &opts);
    assert_eq!((h, v), (fresh_h, fresh_v));
    // Without the list the other filter's fields count; strainer's own never do.
    let (h, v, names) = features(stamped, &Options::default());
    let (fresh_h, fresh_v, _) = features(fresh, &Options::default());
    assert_ne!(h, fresh_h);
    assert_ne!(v, fresh_v);
    assert!(names.iter().any(|n| n == "H:x-bogosity"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("H:x-spam")), "{names:?}");
}

/// The fields' order gives pairs of consecutive names; a run of one name (the Received chain)
/// counts once, and strainer's own fields, wherever a release put them, do not break a pair.
#[test]
fn header_order_pairs() {
    let raw = b"Received: from a\r\nReceived: from b\r\nX-Spam-Score: 3\r\nFrom: a@example.org\r\n\
        Subject: hi\r\n\r\nbody\r\n"
        .as_slice();
    let (_, _, names) = features(raw, &Options::default());
    let mut pairs: Vec<&str> = names.iter().filter(|n| n.starts_with("ho:")).map(String::as_str).collect();
    pairs.sort();
    assert_eq!(pairs, ["ho:>received", "ho:from>subject", "ho:received>from"]);
    let (_, _, names) = features(raw, &Options { header_order: false, ..Options::default() });
    assert!(!names.iter().any(|n| n.starts_with("ho:")), "{names:?}");
}

fn trained() -> Bayes<Memory> {
    let b = Bayes::new(Memory::new());
    for i in 0..20u8 {
        let spam = format!("Subject: offer {i}\r\n\r\ncheap pills free prize click here {i}\r\n");
        let ham = format!("Subject: meeting {i}\r\n\r\nnotes from the design review {i}\r\n");
        for (m, c) in [(spam, Class::Spam), (ham, Class::Ham)] {
            let view = strainer_mime::analyze(m.as_bytes(), &strainer_mime::Limits::default());
            b.learn(m.as_bytes(), &view, c, false).unwrap();
        }
    }
    b
}

#[test]
fn explaining_names_what_moved_the_linear_layer_and_adds_up() {
    let b = trained();
    let m = "Subject: offer 3\r\n\r\ncheap pills free prize click here 3\r\n";
    let view = strainer_mime::analyze(m.as_bytes(), &strainer_mime::Limits::default());
    let c = b.classify(m.as_bytes(), &view, 3).unwrap();
    assert_eq!(c.linear.len(), 4, "{:?}", c.linear);
    assert_eq!(c.linear[3].0, "4-grams");
    assert!(c.linear[0].1.abs() >= c.linear[2].1.abs(), "{:?}", c.linear);
    // With every feature named, the shares add up to the linear part of the score.
    let all = b.classify(m.as_bytes(), &view, 10_000).unwrap();
    let sum: f64 = all.linear.iter().map(|p| p.1).sum();
    assert!((sum - strainer_bayes::linear::SCALE * all.score.margin).abs() < 1e-6, "{sum} {}", all.score.margin);
    assert!(all.score.margin > 0.0);
    // Not asked: nothing computed.
    assert!(b.classify(m.as_bytes(), &view, 0).unwrap().linear.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Scoring hashes the common words from a stack copy, explaining spells every feature out:
    /// both give the same features, and every feature but a word pair is the hash of its name.
    #[test]
    fn scoring_and_explaining_give_the_same_features(
        subject in "[A-Za-z0-9 ]{0,30}",
        words in prop::collection::vec("[A-Za-z]{1,30}|[0-9.,]{1,9}|\\PC{1,6}|[A-Z]{2,8}[a-z0-9!%$]{0,5}", 0..60)
    ) {
        let msg = format!("Subject: {subject}\r\nFrom: Bob <b@Example.ORG>\r\n\r\n{}\r\n", words.join(" "));
        let view = strainer_mime::analyze(msg.as_bytes(), &strainer_mime::Limits::default());
        let scored = tokenize(&view, &Options::default(), false);
        let explained = tokenize(&view, &Options::default(), true);
        prop_assert_eq!(&scored.hashes, &explained.hashes);
        for h in &explained.hashes {
            let name = explained.name(*h).unwrap();
            prop_assert!(name.contains(" + ") || xxhash_rust::xxh3::xxh3_64(name.as_bytes()) == *h, "{name}");
        }
    }

    /// Any bytes: the score is finite and the probability within [0, 1]; tokenizing never panics.
    #[test]
    fn score_is_finite_for_any_input(raw in prop::collection::vec(any::<u8>(), 0..2000)) {
        let b = trained();
        let view = strainer_mime::analyze(&raw, &strainer_mime::Limits::default());
        let c = b.classify(&raw, &view, 3).unwrap();
        prop_assert!(c.score.log_odds.is_finite());
        prop_assert!((0.0..=1.0).contains(&c.score.probability));
    }

    /// Text-like input with words from both classes: still finite, and learning it twice is idempotent.
    #[test]
    fn learning_twice_is_idempotent(words in prop::collection::vec("[a-z]{1,12}|cheap|meeting|[0-9]{1,9}|\\PC{1,4}", 0..80)) {
        let b = trained();
        let msg = format!("Subject: x\r\n\r\n{}\r\n", words.join(" "));
        let view = strainer_mime::analyze(msg.as_bytes(), &strainer_mime::Limits::default());
        b.learn(msg.as_bytes(), &view, Class::Spam, false).unwrap();
        let t = tokenize(&view, &Options::default(), false);
        let mut once = Vec::new();
        let tot1 = b.store.lookup(&t.hashes, &mut once).unwrap();
        let again = b.store.learn(&[Item::new(msg.as_bytes(), Class::Spam, t.hashes.clone(), &Default::default())], false).unwrap();
        prop_assert_eq!(again, vec![strainer_bayes::Learned::Already]);
        let mut twice = Vec::new();
        let tot2 = b.store.lookup(&t.hashes, &mut twice).unwrap();
        prop_assert_eq!(once, twice);
        prop_assert_eq!(tot1, tot2);
        prop_assert!(b.classify(msg.as_bytes(), &view, 0).unwrap().score.log_odds.is_finite());
    }
}
