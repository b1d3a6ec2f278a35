//! The `strainer` program's wiring: configuration, the after-queue filter, the listener and the
//! Postfix wiring it prints. The protocol and scanners live in the crates under `crates/`.
//!
//! Design choice: a library beside the binary so that integration tests run the real server
//! in-process on port 0, with the same code path `strainer serve` uses.
#![deny(missing_docs)]

/// Writes the CLI's output: when the reader has gone away (`strainer ... | head`), the command
/// ends quietly with success, as Unix tools do, instead of panicking on the closed pipe.
pub fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        r => r,
    }
}

/// `print!` for the CLI's output, through [`write_stdout`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = $crate::write_stdout(format!($($arg)*).as_bytes());
    }};
}

/// `println!` for the CLI's output, through [`write_stdout`].
#[macro_export]
macro_rules! outln {
    () => { $crate::out!("\n") };
    ($($arg:tt)*) => { $crate::out!("{}\n", format_args!($($arg)*)) };
}

/// The login name of `uid`, from /etc/passwd.
pub fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

pub mod antivirus;
pub mod autolearn;
pub mod bayes;
pub mod bayes_cmd;
pub mod config;
pub mod decide;
pub mod filter;
pub mod fuzz;
pub mod live;
pub mod metrics;
pub mod postfix;
pub mod quarantine_cmd;
pub mod scan_cmd;
pub mod scanners;
pub mod selftest;
pub mod server;
pub mod train_cmd;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

/// Runs the after-queue filter described by `config`, with its compiled scanners, on
/// `listener` until `stop` resolves.
pub async fn serve(
    config: &config::Config,
    local: Arc<scanners::Local>,
    listener: TcpListener,
    stop: impl Future<Output = ()>,
) {
    let live = live::Live::new(config.clone(), local, None);
    serve_live(live, listener, stop).await;
}

/// Longest `serve` waits, once stopped, for autolearning's last batch.
const AUTOLEARN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `live` (whose filter can be replaced while serving) on `listener` until `stop` resolves.
pub async fn serve_live(live: Arc<live::Live>, listener: TcpListener, stop: impl Future<Output = ()>) {
    let config = live.config();
    let endpoint = match config.metrics.listen {
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(l) => Some(tokio::spawn(metrics::serve_http(l, live.metrics()))),
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot serve metrics (metrics.listen); continuing without");
                None
            }
        },
        None => None,
    };
    let m = Some(live.metrics());
    let session = config.session();
    if let Err(e) = session.spool.create() {
        tracing::error!(
            dir = %session.spool.dir.display(),
            error = %e,
            "cannot create spool files (server.spool_dir): messages over server.spool_threshold will get 4xx until this is fixed"
        );
    }
    let learning = Arc::clone(&live);
    server::run(m, listener, session, config.server.max_sessions, live, config.server.timeouts.shutdown, stop).await;
    // Sessions are drained: learn what autolearning still holds before the process ends.
    let finished = tokio::task::spawn_blocking(move || learning.finish_learning());
    if tokio::time::timeout(AUTOLEARN_GRACE, finished).await.is_err() {
        tracing::warn!(grace_s = AUTOLEARN_GRACE.as_secs(), "autolearn: stopping before its last batch was learnt");
    }
    if let Some(e) = endpoint {
        e.abort();
    }
}
