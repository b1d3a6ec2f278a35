//! Criterion benches of the local scanning path over the SpamAssassin public corpus: MIME
//! deconstruction alone, and deconstruction + banned attachments + 500 header/body rules.
//!
//! The corpus is fetched, not committed: `benches/fetch-corpus.sh` puts it in benches/corpus
//! (or set STRAINER_CORPUS to a folder of raw messages). Run: `cargo bench --bench scan`.

#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strainer::config::Config;
use strainer::scanners::Local;
use strainer_mime::{Limits, analyze};

#[path = "support/corpus.rs"]
mod corpus;

fn corpus_or_exit() -> Vec<Vec<u8>> {
    let msgs = corpus::load();
    if msgs.is_empty() {
        eprintln!("no corpus under {}: run benches/fetch-corpus.sh (or set STRAINER_CORPUS)", corpus::root().display());
        std::process::exit(2);
    }
    msgs
}

/// 250 header and 250 body rules: words and phrases of the kind administrators write, most of
/// which never match (the expensive case), some of which do.
fn rule_tables(dir: &Path) -> (PathBuf, PathBuf) {
    let words = [
        "viagra",
        "cialis",
        "lottery",
        "winner",
        "inheritance",
        "bitcoin",
        "crypto",
        "casino",
        "refinance",
        "mortgage",
        "unsubscribe",
        "click here",
        "limited time",
        "act now",
        "free money",
        "100% free",
        "no obligation",
        "risk free",
        "weight loss",
        "work from home",
        "make money",
        "dear friend",
        "urgent reply",
        "bank transfer",
        "wire transfer",
    ];
    let mut header = String::new();
    let mut body = String::new();
    for i in 0..250 {
        let w = words[i % words.len()];
        match i % 5 {
            0 => header.push_str(&format!("/^Subject:.*\\b{w}\\b/ SCORE 0.5 subject word {i}\n")),
            1 => header.push_str(&format!("/^From:.*@([a-z0-9-]+\\.)*spam{i}\\.example/ REJECT listed sender {i}\n")),
            2 => header.push_str(&format!("/^X-Mailer:.*mailer-{i}-{w}/ SCORE 1.0 mailer {i}\n")),
            3 => header.push_str(&format!("/^Received:.*\\[10\\.{i}\\.[0-9]+\\.[0-9]+\\]/ SCORE 0.2 relay {i}\n")),
            _ => header.push_str(&format!("/^Reply-To:.*{w}{i}@/ SCORE 0.3 reply-to {i}\n")),
        }
        match i % 4 {
            0 => body.push_str(&format!("/\\b{w}\\b/ SCORE 0.2 body word {i}\n")),
            1 => body.push_str(&format!("/{w} now {i}/ SCORE 0.5 phrase {i}\n")),
            2 => body.push_str(&format!("/https?:\\/\\/[^ ]*bad{i}\\.example/ REJECT bad link {i}\n")),
            _ => body.push_str(&format!("/^{w}.{{0,20}}{i}$/ SCORE 0.1 line {i}\n")),
        }
    }
    let (h, b) = (dir.join("header_checks"), dir.join("body_checks"));
    std::fs::write(&h, header).expect("write header rules");
    std::fs::write(&b, body).expect("write body rules");
    (h, b)
}

fn bench(c: &mut Criterion) {
    let msgs = corpus_or_exit();
    let bytes: usize = msgs.iter().map(Vec::len).sum();
    eprintln!("corpus: {} messages, {:.1} MB", msgs.len(), bytes as f64 / 1e6);
    let dir = std::env::temp_dir().join(format!("strainer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (h, b) = rule_tables(&dir);
    let mut cfg = Config::default();
    cfg.rules.header_checks = vec![h];
    cfg.rules.body_checks = vec![b];
    let local = Local::compile(&cfg, &dir).expect("compile scanners");
    let limits = Limits::default();

    let mut g = c.benchmark_group("corpus");
    g.sample_size(10).measurement_time(Duration::from_secs(20)).throughput(Throughput::Elements(msgs.len() as u64));
    g.bench_function("mime_view", |bn| bn.iter(|| msgs.iter().map(|m| analyze(m, &limits).parts.len()).sum::<usize>()));
    g.bench_function("mime+banned+500_rules", |bn| {
        bn.iter(|| msgs.iter().map(|m| local.scan(m).findings.len()).sum::<usize>())
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
