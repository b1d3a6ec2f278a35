//! An in-process SMTP sink (our own receive crate behind a scriptable handler), a raw test
//! client, and a way to run strainer itself on port 0.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strainer::config::Config;
use strainer_receive::{DataReply, Handler, SessionConfig};
use strainer_types::{Enhanced, MailParams, Recipient, Reply, Transaction};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// How the sink behaves.
#[derive(Clone, Default)]
pub enum Behaviour {
    #[default]
    Accept,
    TempfailMail,
    TempfailRcpt,
    TempfailData,
    RefuseRcpt(&'static str),
    RefuseAll,
    Hang,
}

#[derive(Default)]
pub struct SinkHandler {
    pub behaviour: Behaviour,
    pub got: Mutex<Vec<Transaction>>,
}

impl Handler for SinkHandler {
    fn mail(&self, _s: &str, _p: &MailParams) -> Option<Reply> {
        matches!(self.behaviour, Behaviour::TempfailMail).then(|| Reply::new(451, Enhanced(4, 3, 0), "sink: try later"))
    }

    fn rcpt(&self, r: &Recipient) -> Option<Reply> {
        match &self.behaviour {
            Behaviour::TempfailRcpt => Some(Reply::new(450, Enhanced(4, 2, 0), "sink: mailbox busy")),
            Behaviour::RefuseRcpt(a) if r.address == *a => {
                Some(Reply::new(550, Enhanced(5, 1, 1), "sink: user unknown"))
            }
            Behaviour::RefuseAll => Some(Reply::new(550, Enhanced(5, 1, 1), "sink: user unknown")),
            _ => None,
        }
    }

    async fn data(&self, tx: Transaction) -> DataReply {
        match self.behaviour {
            Behaviour::TempfailData => return DataReply::One(Reply::new(452, Enhanced(4, 3, 1), "sink: disk full")),
            Behaviour::Hang => std::future::pending::<()>().await,
            _ => {}
        }
        let mut got = self.got.lock().unwrap();
        got.push(tx);
        DataReply::One(Reply::new(250, Enhanced(2, 0, 0), format!("Ok: queued as SINK{}", got.len())))
    }
}

pub struct Sink {
    pub addr: SocketAddr,
    pub handler: Arc<SinkHandler>,
    _stop: oneshot::Sender<()>,
}

impl Sink {
    pub async fn start(behaviour: Behaviour) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = Arc::new(SinkHandler { behaviour, got: Mutex::new(Vec::new()) });
        let cfg = SessionConfig {
            hostname: "sink.test".into(),
            xforward_hosts: vec!["127.0.0.0/8".parse().unwrap()],
            ..SessionConfig::default()
        };
        let (tx, rx) = oneshot::channel::<()>();
        let h = handler.clone();
        tokio::spawn(strainer::server::run(None, listener, cfg, 50, h, Duration::from_secs(1), async move {
            let _ = rx.await;
        }));
        Sink { addr, handler, _stop: tx }
    }

    pub fn got(&self) -> Vec<Transaction> {
        self.handler.got.lock().unwrap().clone()
    }
}

/// A port on loopback where nothing listens.
pub async fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

pub fn test_config(relay: SocketAddr) -> Config {
    let mut c = Config::default();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.server.hostname = "filter.test".into();
    c.relay.address = relay.to_string();
    c.relay.connect_timeout = Duration::from_secs(2);
    c.relay.command_timeout = Duration::from_secs(2);
    c.relay.data_timeout = Duration::from_secs(2);
    c.server.timeouts.transaction = Duration::from_secs(10);
    // Each test its own quarantine, never /var/lib.
    let q = std::env::temp_dir().join(format!("strainer-test-q-{}-{}", std::process::id(), strainer_receive::new_id()));
    c.quarantine.dir = q;
    // Bayes only where a test turns it on, with its own store.
    c.bayes.enabled = false;
    c.bayes.path =
        std::env::temp_dir().join(format!("strainer-test-b-{}-{}", std::process::id(), strainer_receive::new_id()));
    c
}

pub struct Strainer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Strainer {
    pub async fn start(config: Config) -> Strainer {
        let listener = strainer::server::listen(config.server.listen, config.server.max_sessions).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let local =
                std::sync::Arc::new(strainer::scanners::Local::compile(&config, std::path::Path::new(".")).unwrap());
            strainer::serve(&config, local, listener, async move {
                let _ = rx.await;
            })
            .await
        });
        Strainer { addr, stop: Some(tx), task }
    }

    /// Signals shutdown (as SIGTERM does) and waits for the server to finish draining.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
    }

    pub fn signal_stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub struct Client {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> (Client, Reply) {
        let s = TcpStream::connect(addr).await.unwrap();
        let (r, w) = s.into_split();
        let mut c = Client { r: BufReader::new(r), w };
        let g = c.reply().await;
        (c, g)
    }

    pub async fn send(&mut self, s: &str) {
        self.w.write_all(s.as_bytes()).await.unwrap();
    }

    pub async fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            let n = self.r.read_line(&mut l).await.unwrap();
            assert!(n > 0, "connection closed while waiting for a reply");
            let l = l.trim_end().to_string();
            let last = l.as_bytes().get(3) != Some(&b'-');
            lines.push(l);
            if last {
                return Reply::parse(&lines).unwrap();
            }
        }
    }

    pub async fn cmd(&mut self, s: &str) -> Reply {
        self.send(&format!("{s}\r\n")).await;
        self.reply().await
    }

    /// Sends a whole transaction as Postfix would (pipelined) and returns the replies after
    /// the final dot: one for SMTP, one per recipient for LMTP.
    pub async fn transaction(&mut self, mail: &str, rcpts: &[&str], message: &str, lmtp: bool) -> Vec<Reply> {
        let mut batch = format!("{mail}\r\n");
        for r in rcpts {
            batch.push_str(&format!("{r}\r\n"));
        }
        batch.push_str("DATA\r\n");
        self.send(&batch).await;
        let mail_r = self.reply().await;
        assert_eq!(mail_r.code, 250, "{mail_r}");
        for _ in rcpts {
            assert_eq!(self.reply().await.code, 250);
        }
        assert_eq!(self.reply().await.code, 354);
        let mut wire = Vec::new();
        strainer_receive::data::stuff(message.as_bytes(), &mut wire);
        self.w.write_all(&wire).await.unwrap();
        let n = if lmtp { rcpts.len() } else { 1 };
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.reply().await);
        }
        out
    }
}

pub const MESSAGE: &str = "Received: from mail.example (mail.example [192.0.2.1])\r\n\tby mx.test (Postfix) with ESMTP id 4XyZq1AbCd\r\n\tfor <bob@test>; Wed, 25 Nov 2026 09:00:00 +0000 (UTC)\r\nFrom: Alice <alice@example.org>\r\nTo: bob@test\r\nSubject: caf\u{e9} \u{2014} 8-bit subject\r\nMessage-ID: <1@example.org>\r\n\r\n.a line that starts with a dot\r\n..two dots\r\nlong: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n\u{fc}ber 8-bit body\r\n";

/// Sends `msg` through a strainer running `cfg` (relaying to a fresh accepting sink) and
/// returns strainer's reply and the sink.
pub async fn send_one_message(cfg: Config, msg: &[u8]) -> (Reply, Sink) {
    let sink = Sink::start(Behaviour::Accept).await;
    let mut cfg = cfg;
    cfg.relay.address = sink.addr.to_string();
    let s = Strainer::start(cfg).await;
    let (mut c, _) = Client::connect(s.addr).await;
    c.cmd("EHLO mx.test").await;
    let text = String::from_utf8_lossy(msg).into_owned();
    let r = c.transaction("MAIL FROM:<a@example.org>", &["RCPT TO:<b@example.net>"], &text, false).await;
    s.stop().await;
    (r.into_iter().next().unwrap(), sink)
}
