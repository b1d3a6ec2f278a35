//! Driving the Postfix instance and the strainer binary for the end-to-end tests.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use strainer_relay::{Outgoing, RelayConfig, deliver};
use strainer_types::{Body, ClientInfo, Envelope, MailParams, Recipient};

/// The header checks every e2e strainer runs with.
pub const HEADER_CHECKS: &str = "/^Subject:.*e2e-spam/ SCORE 6 e2e spam\n/^Subject:.*e2e-reject/ REJECT e2e says no\n/^Subject:.*e2e-discard/ DISCARD\n";

pub struct E2e {
    pub dir: PathBuf,
}

pub struct StrainerProc {
    child: Child,
}

impl Drop for StrainerProc {
    fn drop(&mut self) {
        // SIGTERM, as an init system would send; then wait for the drain.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect("127.0.0.1:10025").is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A tag no earlier run used, to find this test's messages among others.
pub fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}{t:x}{}", COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// Submits to Postfix's smtpd on 127.0.0.1:25 and insists it was accepted.
pub async fn submit(from: &str, to: &[&str], msg: &str) {
    submit_to("127.0.0.1:25", from, to, msg).await
}

/// Submits to `address` (Postfix on :25, or strainer itself on :10025) and insists on 250.
pub async fn submit_to(address: &str, from: &str, to: &[&str], msg: &str) {
    let cfg = RelayConfig {
        address: address.into(),
        hostname: "client.test.example".into(),
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(30),
        data_timeout: Duration::from_secs(60),
    };
    let env = Envelope {
        sender: from.into(),
        params: MailParams { body: Some(Body::EightBitMime), ..Default::default() },
        recipients: to.iter().map(|r| Recipient::new(*r)).collect(),
    };
    let d = deliver(
        &cfg,
        Outgoing { envelope: &env, client: &ClientInfo::default(), prefix: b"", message: msg.as_bytes() },
    )
    .await
    .expect("Postfix on 127.0.0.1:25 answers");
    assert!(d.all_accepted(), "Postfix accepted the submission: {:?}", d.recipients);
}

impl E2e {
    pub fn new() -> E2e {
        let dir = std::env::var("STRAINER_E2E_DIR")
            .expect("STRAINER_E2E_DIR names the Postfix instance from tests/e2e/postfix-up.sh");
        E2e { dir: dir.into() }
    }

    pub fn start_strainer(&self) -> StrainerProc {
        assert!(TcpStream::connect("127.0.0.1:10025").is_err(), "something already listens on 127.0.0.1:10025");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("strainer.log")).unwrap();
        // The embedded defaults plus the clamd that tests/e2e/clamd-up.sh started, the e2e quarantine
        // and three header checks (spam score, reject, discard).
        let config = self.dir.join("strainer.toml");
        let q = self.dir.join("quarantine");
        let checks = self.dir.join("header_checks");
        std::fs::write(&checks, HEADER_CHECKS).unwrap();
        std::fs::write(
            &config,
            format!(
                "[server]\npid_file = \"{}\"\n[clamav]\nenabled = true\naddresses = [\"127.0.0.1:3310\"]\n[quarantine]\ndir = \"{}\"\n[rules]\nheader_checks = [\"{}\"]\n[bayes]\npath = \"{}\"\nmin_spam = 5\nmin_ham = 5\nautolearn = true\n",
                self.dir.join("strainer.pid").display(),
                q.display(),
                checks.display(),
                self.dir.join("bayes").display()
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_strainer"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect("127.0.0.1:10025").is_err() {
            assert!(Instant::now() < deadline, "strainer did not start listening; see strainer.log");
            std::thread::sleep(Duration::from_millis(50));
        }
        StrainerProc { child }
    }

    pub async fn submit(&self, from: &str, to: &[&str], msg: &str) {
        submit(from, to, msg).await
    }

    /// Every message in the user's Maildir.
    pub fn messages(&self, user: &str) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(rd) = std::fs::read_dir(self.dir.join("mail").join(user).join(sub)) else { continue };
            for f in rd.flatten() {
                if let Ok(b) = std::fs::read(f.path()) {
                    out.push(String::from_utf8_lossy(&b).into_owned());
                }
            }
        }
        out
    }

    /// Waits until `n` messages containing `token` are in the Maildir, and returns them.
    pub fn wait_for(&self, user: &str, token: &str, n: usize, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let got: Vec<String> = self.messages(user).into_iter().filter(|m| m.contains(token)).collect();
            if got.len() >= n || Instant::now() > deadline {
                assert_eq!(got.len(), n, "messages with {token} in {user}'s Maildir; queue: {}", self.queued());
                return got;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn postqueue(&self, arg: &str) -> String {
        let out = Command::new("postqueue").arg("-c").arg(self.dir.join("etc")).arg(arg).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Postfix's queue listing (`postqueue -j`) with each message's subject-bearing id lines.
    pub fn queued(&self) -> String {
        // The queue file holds the message; search it through postcat for the token.
        let listing = self.postqueue("-j");
        let mut out = listing.clone();
        for line in listing.lines() {
            if let Some(id) = line.split("\"queue_id\": \"").nth(1).and_then(|s| s.split('"').next()) {
                let cat =
                    Command::new("postcat").arg("-c").arg(self.dir.join("etc")).arg("-q").arg(id).output().unwrap();
                out.push_str(&String::from_utf8_lossy(&cat.stdout));
            }
        }
        out
    }

    pub fn flush(&self) {
        self.postqueue("-f");
    }

    /// Runs the strainer CLI with the e2e configuration.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_strainer"))
            .args(args)
            .arg("--config")
            .arg(self.dir.join("strainer.toml"))
            .output()
            .unwrap()
    }

    /// Waits for a quarantine entry whose message contains `token`; returns its id.
    pub fn wait_quarantined(&self, token: &str, limit: Duration) -> String {
        let store = strainer_quarantine::Store::open(self.dir.join("quarantine")).unwrap();
        let deadline = Instant::now() + limit;
        loop {
            for m in store.list().unwrap() {
                if store.message(&m.id).is_ok_and(|b| String::from_utf8_lossy(&b).contains(token)) {
                    return m.id;
                }
            }
            assert!(Instant::now() < deadline, "nothing with {token} in the quarantine; queue: {}", self.queued());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the test clamd (tests/e2e/clamd-down.sh).
    pub fn stop_clamd(&self) {
        let dir = std::env::var("STRAINER_CLAMD_DIR").expect("STRAINER_CLAMD_DIR names the clamd-up.sh folder");
        assert!(Command::new("tests/e2e/clamd-down.sh").arg(dir).status().unwrap().success());
    }

    /// Starts the test clamd again (tests/e2e/clamd-up.sh).
    pub fn start_clamd(&self) {
        let dir = std::env::var("STRAINER_CLAMD_DIR").expect("STRAINER_CLAMD_DIR names the clamd-up.sh folder");
        assert!(Command::new("tests/e2e/clamd-up.sh").arg(dir).status().unwrap().success());
    }
}
