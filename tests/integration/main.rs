//! Integration tests: strainer in-process on port 0 between a test client (playing Postfix)
//! and an in-process SMTP sink (playing the re-injection smtpd).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod bayes;
mod clamav;
#[path = "../fixtures/mod.rs"]
mod fixtures;
mod fuzz_regressions;
mod metrics;
mod relay;
mod reload;
mod scanning;
mod server;
mod support;
