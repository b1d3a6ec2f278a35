//! Criterion benches of the per-message hot paths that are not the MIME walk: SMTP command
//! parsing, the DATA decoder, dot-stuffing, policy with header rendering, reply formatting.
//!
//!   cargo bench --bench hot

#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strainer_receive::command::parse;
use strainer_receive::data::{DataDecoder, stuff};
use strainer_types::{Enhanced, Finding, Reply};

fn message(kib: usize) -> Vec<u8> {
    let mut m = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: bench\r\n\r\n".to_vec();
    while m.len() < kib * 1024 {
        m.extend_from_slice(b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n");
        m.extend_from_slice(b".a line starting with a dot\r\n");
    }
    m
}

fn bench(c: &mut Criterion) {
    let commands = [
        "EHLO mx.example.org",
        "XFORWARD NAME=mail.example ADDR=192.0.2.1 PORT=4711 PROTO=ESMTP HELO=mail.example",
        "XFORWARD IDENT=4XyZq1AbCd SOURCE=REMOTE",
        "MAIL FROM:<alice@example.org> SIZE=12345 BODY=8BITMIME",
        "RCPT TO:<bob@example.net> NOTIFY=FAILURE ORCPT=rfc822;bob@example.net",
        "DATA",
    ];
    let mut g = c.benchmark_group("smtp");
    g.throughput(Throughput::Elements(commands.len() as u64));
    g.bench_function("parse_transaction_commands", |b| b.iter(|| commands.iter().filter(|c| parse(c).is_ok()).count()));
    g.finish();

    let msg = message(100);
    let mut wire = Vec::new();
    stuff(&msg, &mut wire);
    let mut g = c.benchmark_group("data");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("decode_100k", |b| {
        b.iter(|| {
            let mut d = DataDecoder::new(1 << 24);
            assert!(d.feed(&wire).done);
            d.into_message().len()
        })
    });
    g.bench_function("stuff_100k", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(wire.len());
            stuff(&msg, &mut out);
            out.len()
        })
    });
    g.finish();

    let policy = strainer_policy::Config::default();
    let findings: Vec<Finding> = (0..10)
        .map(|i| {
            let mut f = Finding::new(if i % 2 == 0 { "RULE_SCORE" } else { "MIME_UNCLOSED_BOUNDARY" }, "detail");
            f.score = Some(0.7);
            f
        })
        .collect();
    let mut g = c.benchmark_group("policy");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decide_and_render_headers_10_findings", |b| {
        b.iter(|| policy.decide(&findings, None).headers.len())
    });
    g.finish();

    let reply = Reply::new(
        250,
        Enhanced(2, 0, 0),
        "Ok, id=0GQKNLY1GP1Z, from MTA([127.0.0.1:10026]): 250 2.0.0 Ok: queued as 5C1DD98C17F",
    );
    let mut g = c.benchmark_group("reply");
    g.throughput(Throughput::Elements(1));
    g.bench_function("format", |b| b.iter(|| reply.to_wire().len()));
    g.finish();
}

/// The Bayes tokenizer and classifier on one HTML newsletter-like message, over an LMDB store
/// trained on 400 synthetic messages.
fn bayes(c: &mut Criterion) {
    use strainer_bayes::store::{Item, lmdb::Lmdb};
    use strainer_bayes::{Class, Options, Params, Store, tokenize};
    let limits = strainer_mime::Limits::default();
    let mut raw = b"From: News <news@list.example.org>\r\nTo: b@example.net\r\nSubject: Weekly digest: releases, talks and offers\r\nContent-Type: text/html\r\n\r\n<html><body>".to_vec();
    for i in 0..60 {
        raw.extend_from_slice(format!("<p>Item {i}: the <a href=\"http://site{i}.example.com/a\">release notes</a> for version {i}.2 and a <font color=red>limited offer</font> on training.</p>\r\n").as_bytes());
    }
    raw.extend_from_slice(b"</body></html>\r\n");
    let view = strainer_mime::analyze(&raw, &limits);
    let opts = Options::default();
    let mut g = c.benchmark_group("bayes");
    g.throughput(Throughput::Elements(1));
    g.bench_function("tokenize_newsletter", |b| b.iter(|| tokenize(&view, &opts, false).hashes.len()));
    let dir = tempfile::tempdir().unwrap();
    let store = Lmdb::open(dir.path(), 1 << 28).unwrap();
    let items: Vec<Item> = (0..400u32)
        .map(|i| {
            let m = format!(
                "Subject: s{i}\r\n\r\nword{} word{} offer{} release{} notes training version\r\n",
                i % 50,
                i % 7,
                i % 13,
                i % 29
            );
            let v = strainer_mime::analyze(m.as_bytes(), &limits);
            Item::new(
                m.as_bytes(),
                if i % 2 == 0 { Class::Spam } else { Class::Ham },
                tokenize(&v, &opts, false).hashes,
                &Default::default(),
            )
        })
        .collect();
    store.learn(&items, false).unwrap();
    let tokens = tokenize(&view, &opts, false);
    let params = Params::default();
    let mut counts = Vec::new();
    g.bench_function("lookup_and_classify_lmdb", |b| {
        b.iter(|| {
            let t = store.lookup(&tokens.hashes, &mut counts).unwrap();
            strainer_bayes::model::classify(&counts, t, &params, 0).log_odds
        })
    });
    g.bench_function("linear_vector_newsletter", |b| {
        b.iter(|| strainer_bayes::Vector::of(&tokens.hashes, &raw, &Default::default()).norm_sq())
    });
    let x = strainer_bayes::Vector::of(&tokens.hashes, &raw, &Default::default());
    g.bench_function("linear_margin_lmdb", |b| b.iter(|| store.margin(&x).unwrap()));
    g.finish();
}

criterion_group!(benches, bench, bayes);
criterion_main!(benches);
