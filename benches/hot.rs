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

criterion_group!(benches, bench);
criterion_main!(benches);
