//! A clamd client: PING, VERSION and INSTREAM over TCP or a unix socket, with deadlines,
//! failover between several clamd addresses (amavisd-new's primary and secondary scanners), and
//! a cap on concurrent scans so we never queue inside clamd.
//!
//! Design choice: only an exact `stream: OK` is clean and only `stream: <name> FOUND` is a
//! virus; every other answer, a timeout or a closed connection is an error, never a verdict. The
//! caller's failure policy decides what an error means, so nothing passes unscanned by accident.
#![deny(missing_docs)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tracing::warn;

/// What to do when clamd cannot give a verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Answer 4xx: Postfix keeps the mail and retries; nothing passes unscanned.
    #[default]
    Tempfail,
    /// Deliver with a header saying it was not scanned, and log a warning.
    Pass,
}

/// `[clamav]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Scan with clamd at all.
    pub enabled: bool,
    /// clamd addresses in order of preference: `host:port`, or a unix socket path.
    pub addresses: Vec<String>,
    /// Connecting to one clamd.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// One scan, from the first byte sent to the reply.
    #[serde(with = "humantime_serde")]
    pub scan_timeout: Duration,
    /// Largest stream sent; match clamd's StreamMaxLength. Larger parts are not sent and count as
    /// unchecked (CLAMAV_UNSCANNED_SIZE).
    pub max_stream: u64,
    /// Scans in flight at once; keep at or below clamd's MaxThreads.
    pub max_concurrency: usize,
    /// What a scanner failure means.
    pub on_error: OnError,
    /// Also stream the raw message, so clamd's own MIME parser sees it too.
    pub scan_raw_message: bool,
    /// The header that names the engine on delivered mail; empty for none.
    pub header: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            addresses: vec!["/run/clamav/clamd.ctl".into()],
            connect_timeout: Duration::from_secs(5),
            scan_timeout: Duration::from_secs(60),
            max_stream: 25 * 1024 * 1024,
            max_concurrency: 8,
            on_error: OnError::Tempfail,
            scan_raw_message: true,
            header: "X-Virus-Scanned".into(),
        }
    }
}

/// clamd's verdict on one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `stream: OK`
    Clean,
    /// `stream: <signature> FOUND`
    Virus(String),
}

/// Why there is no verdict.
#[derive(Debug, thiserror::Error)]
pub enum ClamError {
    /// No configured clamd could be reached.
    #[error("cannot connect to clamd at {address}: {reason}")]
    Connect {
        /// The last address tried.
        address: String,
        /// Why.
        reason: String,
    },
    /// A deadline passed.
    #[error("clamd at {0} did not answer in time")]
    Timeout(String),
    /// The connection broke.
    #[error("clamd connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// clamd answered something other than OK or FOUND (ERROR, size limit, garbage, nothing).
    #[error("clamd answered {0:?}")]
    Answer(String),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A shared clamd client.
pub struct Client {
    config: Config,
    slots: Semaphore,
    version: Mutex<Option<(String, Instant)>>,
}

const CHUNK: usize = 64 * 1024;
const MAX_REPLY: usize = 4096;
const VERSION_TTL: Duration = Duration::from_secs(60);

/// Parses an INSTREAM reply (without its NUL).
pub fn parse_reply(reply: &str) -> Result<Verdict, ClamError> {
    let r = reply.trim_end_matches(['\0', '\n', '\r']);
    if r == "stream: OK" {
        return Ok(Verdict::Clean);
    }
    if let Some(name) = r.strip_prefix("stream: ").and_then(|s| s.strip_suffix(" FOUND"))
        && !name.is_empty()
        && !name.contains(['\n', '\r'])
    {
        return Ok(Verdict::Virus(name.to_string()));
    }
    Err(ClamError::Answer(r.chars().take(200).collect()))
}

impl Client {
    /// A client for `config`.
    pub fn new(config: Config) -> Client {
        let n = config.max_concurrency.max(1);
        Client { config, slots: Semaphore::new(n), version: Mutex::new(None) }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    async fn connect_one(&self, address: &str) -> Result<Box<dyn Stream>, String> {
        let fut = async {
            if address.starts_with('/') {
                tokio::net::UnixStream::connect(address).await.map(|s| Box::new(s) as Box<dyn Stream>)
            } else {
                let s = tokio::net::TcpStream::connect(address).await?;
                let _ = s.set_nodelay(true);
                Ok(Box::new(s) as Box<dyn Stream>)
            }
        };
        match timeout(self.config.connect_timeout, fut).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("connect timeout".into()),
        }
    }

    /// Runs one command against the first clamd that answers, trying the next on failure.
    async fn run(&self, command: &[u8], data: Option<&[u8]>) -> Result<String, ClamError> {
        let mut last = ClamError::Connect { address: String::new(), reason: "no clamd address configured".into() };
        for address in &self.config.addresses {
            let mut s = match self.connect_one(address).await {
                Ok(s) => s,
                Err(reason) => {
                    warn!(%address, %reason, "clamd unreachable, trying the next address");
                    last = ClamError::Connect { address: address.clone(), reason };
                    continue;
                }
            };
            match timeout(self.config.scan_timeout, exchange(&mut s, command, data)).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(e)) => {
                    warn!(%address, error = %e, "clamd failed, trying the next address");
                    last = e;
                }
                Err(_) => {
                    warn!(%address, "clamd did not answer in time, trying the next address");
                    last = ClamError::Timeout(address.clone());
                }
            }
        }
        Err(last)
    }

    /// PING: true when a clamd answers PONG.
    pub async fn ping(&self) -> Result<(), ClamError> {
        let r = self.run(b"zPING\0", None).await?;
        if r.trim_end_matches('\0') == "PONG" { Ok(()) } else { Err(ClamError::Answer(r)) }
    }

    /// The engine and signature version (`ClamAV 1.0.7/27000/...`), cached for a minute so a
    /// clamd reload shows up without asking on every message.
    pub async fn version(&self) -> Result<String, ClamError> {
        if let Ok(g) = self.version.lock()
            && let Some((v, _)) = g.as_ref().filter(|(_, at)| at.elapsed() < VERSION_TTL)
        {
            return Ok(v.clone());
        }
        let v = self.run(b"zVERSION\0", None).await?;
        let v: String =
            v.trim_end_matches('\0').chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(120).collect();
        if let Ok(mut g) = self.version.lock() {
            *g = Some((v.clone(), Instant::now()));
        }
        Ok(v)
    }

    /// Scans `data` with INSTREAM. Data larger than `max_stream` is the caller's to refuse.
    pub async fn scan(&self, data: &[u8]) -> Result<Verdict, ClamError> {
        let _slot = self.slots.acquire().await.map_err(|_| ClamError::Answer("client closed".into()))?;
        parse_reply(&self.run(b"zINSTREAM\0", Some(data)).await?)
    }
}

/// Bytes gathered before a write: a whole message of common size goes in one write, instead of
/// four (command, length, chunk, terminator), each a syscall and a segment clamd wakes up for.
const SEND_BUF: usize = 256 * 1024;

async fn exchange(s: &mut Box<dyn Stream>, command: &[u8], data: Option<&[u8]>) -> Result<String, ClamError> {
    let size = command.len() + data.map_or(0, |d| d.len() + 4 * d.len().div_ceil(CHUNK) + 4);
    let mut out = Vec::with_capacity(size.min(SEND_BUF + CHUNK + 8));
    out.extend_from_slice(command);
    if let Some(data) = data {
        for chunk in data.chunks(CHUNK) {
            let len = u32::try_from(chunk.len()).map_err(|_| ClamError::Answer("chunk too large".into()))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(chunk);
            if out.len() >= SEND_BUF {
                s.write_all(&out).await?;
                out.clear();
            }
        }
        out.extend_from_slice(&0u32.to_be_bytes());
    }
    s.write_all(&out).await?;
    s.flush().await?;
    // z-commands answer with one NUL-terminated line.
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if reply.contains(&0) || reply.len() > MAX_REPLY {
            break;
        }
    }
    if !reply.contains(&0) {
        return Err(ClamError::Answer(format!("truncated reply {:?}", String::from_utf8_lossy(&reply))));
    }
    let end = reply.iter().position(|&b| b == 0).unwrap_or(reply.len());
    Ok(String::from_utf8_lossy(&reply[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_answers_are_verdicts() {
        assert_eq!(parse_reply("stream: OK").unwrap(), Verdict::Clean);
        assert_eq!(
            parse_reply("stream: Eicar-Test-Signature FOUND\0").unwrap(),
            Verdict::Virus("Eicar-Test-Signature".into())
        );
        for bad in [
            "",
            "stream: ",
            "INSTREAM size limit exceeded. ERROR",
            "stream: OK but",
            "stream:  FOUND",
            "PONG",
            "stream: x ERROR",
        ] {
            assert!(parse_reply(bad).is_err(), "{bad:?}");
        }
    }
}
