//! The SMTP client that re-injects one message.

use std::time::Duration;

use strainer_types::{Body, ClientInfo, Envelope, Reply, Ret, xtext};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::timeout;
use tracing::{debug, warn};

/// Where and how to re-inject.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// `host:port` of the re-injection smtpd.
    pub address: String,
    /// Our EHLO name.
    pub hostname: String,
    /// Deadline for connecting and the greeting.
    pub connect_timeout: Duration,
    /// Deadline for each command reply.
    pub command_timeout: Duration,
    /// Deadline for sending the message and reading the reply to the final dot.
    pub data_timeout: Duration,
}

/// One message to send.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Envelope with its parameters.
    pub envelope: &'a Envelope,
    /// Client facts to forward with XFORWARD where the server offers it.
    pub client: &'a ClientInfo,
    /// Header lines we add on top (CRLF-terminated).
    pub prefix: &'a [u8],
    /// The message as received.
    pub message: &'a [u8],
}

/// What the downstream said for each recipient.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Each recipient's final reply, in envelope order: MAIL's if MAIL failed, else RCPT's if it
    /// failed, else the reply to the final dot.
    pub recipients: Vec<Reply>,
    /// The reply to the final dot, when the message was sent.
    pub data: Option<Reply>,
    /// The downstream queue id from `queued as ID`, when given.
    pub queue_id: Option<String>,
}

impl Delivery {
    /// True when every recipient was accepted.
    pub fn all_accepted(&self) -> bool {
        self.recipients.iter().all(Reply::is_positive)
    }
}

/// Why nothing could be sent: always a reason to defer (4xx), never to refuse.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The connection could not be made.
    #[error("connect to {address}: {source}")]
    Connect {
        /// The address tried.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A deadline passed.
    #[error("timeout {0}")]
    Timeout(&'static str),
    /// The connection failed.
    #[error("i/o error {stage}: {source}")]
    Io {
        /// What we were doing.
        stage: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The server said something that is not SMTP.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server refused us before any transaction (greeting or EHLO).
    #[error("refused at {stage}: {reply}")]
    Refused {
        /// Greeting or EHLO.
        stage: &'static str,
        /// The server's reply.
        reply: Reply,
    },
    /// The message needs SMTPUTF8 and the server does not offer it.
    #[error("downstream does not offer SMTPUTF8")]
    NoSmtputf8,
}

#[derive(Debug, Default)]
struct Caps {
    pipelining: bool,
    size: bool,
    eight_bit: bool,
    smtputf8: bool,
    dsn: bool,
    xforward: Vec<String>,
}

struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Set once message bytes were written: after that a failure may mean a delivery, so the
    /// message must not be retried on another connection.
    body_sent: bool,
}

const MAX_REPLY_LINES: usize = 100;
const MAX_LINE: usize = 4096;

impl Conn {
    async fn read_reply(&mut self, deadline: Duration, stage: &'static str) -> Result<Reply, RelayError> {
        let fut = async {
            let mut lines = Vec::new();
            loop {
                let mut buf = Vec::new();
                let n = (&mut self.reader)
                    .take(MAX_LINE as u64)
                    .read_until(b'\n', &mut buf)
                    .await
                    .map_err(|source| RelayError::Io { stage, source })?;
                if n == 0 {
                    return Err(RelayError::Protocol(format!("connection closed {stage}")));
                }
                let line = String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_string();
                let last = line.as_bytes().get(3) != Some(&b'-');
                lines.push(line);
                if last {
                    break;
                }
                if lines.len() >= MAX_REPLY_LINES {
                    return Err(RelayError::Protocol(format!("reply too long {stage}")));
                }
            }
            Reply::parse(&lines)
                .ok_or_else(|| RelayError::Protocol(format!("bad reply {stage}: {:?}", lines.join(" | "))))
        };
        timeout(deadline, fut).await.map_err(|_| RelayError::Timeout(stage))?
    }

    async fn send(&mut self, bytes: &[u8], deadline: Duration, stage: &'static str) -> Result<(), RelayError> {
        timeout(deadline, self.writer.write_all(bytes))
            .await
            .map_err(|_| RelayError::Timeout(stage))?
            .map_err(|source| RelayError::Io { stage, source })
    }
}

/// Bytes of the message stuffed and written at a time.
const SEND_CHUNK: usize = 256 * 1024;

fn parse_caps(ehlo: &Reply) -> Caps {
    let mut caps = Caps::default();
    for line in ehlo.lines.iter().skip(1) {
        let mut words = line.split_ascii_whitespace();
        let Some(kw) = words.next() else { continue };
        match kw.to_ascii_uppercase().as_str() {
            "PIPELINING" => caps.pipelining = true,
            "SIZE" => caps.size = true,
            "8BITMIME" => caps.eight_bit = true,
            "SMTPUTF8" => caps.smtputf8 = true,
            "DSN" => caps.dsn = true,
            "XFORWARD" => caps.xforward = words.map(str::to_ascii_uppercase).collect(),
            _ => {}
        }
    }
    caps
}

/// XFORWARD commands for the attributes the server accepts, each line under 512 bytes.
fn xforward_commands(client: &ClientInfo, offered: &[String]) -> Vec<String> {
    let mut cmds = Vec::new();
    let mut cur = String::new();
    for (name, value) in client.attributes() {
        if !offered.iter().any(|o| o == name) {
            continue;
        }
        let item = format!(" {name}={}", xtext::encode(value));
        if !cur.is_empty() && cur.len() + item.len() > 500 {
            cmds.push(format!("XFORWARD{cur}\r\n"));
            cur.clear();
        }
        cur.push_str(&item);
    }
    if !cur.is_empty() {
        cmds.push(format!("XFORWARD{cur}\r\n"));
    }
    cmds
}

fn mail_command(env: &Envelope, caps: &Caps, size: usize) -> String {
    let mut s = format!("MAIL FROM:<{}>", env.sender);
    if caps.size {
        s.push_str(&format!(" SIZE={size}"));
    }
    if caps.eight_bit {
        match env.params.body {
            Some(Body::EightBitMime) => s.push_str(" BODY=8BITMIME"),
            Some(Body::SevenBit) => s.push_str(" BODY=7BIT"),
            None => {}
        }
    }
    if env.params.smtputf8 {
        s.push_str(" SMTPUTF8");
    }
    if caps.dsn {
        match env.params.ret {
            Some(Ret::Full) => s.push_str(" RET=FULL"),
            Some(Ret::Hdrs) => s.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(id) = &env.params.envid {
            s.push_str(&format!(" ENVID={}", xtext::encode(id)));
        }
    }
    s.push_str("\r\n");
    s
}

fn rcpt_command(r: &strainer_types::Recipient, caps: &Caps) -> String {
    let mut s = format!("RCPT TO:<{}>", r.address);
    if caps.dsn {
        if let Some(n) = &r.notify {
            s.push_str(&format!(" NOTIFY={n}"));
        }
        if let Some(o) = &r.orcpt {
            s.push_str(&format!(" ORCPT={}", xtext::encode(o)));
        }
    }
    s.push_str("\r\n");
    s
}

/// Finds `queued as ID` in a reply text (Postfix's form).
pub(crate) fn queue_id(reply: &Reply) -> Option<String> {
    let text = reply.text();
    let i = text.find("queued as ")?;
    let id: String = text[i + 10..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
    (!id.is_empty()).then_some(id)
}

async fn connect(cfg: &RelayConfig) -> Result<Conn, RelayError> {
    let stream = timeout(cfg.connect_timeout, TcpStream::connect(&cfg.address))
        .await
        .map_err(|_| RelayError::Timeout("connecting"))?
        .map_err(|source| RelayError::Connect { address: cfg.address.clone(), source })?;
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    Ok(Conn { reader: BufReader::with_capacity(16 * 1024, r), writer: w, body_sent: false })
}

/// Connects, reads the greeting and says EHLO.
async fn open(cfg: &RelayConfig) -> Result<(Conn, Caps), RelayError> {
    let mut c = connect(cfg).await?;
    let greeting = c.read_reply(cfg.connect_timeout, "reading greeting").await?;
    if greeting.code != 220 {
        return Err(RelayError::Refused { stage: "greeting", reply: greeting });
    }
    c.send(format!("EHLO {}\r\n", cfg.hostname).as_bytes(), cfg.command_timeout, "sending EHLO").await?;
    let ehlo = c.read_reply(cfg.command_timeout, "after EHLO").await?;
    if ehlo.code != 250 {
        return Err(RelayError::Refused { stage: "EHLO", reply: ehlo });
    }
    let caps = parse_caps(&ehlo);
    Ok((c, caps))
}

/// Best effort: the outcome is already decided.
async fn quit(mut c: Conn) {
    let _ = timeout(Duration::from_secs(2), async {
        let _ = c.writer.write_all(b"QUIT\r\n").await;
        let _ = c.writer.shutdown().await;
    })
    .await;
}

/// Sends one message on a connection of its own and reports each recipient's fate. An `Err`
/// means nothing was delivered.
pub async fn deliver(cfg: &RelayConfig, out: Outgoing<'_>) -> Result<Delivery, RelayError> {
    let (mut c, caps) = open(cfg).await?;
    if out.envelope.params.smtputf8 && !caps.smtputf8 {
        quit(c).await;
        return Err(RelayError::NoSmtputf8);
    }
    let result = transaction(&mut c, cfg, &caps, out).await;
    quit(c).await;
    result
}

struct Idle {
    conn: Conn,
    caps: Caps,
    since: std::time::Instant,
}

/// Re-injection with connections kept open between messages: a finished transaction leaves the
/// session ready for the next MAIL, which saves the connect, greeting and EHLO round trips.
pub struct Pool {
    cfg: RelayConfig,
    idle: std::sync::Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_time: Duration,
}

impl Pool {
    /// A pool keeping at most `max_idle` connections, each idle at most `idle_time` (0: none kept).
    pub fn new(cfg: RelayConfig, max_idle: usize, idle_time: Duration) -> Pool {
        Pool { cfg, idle: std::sync::Mutex::new(Vec::new()), max_idle, idle_time }
    }

    /// The relay settings.
    pub fn config(&self) -> &RelayConfig {
        &self.cfg
    }

    fn take(&self) -> Option<Idle> {
        self.idle.lock().ok()?.pop()
    }

    fn keep(&self, conn: Conn, caps: Caps) -> Option<Conn> {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push(Idle { conn, caps, since: std::time::Instant::now() });
            return None;
        }
        Some(conn)
    }

    /// Sends one message, on an idle connection when there is one. A pooled connection the server
    /// has closed meanwhile fails before any message byte is sent, and the message then goes out
    /// on a fresh connection; once bytes were sent, a failure is returned, never retried.
    pub async fn deliver(&self, out: Outgoing<'_>) -> Result<Delivery, RelayError> {
        while let Some(idle) = self.take() {
            let Idle { mut conn, caps, since } = idle;
            if since.elapsed() > self.idle_time {
                quit(conn).await;
                continue;
            }
            if out.envelope.params.smtputf8 && !caps.smtputf8 {
                let _ = self.keep(conn, caps);
                return Err(RelayError::NoSmtputf8);
            }
            conn.body_sent = false;
            match transaction(&mut conn, &self.cfg, &caps, out).await {
                // An idle connection the server timed out answers 421 to everything.
                Ok(d) if !conn.body_sent && d.recipients.iter().all(|r| r.code == 421) => {
                    debug!("pooled re-injection connection was closed by the server; using a fresh one");
                    continue;
                }
                Ok(d) => {
                    self.finish(conn, caps, &d).await;
                    return Ok(d);
                }
                Err(e) if !conn.body_sent => {
                    debug!(error = %e, "pooled re-injection connection went stale; using a fresh one");
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let (mut conn, caps) = open(&self.cfg).await?;
        if out.envelope.params.smtputf8 && !caps.smtputf8 {
            quit(conn).await;
            return Err(RelayError::NoSmtputf8);
        }
        let result = transaction(&mut conn, &self.cfg, &caps, out).await;
        match &result {
            Ok(d) => self.finish(conn, caps, d).await,
            Err(_) => quit(conn).await,
        }
        result
    }

    /// Keeps the connection when its transaction ended cleanly (the final dot was answered).
    async fn finish(&self, conn: Conn, caps: Caps, d: &Delivery) {
        if d.data.is_some() && self.max_idle > 0 {
            if let Some(c) = self.keep(conn, caps) {
                quit(c).await;
            }
        } else {
            quit(conn).await;
        }
    }
}

async fn transaction(c: &mut Conn, cfg: &RelayConfig, caps: &Caps, out: Outgoing<'_>) -> Result<Delivery, RelayError> {
    let env = out.envelope;
    let xf = xforward_commands(out.client, &caps.xforward);
    let mail = mail_command(env, caps, out.prefix.len() + out.message.len());
    let rcpts: Vec<String> = env.recipients.iter().map(|r| rcpt_command(r, caps)).collect();
    let t = cfg.command_timeout;

    let mut rcpt_replies = Vec::with_capacity(rcpts.len());
    let mail_reply;
    let data_reply;
    if caps.pipelining {
        // One write for the whole envelope, as Postfix's own client does.
        let mut batch = xf.concat();
        batch.push_str(&mail);
        rcpts.iter().for_each(|r| batch.push_str(r));
        batch.push_str("DATA\r\n");
        c.send(batch.as_bytes(), t, "sending envelope").await?;
        for _ in &xf {
            let r = c.read_reply(t, "after XFORWARD").await?;
            if !r.is_positive() {
                warn!(reply = %r, "downstream refused XFORWARD; client facts not forwarded");
            }
        }
        mail_reply = c.read_reply(t, "after MAIL").await?;
        for _ in &rcpts {
            rcpt_replies.push(c.read_reply(t, "after RCPT").await?);
        }
        data_reply = Some(c.read_reply(t, "after DATA").await?);
    } else {
        for x in &xf {
            c.send(x.as_bytes(), t, "sending XFORWARD").await?;
            let r = c.read_reply(t, "after XFORWARD").await?;
            if !r.is_positive() {
                warn!(reply = %r, "downstream refused XFORWARD; client facts not forwarded");
            }
        }
        c.send(mail.as_bytes(), t, "sending MAIL").await?;
        mail_reply = c.read_reply(t, "after MAIL").await?;
        if mail_reply.is_positive() {
            for r in &rcpts {
                c.send(r.as_bytes(), t, "sending RCPT").await?;
                rcpt_replies.push(c.read_reply(t, "after RCPT").await?);
            }
        }
        data_reply = if rcpt_replies.iter().any(Reply::is_positive) {
            c.send(b"DATA\r\n", t, "sending DATA").await?;
            Some(c.read_reply(t, "after DATA").await?)
        } else {
            None
        };
    }

    if !mail_reply.is_positive() {
        debug!(reply = %mail_reply, "downstream refused MAIL");
        return Ok(Delivery { recipients: vec![mail_reply; env.recipients.len()], data: None, queue_id: None });
    }
    let accepted = rcpt_replies.iter().any(Reply::is_positive);
    let data_ok = data_reply.as_ref().is_some_and(|r| r.code == 354);
    if !accepted || !data_ok {
        // The message was not sent: each recipient's fate is its RCPT reply, or DATA's.
        let data_fail = data_reply.filter(|r| r.code != 354).unwrap_or_else(|| Reply::tempfail("no reply to DATA"));
        let recipients =
            rcpt_replies.into_iter().map(|r| if r.is_positive() { data_fail.clone() } else { r }).collect();
        if data_ok {
            // 354 with no recipient accepted cannot happen with a sane server; end it cleanly.
            c.send(b".\r\n", t, "ending DATA").await?;
        }
        return Ok(Delivery { recipients, data: None, queue_id: None });
    }

    // Stuffed and sent in pieces: a large message is never copied whole (it was twice: the
    // joined message and its stuffed form). The whole body still has one data_timeout.
    let deadline = tokio::time::Instant::now() + cfg.data_timeout;
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    let mut stuffer = strainer_receive::data::Stuffer::new();
    // Sized to the message when it is smaller than a piece: a 264 KiB buffer for a 5 KB message
    // was most of each session's memory at 100 sessions.
    let piece = (out.prefix.len() + out.message.len()).min(SEND_CHUNK);
    let mut wire = Vec::with_capacity(piece + piece / 32 + 8);
    c.body_sent = true;
    for piece in [out.prefix, out.message] {
        for chunk in piece.chunks(SEND_CHUNK) {
            wire.clear();
            stuffer.push(chunk, &mut wire);
            c.send(&wire, left(), "sending message").await?;
        }
    }
    wire.clear();
    stuffer.finish(&mut wire);
    c.send(&wire, left(), "sending message").await?;
    let fin = c.read_reply(cfg.data_timeout, "after end of data").await?;
    let queue_id = if fin.is_positive() { queue_id(&fin) } else { None };
    let recipients = rcpt_replies.into_iter().map(|r| if r.is_positive() { fin.clone() } else { r }).collect();
    Ok(Delivery { recipients, data: Some(fin), queue_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xforward_lines_stay_short_and_encoded() {
        let client = ClientInfo {
            name: Some("x".repeat(300)),
            addr: Some("192.0.2.1".into()),
            helo: Some("a b+c".into()),
            ident: Some("ABC".into()),
            ..Default::default()
        };
        let offered: Vec<String> = ["NAME", "ADDR", "HELO"].map(String::from).to_vec();
        let cmds = xforward_commands(&client, &offered);
        assert!(cmds.iter().all(|c| c.len() < 512));
        let all = cmds.concat();
        assert!(all.contains("HELO=a+20b+2Bc"));
        assert!(!all.contains("IDENT"), "not offered, not sent");
    }

    #[test]
    fn finds_postfix_queue_id() {
        let r = Reply::parse(&["250 2.0.0 Ok: queued as 4Xyz9K1abc".into()]).unwrap();
        assert_eq!(queue_id(&r).as_deref(), Some("4Xyz9K1abc"));
        let r = Reply::parse(&["250 Ok".into()]).unwrap();
        assert_eq!(queue_id(&r), None);
    }

    #[test]
    fn parameters_follow_capabilities() {
        let env = Envelope {
            sender: "a@b".into(),
            params: strainer_types::MailParams {
                body: Some(Body::EightBitMime),
                ret: Some(Ret::Hdrs),
                envid: Some("x y".into()),
                ..Default::default()
            },
            recipients: vec![],
        };
        let none = Caps::default();
        assert_eq!(mail_command(&env, &none, 10), "MAIL FROM:<a@b>\r\n");
        let all = Caps { size: true, eight_bit: true, dsn: true, ..Default::default() };
        assert_eq!(mail_command(&env, &all, 10), "MAIL FROM:<a@b> SIZE=10 BODY=8BITMIME RET=HDRS ENVID=x+20y\r\n");
    }
}
