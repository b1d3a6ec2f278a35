//! Prometheus metrics: messages by outcome and category, bytes, per-stage latency, scanner
//! errors, sessions in flight and refused, quarantine size, Bayes results and autolearning; served
//! on an optional loopback HTTP endpoint (`[metrics] listen`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Labels = Vec<(String, String)>;

fn stage_histogram() -> Histogram {
    // 0.1 ms to ~26 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

/// strainer's counters, gauges and histograms.
pub struct Metrics {
    registry: Registry,
    messages: Family<Labels, Counter>,
    bytes: Counter,
    stages: Family<Labels, Histogram, fn() -> Histogram>,
    scanner_errors: Family<Labels, Counter>,
    sessions: Gauge,
    refused: Counter,
    quarantined: Gauge,
    quarantine_dir: PathBuf,
    autolearn: Family<Labels, Counter>,
    bayes: Family<Labels, Counter>,
}

impl Metrics {
    /// A fresh set of metrics; `quarantine_dir` is counted at each scrape.
    pub fn new(quarantine_dir: PathBuf) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("strainer");
        let messages = Family::<Labels, Counter>::default();
        let bytes = Counter::default();
        let stages = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(stage_histogram);
        let scanner_errors = Family::<Labels, Counter>::default();
        let sessions = Gauge::default();
        let refused = Counter::default();
        let quarantined = Gauge::default();
        let autolearn = Family::<Labels, Counter>::default();
        let bayes = Family::<Labels, Counter>::default();
        registry.register("messages", "Messages by action and category", messages.clone());
        registry.register("message_bytes", "Bytes of messages received", bytes.clone());
        registry.register(
            "stage_seconds",
            "Time per stage (receive, mime, banned, rules, scan, clamav, policy, quarantine, relay, total)",
            stages.clone(),
        );
        registry.register("scanner_errors", "Scanner failures and timeouts", scanner_errors.clone());
        registry.register("sessions_in_flight", "SMTP sessions open now", sessions.clone());
        registry.register("sessions_refused", "Sessions refused with 421 over max_sessions", refused.clone());
        registry.register("quarantine_messages", "Messages in the quarantine", quarantined.clone());
        registry.register(
            "autolearn",
            "Messages Bayes autolearning took (queued) or let go over a full queue (dropped), by class",
            autolearn.clone(),
        );
        registry.register(
            "bayes",
            "Messages by what the Bayes scorer said (spam, unsure, ham, untrained, unavailable)",
            bayes.clone(),
        );
        Arc::new(Metrics {
            registry,
            messages,
            bytes,
            stages,
            scanner_errors,
            sessions,
            refused,
            quarantined,
            quarantine_dir,
            autolearn,
            bayes,
        })
    }

    /// A message was offered to autolearning as `class`; `queued` says whether it was taken.
    pub fn autolearn(&self, class: &str, queued: bool) {
        let result = if queued { "queued" } else { "dropped" };
        self.autolearn.get_or_create(&vec![("class".into(), class.into()), ("result".into(), result.into())]).inc();
    }

    /// The Bayes scorer's finding for a message was `result` (its name without `BAYES_`, lower-cased).
    pub fn bayes(&self, result: &str) {
        self.bayes.get_or_create(&vec![("result".into(), result.into())]).inc();
    }

    /// One message finished with `action` in `category`.
    pub fn message(&self, action: &str, category: &str, size: usize) {
        self.messages
            .get_or_create(&vec![("action".into(), action.into()), ("category".into(), category.into())])
            .inc();
        self.bytes.inc_by(size as u64);
    }

    /// A stage took `d`.
    pub fn stage(&self, stage: &str, d: Duration) {
        self.stages.get_or_create(&vec![("stage".into(), stage.into())]).observe(d.as_secs_f64());
    }

    /// A scanner could not give a verdict.
    pub fn scanner_error(&self, scanner: &str) {
        self.scanner_errors.get_or_create(&vec![("scanner".into(), scanner.into())]).inc();
    }

    /// A session started (`true`) or ended.
    pub fn session(&self, open: bool) {
        if open {
            self.sessions.inc();
        } else {
            self.sessions.dec();
        }
    }

    /// A session was refused over the limit.
    pub fn refused(&self) {
        self.refused.inc();
    }

    /// The exposition text (OpenMetrics).
    pub fn render(&self) -> String {
        let held = strainer_quarantine::held(&self.quarantine_dir);
        self.quarantined.set(i64::try_from(held).unwrap_or(i64::MAX));
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve_http(listener: TcpListener, metrics: Arc<Metrics>) {
    while let Ok((mut s, _)) = listener.accept().await {
        let m = Arc::clone(&metrics);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while n < buf.len() {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let (status, ctype, body) = if buf[..n].starts_with(b"GET /metrics ") {
                ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", m.render())
            } else {
                ("404 Not Found", "text/plain", "try /metrics\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autolearning_is_counted_by_class_and_result() {
        let m = Metrics::new(PathBuf::from("/nonexistent"));
        m.autolearn("spam", true);
        m.autolearn("spam", true);
        m.autolearn("ham", false);
        let text = m.render();
        assert!(text.contains("strainer_autolearn_total{class=\"spam\",result=\"queued\"} 2"), "{text}");
        assert!(text.contains("strainer_autolearn_total{class=\"ham\",result=\"dropped\"} 1"), "{text}");
    }
}
