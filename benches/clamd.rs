//! clamd scanning throughput over the SpamAssassin corpus: strainer's clamd client streaming the
//! raw messages at 1 and 8 concurrent scans, and the whole clamav scanner (every part, archive
//! member and the raw message) as serve runs it. Compare with `clamdscan --stream` on the same
//! files (benches/clamd.sh runs both). Not a criterion bench: one timed pass per setting.
//!
//!   STRAINER_CLAMD=127.0.0.1:3310 cargo bench --bench clamd

#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use strainer::config::Config;
use strainer::scanners::Local;
use strainer_clamav::Client;

#[path = "support/corpus.rs"]
mod corpus;

fn main() {
    let Ok(addr) = std::env::var("STRAINER_CLAMD") else {
        eprintln!("set STRAINER_CLAMD=host:port of a clamd (tests/e2e/clamd-up.sh starts one)");
        return;
    };
    let msgs: Arc<Vec<Vec<u8>>> = Arc::new(corpus::load());
    if msgs.is_empty() {
        eprintln!("no corpus under {}: run benches/fetch-corpus.sh", corpus::root().display());
        return;
    }
    let local = Arc::new(Local::compile(&Config::default(), Path::new(".")).unwrap());
    let reports: Arc<Vec<_>> = Arc::new(msgs.iter().map(|m| local.scan(m)).collect());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    for conc in [1usize, 8] {
        let mut cfg = strainer_clamav::Config {
            enabled: true,
            addresses: vec![addr.clone()],
            max_concurrency: conc,
            ..Default::default()
        };
        cfg.max_stream = 25 << 20;
        let client = Arc::new(Client::new(cfg));
        for (label, whole) in [("raw message only", false), ("all parts + raw (serve's scanner)", true)] {
            let start = Instant::now();
            let streams = rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                for _ in 0..conc {
                    let (client, msgs, reports, next) = (client.clone(), msgs.clone(), reports.clone(), next.clone());
                    set.spawn(async move {
                        let mut n = 0usize;
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(m) = msgs.get(i) else { break };
                            if whole {
                                strainer::antivirus::scan(&client, m, &reports[i]).await.expect("clamd answers");
                                n += reports[i]
                                    .view
                                    .parts
                                    .iter()
                                    .filter(|p| p.data.is_some() || p.text.is_some())
                                    .count()
                                    + 1;
                            } else {
                                client.scan(m).await.expect("clamd answers");
                                n += 1;
                            }
                        }
                        n
                    });
                }
                let mut total = 0;
                while let Some(r) = set.join_next().await {
                    total += r.unwrap();
                }
                total
            });
            let secs = start.elapsed().as_secs_f64();
            println!(
                "clamd {addr}, {conc} concurrent, {label}: {} messages ({streams} streams) in {secs:.2} s = {:.0} msg/s",
                msgs.len(),
                msgs.len() as f64 / secs
            );
        }
    }
}
