//! The `strainer` command line.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::Read;

use strainer::config::Config;
use strainer::scanners::Local;
use tracing_subscriber::EnvFilter;

/// A content filter for Postfix.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// Log level or filter (e.g. `info`, `debug`, `strainer=debug`); also STRAINER_LOG.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// Log format: `text` (one human-readable line per event) or `json` (one object per line,
    /// for log shippers).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the filter (listen for Postfix, re-inject what passes).
    Serve {
        /// Configuration file; without it the embedded defaults are used.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check or show configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCmd,
    },
    /// Print the main.cf and master.cf lines that wire strainer into Postfix.
    PostfixConfig {
        /// Configuration file; without it the embedded defaults are used.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Take messages apart and show parts, findings and what strainer would do (reads stdin
    /// when no file is given; mbox `From ` lines and LF line ends are accepted).
    Scan {
        /// Message files (`-` for stdin).
        files: Vec<PathBuf>,
        /// One JSON object per message instead of text.
        #[arg(long)]
        json: bool,
        /// Name this many of the strongest Bayes features either way.
        #[arg(long, default_value_t = 8)]
        explain: usize,
        /// Configuration file; without it the embedded defaults are used.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check the running chain (strainer's listener, the re-injection smtpd, clamd) and say
    /// what to fix; exits non-zero when a check fails.
    Selftest {
        /// Configuration file; without it the embedded defaults are used.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Postfix's configuration directory (default: postconf's own).
        #[arg(long)]
        postfix_config_dir: Option<PathBuf>,
        /// Skip the checks of Postfix's main.cf and master.cf.
        #[arg(long)]
        no_postfix: bool,
        /// Also send a test message through strainer to this address (route it to `discard:` in
        /// Postfix's transport map) and check it comes out of the re-injection smtpd.
        #[arg(long)]
        send_to: Option<String>,
    },
    /// Make the running `strainer serve` reload its configuration (SIGHUP via server.pid_file).
    Reload {
        /// Configuration file naming the pid file; without it the embedded defaults are used.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// List, show, release, delete and purge quarantined messages.
    Quarantine {
        /// Configuration file; without it the embedded defaults are used.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: QuarantineCmd,
    },
    /// Teach the Bayes scorer: every message under each path (a message file, an mbox, a
    /// Maildir or a directory) is learnt once as spam or ham; learning again counts once.
    Train {
        /// Spam: files, mboxes, Maildirs or directories.
        #[arg(long, num_args = 1.., value_name = "PATH")]
        spam: Vec<PathBuf>,
        /// Ham: files, mboxes, Maildirs or directories.
        #[arg(long, num_args = 1.., value_name = "PATH")]
        ham: Vec<PathBuf>,
        /// Unlearn these messages instead (they must be given as the class they were learnt as
        /// or the other; either way what was learnt is taken back).
        #[arg(long)]
        forget: bool,
        /// Configuration file (its [bayes] section); without it the embedded defaults are used.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// The Bayes store: counts, size, expiry.
    Bayes {
        /// Configuration file; without it the embedded defaults are used.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: BayesCmd,
    },
    /// Learn the messages `serve`'s autolearning sends on standard input into an LMDB store,
    /// then apply its cap; prints how many were new and how many features expired. Run by
    /// `serve` itself, one process per batch.
    #[command(hide = true)]
    LearnItems {
        /// The store's directory.
        #[arg(long)]
        path: PathBuf,
        /// bayes.map_size_mb.
        #[arg(long)]
        map_size_mb: usize,
        /// bayes.train_passes.
        #[arg(long)]
        train_passes: usize,
        /// bayes.max_tokens.
        #[arg(long)]
        max_tokens: u64,
        /// bayes.max_seen.
        #[arg(long)]
        max_seen: u64,
    },
    /// Work with rule maps.
    Rules {
        #[command(subcommand)]
        command: RulesCmd,
    },
}

#[derive(Subcommand)]
enum QuarantineCmd {
    /// List held messages, oldest first.
    List {
        /// Only those held within this long (e.g. 2h, 7d).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// Only this category (VIRUS, BANNED, HELD).
        #[arg(long)]
        category: Option<String>,
        /// Only senders containing this.
        #[arg(long)]
        sender: Option<String>,
        /// Only recipients containing this.
        #[arg(long)]
        recipient: Option<String>,
        /// JSON, one object per message.
        #[arg(long)]
        json: bool,
    },
    /// Show a held message's metadata, findings and headers.
    Show {
        /// The id from `list`.
        id: String,
        /// Print the message itself, exactly as received.
        #[arg(long)]
        raw: bool,
    },
    /// Deliver a held message through the re-injection smtpd; exits non-zero if it is refused.
    Release {
        /// The id from `list`.
        id: String,
        /// Deliver to these recipients instead of the original ones.
        #[arg(long = "to")]
        to: Vec<String>,
        /// Release again although an earlier release was accepted.
        #[arg(long)]
        force: bool,
        /// Also teach the Bayes scorer that this message is ham (after it was delivered).
        #[arg(long)]
        learn_ham: bool,
    },
    /// Delete a held message.
    Delete {
        /// The id from `list`.
        id: String,
        /// Teach the Bayes scorer that this message is spam before deleting it.
        #[arg(long)]
        learn_spam: bool,
    },
    /// Delete held messages older than a duration.
    Purge {
        /// For example 30d.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
    },
}

#[derive(Subcommand)]
enum BayesCmd {
    /// Messages learnt, features held, size on disk.
    Stats {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Apply the size cap now (training does it by itself when over the cap).
    Expire,
    /// Copy the LMDB store, compacted, into a new directory while `serve` and `train` keep
    /// running; `restore` puts it back
    Backup {
        /// Directory to create for the copy (it must not hold a store already).
        dir: PathBuf,
    },
    /// Replace the configured store's model with a backup's or an export's, at once (one
    /// transaction on LMDB, one swap on Redis), while `serve` and `train` keep running
    Restore {
        /// A directory made by `bayes backup`, or a file made by `bayes export` (`-` for
        /// standard input).
        source: PathBuf,
    },
    /// Write the whole store as text, the same from LMDB and Redis (to move a model between
    /// them, or keep a copy any version reads); `import` reads it
    Export {
        /// File to write (written whole or not at all); standard output without it.
        file: Option<PathBuf>,
    },
    /// Read an export into the configured store, which must be empty (a new bayes.path or
    /// bayes.redis_prefix)
    Import {
        /// The export (`-` for standard input).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum RulesCmd {
    /// Look INPUT up in a Postfix regexp table, as `postmap -q` does: prints the action and exits 0,
    /// or exits 1 when no rule matches.
    Test {
        /// The table file.
        map: PathBuf,
        /// The header line or body line to look up, e.g. 'Subject: cheap pills'.
        input: String,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Check a configuration file and exit non-zero with file:line: key: problem if it is wrong.
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the effective configuration, defaults included.
    Show {
        /// Configuration file; without it the embedded defaults are shown.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

/// Learns one message into the configured Bayes store; says what happened.
fn learn_one(
    config: &Config,
    path: Option<&PathBuf>,
    msg: &[u8],
    class: strainer_bayes::Class,
) -> anyhow::Result<String> {
    let store = config.bayes.open(&base_of(path))?;
    let view = strainer_mime::analyze(msg, &config.mime);
    let mut b = strainer_bayes::Bayes::new(&*store);
    b.options = config.bayes_options()?;
    b.params = config.bayes.params();
    let what = b.learn(msg, &view, class, false)?;
    let class = class.name();
    Ok(match what {
        strainer_bayes::Learned::Already => format!("bayes: already learnt as {class}"),
        strainer_bayes::Learned::Relearned => format!("bayes: moved to {class}"),
        _ => format!("bayes: learnt as {class}"),
    })
}

/// The folder relative paths in a config file are taken from.
fn base_of(path: Option<&PathBuf>) -> PathBuf {
    path.and_then(|p| p.parent()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."))
}

/// Compiles the scanners; relative rule paths are taken from the config file's folder.
fn compile(config: &Config, path: Option<&PathBuf>) -> anyhow::Result<Local> {
    let base = base_of(path);
    let origin = path.map_or("<default config>".to_string(), |p| p.display().to_string());
    Local::compile(config, &base).with_context(|| origin)
}

fn scan(files: &[PathBuf], json: bool, local: &Local, policy: &strainer_policy::Config) -> anyhow::Result<bool> {
    let inputs: Vec<PathBuf> = if files.is_empty() { vec![PathBuf::from("-")] } else { files.to_vec() };
    let mut all_clean = true;
    for f in &inputs {
        let bytes = if f.as_os_str() == "-" {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b).context("cannot read the message from stdin")?;
            b
        } else {
            std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?
        };
        let msg = strainer::scan_cmd::as_received(bytes);
        let report = local.scan(&msg);
        let outcome = strainer::decide::decide(&report, policy, &msg, &[]);
        all_clean &= outcome.verdict == "clean";
        let label = f.display().to_string();
        if json {
            strainer::outln!("{}", strainer::scan_cmd::render_json(&label, &report, &outcome));
        } else {
            strainer::out!("{}", strainer::scan_cmd::render(&label, &report, &outcome));
        }
    }
    Ok(all_clean)
}

fn init_logging(level: &str, format: &str) {
    let filter = std::env::var("STRAINER_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

async fn serve(config: Config, local: Local, path: Option<PathBuf>) -> anyhow::Result<()> {
    let listener = strainer::server::listen(config.server.listen, config.server.max_sessions).with_context(|| {
        format!("cannot listen on {} (server.listen): is another filter already running there?", config.server.listen)
    })?;
    tracing::info!(listen = %config.server.listen, relay = %config.relay.address, protocol = ?config.server.protocol,
        max_sessions = config.server.max_sessions, version = env!("CARGO_PKG_VERSION"), "strainer started");
    let stop = async {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            _ => {
                tracing::error!("cannot install signal handlers; stop with SIGKILL only");
                std::future::pending::<()>().await;
            }
        }
    };
    if !config.server.pid_file.is_empty() {
        std::fs::write(&config.server.pid_file, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write {} (server.pid_file)", config.server.pid_file))?;
    }
    let pid_file = config.server.pid_file.clone();
    let live = strainer::live::Live::new(config, std::sync::Arc::new(local), path);
    let reloader = std::sync::Arc::clone(&live);
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::error!("cannot install the SIGHUP handler; reload by restarting");
            return;
        };
        while hup.recv().await.is_some() {
            match reloader.reload() {
                Ok(()) => tracing::info!(
                    "SIGHUP: configuration, rule maps, banned list, quarantine and clamd client reloaded"
                ),
                Err(e) => tracing::error!("SIGHUP: reload refused, the previous configuration stays in force: {e:#}"),
            }
        }
    });
    strainer::serve_live(live, listener, stop).await;
    if !pid_file.is_empty() {
        let _ = std::fs::remove_file(&pid_file);
    }
    Ok(())
}

/// glibc raises its mmap threshold after the first large buffer is freed; from then on large
/// message buffers live in per-thread arenas that are not given back (issue #7: four 20 MB
/// messages in flight peaked at 150 MiB of RSS instead of 72, 100 sessions at 58 instead of
/// 56). A fixed threshold keeps buffers over 256 KiB in their own mappings, returned on free.
/// glibc reads it only at start, so `serve` re-executes itself once with it set, unless the
/// administrator set GLIBC_TUNABLES already. If that fails, it runs with glibc's defaults.
fn fixed_mmap_threshold() {
    use std::os::unix::process::CommandExt;
    if !cfg!(all(target_os = "linux", target_env = "gnu")) || std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let err = std::process::Command::new(&exe)
        .arg0(argv0)
        .args(args)
        .env("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=262144")
        .exec();
    eprintln!("strainer: note: running with glibc's malloc defaults ({}: {err})", exe.display());
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Serve { config: path } => {
            fixed_mmap_threshold();
            let config = load(path.as_ref())?;
            let local = compile(&config, path.as_ref())?;
            init_logging(&cli.log_level, &cli.log_format);
            // Scanning is CPU work on the blocking pool: more threads than a few per core only add
            // stacks, malloc arenas and switching (issue #7: 57 threads and +10 MiB at 100 sessions).
            let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads(4 * cores)
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(serve(config, local, path))
        }
        Cmd::Train { spam, ham, forget, config: path } => {
            if spam.is_empty() && ham.is_empty() {
                anyhow::bail!("nothing to learn: give --spam PATH... and/or --ham PATH...");
            }
            let config = load(path.as_ref())?;
            let store = config.bayes.open(&base_of(path.as_ref()))?;
            let started = std::time::Instant::now();
            let (s, h) = strainer::train_cmd::train(&config, &*store, &spam, &ham, forget)?;
            let expired = store.expire(&config.bayes.expiry())?;
            let secs = started.elapsed().as_secs_f64();
            let n = s.total() + h.total();
            strainer::outln!("{}", strainer::train_cmd::summary_line("spam", &s, forget));
            strainer::outln!("{}", strainer::train_cmd::summary_line("ham", &h, forget));
            strainer::outln!("{n} messages in {secs:.1} s ({:.0}/s)", n as f64 / secs.max(1e-3));
            if expired.tokens > 0 || expired.seen > 0 {
                strainer::outln!(
                    "expired {} features and {} digests (bayes.max_tokens, bayes.max_seen)",
                    expired.tokens,
                    expired.seen
                );
            }
            strainer::train_cmd::print_stats(&*store, &config, false)?;
            let bad: Vec<&String> = s.unreadable.iter().chain(&h.unreadable).collect();
            if !bad.is_empty() {
                for b in bad.iter().take(10) {
                    eprintln!("unreadable: {b}");
                }
                anyhow::bail!("{} files could not be read (listed above); the rest were learnt", bad.len());
            }
            Ok(())
        }
        Cmd::Bayes { config: path, command } => {
            let config = load(path.as_ref())?;
            let base = base_of(path.as_ref());
            match command {
                BayesCmd::Stats { json } => {
                    strainer::bayes_cmd::must_exist(&config.bayes, &base)?;
                    strainer::train_cmd::print_stats(&*config.bayes.open(&base)?, &config, json)
                }
                BayesCmd::Expire => {
                    strainer::bayes_cmd::must_exist(&config.bayes, &base)?;
                    let store = config.bayes.open(&base)?;
                    let e = store.expire(&config.bayes.expiry())?;
                    strainer::outln!("expired {} features and {} digests", e.tokens, e.seen);
                    strainer::train_cmd::print_stats(&*store, &config, false)
                }
                BayesCmd::Backup { dir } => strainer::bayes_cmd::backup(&config.bayes, &base, &dir),
                BayesCmd::Export { file } => strainer::bayes_cmd::export(&config.bayes, &base, file.as_deref()),
                BayesCmd::Import { file } => {
                    let store = strainer::bayes_cmd::import(&config.bayes, &base, &file)?;
                    strainer::train_cmd::print_stats(&*store, &config, false)
                }
                BayesCmd::Restore { source } => {
                    let store = strainer::bayes_cmd::restore(&config.bayes, &base, &source)?;
                    strainer::train_cmd::print_stats(&*store, &config, false)
                }
            }
        }
        Cmd::LearnItems { path, map_size_mb, train_passes, max_tokens, max_seen } => {
            let bayes = strainer::bayes::BayesConfig {
                path,
                map_size_mb,
                train_passes,
                max_tokens,
                max_seen,
                ..Default::default()
            };
            let (new, expired) = strainer::autolearn::learn_items(&bayes, std::io::stdin().lock())?;
            strainer::outln!("{new} {expired}");
            Ok(())
        }
        Cmd::Config { command: ConfigCmd::Check { file } } => {
            let config = Config::load(&file)?;
            compile(&config, Some(&file))?;
            strainer::outln!("{}: ok", file.display());
            Ok(())
        }
        Cmd::Scan { files, json, config: path, explain } => {
            let mut config = load(path.as_ref())?;
            config.bayes.explain = explain;
            let local = compile(&config, path.as_ref())?;
            if !scan(&files, json, &local, &config.policy)? {
                std::process::exit(3);
            }
            Ok(())
        }
        Cmd::Selftest { config: path, postfix_config_dir, no_postfix, send_to } => {
            let mut config = load(path.as_ref())?;
            // The store path as serve resolves it (relative to the config file's folder).
            config.bayes.path = config.bayes.lmdb_path(&base_of(path.as_ref()));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let checks = rt.block_on(strainer::selftest::run_all(
                &config,
                !no_postfix,
                postfix_config_dir.as_deref(),
                send_to.as_deref(),
            ));
            checks.iter().for_each(|c| strainer::outln!("{c}"));
            if checks.iter().any(|c| !c.ok) {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Reload { config: path } => {
            let config = load(path.as_ref())?;
            if config.server.pid_file.is_empty() {
                anyhow::bail!(
                    "server.pid_file is not set, so the running strainer cannot be found: set it, or use `systemctl reload strainer` / `kill -HUP <pid>`"
                );
            }
            let pid = std::fs::read_to_string(&config.server.pid_file).with_context(|| {
                format!("cannot read {} (server.pid_file): is strainer running?", config.server.pid_file)
            })?;
            let pid = pid.trim();
            if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
                anyhow::bail!("{} does not hold a process id", config.server.pid_file);
            }
            let ok = std::process::Command::new("kill").args(["-HUP", pid]).status().context("cannot run kill")?;
            if !ok.success() {
                anyhow::bail!("process {pid} from {} is not running: start strainer", config.server.pid_file);
            }
            strainer::outln!(
                "asked strainer (pid {pid}) to reload; its log says whether the new configuration was taken"
            );
            Ok(())
        }
        Cmd::Quarantine { config: path, command } => {
            let config = load(path.as_ref())?;
            if !config.quarantine.dir.exists() {
                // Not created from here: as root it would be root's, and `serve` could not write it.
                let dir = config.quarantine.dir.display();
                if !matches!(command, QuarantineCmd::List { .. } | QuarantineCmd::Purge { .. }) {
                    anyhow::bail!(
                        "no quarantine at {dir} (quarantine.dir): `strainer serve` creates it when it starts; is --config the file `serve` runs with?"
                    );
                }
                if !matches!(command, QuarantineCmd::List { json: true, .. }) {
                    strainer::outln!(
                        "(no quarantined messages: {dir} does not exist yet; `strainer serve` creates it when it starts)"
                    );
                }
                return Ok(());
            }
            let store = strainer_quarantine::Store::open(&config.quarantine.dir).with_context(|| {
                format!("cannot open the quarantine (quarantine.dir = {})", config.quarantine.dir.display())
            })?;
            use strainer::quarantine_cmd as q;
            match command {
                QuarantineCmd::List { since, category, sender, recipient, json } => {
                    let entries = q::list(&store, &q::Filter { since, category, sender, recipient })?;
                    if json {
                        entries
                            .iter()
                            .for_each(|m| strainer::outln!("{}", serde_json::to_string(m).unwrap_or_default()));
                    } else {
                        strainer::out!("{}", q::render_list(&entries));
                    }
                }
                QuarantineCmd::Show { id, raw } => {
                    let message = store.message(&id)?;
                    if raw {
                        strainer::write_stdout(&message).context("cannot write to stdout")?;
                    } else {
                        strainer::out!("{}", q::render_show(&store.meta(&id)?, &message));
                    }
                }
                QuarantineCmd::Release { id, to, force, learn_ham } => {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("cannot start the async runtime")?;
                    strainer::outln!("{}", rt.block_on(q::release(&config, &store, &id, &to, force))?);
                    if learn_ham {
                        let msg = store.message(&id)?;
                        strainer::outln!("{}", learn_one(&config, path.as_ref(), &msg, strainer_bayes::Class::Ham)?);
                    }
                }
                QuarantineCmd::Delete { id, learn_spam } => {
                    if learn_spam {
                        let msg = store.message(&id)?;
                        strainer::outln!("{}", learn_one(&config, path.as_ref(), &msg, strainer_bayes::Class::Spam)?);
                    }
                    store.delete(&id)?;
                    strainer::outln!("{id} deleted");
                }
                QuarantineCmd::Purge { older_than } => {
                    let n = store.purge(older_than)?;
                    strainer::outln!("{n} message(s) purged");
                }
            }
            Ok(())
        }
        Cmd::Rules { command: RulesCmd::Test { map, input } } => {
            let text = std::fs::read_to_string(&map).with_context(|| format!("cannot read {}", map.display()))?;
            let table = strainer_rules::Table::parse(&text, &map.display().to_string())?;
            match table.lookup(&input) {
                Some(hit) => {
                    strainer::outln!("{}", hit.action);
                    eprintln!("({}:{})", hit.origin, hit.line);
                    Ok(())
                }
                None => {
                    eprintln!("no rule in {} matches", map.display());
                    std::process::exit(1);
                }
            }
        }
        Cmd::Config { command: ConfigCmd::Show { config } } => {
            strainer::out!("{}", load(config.as_ref())?.to_toml());
            Ok(())
        }
        Cmd::PostfixConfig { config } => {
            strainer::out!("{}", strainer::postfix::wiring(&load(config.as_ref())?));
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strainer: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, one after another, leaving out a cause whose text the message
/// holds already (errors that name their cause in their own text, such as the store's).
fn chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}
