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

/// Runs every check that applies to `config`.
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
    out
}
