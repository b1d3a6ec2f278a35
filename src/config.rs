//! strainer's configuration: the TOML schema with its defaults, loading with errors that name
//! file, line and key, and the conversion into each crate's own settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use strainer_receive::{SessionConfig, SpoolConfig};
use strainer_relay::RelayConfig;

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The receiving side (Postfix's `content_filter` delivers here).
    pub server: ServerConfig,
    /// The re-injection side (Postfix's second smtpd).
    pub relay: RelaySection,
    /// Limits on taking a message apart.
    pub mime: strainer_mime::Limits,
    /// The banned-attachments scanner.
    pub banned: crate::scanners::BannedConfig,
    /// Postfix-style rule maps.
    pub rules: crate::scanners::RulesConfig,
    /// Virus scanning with clamd.
    pub clamav: strainer_clamav::Config,
    /// The Bayesian token scorer.
    pub bayes: crate::bayes::BayesConfig,
    /// Where held messages go.
    pub quarantine: QuarantineConfig,
    /// Scores, thresholds and actions.
    pub policy: strainer_policy::Config,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
}

/// `[metrics]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where to serve `GET /metrics` (e.g. `127.0.0.1:9535`); unset: no endpoint.
    pub listen: Option<SocketAddr>,
}

/// `[quarantine]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantineConfig {
    /// The store's directory (created mode 0700).
    pub dir: std::path::PathBuf,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        QuarantineConfig { dir: "/var/lib/strainer/quarantine".into() }
    }
}

/// Which protocol the listener speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// SMTP (Postfix `smtp` transport).
    #[default]
    Smtp,
    /// LMTP (Postfix `lmtp` transport): one reply per recipient.
    Lmtp,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// `smtp` or `lmtp`.
    pub protocol: Protocol,
    /// Our name in greetings, EHLO and Received headers; must not be Postfix's `$myhostname`.
    pub hostname: String,
    /// Concurrent sessions; more are answered 421. Match the scan transport's maxproc.
    pub max_sessions: usize,
    /// Largest message in bytes (announced as SIZE).
    pub max_message_size: usize,
    /// Recipients per transaction.
    pub max_recipients: usize,
    /// Longest command line.
    pub max_line_length: usize,
    /// Bad commands tolerated per session.
    pub max_errors: u32,
    /// Refuse (554 5.4.6) a message already carrying this many of our Received headers.
    pub max_passes: usize,
    /// Clients allowed to send XFORWARD.
    pub xforward_hosts: Vec<IpNet>,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// Where `serve` writes its process id, for `strainer reload`; empty for none.
    pub pid_file: String,
    /// Directory for messages spooled while received (on disk, not a tmpfs).
    pub spool_dir: PathBuf,
    /// Messages larger than this many bytes are spooled to `spool_dir` as they arrive.
    pub spool_threshold: usize,
    /// Memory in bytes that scanning spooled messages may take at once (about 3x their size).
    pub spool_memory: usize,
}

/// `[server.timeouts]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Waiting for the next command.
    #[serde(with = "humantime_serde")]
    pub command: Duration,
    /// Receiving the whole DATA.
    #[serde(with = "humantime_serde")]
    pub data: Duration,
    /// From end of DATA to our reply; below Postfix's smtp_data_done_timeout (600s).
    #[serde(with = "humantime_serde")]
    pub transaction: Duration,
    /// After SIGTERM, how long transactions in flight may take before they get 421.
    #[serde(with = "humantime_serde")]
    pub shutdown: Duration,
}

/// `[relay]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySection {
    /// `host:port` of Postfix's re-injection smtpd.
    pub address: String,
    /// EHLO name towards it; defaults to `server.hostname`.
    pub hostname: Option<String>,
    /// Connecting and reading the greeting.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Each command's reply.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Sending the message and reading the reply to the final dot.
    #[serde(with = "humantime_serde")]
    pub data_timeout: Duration,
    /// Connections kept open for the next message (0: a new connection for every message).
    pub max_idle: usize,
    /// How long an idle connection is kept; well below the smtpd's own timeout (300s).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 10025)),
            protocol: Protocol::Smtp,
            hostname: "strainer.localhost".into(),
            max_sessions: 20,
            max_message_size: 20 * 1024 * 1024,
            max_recipients: 1000,
            max_line_length: 4096,
            max_errors: 20,
            max_passes: 3,
            xforward_hosts: ["127.0.0.0/8", "::1/128"].iter().filter_map(|s| s.parse().ok()).collect(),
            timeouts: Timeouts::default(),
            pid_file: String::new(),
            spool_dir: PathBuf::from("/var/tmp"),
            spool_threshold: 256 * 1024,
            spool_memory: 64 * 1024 * 1024,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            command: Duration::from_secs(300),
            data: Duration::from_secs(300),
            transaction: Duration::from_secs(300),
            shutdown: Duration::from_secs(30),
        }
    }
}

impl Default for RelaySection {
    fn default() -> Self {
        RelaySection {
            address: "127.0.0.1:10026".into(),
            hostname: None,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(60),
            data_timeout: Duration::from_secs(180),
            max_idle: 8,
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// A configuration error that says where.
#[derive(Debug)]
pub struct ConfigError {
    /// File name, or `<default>`.
    pub origin: String,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// Dotted key path, e.g. `server.listen`.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.key.as_str()) {
            (0, "") => write!(f, "{}: {}", self.origin, self.message),
            (0, key) => write!(f, "{}: {key}: {}", self.origin, self.message),
            (line, key) => write!(f, "{}:{line}:{}: {key}: {}", self.origin, self.column, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |i| before.len() - i - 1) + 1;
    (line, column)
}

/// Where `key` in `[section]` is written, for errors found after parsing.
fn locate(text: &str, section: &str, key: &str) -> (usize, usize) {
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            current = s.trim().to_string();
        } else if current == section && l.split('=').next().map(str::trim) == Some(key) {
            return (i + 1, raw.len() - raw.trim_start().len() + 1);
        }
    }
    (0, 0)
}

impl Config {
    /// The Bayes tokenizer's options: it leaves out bayes.ignore_headers, strainer's own fields
    /// and the field strainer stamps scanned mail with (clamav.header).
    pub fn bayes_options(&self) -> anyhow::Result<strainer_bayes::Options> {
        let stamp = Some(self.clamav.header.as_str()).filter(|h| !h.is_empty());
        let fields = self.bayes.ignore_headers.iter().map(String::as_str).chain(stamp);
        let ignore =
            strainer_bayes::IgnoreHeaders::new(fields).map_err(|e| anyhow::anyhow!("bayes.ignore_headers: {e}"))?;
        Ok(strainer_bayes::Options { ignore, ..Default::default() })
    }

    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let (line, column) = inner.span().map_or((0, 0), |s| line_col(text, s.start));
            ConfigError { origin: origin.into(), line, column, key, message: inner.message().trim().to_string() }
        })?;
        cfg.validate(text, origin)?;
        Ok(cfg)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read the configuration file: {e}; give an existing file with --config, or leave --config out to run on the embedded defaults"),
        })?;
        let mut config = Config::parse(&text, &origin)?;
        config.resolve_from(path.parent().unwrap_or(Path::new("")));
        Ok(config)
    }

    /// Takes a relative `quarantine.dir` and `server.pid_file` from `folder` (the configuration
    /// file's), as `bayes.path` and the rule files are: `serve` and the CLI, started from
    /// different directories, must find the same quarantine.
    fn resolve_from(&mut self, folder: &Path) {
        if self.quarantine.dir.is_relative() {
            self.quarantine.dir = folder.join(&self.quarantine.dir);
        }
        if !self.server.pid_file.is_empty() && Path::new(&self.server.pid_file).is_relative() {
            self.server.pid_file = folder.join(&self.server.pid_file).display().to_string();
        }
    }

    fn validate(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let err = |section: &str, key: &str, message: String| {
            let (line, column) = locate(text, section, key);
            let full = if section.is_empty() { key.to_string() } else { format!("{section}.{key}") };
            Err(ConfigError { origin: origin.into(), line, column, key: full, message })
        };
        let s = &self.server;
        let t = &s.timeouts;
        if s.hostname.is_empty() || s.hostname.contains(char::is_whitespace) {
            return err("server", "hostname", "must be a host name without spaces".into());
        }
        if s.max_sessions == 0 {
            return err("server", "max_sessions", "must be at least 1".into());
        }
        let b = &self.bayes;
        if !(b.threshold > 0.0 && b.threshold.is_finite()) {
            return err(
                "bayes",
                "threshold",
                format!("must be a positive score (the default is {})", strainer_bayes::DEFAULT_THRESHOLD),
            );
        }
        if b.map_size_mb < 16 {
            return err("bayes", "map_size_mb", "must be at least 16 (MiB)".into());
        }
        if b.max_tokens < 10_000 {
            return err(
                "bayes",
                "max_tokens",
                "must be at least 10000; a useful model holds a few hundred thousand".into(),
            );
        }
        if !(1..=10).contains(&b.train_passes) {
            return err(
                "bayes",
                "train_passes",
                format!("must be 1 to 10 (the default is {}; 1 trains fastest)", crate::bayes::DEFAULT_TRAIN_PASSES),
            );
        }
        if !(1..=100_000).contains(&b.train_batch) {
            return err(
                "bayes",
                "train_batch",
                format!(
                    "must be 1 to 100000 messages (the default is {}; lower it where `strainer train` must use less memory)",
                    crate::bayes::DEFAULT_TRAIN_BATCH
                ),
            );
        }
        if !(b.autolearn_spam.is_finite() && b.autolearn_spam >= b.threshold) {
            return err(
                "bayes",
                "autolearn_spam",
                format!(
                    "must be at least bayes.threshold ({}); the default is {}",
                    b.threshold,
                    crate::bayes::DEFAULT_AUTOLEARN_SPAM
                ),
            );
        }
        if !(b.autolearn_ham.is_finite() && b.autolearn_ham <= -b.threshold) {
            return err(
                "bayes",
                "autolearn_ham",
                format!(
                    "must be at most minus bayes.threshold ({}); the default is {}",
                    -b.threshold,
                    crate::bayes::DEFAULT_AUTOLEARN_HAM
                ),
            );
        }
        if let Err(e) = strainer_bayes::IgnoreHeaders::new(&b.ignore_headers) {
            return err("bayes", "ignore_headers", e);
        }
        let h = &self.clamav.header;
        if !h.is_empty() && (h.contains('*') || strainer_bayes::IgnoreHeaders::new([h]).is_err()) {
            return err(
                "clamav",
                "header",
                format!("{h:?} is not a header field name (printable ASCII without ':' or spaces)"),
            );
        }
        if b.min_points > 0.0 || b.max_points < 0.0 {
            return err("bayes", "max_points", "min_points must be <= 0 <= max_points".into());
        }
        if b.backend == crate::bayes::Backend::Redis && redis::parse_redis_url(&b.redis_url).is_none() {
            return err("bayes", "redis_url", "must be a redis:// URL, e.g. redis://127.0.0.1:6379/0".into());
        }
        if s.max_recipients == 0 {
            return err("server", "max_recipients", "must be at least 1".into());
        }
        if s.max_message_size < 10_240_000 {
            return err(
                "server",
                "max_message_size",
                "must be at least Postfix's default message_size_limit (10240000)".into(),
            );
        }
        if !s.spool_dir.is_absolute() {
            return err("server", "spool_dir", "must be an absolute path to a directory on disk".into());
        }
        if s.spool_memory < 4 * 1024 * 1024 {
            return err("server", "spool_memory", "must be at least 4194304 (4 MiB)".into());
        }
        if s.max_line_length < 512 {
            return err("server", "max_line_length", "must be at least 512 (RFC 5321)".into());
        }
        if s.max_passes == 0 {
            return err("server", "max_passes", "must be at least 1".into());
        }
        if t.transaction >= Duration::from_secs(600) {
            return err(
                "server.timeouts",
                "transaction",
                "must be below Postfix's smtp_data_done_timeout (600s), or Postfix gives up first and delivers twice"
                    .into(),
            );
        }
        if t.command.is_zero() || t.data.is_zero() || t.transaction.is_zero() {
            return err("server.timeouts", "command", "timeouts must be above zero".into());
        }
        let r = &self.relay;
        if r.address.parse::<SocketAddr>().is_err() && !r.address.contains(':') {
            return err("relay", "address", format!("`{}` is not host:port", r.address));
        }
        if r.connect_timeout + r.data_timeout >= t.transaction {
            return err(
                "relay",
                "data_timeout",
                "relay.connect_timeout + relay.data_timeout must be below server.timeouts.transaction".into(),
            );
        }
        let c = &self.clamav;
        if c.enabled && c.addresses.is_empty() {
            return err("clamav", "addresses", "clamav is enabled but no clamd address is given".into());
        }
        if c.enabled && c.scan_timeout + r.data_timeout >= t.transaction {
            return err(
                "clamav",
                "scan_timeout",
                "clamav.scan_timeout + relay.data_timeout must be below server.timeouts.transaction".into(),
            );
        }
        if c.max_concurrency == 0 {
            return err("clamav", "max_concurrency", "must be at least 1".into());
        }
        if r.hostname.as_ref().is_some_and(|h| h.is_empty() || h.contains(char::is_whitespace)) {
            return err("relay", "hostname", "must be a host name without spaces".into());
        }
        Ok(())
    }

    /// The effective configuration as TOML, defaults included.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// The receive crate's settings.
    pub fn session(&self) -> SessionConfig {
        let s = &self.server;
        SessionConfig {
            hostname: s.hostname.clone(),
            lmtp: s.protocol == Protocol::Lmtp,
            max_message_size: s.max_message_size,
            max_recipients: s.max_recipients,
            max_line_length: s.max_line_length,
            max_errors: s.max_errors,
            command_timeout: s.timeouts.command,
            data_timeout: s.timeouts.data,
            transaction_timeout: s.timeouts.transaction,
            xforward_hosts: s.xforward_hosts.clone(),
            spool: SpoolConfig::new(&s.spool_dir, s.spool_threshold, s.spool_memory),
        }
    }

    /// The relay crate's settings.
    pub fn relay(&self) -> RelayConfig {
        let r = &self.relay;
        RelayConfig {
            address: r.address.clone(),
            hostname: r.hostname.clone().unwrap_or_else(|| self.server.hostname.clone()),
            connect_timeout: r.connect_timeout,
            command_timeout: r.command_timeout,
            data_timeout: r.data_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::parse("", "x").unwrap(), Config::default());
    }

    #[test]
    fn defaults_stay_valid_with_clamav_enabled() {
        Config::parse("[clamav]\nenabled = true\n", "x").unwrap();
    }

    #[test]
    fn default_round_trips_through_show() {
        let d = Config::default();
        assert_eq!(Config::parse(&d.to_toml(), "shown").unwrap(), d);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nmax_sesions = 3\n", "s.toml").unwrap_err();
        assert_eq!((e.origin.as_str(), e.line), ("s.toml", 3), "{e}");
        assert!(e.to_string().contains("max_sesions"), "{e}");
    }

    #[test]
    fn bad_value_names_key() {
        let e = Config::parse("[server]\n\nlisten = \"nowhere\"\n", "s.toml").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert_eq!(e.key, "server.listen");
        let e = Config::parse("[server.timeouts]\ncommand = \"5 parsecs\"\n", "s.toml").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "server.timeouts.command"), "{e}");
    }

    #[test]
    fn semantic_errors_are_located() {
        let e = Config::parse("[server.timeouts]\n\ntransaction = \"700s\"\n", "s.toml").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (3, "server.timeouts.transaction"), "{e}");
        assert!(e.message.contains("600s"));
        let e = Config::parse("[server]\nlisten = \"127.0.0.1:10025\"\nspool_dir = \"spool\"\n", "s.toml").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (3, "server.spool_dir"), "{e}");
        let e = Config::parse("[bayes]\ntrain_passes = 0\n", "s.toml").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "bayes.train_passes"), "{e}");
        assert!(e.message.contains("1 trains fastest"), "{e}");
        let e = Config::parse("[bayes]\n\ntrain_batch = 0\n", "s.toml").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (3, "bayes.train_batch"), "{e}");
        assert!(e.to_string().contains("less memory"), "{e}");
        let e = Config::parse("[bayes]\n\nautolearn_ham = -2.0\n", "s.toml").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (3, "bayes.autolearn_ham"), "{e}");
        let e = Config::parse("[bayes]\nthreshold = 40.0\n", "s.toml").unwrap_err();
        assert_eq!(e.key.as_str(), "bayes.autolearn_spam", "{e}");
        let e =
            Config::parse("[bayes]\nignore_headers = [\n  \"X-Bogosity\",\n  \"X-Spam:\",\n]\n", "s.toml").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "bayes.ignore_headers"), "{e}");
        assert!(e.message.contains("\"X-Spam:\"") && e.message.contains("':'"), "{e}");
        let e = Config::parse("[clamav]\nheader = \"X-Virus *\"\n", "s.toml").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "clamav.header"), "{e}");
    }

    /// Bayes leaves out the configured fields, strainer's own and the field it stamps scanned
    /// mail with, whatever that is named.
    #[test]
    fn bayes_ignores_the_configured_fields_and_the_virus_stamp() {
        let ignore = Config::default().bayes_options().unwrap().ignore;
        for f in ["X-Amavis-Alert", "X-Bogosity", "X-Virus-Scanned", "X-Spam-Flag", "X-Strainer-Released"] {
            assert!(ignore.skips(f.as_bytes()), "{f}");
        }
        assert!(!ignore.skips(b"X-Mailer"));
        let cfg =
            Config::parse("[clamav]\nheader = \"X-Scanned-By\"\n[bayes]\nignore_headers = []\n", "s.toml").unwrap();
        let ignore = cfg.bayes_options().unwrap().ignore;
        assert!(ignore.skips(b"x-scanned-by") && ignore.skips(b"X-Spam-Status"));
        assert!(!ignore.skips(b"X-Bogosity") && !ignore.skips(b"X-Virus-Scanned"));
    }

    /// Relative paths mean the same to `serve` and to the CLI, wherever each was started.
    #[test]
    fn relative_quarantine_and_pid_file_are_taken_from_the_config_folder() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("strainer.toml");
        std::fs::write(&file, "[server]\npid_file = \"run/strainer.pid\"\n[quarantine]\ndir = \"q\"\n").unwrap();
        let c = Config::load(&file).unwrap();
        assert_eq!(c.quarantine.dir, d.path().join("q"));
        assert_eq!(c.server.pid_file, d.path().join("run/strainer.pid").display().to_string());
        std::fs::write(&file, "[quarantine]\ndir = \"/srv/q\"\n").unwrap();
        let c = Config::load(&file).unwrap();
        assert_eq!((c.quarantine.dir.as_path(), c.server.pid_file.as_str()), (Path::new("/srv/q"), ""));
    }
}

#[cfg(test)]
mod readme {
    use super::*;

    /// The configuration the Debian package installs is the defaults, annotated.
    #[test]
    fn packaged_config_is_the_default() {
        let cfg = Config::parse(include_str!("deb/strainer.toml"), "src/deb/strainer.toml").unwrap();
        assert_eq!(cfg, Config::default());
    }

    /// The README's annotated configuration is valid and says what the defaults are.
    #[test]
    fn readme_example_is_the_default() {
        let readme = include_str!("../README.md");
        let start = readme.find("```toml\n").expect("README has a toml block") + 8;
        let len = readme[start..].find("```").expect("block is closed");
        let cfg = Config::parse(&readme[start..start + len], "README.md").unwrap();
        assert_eq!(cfg, Config::default());
    }
}
