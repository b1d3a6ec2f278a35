//! The async SMTP/LMTP session: greeting, command loop, DATA, replies, limits, deadlines.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use rand::Rng;
use strainer_types::{ClientInfo, Enhanced, Envelope, MailParams, Recipient, Reply, Transaction};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use crate::spool::SpoolConfig;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{Instrument, debug, error, info_span, warn};

use crate::command::{self, Command, ParseError};
use crate::data::DataDecoder;
use crate::line::{Line, read_line};

/// Limits and identity of the receiving side.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our name in the greeting and EHLO reply; must differ from Postfix's `$myhostname`.
    pub hostname: String,
    /// Speak LMTP (LHLO, one reply per recipient after DATA) instead of SMTP.
    pub lmtp: bool,
    /// Largest message accepted, in bytes (announced with SIZE).
    pub max_message_size: usize,
    /// Recipients accepted per transaction; more get 452 4.5.3.
    pub max_recipients: usize,
    /// Longest command line accepted.
    pub max_line_length: usize,
    /// Bad commands tolerated before the session is closed with 421.
    pub max_errors: u32,
    /// How long to wait for the next command.
    pub command_timeout: Duration,
    /// How long the whole DATA transfer may take.
    pub data_timeout: Duration,
    /// How long the handler may take to answer end-of-data.
    pub transaction_timeout: Duration,
    /// Clients allowed to send XFORWARD.
    pub xforward_hosts: Vec<IpNet>,
    /// Large messages on disk while received, and the memory budget for scanning them.
    pub spool: SpoolConfig,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            hostname: "strainer.localdomain".into(),
            lmtp: false,
            max_message_size: 20 * 1024 * 1024,
            max_recipients: 1000,
            max_line_length: 4096,
            max_errors: 20,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(300),
            transaction_timeout: Duration::from_secs(300),
            xforward_hosts: Vec::new(),
            spool: SpoolConfig::default(),
        }
    }
}

/// The server's shutdown state, shared with every session through a watch channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Serving normally.
    Running,
    /// Stop taking new commands: idle sessions get 421, transactions in flight finish.
    Draining,
    /// The drain deadline passed: transactions still in flight are answered 421.
    Abort,
}

/// The answer to end-of-data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataReply {
    /// One reply for the whole message (SMTP; in LMTP repeated for every recipient).
    One(Reply),
    /// One reply per recipient, in RCPT order (LMTP).
    PerRecipient(Vec<Reply>),
}

/// Decides the replies that depend on policy; the session handles the protocol itself.
pub trait Handler: Send + Sync + 'static {
    /// Answers MAIL FROM after syntax checks; `None` accepts.
    fn mail(&self, _sender: &str, _params: &MailParams) -> Option<Reply> {
        None
    }

    /// Answers RCPT TO after syntax checks; `None` accepts.
    fn rcpt(&self, _recipient: &Recipient) -> Option<Reply> {
        None
    }

    /// Answers end-of-data; the message is durable somewhere only if this says 2xx.
    fn data(&self, tx: Transaction) -> impl Future<Output = DataReply> + Send;
}

/// A fresh transaction id: 12 characters from an alphabet safe in file names and logs.
pub fn new_id() -> String {
    const ALPHABET: &[u8] = b"0123456789BCDFGHJKLMNPQRSTVWXYZ";
    let mut rng = rand::rng();
    (0..12).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// Greets a client we have no room for with 421 and closes.
pub async fn refuse_busy<S: AsyncWrite + Unpin>(mut stream: S, hostname: &str) {
    let reply = Reply::new(421, Enhanced(4, 3, 2), format!("{hostname} Error: too many connections, try again later"));
    let _ = timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(&reply.to_wire()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// One client connection.
pub struct Session<S, H> {
    reader: BufReader<tokio::io::ReadHalf<S>>,
    writer: tokio::io::WriteHalf<S>,
    out: Vec<u8>,
    peer: SocketAddr,
    config: Arc<SessionConfig>,
    handler: Arc<H>,
    shutdown: watch::Receiver<Shutdown>,
    helo: Option<String>,
    xforward_allowed: bool,
    client: ClientInfo,
    envelope: Option<Envelope>,
    errors: u32,
}

enum Flow {
    Continue,
    Close,
}

impl<S, H> Session<S, H>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    H: Handler,
{
    /// A session over `stream` from `peer`.
    pub fn new(
        stream: S,
        peer: SocketAddr,
        config: Arc<SessionConfig>,
        handler: Arc<H>,
        shutdown: watch::Receiver<Shutdown>,
    ) -> Self {
        let (r, w) = tokio::io::split(stream);
        let xforward_allowed = config.xforward_hosts.iter().any(|n| n.contains(&peer.ip()));
        Session {
            reader: BufReader::with_capacity(64 * 1024, r),
            writer: w,
            out: Vec::with_capacity(1024),
            peer,
            config,
            handler,
            shutdown,
            helo: None,
            xforward_allowed,
            client: ClientInfo::default(),
            envelope: None,
            errors: 0,
        }
    }

    /// Runs the dialogue to its end; I/O errors end the session quietly (nothing was acknowledged).
    pub async fn run(mut self) {
        let span = info_span!("session", peer = %self.peer);
        async move {
            if let Err(e) = self.dialogue().await {
                debug!(error = %e, "session ended");
            }
            let _ = self.writer.shutdown().await;
        }
        .instrument(span)
        .await
    }

    fn reply(&mut self, r: &Reply) {
        r.write_to(&mut self.out);
    }

    fn say(&mut self, code: u16, e: (u8, u16, u16), text: impl Into<String>) {
        let r = Reply::new(code, Enhanced(e.0, e.1, e.2), text);
        self.reply(&r);
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            let res = timeout(self.config.command_timeout, self.writer.write_all(&self.out)).await;
            self.out.clear();
            res.map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timeout"))??;
            self.writer.flush().await?;
        }
        Ok(())
    }

    async fn dialogue(&mut self) -> std::io::Result<()> {
        let proto = if self.config.lmtp { "LMTP" } else { "ESMTP" };
        let greeting = Reply::plain(220, format!("{} {proto} strainer", self.config.hostname));
        self.reply(&greeting);
        loop {
            // Answer a pipelined group with one write: flush only when no command is waiting.
            if self.reader.buffer().is_empty() {
                self.flush().await?;
            }
            let line = tokio::select! {
                biased;
                r = timeout(self.config.command_timeout, read_line(&mut self.reader, self.config.max_line_length)) => r,
                _ = wait_for(&mut self.shutdown, Shutdown::Draining) => {
                    let host = self.config.hostname.clone();
                    self.say(421, (4, 3, 2), format!("{host} Service shutting down, closing transmission channel"));
                    return self.flush().await;
                }
            };
            let line = match line {
                Err(_) => {
                    let host = self.config.hostname.clone();
                    self.say(421, (4, 4, 2), format!("{host} Error: timeout exceeded"));
                    return self.flush().await;
                }
                Ok(Err(e)) => return Err(e),
                Ok(Ok(Line::Eof)) => return Ok(()),
                Ok(Ok(Line::TooLong)) => {
                    self.error(500, (5, 5, 2), "Error: line too long");
                    continue;
                }
                Ok(Ok(Line::Text(t))) => t,
            };
            if let Flow::Close = self.handle_line(&line).await? {
                return self.flush().await;
            }
            if self.errors >= self.config.max_errors {
                self.say(421, (4, 7, 0), "Error: too many errors");
                return self.flush().await;
            }
        }
    }

    fn error(&mut self, code: u16, e: (u8, u16, u16), text: impl Into<String>) {
        self.errors += 1;
        self.say(code, e, text);
    }

    async fn handle_line(&mut self, line: &[u8]) -> std::io::Result<Flow> {
        let Ok(text) = std::str::from_utf8(line) else {
            self.error(500, (5, 5, 2), "Error: command is not valid UTF-8");
            return Ok(Flow::Continue);
        };
        let cmd = match command::parse(text) {
            Ok(c) => c,
            Err(ParseError::Unknown) => {
                self.error(502, (5, 5, 2), "Error: command not recognized");
                return Ok(Flow::Continue);
            }
            Err(ParseError::Syntax(t)) => {
                self.error(501, (5, 5, 4), t);
                return Ok(Flow::Continue);
            }
            Err(ParseError::Param(t)) => {
                self.error(555, (5, 5, 4), t);
                return Ok(Flow::Continue);
            }
        };
        match cmd {
            Command::Ehlo(name) | Command::Lhlo(name) | Command::Helo(name) if self.wrong_greeting(text) => {
                let _ = name;
                self.error(500, (5, 5, 1), "Error: wrong greeting command for this protocol");
            }
            Command::Ehlo(name) | Command::Lhlo(name) => self.handle_ehlo(name, true),
            Command::Helo(name) => self.handle_ehlo(name, false),
            Command::Mail(sender, params) => self.handle_mail(sender, params),
            Command::Rcpt(r) => self.handle_rcpt(r),
            Command::Data => self.handle_data().await?,
            Command::Rset => {
                self.reset();
                self.say(250, (2, 0, 0), "Ok");
            }
            Command::Noop => self.say(250, (2, 0, 0), "Ok"),
            Command::Vrfy => self.say(252, (2, 0, 0), "Cannot VRFY user, but will accept message"),
            Command::Help => self.say(214, (2, 0, 0), "See RFC 5321"),
            Command::Quit => {
                self.say(221, (2, 0, 0), "Bye");
                return Ok(Flow::Close);
            }
            Command::Xforward(attrs) => self.handle_xforward(attrs),
        }
        Ok(Flow::Continue)
    }

    fn wrong_greeting(&self, text: &str) -> bool {
        let verb = text.get(..4).unwrap_or("").to_ascii_uppercase();
        if self.config.lmtp { verb != "LHLO" } else { verb == "LHLO" }
    }

    fn reset(&mut self) {
        self.envelope = None;
        self.client = ClientInfo::default();
    }

    fn handle_ehlo(&mut self, name: String, extended: bool) {
        self.reset();
        self.helo = Some(name);
        let mut lines = vec![self.config.hostname.clone()];
        if extended {
            lines.extend(
                [
                    "PIPELINING",
                    &format!("SIZE {}", self.config.max_message_size),
                    "8BITMIME",
                    "SMTPUTF8",
                    "ENHANCEDSTATUSCODES",
                    "DSN",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
            if self.xforward_allowed {
                lines.push("XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE DESTADDR DESTPORT".into());
            }
        }
        let r = Reply { code: 250, enhanced: None, lines };
        self.reply(&r);
    }

    fn handle_mail(&mut self, sender: String, params: MailParams) {
        if self.helo.is_none() {
            return self.error(503, (5, 5, 1), "Error: send HELO/EHLO first");
        }
        if self.envelope.is_some() {
            return self.error(503, (5, 5, 1), "Error: nested MAIL command");
        }
        if params.size.is_some_and(|s| s > self.config.max_message_size as u64) {
            return self.say(552, (5, 3, 4), "Message size exceeds fixed limit");
        }
        if let Some(r) = self.handler.mail(&sender, &params) {
            return self.reply(&r);
        }
        self.envelope = Some(Envelope { sender, params, recipients: Vec::new() });
        self.say(250, (2, 1, 0), "Ok");
    }

    fn handle_rcpt(&mut self, r: Recipient) {
        let max = self.config.max_recipients;
        let Some(env) = self.envelope.as_ref() else {
            return self.error(503, (5, 5, 1), "Error: need MAIL command");
        };
        if env.recipients.len() >= max {
            // 452 lets Postfix deliver the rest in a later transaction.
            return self.say(452, (4, 5, 3), "Error: too many recipients");
        }
        if let Some(reply) = self.handler.rcpt(&r) {
            return self.reply(&reply);
        }
        if let Some(env) = self.envelope.as_mut() {
            env.recipients.push(r);
        }
        self.say(250, (2, 1, 5), "Ok");
    }

    fn handle_xforward(&mut self, attrs: Vec<(String, Option<String>)>) {
        if !self.xforward_allowed {
            return self.error(550, (5, 7, 0), "Error: insufficient authorization");
        }
        if self.envelope.is_some() {
            return self.error(503, (5, 5, 1), "Error: MAIL transaction in progress");
        }
        let mut next = self.client.clone();
        for (k, v) in attrs {
            if !next.set(&k, v) {
                return self.error(501, (5, 5, 4), format!("Error: bad XFORWARD attribute name: {k}"));
            }
        }
        self.client = next;
        self.say(250, (2, 0, 0), "Ok");
    }

    async fn handle_data(&mut self) -> std::io::Result<()> {
        let Some(env) = self.envelope.as_ref() else {
            self.error(503, (5, 5, 1), "Error: need RCPT command");
            return Ok(());
        };
        if env.recipients.is_empty() {
            // With PIPELINING the client may send DATA although every RCPT failed.
            self.say(554, (5, 5, 1), "Error: no valid recipients");
            return Ok(());
        }
        let declared = env.params.size;
        self.reply(&Reply::plain(354, "End data with <CR><LF>.<CR><LF>"));
        self.flush().await?;

        // Start the buffer at the declared size (within reason) instead of growing it by doubling.
        let hint = declared.and_then(|s| usize::try_from(s).ok()).map_or(16 * 1024, |s| s.saturating_add(1024));
        let spool_at = self.config.spool.threshold;
        let mut decoder =
            DataDecoder::with_capacity(self.config.max_message_size, hint.min(spool_at.saturating_add(64 * 1024)));
        // Large messages go to an anonymous spool file as they arrive; a spool that fails is
        // remembered and answered 4xx after the final dot (the client must be read to the end).
        let mut spool: Option<std::io::Result<std::fs::File>> = None;
        let data_started = Instant::now();
        let deadline = data_started + self.config.data_timeout;
        loop {
            let chunk = match timeout_at(deadline, self.reader.fill_buf()).await {
                Err(_) => {
                    let host = self.config.hostname.clone();
                    warn!("DATA timeout, nothing delivered");
                    self.say(421, (4, 4, 2), format!("{host} Error: timeout exceeded"));
                    self.flush().await?;
                    return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "data timeout"));
                }
                Ok(r) => r?,
            };
            if chunk.is_empty() {
                warn!("client closed the connection during DATA, nothing delivered");
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "eof in DATA"));
            }
            let fed = decoder.feed(chunk);
            self.reader.consume(fed.consumed);
            // Written in pieces of at least 64 KiB: page-cache writes, a few microseconds each.
            if decoder.len() > spool_at && (fed.done || decoder.buffered() >= 64 * 1024) && !decoder.oversized() {
                let file = spool.get_or_insert_with(|| self.config.spool.create());
                if let Ok(f) = file
                    && let Err(e) = decoder.drain_to(f)
                {
                    spool = Some(Err(e));
                }
                if matches!(spool, Some(Err(_))) {
                    // Keep reading to the final dot without keeping the bytes.
                    decoder.drain_to(&mut std::io::sink())?;
                }
            }
            if fed.done {
                break;
            }
        }
        let Some(envelope) = self.envelope.take() else {
            return Ok(());
        };
        let client = std::mem::take(&mut self.client);
        if decoder.oversized() {
            self.say(552, (5, 3, 4), "Error: message file too big");
            return Ok(());
        }
        if decoder.bare_newlines() > 0 {
            debug!(count = decoder.bare_newlines(), "normalised bare CR/LF to CRLF");
        }
        let len = decoder.len();
        // One deadline for everything between the final dot and our reply: waiting for memory
        // and the handler together must stay within it, or Postfix could give up first
        // (smtp_data_done_timeout) and deliver the message twice.
        let tx_deadline = Instant::now() + self.config.transaction_timeout;
        // A spooled message is read back once the memory budget has room for it.
        let mut _budget = None;
        let message = match spool {
            None => decoder.into_message(),
            Some(Err(e)) => {
                error!(error = %e, dir = %self.config.spool.dir.display(), "cannot spool the message (server.spool_dir); answering 4xx");
                self.say(451, (4, 3, 0), "Error: cannot spool the message, try again later");
                return Ok(());
            }
            Some(Ok(file)) => {
                let wait = timeout_at(tx_deadline, self.config.spool.reserve(len)).await;
                let Ok(Some(permit)) = wait else {
                    warn!(bytes = len, "no room in server.spool_memory before the transaction deadline; answering 4xx");
                    self.say(451, (4, 3, 1), "Error: insufficient system resources, try again later");
                    return Ok(());
                };
                _budget = Some(permit);
                let read = tokio::task::spawn_blocking(move || crate::spool::read_back(file, len)).await;
                match read.map_err(std::io::Error::other).and_then(|r| r) {
                    Ok(m) => m,
                    Err(e) => {
                        error!(error = %e, "cannot read the spooled message back; answering 4xx");
                        self.say(451, (4, 3, 0), "Error: cannot spool the message, try again later");
                        return Ok(());
                    }
                }
            }
        };
        let n_rcpt = envelope.recipients.len();
        let tx = Transaction {
            id: new_id(),
            peer: self.peer,
            peer_helo: self.helo.clone().unwrap_or_default(),
            lmtp: self.config.lmtp,
            client,
            envelope,
            message,
            receive_time: data_started.elapsed(),
        };
        let span = info_span!("tx", id = %tx.id, queue_id = tx.client.ident.as_deref().unwrap_or("-"));
        let handler = Arc::clone(&self.handler);
        let work = timeout_at(tx_deadline, handler.data(tx)).instrument(span);
        let mut shutdown = self.shutdown.clone();
        let outcome = tokio::select! {
            r = work => match r {
                Ok(r) => r,
                Err(_) => {
                    warn!("transaction deadline passed, answering 4xx");
                    DataReply::One(Reply::new(451, Enhanced(4, 4, 7), "Error: queue file write error, try again later"))
                }
            },
            _ = wait_for(&mut shutdown, Shutdown::Abort) => {
                DataReply::One(Reply::new(421, Enhanced(4, 3, 2), "Service shutting down, try again later"))
            }
        };
        match outcome {
            DataReply::One(r) if self.config.lmtp => (0..n_rcpt).for_each(|_| self.reply(&r)),
            DataReply::One(r) => self.reply(&r),
            DataReply::PerRecipient(rs) if self.config.lmtp && rs.len() == n_rcpt => {
                rs.iter().for_each(|r| self.reply(r))
            }
            DataReply::PerRecipient(rs) => {
                // A handler bug must not lose mail: defer everything.
                warn!(got = rs.len(), want = n_rcpt, "handler gave a reply count that does not fit; deferring");
                let r = Reply::tempfail("Error: internal error");
                let n = if self.config.lmtp { n_rcpt } else { 1 };
                (0..n).for_each(|_| self.reply(&r));
            }
        }
        Ok(())
    }
}

/// Resolves once the shutdown state reaches `level` (or the sender is gone).
async fn wait_for(rx: &mut watch::Receiver<Shutdown>, level: Shutdown) {
    let reached = |s: &Shutdown| match level {
        Shutdown::Running => true,
        Shutdown::Draining => *s != Shutdown::Running,
        Shutdown::Abort => *s == Shutdown::Abort,
    };
    if rx.wait_for(reached).await.is_err() {
        std::future::pending::<()>().await;
    }
}
