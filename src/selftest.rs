//! `strainer selftest`: checks the chain a running strainer depends on and prints one line per
//! check, OK or FAIL with what to do.

use std::time::Duration;

use strainer_types::Reply;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::Config;

/// One check's result.
pub struct Check {
    /// Passed or not.
    pub ok: bool,
    /// What was checked and what was seen.
    pub what: String,
    /// What to do about a failure.
    pub advice: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ok {
            write!(f, "OK    {}", self.what)
        } else {
            write!(f, "FAIL  {}\n      -> {}", self.what, self.advice)
        }
    }
}

fn ok(what: String) -> Check {
    Check { ok: true, what, advice: String::new() }
}

fn fail(what: String, advice: impl Into<String>) -> Check {
    Check { ok: false, what, advice: advice.into() }
}

async fn read_reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Result<Reply, String> {
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed".to_string());
        }
        let l = l.trim_end().to_string();
        let last = l.as_bytes().get(3) != Some(&b'-');
        lines.push(l);
        if last {
            return Reply::parse(&lines).ok_or_else(|| format!("not SMTP: {lines:?}"));
        }
    }
}

/// EHLOs `address` and returns the extension keywords offered.
async fn ehlo(address: &str) -> Result<Vec<String>, String> {
    let fut = async {
        let s = TcpStream::connect(address).await.map_err(|e| format!("cannot connect: {e}"))?;
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let greeting = read_reply(&mut r).await?;
        if greeting.code != 220 {
            return Err(format!("greeting {greeting}"));
        }
        w.write_all(b"EHLO selftest.strainer.localhost\r\n").await.map_err(|e| e.to_string())?;
        let reply = read_reply(&mut r).await?;
        let _ = w.write_all(b"QUIT\r\n").await;
        if reply.code != 250 {
            return Err(format!("EHLO answered {reply}"));
        }
        Ok(reply
            .lines
            .iter()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_ascii_uppercase)
            .collect())
    };
    timeout(Duration::from_secs(10), fut).await.map_err(|_| "no answer within 10s".to_string())?
}

const NEEDED: [&str; 6] = ["PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN"];

/// Runs `postconf [-c dir] args` and returns its output, or `None` when it is not there or fails.
fn postconf(dir: Option<&std::path::Path>, args: &[&str]) -> Option<String> {
    let mut cmd = std::process::Command::new("postconf");
    if let Some(d) = dir {
        cmd.arg("-c").arg(d);
    }
    let out = cmd.args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn unbracket(s: &str) -> String {
    s.replace(['[', ']'], "").trim_start_matches("inet:").to_string()
}

/// Postfix's side of the wiring, read with postconf (main.cf and master.cf in `dir`, or the
/// default configuration).
pub fn postfix_checks(config: &Config, dir: Option<&std::path::Path>) -> Vec<Check> {
    let mut out = Vec::new();
    let Some(filter) = postconf(dir, &["-h", "content_filter"]) else {
        out.push(ok("postconf not found or not readable: Postfix checks skipped".into()));
        return out;
    };
    let listen = config.server.listen.to_string();
    let wiring = "see `strainer postfix-config` for the lines to use, then `postfix reload`";
    let Some((transport, nexthop)) = filter.split_once(':') else {
        out.push(fail(
            format!("main.cf content_filter is {filter:?}: mail does not go through strainer"),
            format!(
                "set `content_filter = scan:[{}]:{}`; {wiring}",
                config.server.listen.ip(),
                config.server.listen.port()
            ),
        ));
        return out;
    };
    if unbracket(nexthop) == listen {
        out.push(ok(format!("main.cf content_filter = {filter} points at strainer")));
    } else {
        out.push(fail(
            format!("main.cf content_filter = {filter} does not point at strainer ({listen})"),
            wiring.to_string(),
        ));
    }
    let service = postconf(dir, &["-M", &format!("{transport}/unix")]).unwrap_or_default();
    let fields: Vec<&str> = service.split_whitespace().collect();
    if fields.len() < 8 {
        out.push(fail(format!("master.cf has no `{transport} unix` service for content_filter"), wiring.to_string()));
    } else {
        let maxproc = match fields[6] {
            "-" => postconf(dir, &["-h", "default_process_limit"]).and_then(|v| v.parse::<usize>().ok()).unwrap_or(100),
            n => n.parse().unwrap_or(usize::MAX),
        };
        let max = config.server.max_sessions;
        if maxproc <= max {
            out.push(ok(format!("master.cf `{transport}` maxproc {maxproc} is within strainer's max_sessions {max}")));
        } else {
            out.push(fail(
                format!("master.cf `{transport}` maxproc {maxproc} is above strainer's max_sessions {max}: Postfix will meet 421s"),
                format!("set maxproc of `{transport}` to {max} in master.cf, or raise server.max_sessions"),
            ));
        }
        let proto = if config.server.protocol == crate::config::Protocol::Lmtp { "lmtp" } else { "smtp" };
        if fields[7] != proto {
            out.push(fail(
                format!("master.cf `{transport}` runs {} but strainer speaks {proto}", fields[7]),
                wiring.to_string(),
            ));
        }
    }
    let params = postconf(dir, &["-P"]).unwrap_or_default();
    let has = |service: &str, name: &str| {
        params
            .lines()
            .find(|l| l.starts_with(&format!("{service}/{name} =")))
            .map(|l| l.split_once('=').map(|(_, v)| v.trim().to_string()).unwrap_or_default())
    };
    let proto = if config.server.protocol == crate::config::Protocol::Lmtp { "lmtp" } else { "smtp" };
    if has(&format!("{transport}/unix"), &format!("{proto}_send_xforward_command")).as_deref() != Some("yes") {
        out.push(fail(
            format!("master.cf `{transport}` does not send XFORWARD: strainer cannot log the real client or Postfix queue id"),
            format!("add `-o {proto}_send_xforward_command=yes` to `{transport}` in master.cf"),
        ));
    }
    let relay = format!("{}/inet", config.relay.address);
    match has(&relay, "content_filter") {
        Some(v) if v.is_empty() => {
            out.push(ok(format!("master.cf {} clears content_filter (no loop)", config.relay.address)))
        }
        _ => out.push(fail(
            format!(
                "master.cf {} does not clear content_filter: filtered mail would be filtered again",
                config.relay.address
            ),
            format!("add `-o content_filter=` to the {} smtpd in master.cf", config.relay.address),
        )),
    }
    if has(&relay, "smtpd_authorized_xforward_hosts").is_some_and(|v| !v.is_empty()) {
        out.push(ok(format!("master.cf {} accepts XFORWARD", config.relay.address)));
    } else {
        out.push(fail(
            format!(
                "master.cf {} does not authorise XFORWARD: the original client is lost downstream",
                config.relay.address
            ),
            format!(
                "add `-o smtpd_authorized_xforward_hosts=127.0.0.0/8` to the {} smtpd in master.cf",
                config.relay.address
            ),
        ));
    }
    let limit = postconf(dir, &["-h", "message_size_limit"]).and_then(|v| v.parse::<u64>().ok()).unwrap_or(10_240_000);
    let ours = config.server.max_message_size as u64;
    if limit == 0 || limit > ours {
        out.push(fail(
            format!("main.cf message_size_limit {limit} is above strainer's SIZE {ours}: big mail would bounce at the filter"),
            format!("lower message_size_limit below {ours}, or raise server.max_message_size"),
        ));
    } else {
        out.push(ok(format!("main.cf message_size_limit {limit} fits strainer's SIZE {ours}")));
    }
    let myhostname = postconf(dir, &["-h", "myhostname"]).unwrap_or_default();
    if myhostname.eq_ignore_ascii_case(&config.server.hostname) {
        out.push(fail(
            format!("strainer's server.hostname is Postfix's myhostname ({myhostname}): Postfix reports a mail loop"),
            "give server.hostname a name of its own (default strainer.localhost)",
        ));
    } else {
        out.push(ok(format!(
            "strainer's name {} differs from Postfix's myhostname {myhostname}",
            config.server.hostname
        )));
    }
    out
}

/// Sends a small test message through strainer's listener to `to` and checks that strainer's
/// answer carries the re-injection smtpd's queue id, i.e. it came out on the other side.
pub async fn send_through(config: &Config, to: &str) -> Check {
    let token = strainer_receive::new_id();
    let message = format!(
        "From: strainer selftest <MAILER-DAEMON@{host}>\r\nTo: <{to}>\r\nSubject: strainer selftest {token}\r\n\
Message-ID: <selftest.{token}@{host}>\r\nAuto-Submitted: auto-generated\r\n\r\nThis message tests the content filter; it can be discarded.\r\n",
        host = config.server.hostname
    );
    let relay = strainer_relay::RelayConfig {
        address: config.server.listen.to_string(),
        hostname: "selftest.strainer.localhost".into(),
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(30),
        data_timeout: config.server.timeouts.transaction + Duration::from_secs(10),
    };
    let env = strainer_types::Envelope {
        sender: String::new(),
        params: Default::default(),
        recipients: vec![strainer_types::Recipient::new(to)],
    };
    let out = strainer_relay::Outgoing {
        envelope: &env,
        client: &Default::default(),
        prefix: b"",
        message: message.as_bytes(),
    };
    match strainer_relay::deliver(&relay, out).await {
        Ok(d) => {
            let reply = d
                .data
                .as_ref()
                .map(Reply::one_line)
                .unwrap_or_else(|| d.recipients.first().map(Reply::one_line).unwrap_or_default());
            if d.all_accepted() && reply.contains("queued as") {
                ok(format!("a test message to <{to}> went through strainer and out to the re-injection smtpd: {reply}"))
            } else {
                fail(
                    format!("a test message to <{to}> did not come out of the re-injection smtpd: {reply}"),
                    "read strainer's log line for it; check [relay] address and the :10026 smtpd",
                )
            }
        }
        Err(e) => fail(
            format!("a test message to <{to}> could not be sent to strainer: {e}"),
            "start strainer, or check server.listen",
        ),
    }
}

/// Runs every check that applies to `config`; `postfix_dir` is Postfix's configuration
/// directory (`None`: postconf's default), and Postfix is skipped when `postfix` is false;
/// with `send_to`, a test message goes through the whole chain last.
pub async fn run_all(
    config: &Config,
    postfix: bool,
    postfix_dir: Option<&std::path::Path>,
    send_to: Option<&str>,
) -> Vec<Check> {
    let mut out = run(config).await;
    if postfix {
        out.extend(postfix_checks(config, postfix_dir));
    }
    if let Some(to) = send_to {
        out.push(send_through(config, to).await);
    }
    out
}

/// Runs the checks of strainer's own chain (listener, re-injection smtpd, clamd).
pub async fn run(config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    let listen = config.server.listen.to_string();
    match ehlo(&listen).await {
        Ok(ext) => {
            let missing: Vec<&str> = NEEDED.iter().copied().filter(|n| !ext.iter().any(|e| e == n)).collect();
            if missing.is_empty() {
                out.push(ok(format!("strainer answers on {listen} and offers {}", NEEDED.join(" "))));
            } else {
                out.push(fail(
                    format!("strainer on {listen} does not offer {}", missing.join(" ")),
                    "check that this is strainer and not another filter",
                ));
            }
        }
        Err(e) => out.push(fail(
            format!("strainer on {listen}: {e}"),
            "start it: `strainer serve --config FILE` (or check server.listen)",
        )),
    }
    let relay = &config.relay.address;
    match ehlo(relay).await {
        Ok(ext) if ext.iter().any(|e| e == "XFORWARD") => {
            out.push(ok(format!("re-injection smtpd on {relay} answers and accepts XFORWARD")))
        }
        Ok(_) => out.push(fail(
            format!("re-injection smtpd on {relay} does not offer XFORWARD to us"),
            "add `-o smtpd_authorized_xforward_hosts=127.0.0.0/8` to its master.cf entry (see `strainer postfix-config`)",
        )),
        Err(e) => out.push(fail(
            format!("re-injection smtpd on {relay}: {e}"),
            "add the 127.0.0.1:10026 smtpd from `strainer postfix-config` to master.cf and `postfix reload`",
        )),
    }
    if config.clamav.enabled {
        let client = strainer_clamav::Client::new(config.clamav.clone());
        let at = config.clamav.addresses.join(", ");
        match client.version().await {
            Err(e) => out.push(fail(
                format!("clamd at {at}: {e}"),
                "start clamd (`systemctl start clamav-daemon`) or fix clamav.addresses",
            )),
            Ok(v) => {
                let eicar = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
                match client.scan(eicar).await {
                    Ok(strainer_clamav::Verdict::Virus(name)) => {
                        out.push(ok(format!("clamd at {at}: {v}, detects EICAR as {name}")))
                    }
                    Ok(strainer_clamav::Verdict::Clean) => out.push(fail(
                        format!("clamd at {at}: {v}, but it does not detect EICAR"),
                        "its signature database is missing or empty: run freshclam",
                    )),
                    Err(e) => out.push(fail(
                        format!("clamd at {at}: {v}, but scanning failed: {e}"),
                        "check clamd's log and StreamMaxLength",
                    )),
                }
            }
        }
    }
    if config.bayes.enabled {
        out.push(bayes_check(config));
    }
    out.push(spool_check(config));
    out.push(quarantine_check(config));
    out
}

/// The quarantine exists and everything in it has the directory's owner (`serve`'s user): a
/// `tmp/` that another user made (an older CLI run as root) makes every hold answer 4xx.
fn quarantine_check(config: &Config) -> Check {
    use std::os::unix::fs::MetadataExt;
    let dir = &config.quarantine.dir;
    let Ok(top) = std::fs::metadata(dir) else {
        return fail(
            format!("quarantine {}: does not exist", dir.display()),
            format!(
                "`strainer serve` creates it when it starts; if it runs, create it for its user (`install -d -o strainer -g strainer -m 0700 {}`) or fix quarantine.dir",
                dir.display()
            ),
        );
    };
    let user = |uid: u32| crate::user_name(uid).unwrap_or_else(|| format!("uid {uid}"));
    let tmp = dir.join("tmp");
    if let Ok(t) = std::fs::metadata(&tmp)
        && t.uid() != top.uid()
    {
        return fail(
            format!(
                "quarantine {}: tmp/ belongs to {}, the directory to {}",
                dir.display(),
                user(t.uid()),
                user(top.uid())
            ),
            format!("`serve` cannot hold mail there: chown -R {}: {}", user(top.uid()), dir.display()),
        );
    }
    let held = strainer_quarantine::held(dir);
    ok(format!("quarantine {}: {held} message(s) held, owned by {}", dir.display(), user(top.uid())))
}

/// The spool directory takes files.
fn spool_check(config: &Config) -> Check {
    let s = &config.server;
    match config.session().spool.create() {
        Ok(_) => ok(format!("spool {}: messages over {} bytes wait here", s.spool_dir.display(), s.spool_threshold)),
        Err(e) => fail(
            format!("spool {}: {e}", s.spool_dir.display()),
            "create the directory, writable by strainer, on disk (not a tmpfs), or fix server.spool_dir",
        ),
    }
}

/// The Bayes store: readable, and how much it has learnt.
fn bayes_check(config: &Config) -> Check {
    let b = &config.bayes;
    let base = std::path::Path::new(".");
    let at = match b.backend {
        crate::bayes::Backend::Lmdb => b.lmdb_path(base).display().to_string(),
        crate::bayes::Backend::Redis => b.redis_url.clone(),
    };
    if b.threshold < 5.0 {
        // Below 5 the threshold is on the scale of Fisher's log-odds alone (the default was 1.5):
        // with the linear layer added, it would call about 1.5% of ham spam.
        return fail(
            format!("bayes.threshold = {} is on the old scale (Fisher alone)", b.threshold),
            format!(
                "the score now adds the linear layer: remove bayes.threshold and bayes.points_per_log_odds from the configuration to take the defaults ({} and {})",
                strainer_bayes::DEFAULT_THRESHOLD,
                crate::bayes::DEFAULT_POINTS_PER_LOG_ODDS
            ),
        );
    }
    if !b.store_exists(base) {
        return ok(format!(
            "bayes store at {at} does not exist yet: Bayes is silent until `strainer train` has learnt {} spam and {} ham",
            b.min_spam, b.min_ham
        ));
    }
    let stats = b.open(base).and_then(|s| Ok(s.stats()?));
    match stats {
        Err(e) => fail(
            format!("bayes store at {at}: {e:#}"),
            "fix bayes.path / bayes.redis_url, or set bayes.enabled = false",
        ),
        Ok(s) if s.totals.spam < b.min_spam || s.totals.ham < b.min_ham => ok(format!(
            "bayes store at {at}: {} spam and {} ham learnt; silent until {} and {} (`strainer train`)",
            s.totals.spam, s.totals.ham, b.min_spam, b.min_ham
        )),
        Ok(s) => ok(format!(
            "bayes store at {at}: scoring, {} spam and {} ham learnt, {} features, {}, {}",
            s.totals.spam,
            s.totals.ham,
            s.tokens,
            if s.weights == 0 {
                "linear layer untrained (run `strainer train` again on the same messages)".to_string()
            } else {
                format!("linear layer {} buckets", s.weights)
            },
            if b.autolearn {
                format!("autolearning at {} / {}", b.autolearn_spam, b.autolearn_ham)
            } else {
                "no autolearning".to_string()
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bayes_threshold_on_the_old_scale_fails_with_what_to_do() {
        let mut config = Config::default();
        config.bayes.threshold = 1.5;
        let c = bayes_check(&config);
        assert!(!c.ok && c.what.contains("bayes.threshold") && c.advice.contains("remove bayes.threshold"), "{c}");
        config.bayes.threshold = strainer_bayes::DEFAULT_THRESHOLD;
        assert!(!bayes_check(&config).what.contains("old scale"));
    }

    #[test]
    fn a_quarantine_tmp_of_another_owner_fails_with_the_chown_to_run() {
        let d = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.quarantine.dir = d.path().join("q");
        assert!(!quarantine_check(&config).ok, "missing");
        strainer_quarantine::Store::open(&config.quarantine.dir).unwrap();
        let c = quarantine_check(&config);
        assert!(c.ok && c.what.contains("0 message(s) held"), "{c}");
        if std::os::unix::fs::chown(config.quarantine.dir.join("tmp"), Some(65534), Some(65534)).is_err() {
            eprintln!("skipped the rest: changing an owner needs root");
            return;
        }
        let c = quarantine_check(&config);
        assert!(!c.ok && c.advice.contains("chown -R"), "{c}");
    }
}
