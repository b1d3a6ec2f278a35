//! The load tool: sends N messages over C persistent SMTP (or LMTP) connections to an address,
//! optionally runs its own sink on the re-injection port, and reports messages/s, latency from
//! end of DATA to the reply (p50/p90/p99), reply codes, and the filter's CPU seconds and peak RSS
//! read from /proc.
//!
//!   cargo bench --bench load -- --to 127.0.0.1:10025 --sink 127.0.0.1:10026 --messages 5000 \
//!       --connections 4 --corpus benches/corpus/package/data --pid $(pidof strainer)
//!   cargo bench --bench load -- --to 127.0.0.1:12526 --sink 127.0.0.1:12526   # its own ceiling

#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use strainer_receive::{DataReply, Handler, SessionConfig};
use strainer_types::{Enhanced, Reply, Transaction};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[path = "support/corpus.rs"]
mod corpus;

#[derive(Parser)]
struct Args {
    /// Where to send (SMTP, or LMTP with --lmtp).
    #[arg(long)]
    to: SocketAddr,
    /// Messages to send in all.
    #[arg(long, default_value_t = 5000)]
    messages: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// A folder of raw messages (searched recursively for *.txt and Maildir files); without it,
    /// generated 2 KB messages.
    #[arg(long)]
    corpus: Option<std::path::PathBuf>,
    /// Run a sink here (the filter's re-injection address) and count what arrives.
    #[arg(long)]
    sink: Option<SocketAddr>,
    /// The filter's process id, for CPU seconds and peak RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// Size in bytes of each generated message (without --corpus): a text body of 76-byte lines,
    /// or with --attachment a base64 attachment of that size.
    #[arg(long, default_value_t = 2000)]
    size: usize,
    /// Generated messages carry their bulk as a base64 attachment (what large mail usually is).
    #[arg(long)]
    attachment: bool,
    /// Speak LMTP (LHLO).
    #[arg(long)]
    lmtp: bool,
    /// Ignored (cargo bench passes it).
    #[arg(long, hide = true)]
    bench: bool,
}

struct Count(AtomicUsize);

impl Handler for Count {
    async fn data(&self, _tx: Transaction) -> DataReply {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        DataReply::One(Reply::new(250, Enhanced(2, 0, 0), format!("Ok: queued as S{n}")))
    }
}

/// Fields of /proc/PID/stat after the command name.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    Some(after.split_whitespace().map(String::from).collect())
}

/// `pid` and its descendants (pre-forking filters such as amavisd-new run as a process tree).
fn tree(pid: u32) -> Vec<u32> {
    let mut parent = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
            && let Some(ppid) = stat_fields(p).and_then(|f| f.get(1).and_then(|x| x.parse::<u32>().ok()))
        {
            parent.push((p, ppid));
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(parent.iter().filter(|(_, pp)| *pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// CPU seconds of the tree: user + system of the live processes, plus what the root collected
/// from children that already exited.
fn proc_cpu(pid: u32) -> Option<f64> {
    let root = stat_fields(pid)?;
    let num = |f: &[String], i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    let mut ticks = num(&root, 13) + num(&root, 14);
    for p in tree(pid) {
        if let Some(f) = stat_fields(p) {
            ticks += num(&f, 11) + num(&f, 12);
        }
    }
    Some(ticks / 100.0)
}

/// Peak RSS summed over the tree (one process for strainer).
fn proc_hwm(pid: u32) -> Option<String> {
    let mut kb = 0u64;
    let procs = tree(pid);
    for p in &procs {
        let s = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
        kb += s
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l[6..].trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(format!("{kb} kB over {} process(es)", procs.len()))
}

async fn read_reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> u16 {
    let mut code = 0;
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).await.unwrap_or(0) == 0 {
            return 0;
        }
        code = l.get(..3).and_then(|c| c.parse().ok()).unwrap_or(code);
        if l.as_bytes().get(3) != Some(&b'-') {
            return code;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run(args));
}

/// A message of about `size` bytes: text lines, or one base64 attachment.
fn generated(i: usize, size: usize, attachment: bool) -> Vec<u8> {
    let mut m = format!("From: load@test.example\r\nTo: sink@test.example\r\nSubject: load {i}\r\n").into_bytes();
    if attachment {
        m.extend_from_slice(b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee the attachment\r\n--b\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    } else {
        m.extend_from_slice(b"\r\n");
    }
    let line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3\r\n";
    let line: &[u8] = if attachment {
        &line[..]
    } else {
        b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor x\r\n"
    };
    while m.len() < size {
        m.extend_from_slice(line);
    }
    if attachment {
        m.extend_from_slice(b"--b--\r\n");
    }
    m
}

async fn run(args: Args) {
    let msgs: Arc<Vec<Vec<u8>>> = Arc::new(match &args.corpus {
        Some(dir) => {
            let loaded = corpus::load_from(dir);
            assert!(!loaded.is_empty(), "no messages under {}", dir.display());
            loaded
        }
        None => {
            (0..if args.size > 1 << 20 { 4 } else { 100 }).map(|i| generated(i, args.size, args.attachment)).collect()
        }
    });
    let sink = Arc::new(Count(AtomicUsize::new(0)));
    if let Some(addr) = args.sink {
        let l = tokio::net::TcpListener::bind(addr).await.expect("bind the sink");
        let cfg = SessionConfig {
            xforward_hosts: vec!["127.0.0.0/8".parse().unwrap()],
            max_message_size: 64 << 20,
            // The sink keeps everything in memory: it measures strainer, not a disk.
            spool: strainer_receive::SpoolConfig::new(std::env::temp_dir(), usize::MAX, 1 << 30),
            ..SessionConfig::default()
        };
        let h = Arc::clone(&sink);
        tokio::spawn(async move {
            strainer::server::run(None, l, cfg, 1000, h, Duration::from_secs(1), std::future::pending::<()>()).await;
        });
    }
    let cpu0 = args.pid.and_then(proc_cpu);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (msgs, next, to, total, lmtp) = (Arc::clone(&msgs), Arc::clone(&next), args.to, args.messages, args.lmtp);
        tasks.push(tokio::spawn(async move {
            let connected = Instant::now();
            let s = TcpStream::connect(to).await.expect("connect");
            s.set_nodelay(true).unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            let mut lat = Vec::new();
            let mut codes: BTreeMap<u16, usize> = BTreeMap::new();
            // No greeting within 30 s counts as 0: a stalled connection.
            let greeting = tokio::time::timeout(Duration::from_secs(30), read_reply(&mut r)).await.unwrap_or(0);
            let greeted = (greeting, connected.elapsed());
            if greeting != 220 {
                // Over the filter's session limit: the other connections take its messages.
                return (lat, codes, greeted);
            }
            w.write_all(if lmtp { b"LHLO load.test\r\n" } else { b"EHLO load.test\r\n" }).await.unwrap();
            read_reply(&mut r).await;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let m = &msgs[i % msgs.len()];
                w.write_all(b"MAIL FROM:<load@test.example>\r\nRCPT TO:<sink@test.example>\r\nDATA\r\n").await.unwrap();
                let (a, b, c) = (read_reply(&mut r).await, read_reply(&mut r).await, read_reply(&mut r).await);
                if c != 354 {
                    *codes.entry(a.max(b).max(c)).or_default() += 1;
                    w.write_all(b"RSET\r\n").await.unwrap();
                    read_reply(&mut r).await;
                    continue;
                }
                let mut wire = Vec::with_capacity(m.len() + 8);
                strainer_receive::data::stuff(m, &mut wire);
                w.write_all(&wire).await.unwrap();
                let t = Instant::now();
                let code = read_reply(&mut r).await;
                lat.push(t.elapsed());
                *codes.entry(code).or_default() += 1;
            }
            let _ = w.write_all(b"QUIT\r\n").await;
            (lat, codes, greeted)
        }));
    }
    let mut lat = Vec::new();
    let mut codes: BTreeMap<u16, usize> = BTreeMap::new();
    let mut greetings: BTreeMap<u16, (usize, Duration)> = BTreeMap::new();
    for t in tasks {
        let (l, c, (g, took)) = t.await.unwrap();
        lat.extend(l);
        c.into_iter().for_each(|(k, v)| *codes.entry(k).or_default() += v);
        let e = greetings.entry(g).or_default();
        e.0 += 1;
        e.1 = e.1.max(took);
    }
    for (code, (n, slowest)) in &greetings {
        println!("greetings {code}: {n} connections, slowest {:.1} ms from connect", slowest.as_secs_f64() * 1000.0);
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{} messages over {} connections to {} in {secs:.2} s: {:.0} msg/s; latency p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms; replies {codes:?}",
        args.messages,
        args.connections,
        args.to,
        args.messages as f64 / secs,
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.9)),
        ms(percentile(&lat, 0.99)),
    );
    if args.sink.is_some() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        println!("sink received {}", sink.0.load(Ordering::Relaxed));
    }
    if let (Some(pid), Some(c0)) = (args.pid, cpu0) {
        let c1 = proc_cpu(pid).unwrap_or(c0);
        println!(
            "filter pid {pid}: {:.2} CPU s ({:.2} CPU s per 1000 messages), peak RSS {}",
            c1 - c0,
            (c1 - c0) * 1000.0 / args.messages as f64,
            proc_hwm(pid).unwrap_or_default()
        );
    }
}
