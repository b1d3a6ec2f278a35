//! In-memory dialogues with the session: every command, pipelining, limits, broken and
//! stalled clients, LMTP, shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use strainer_receive::{DataReply, Handler, Session, SessionConfig, Shutdown};
use strainer_types::{Body, Enhanced, Reply, Ret, Transaction};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream, ReadBuf};
use tokio::sync::watch;

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Transaction>>,
    hang: bool,
    per_rcpt: bool,
    /// Time the handler takes before answering.
    delay: Duration,
}

impl Handler for Recorder {
    async fn data(&self, tx: Transaction) -> DataReply {
        let n = tx.envelope.recipients.len();
        self.seen.lock().unwrap().push(tx);
        tokio::time::sleep(self.delay).await;
        if self.hang {
            std::future::pending::<()>().await;
        }
        if self.per_rcpt {
            let mut v: Vec<Reply> = (0..n).map(|_| Reply::new(250, Enhanced(2, 0, 0), "Ok")).collect();
            v[n - 1] = Reply::new(550, Enhanced(5, 1, 1), "no such user");
            return DataReply::PerRecipient(v);
        }
        DataReply::One(Reply::new(250, Enhanced(2, 0, 0), "Ok: queued as TEST"))
    }
}

/// Counts the writes the session makes, to check that pipelined replies go out together.
struct Counting {
    inner: DuplexStream,
    writes: Arc<AtomicUsize>,
}

impl AsyncRead for Counting {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counting {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct Client {
    io: BufReader<DuplexStream>,
    handler: Arc<Recorder>,
    writes: Arc<AtomicUsize>,
    shutdown: watch::Sender<Shutdown>,
    task: tokio::task::JoinHandle<()>,
}

fn config() -> SessionConfig {
    SessionConfig {
        hostname: "filter.test".into(),
        max_message_size: 1000,
        max_recipients: 3,
        max_errors: 5,
        command_timeout: Duration::from_secs(10),
        data_timeout: Duration::from_secs(20),
        transaction_timeout: Duration::from_secs(30),
        xforward_hosts: vec!["127.0.0.0/8".parse().unwrap()],
        ..SessionConfig::default()
    }
}

impl Client {
    async fn start_with(cfg: SessionConfig, handler: Recorder, peer: &str) -> Client {
        let (a, b) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let (tx, rx) = watch::channel(Shutdown::Running);
        let peer: SocketAddr = peer.parse().unwrap();
        let s = Session::new(Counting { inner: b, writes: writes.clone() }, peer, Arc::new(cfg), handler.clone(), rx);
        let task = tokio::spawn(s.run());
        let mut c = Client { io: BufReader::new(a), handler, writes, shutdown: tx, task };
        let g = c.reply().await;
        assert_eq!(g.code, 220);
        assert!(g.text().starts_with("filter.test"));
        c
    }

    async fn start() -> Client {
        Client::start_with(config(), Recorder::default(), "127.0.0.1:40000").await
    }

    async fn send(&mut self, s: &str) {
        self.io.get_mut().write_all(s.as_bytes()).await.unwrap();
    }

    async fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            let n = self.io.read_line(&mut l).await.unwrap();
            assert!(n > 0, "connection closed while waiting for a reply");
            let l = l.trim_end().to_string();
            let last = l.as_bytes().get(3) != Some(&b'-');
            lines.push(l);
            if last {
                return Reply::parse(&lines).unwrap();
            }
        }
    }

    async fn cmd(&mut self, s: &str) -> Reply {
        self.send(&format!("{s}\r\n")).await;
        self.reply().await
    }

    async fn closed(&mut self) -> bool {
        let mut l = String::new();
        self.io.read_line(&mut l).await.unwrap_or(0) == 0
    }

    fn seen(&self) -> Vec<Transaction> {
        self.handler.seen.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn ehlo_offers_what_postfix_needs() {
    let mut c = Client::start().await;
    let r = c.cmd("EHLO postfix.test").await;
    assert_eq!(r.code, 250);
    for ext in ["PIPELINING", "SIZE 1000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN", "XFORWARD"] {
        assert!(r.lines.iter().any(|l| l.starts_with(ext)), "missing {ext}: {r:?}");
    }
    let r = c.cmd("HELO postfix.test").await;
    assert_eq!(r.lines.len(), 1);
}

#[tokio::test]
async fn xforward_only_from_authorised_clients() {
    let mut c = Client::start_with(config(), Recorder::default(), "192.0.2.7:1234").await;
    let r = c.cmd("EHLO outsider").await;
    assert!(!r.lines.iter().any(|l| l.starts_with("XFORWARD")));
    assert_eq!(c.cmd("XFORWARD ADDR=10.0.0.1").await.code, 550);
}

#[tokio::test]
async fn a_transaction_carries_parameters_and_exact_bytes() {
    let mut c = Client::start().await;
    c.cmd("EHLO postfix.test").await;
    assert_eq!(c.cmd("XFORWARD NAME=mail.example ADDR=192.0.2.1 PORT=25 HELO=mail.example").await.code, 250);
    assert_eq!(c.cmd("XFORWARD IDENT=4AbC PROTO=ESMTP SOURCE=REMOTE").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<> SIZE=100 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=e+2B1").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<üser@exämple.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;u+40e").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send("Subject: caf\u{e9}\r\n\r\n..leading dot\r\n\u{ff}bytes\r\n.\r\n").await;
    let r = c.reply().await;
    assert_eq!(r.code, 250);
    let tx = &c.seen()[0];
    assert_eq!(tx.message, "Subject: caf\u{e9}\r\n\r\n.leading dot\r\n\u{ff}bytes\r\n".as_bytes());
    assert_eq!(tx.envelope.sender, "");
    let p = &tx.envelope.params;
    assert_eq!((p.size, p.body, p.smtputf8, p.ret), (Some(100), Some(Body::EightBitMime), true, Some(Ret::Hdrs)));
    assert_eq!(p.envid.as_deref(), Some("e+1"));
    let rc = &tx.envelope.recipients[0];
    assert_eq!(rc.address, "üser@exämple.test");
    assert_eq!(rc.notify.as_deref(), Some("FAILURE,DELAY"));
    assert_eq!(rc.orcpt.as_deref(), Some("rfc822;u@e"));
    assert_eq!(tx.client.ident.as_deref(), Some("4AbC"));
    assert_eq!(tx.client.addr.as_deref(), Some("192.0.2.1"));
    // XFORWARD facts do not leak into the next transaction.
    c.cmd("MAIL FROM:<a@b>").await;
    c.cmd("RCPT TO:<c@d>").await;
    c.cmd("DATA").await;
    c.send(".\r\n").await;
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(c.seen()[1].client.ident, None);
    assert!(c.seen()[1].message.is_empty());
}

#[tokio::test]
async fn pipelined_group_is_answered_with_one_write() {
    let mut c = Client::start().await;
    c.cmd("EHLO postfix.test").await;
    let before = c.writes.load(Ordering::SeqCst);
    c.send("XFORWARD ADDR=192.0.2.1\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\n").await;
    let codes = [c.reply().await.code, c.reply().await.code, c.reply().await.code, c.reply().await.code];
    assert_eq!(codes, [250, 250, 250, 250]);
    assert_eq!(c.reply().await.code, 354);
    assert_eq!(c.writes.load(Ordering::SeqCst) - before, 1, "one write for the whole group");
    c.send("x\r\n.\r\nQUIT\r\n").await;
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(c.reply().await.code, 221);
    assert!(c.closed().await);
}

#[tokio::test]
async fn small_commands() {
    let mut c = Client::start().await;
    c.cmd("EHLO x").await;
    assert_eq!(c.cmd("NOOP").await.code, 250);
    assert_eq!(c.cmd("VRFY postmaster").await.code, 252);
    assert_eq!(c.cmd("HELP").await.code, 214);
    c.cmd("MAIL FROM:<a@b>").await;
    assert_eq!(c.cmd("RSET").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<c@d>").await.code, 503, "RSET ended the transaction");
    assert_eq!(c.cmd("QUIT").await.code, 221);
    assert!(c.closed().await);
}

#[tokio::test]
async fn bad_sequences() {
    let cfg = SessionConfig { max_errors: 20, ..config() };
    let mut c = Client::start_with(cfg, Recorder::default(), "127.0.0.1:1").await;
    assert_eq!(c.cmd("MAIL FROM:<a@b>").await.code, 503);
    c.cmd("EHLO x").await;
    assert_eq!(c.cmd("RCPT TO:<c@d>").await.code, 503);
    assert_eq!(c.cmd("DATA").await.code, 503);
    c.cmd("MAIL FROM:<a@b>").await;
    assert_eq!(c.cmd("MAIL FROM:<a@b>").await.code, 503);
    assert_eq!(c.cmd("XFORWARD ADDR=1.2.3.4").await.code, 503);
    assert_eq!(c.cmd("LHLO x").await.code, 500, "LHLO is for LMTP");
    assert_eq!(c.cmd("MAIL FROM:<a@b> BODY=BINARYMIME").await.code, 555);
    assert!(c.seen().is_empty());
}

#[tokio::test]
async fn garbage_lines_then_too_many_errors() {
    let mut c = Client::start().await;
    assert_eq!(c.cmd("\u{1}\u{2}GARBAGE").await.code, 502);
    c.send("\u{ff}\r\n").await;
    assert_eq!(c.reply().await.code, 502);
    c.io.get_mut().write_all(b"\xff\xfe\r\n").await.unwrap();
    assert_eq!(c.reply().await.code, 500, "invalid UTF-8");
    c.send(&format!("NOOP {}\r\n", "x".repeat(10_000))).await;
    assert_eq!(c.reply().await.code, 500, "line too long");
    assert_eq!(c.cmd("BOGUS").await.code, 502);
    let r = c.reply().await;
    assert_eq!(r.code, 421, "fifth error closes the session");
    assert!(c.closed().await);
}

#[tokio::test]
async fn oversize_is_refused_and_session_goes_on() {
    let mut c = Client::start().await;
    c.cmd("EHLO x").await;
    assert_eq!(c.cmd("MAIL FROM:<a@b> SIZE=5000").await.code, 552);
    c.cmd("MAIL FROM:<a@b>").await;
    c.cmd("RCPT TO:<c@d>").await;
    c.cmd("DATA").await;
    c.send(&format!("{}\r\n.\r\n", "y".repeat(3000))).await;
    let r = c.reply().await;
    assert_eq!((r.code, r.enhanced), (552, Some(Enhanced(5, 3, 4))));
    assert!(c.seen().is_empty(), "an oversized message never reaches the handler");
    c.cmd("MAIL FROM:<a@b>").await;
    c.cmd("RCPT TO:<c@d>").await;
    c.cmd("DATA").await;
    c.send("small\r\n.\r\n").await;
    assert_eq!(c.reply().await.code, 250);
}

#[tokio::test]
async fn too_many_recipients_get_452() {
    let mut c = Client::start().await;
    c.cmd("EHLO x").await;
    c.cmd("MAIL FROM:<a@b>").await;
    for i in 0..3 {
        assert_eq!(c.cmd(&format!("RCPT TO:<r{i}@d>")).await.code, 250);
    }
    let r = c.cmd("RCPT TO:<r4@d>").await;
    assert_eq!((r.code, r.enhanced), (452, Some(Enhanced(4, 5, 3))));
    c.cmd("DATA").await;
    c.send("x\r\n.\r\n").await;
    c.reply().await;
    assert_eq!(c.seen()[0].envelope.recipients.len(), 3);
}

#[tokio::test]
async fn smuggled_end_of_data_stays_in_the_message() {
    let mut c = Client::start().await;
    c.cmd("EHLO x").await;
    c.cmd("MAIL FROM:<a@b>").await;
    c.cmd("RCPT TO:<c@d>").await;
    c.cmd("DATA").await;
    c.send("Subject: a\r\n\r\nhi\n.\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@x>\r\nDATA\r\nevil\r\n.\r\n").await;
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(c.cmd("NOOP").await.code, 250, "no stray replies were queued");
    let seen = c.seen();
    assert_eq!(seen.len(), 1, "one message, not two");
    let m = String::from_utf8(seen[0].message.clone()).unwrap();
    assert!(m.contains("hi\r\n.\r\nMAIL FROM:<evil@x>"), "{m:?}");
}

#[tokio::test]
async fn disconnect_mid_data_delivers_nothing() {
    let mut c = Client::start().await;
    c.cmd("EHLO x").await;
    c.cmd("MAIL FROM:<a@b>").await;
    c.cmd("RCPT TO:<c@d>").await;
    c.cmd("DATA").await;
    c.send("Subject: half\r\n\r\nand then").await;
    let Client { io, handler, task, .. } = c;
    drop(io);
    task.await.unwrap();
    assert!(handler.seen.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn stalled_client_times_out() {
    let mut c = Client::start().await;
    c.cmd("EHLO x").await;
    let r = c.reply().await; // nothing sent: the command timeout fires
    assert_eq!((r.code, r.enhanced), (421, Some(Enhanced(4, 4, 2))));
    assert!(c.closed().await);
}

#[tokio::test(start_paused = true)]
async fn stalled_data_times_out_without_delivery() {
    let mut c = Client::start().await;
    c.cmd("EHLO x").await;
    c.cmd("MAIL FROM:<a@b>").await;
    c.cmd("RCPT TO:<c@d>").await;
    c.cmd("DATA").await;
    c.send("Subject: slow\r\n").await;
    assert_eq!(c.reply().await.code, 421);
    assert!(c.seen().is_empty());
}

#[tokio::test(start_paused = true)]
async fn handler_past_the_transaction_deadline_gets_4xx() {
    let mut c = Client::start_with(config(), Recorder { hang: true, ..Default::default() }, "127.0.0.1:1").await;
    c.cmd("EHLO x").await;
    c.cmd("MAIL FROM:<a@b>").await;
    c.cmd("RCPT TO:<c@d>").await;
    c.cmd("DATA").await;
    c.send("x\r\n.\r\n").await;
    let r = c.reply().await;
    assert_eq!(r.code / 100, 4, "{r}");
}

#[tokio::test]
async fn lmtp_answers_per_recipient() {
    let cfg = SessionConfig { lmtp: true, ..config() };
    let mut c = Client::start_with(cfg, Recorder { per_rcpt: true, ..Default::default() }, "127.0.0.1:1").await;
    assert_eq!(c.cmd("EHLO x").await.code, 500, "LMTP wants LHLO");
    assert_eq!(c.cmd("LHLO x").await.code, 250);
    c.cmd("MAIL FROM:<a@b>").await;
    c.cmd("RCPT TO:<one@d>").await;
    c.cmd("RCPT TO:<two@d>").await;
    c.cmd("DATA").await;
    c.send("x\r\n.\r\n").await;
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(c.reply().await.code, 550);
    assert_eq!(c.cmd("NOOP").await.code, 250);
}

#[tokio::test]
async fn draining_closes_idle_sessions_with_421() {
    let mut c = Client::start().await;
    c.cmd("EHLO x").await;
    c.shutdown.send(Shutdown::Draining).unwrap();
    let r = c.reply().await;
    assert_eq!(r.code, 421);
    assert!(c.closed().await);
}

#[tokio::test]
async fn draining_lets_a_transaction_finish() {
    let mut c = Client::start().await;
    c.cmd("EHLO x").await;
    c.cmd("MAIL FROM:<a@b>").await;
    c.cmd("RCPT TO:<c@d>").await;
    c.cmd("DATA").await;
    c.send("x\r\n").await;
    tokio::task::yield_now().await;
    c.shutdown.send(Shutdown::Draining).unwrap();
    c.send(".\r\n").await;
    // The session is between commands once the dot is answered, so the 421 follows.
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(c.reply().await.code, 421);
    assert_eq!(c.seen().len(), 1);
}

/// A message body of `n` bytes with dot lines and long lines, and its wire form.
fn big_message(n: usize) -> (Vec<u8>, String) {
    let mut m = String::from("Subject: big\r\n\r\n");
    let mut i = 0;
    while m.len() < n {
        m.push_str(&format!(".line {i} {}\r\n", "x".repeat(i % 300)));
        i += 1;
    }
    let wire = m.replace("\r\n.", "\r\n..") + ".\r\n";
    (m.into_bytes(), wire)
}

fn spool_config(dir: &std::path::Path, threshold: usize, budget: usize) -> SessionConfig {
    SessionConfig {
        max_message_size: 10 << 20,
        spool: strainer_receive::SpoolConfig::new(dir, threshold, budget),
        ..config()
    }
}

/// Sends a whole transaction up to and including the final dot, without reading the reply.
async fn begin_message(c: &mut Client, wire: &str) {
    assert_eq!(c.cmd("MAIL FROM:<a@b>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<c@d>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(wire).await;
}

async fn send_message(c: &mut Client, wire: &str) -> Reply {
    begin_message(c, wire).await;
    c.reply().await
}

/// Starts `wire` on `c` and waits until its spooled message holds the whole memory budget.
async fn hold_the_budget(c: &mut Client, wire: &str, spool: &strainer_receive::SpoolConfig) {
    begin_message(c, wire).await;
    while spool.available_kib() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn large_messages_are_spooled_and_arrive_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    // Budget smaller than the message: it waits for the whole budget and still goes through.
    let mut c = Client::start_with(spool_config(dir.path(), 4096, 1 << 20), Recorder::default(), "127.0.0.1:1").await;
    c.cmd("EHLO postfix.test").await;
    let (small, small_wire) = big_message(1000);
    let (large, large_wire) = big_message(3 << 20);
    assert_eq!(send_message(&mut c, &large_wire).await.code, 250);
    assert_eq!(send_message(&mut c, &small_wire).await.code, 250);
    assert_eq!(c.seen()[0].message, large);
    assert_eq!(c.seen()[1].message, small);
    // Spool files are unnamed: nothing is left in the directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_spool_that_cannot_be_written_answers_4xx_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let mut c = Client::start_with(spool_config(&missing, 4096, 1 << 20), Recorder::default(), "127.0.0.1:1").await;
    c.cmd("EHLO postfix.test").await;
    let (_, large_wire) = big_message(100_000);
    let r = send_message(&mut c, &large_wire).await;
    assert_eq!((r.code, r.enhanced), (451, Some(Enhanced(4, 3, 0))), "{r:?}");
    // Read to the final dot: the next transaction is in step, and small mail still flows.
    let (small, small_wire) = big_message(1000);
    assert_eq!(send_message(&mut c, &small_wire).await.code, 250);
    assert_eq!(c.seen().len(), 1);
    assert_eq!(c.seen()[0].message, small);
}

#[tokio::test]
async fn spooled_messages_wait_for_the_memory_budget_not_forever() {
    let dir = tempfile::tempdir().unwrap();
    // The handler holds the first message forever, so it keeps its share of the budget.
    let cfg = spool_config(dir.path(), 4096, 1 << 20);
    let spool = cfg.spool.clone();
    let hang = Recorder { hang: true, ..Recorder::default() };
    let mut first = Client::start_with(cfg.clone(), hang, "127.0.0.1:1").await;
    let cfg = SessionConfig { transaction_timeout: Duration::from_secs(1), ..cfg };
    first.cmd("EHLO postfix.test").await;
    let (_, wire) = big_message(2 << 20);
    hold_the_budget(&mut first, &wire, &spool).await;
    // A second session with a large message waits, then gets 4xx at the deadline.
    let mut second = Client::start_with(cfg, Recorder::default(), "127.0.0.1:2").await;
    second.cmd("EHLO postfix.test").await;
    let r = send_message(&mut second, &wire).await;
    assert_eq!((r.code, r.enhanced), (451, Some(Enhanced(4, 3, 1))), "{r:?}");
    assert!(second.seen().is_empty());
}

/// Waiting for memory and the handler share one deadline from the final dot: together they
/// never keep Postfix waiting past `transaction_timeout` (it would give up and deliver twice).
/// Virtual time: the clock only moves when everything waits.
#[tokio::test(start_paused = true)]
async fn waiting_for_memory_counts_against_the_transaction_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SessionConfig { transaction_timeout: Duration::from_secs(10), ..spool_config(dir.path(), 4096, 1 << 20) };
    let spool = cfg.spool.clone();
    let (_, wire) = big_message(2 << 20);
    // The first message holds the whole budget for 6 s, then is accepted.
    let slow = Recorder { delay: Duration::from_secs(6), ..Recorder::default() };
    let mut first = Client::start_with(cfg.clone(), slow, "127.0.0.1:1").await;
    first.cmd("EHLO postfix.test").await;
    hold_the_budget(&mut first, &wire, &spool).await;
    // The second waits 6 s for memory, then its handler never answers.
    let hang = Recorder { hang: true, ..Recorder::default() };
    let mut second = Client::start_with(cfg, hang, "127.0.0.1:2").await;
    second.cmd("EHLO postfix.test").await;
    begin_message(&mut second, &wire).await;
    let dot = tokio::time::Instant::now();
    let r = second.reply().await;
    let waited = dot.elapsed();
    assert_eq!(r.code, 451, "{r:?}");
    assert_eq!(second.seen().len(), 1, "the handler got the message after the wait");
    assert!(waited <= Duration::from_secs(11), "answered {waited:?} after the final dot; the deadline is 10 s");
    assert_eq!(first.reply().await.code, 250);
}
