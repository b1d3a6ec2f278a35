//! `strainer train` and `strainer bayes stats|expire`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strainer_bayes::linear::Mixer;
use strainer_bayes::{Class, Item, Learned, Store, tokenize};

use crate::config::Config;

/// Every message file under `path`: a message file, an mbox, a Maildir or a directory of those.
pub fn messages(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // Maildir's tmp/ holds messages being written; dot files are not messages.
            if name.starts_with('.') || (name == "tmp" && path.join("cur").is_dir()) {
                continue;
            }
            if p.is_dir() {
                messages(&p, out)?;
            } else if name.ends_with(".json") {
                // The corpus' metadata twins.
            } else {
                out.push(p);
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// The messages of one file: an mbox (several `From ` separated) or one message.
pub fn split_file(bytes: Vec<u8>) -> Vec<Vec<u8>> {
    if !bytes.starts_with(b"From ") {
        return vec![crate::scan_cmd::as_received(bytes)];
    }
    let mut starts = vec![0usize];
    for off in memchr::memmem::find_iter(&bytes, b"\nFrom ") {
        let at = off + 1;
        // An mbox separator follows an empty line.
        if at >= 2 && (bytes[at - 2] == b'\n') {
            starts.push(at);
        }
    }
    starts.push(bytes.len());
    starts
        .windows(2)
        .map(|w| {
            let mut m = bytes[w[0]..w[1]].to_vec();
            // mboxrd: ">From " at a line start was escaped on the way in.
            unescape_from(&mut m);
            crate::scan_cmd::as_received(m)
        })
        .filter(|m| !m.is_empty())
        .collect()
}

fn unescape_from(m: &mut Vec<u8>) {
    // Whatever is escaped contains ">From ": most messages have none.
    if memchr::memmem::find(m, b">From ").is_none() {
        return;
    }
    let mut out = Vec::with_capacity(m.len());
    let mut line_start = true;
    let mut i = 0;
    while i < m.len() {
        if line_start && m[i] == b'>' {
            let rest = &m[i..];
            let gts = rest.iter().take_while(|&&b| b == b'>').count();
            if rest[gts..].starts_with(b"From ") {
                i += 1;
            }
        }
        line_start = m[i] == b'\n';
        out.push(m[i]);
        i += 1;
    }
    *m = out;
}

/// What a training run did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    /// Newly learnt.
    pub learned: u64,
    /// Already learnt as that class.
    pub already: u64,
    /// Moved from the other class.
    pub relearned: u64,
    /// Forgotten.
    pub forgotten: u64,
    /// Forget asked for messages never learnt.
    pub unchanged: u64,
    /// Files that could not be read.
    pub unreadable: Vec<String>,
}

impl Summary {
    /// Messages this summary counts, whatever became of them.
    pub fn total(&self) -> u64 {
        self.learned + self.already + self.relearned + self.forgotten + self.unchanged
    }

    fn add(&mut self, l: Learned) {
        match l {
            Learned::Learned => self.learned += 1,
            Learned::Already => self.already += 1,
            Learned::Relearned => self.relearned += 1,
            Learned::Forgotten => self.forgotten += 1,
            Learned::Unchanged => self.unchanged += 1,
        }
    }
}

struct Progress {
    on: bool,
    last: Instant,
    started: Instant,
    total: usize,
}

impl Progress {
    fn tick(&mut self, done: usize, force: bool) {
        if !self.on || (!force && self.last.elapsed() < Duration::from_millis(200)) {
            return;
        }
        self.last = Instant::now();
        let width = 30;
        let filled = (done * width).checked_div(self.total).unwrap_or(width).min(width);
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        eprint!(
            "\r[{}{}] {done}/{} messages, {rate:.0}/s ",
            "#".repeat(filled),
            " ".repeat(width - filled),
            self.total
        );
        if force {
            eprintln!();
        }
    }
}

/// The messages of one class still to learn, read a file at a time.
struct Stream {
    class: Class,
    files: std::collections::VecDeque<(PathBuf, u64)>,
    buffered: std::collections::VecDeque<Vec<u8>>,
    /// Bytes not yet learnt (file sizes, then message sizes): how the classes are interleaved.
    left: u64,
    done: bool,
}

impl Stream {
    fn new(class: Class, paths: &[PathBuf]) -> anyhow::Result<Stream> {
        let mut files = std::collections::VecDeque::new();
        for p in paths {
            let mut found = Vec::new();
            messages(p, &mut found).map_err(|e| {
                anyhow::anyhow!("{}: {e}; give a message file, an mbox, a Maildir or a directory", p.display())
            })?;
            files.extend(found.into_iter().map(|f| {
                let size = std::fs::metadata(&f).map_or(0, |m| m.len());
                (f, size)
            }));
        }
        strainer_bayes::linear::shuffle(files.make_contiguous());
        let left = files.iter().map(|f| f.1).sum();
        Ok(Stream { class, files, buffered: Default::default(), left, done: false })
    }

    /// The next message, reading the next file when needed; `None` (and done) at the end.
    fn next(&mut self, sums: &mut Summary, files_read: &mut usize) -> Option<Vec<u8>> {
        loop {
            if let Some(m) = self.buffered.pop_front() {
                self.left = self.left.saturating_sub(m.len() as u64);
                return Some(m);
            }
            let Some((path, size)) = self.files.pop_front() else {
                self.done = true;
                return None;
            };
            *files_read += 1;
            match std::fs::read(&path) {
                Ok(b) => self.buffered = split_file(b).into(),
                Err(e) => {
                    sums.unreadable.push(format!("{}: {e}", path.display()));
                    self.left = self.left.saturating_sub(size);
                }
            }
        }
    }

    /// What is left, for the mixer: nothing once done, at least 1 before.
    fn weight(&self) -> u64 {
        if self.done { 0 } else { self.left.max(1) }
    }
}

/// Learns (or forgets) every message under `spam` and `ham` into `store`, the two classes
/// interleaved in proportion to what is left of each (the linear layer learns online, and a
/// long run of one class would drag it).
pub fn train(
    config: &Config,
    store: &dyn Store,
    spam: &[PathBuf],
    ham: &[PathBuf],
    forget: bool,
) -> anyhow::Result<(Summary, Summary)> {
    let opts = config.bayes_options()?;
    let params = config.bayes.params();
    let setup = Setup { limits: &config.mime, opts: &opts, params: &params, batch: config.bayes.train_batch };
    train_with(&setup, store, spam, ham, forget)
}

/// How [`train_with`] reads and learns, besides which messages.
pub struct Setup<'a> {
    /// Limits for taking messages apart.
    pub limits: &'a strainer_mime::Limits,
    /// Tokenizer options.
    pub opts: &'a strainer_bayes::Options,
    /// Classifier parameters.
    pub params: &'a strainer_bayes::Params,
    /// Messages learnt per store transaction (`bayes.train_batch`).
    pub batch: usize,
}

/// [`train`] as `setup` says (the accuracy bench measures variants through the very training
/// loop `strainer train` runs).
pub fn train_with(
    setup: &Setup,
    store: &dyn Store,
    spam: &[PathBuf],
    ham: &[PathBuf],
    forget: bool,
) -> anyhow::Result<(Summary, Summary)> {
    let mut streams = [Stream::new(Class::Spam, spam)?, Stream::new(Class::Ham, ham)?];
    let mut sums = (Summary::default(), Summary::default());
    let mut progress = Progress {
        on: std::io::stderr().is_terminal(),
        last: Instant::now(),
        started: Instant::now(),
        total: streams.iter().map(|s| s.files.len()).sum(),
    };
    let Setup { limits, opts, params, batch: batch_size } = *setup;
    let batch_size = batch_size.max(1);
    let mut batch: Vec<Item> = Vec::with_capacity(batch_size.min(1024));
    let mut files_read = 0usize;
    let flush = |batch: &mut Vec<Item>, sums: &mut (Summary, Summary)| -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let results = store.learn_with(batch, forget, params)?;
        for (item, l) in batch.iter().zip(results) {
            if item.class == Class::Spam { sums.0.add(l) } else { sums.1.add(l) }
        }
        batch.clear();
        Ok(())
    };
    let mut mixer = Mixer::default();
    while !(streams[0].done && streams[1].done) {
        let pick = mixer.pick(streams[0].weight(), streams[1].weight());
        let stream = if pick == Class::Spam { &mut streams[0] } else { &mut streams[1] };
        let sum = if pick == Class::Spam { &mut sums.0 } else { &mut sums.1 };
        let Some(raw) = stream.next(sum, &mut files_read) else { continue };
        let view = strainer_mime::analyze(&raw, limits);
        let tokens = tokenize(&view, opts, false);
        batch.push(Item::new(&raw, stream.class, tokens.hashes, &opts.ignore));
        if batch.len() >= batch_size {
            flush(&mut batch, &mut sums)?;
        }
        progress.tick(files_read, false);
    }
    flush(&mut batch, &mut sums)?;
    progress.tick(files_read, true);
    Ok(sums)
}

/// Prints the store's counts and size.
pub fn print_stats(store: &dyn Store, config: &Config, json: bool) -> anyhow::Result<()> {
    let s = store.stats()?;
    if json {
        crate::outln!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    let b = &config.bayes;
    crate::outln!("learnt:      {} spam, {} ham", s.totals.spam, s.totals.ham);
    let ready = s.totals.spam >= b.min_spam && s.totals.ham >= b.min_ham;
    crate::outln!(
        "scoring:     {}",
        if ready {
            "on".to_string()
        } else {
            format!("off until {} spam and {} ham are learnt (bayes.min_spam, bayes.min_ham)", b.min_spam, b.min_ham)
        }
    );
    crate::outln!("features:    {} of at most {} ({} seen in one message only)", s.tokens, b.max_tokens, s.singletons);
    crate::outln!("remembered:  {} message digests (at most {})", s.seen, b.max_seen);
    if s.weights == 0 && s.totals.spam + s.totals.ham > 0 {
        crate::outln!(
            "linear:      untrained (a store from before the linear layer): run `strainer train` again on the same messages"
        );
    } else {
        crate::outln!("linear:      {} of {} buckets weighted", s.weights, strainer_bayes::linear::DIM);
    }
    crate::outln!("size:        {:.1} MiB", s.bytes as f64 / (1 << 20) as f64);
    if let Some((lo, hi)) = s.days {
        let d = |day: u32| {
            chrono::DateTime::from_timestamp(i64::from(day) * 86_400, 0)
                .map_or(String::new(), |t| t.format("%Y-%m-%d").to_string())
        };
        crate::outln!("last learnt: {} to {}", d(lo), d(hi));
    }
    Ok(())
}

/// The summary line of one class.
pub fn summary_line(name: &str, s: &Summary, forget: bool) -> String {
    if forget {
        format!("{name}: {} forgotten, {} were not learnt", s.forgotten, s.unchanged)
    } else {
        format!(
            "{name}: {} learnt, {} already learnt, {} moved from the other class",
            s.learned, s.already, s.relearned
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mbox_splits_at_separators_and_unescapes_from_lines() {
        let mbox = b"From a@b Mon Nov  2 10:00:00 2026\nSubject: one\n\ncheap\n>From the desk\n>>From deeper\nFrom mid-paragraph is text\n\nFrom c@d Mon Nov  2 10:01:00 2026\nSubject: two\n\nprize\n";
        let got = split_file(mbox.to_vec());
        assert_eq!(
            got,
            vec![
                b"Subject: one\r\n\r\ncheap\r\nFrom the desk\r\n>From deeper\r\nFrom mid-paragraph is text\r\n\r\n"
                    .to_vec(),
                b"Subject: two\r\n\r\nprize\r\n".to_vec(),
            ]
        );
        // One message, already CRLF: as it is.
        let one = b"Subject: x\r\n\r\n>From here\r\n".to_vec();
        assert_eq!(split_file(one.clone()), vec![one]);
    }
}
