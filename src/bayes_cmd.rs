//! `strainer bayes backup`, `restore`, `export` and `import`: copies of the Bayes store, for
//! safekeeping and for moving a model between LMDB and Redis.

use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use strainer_bayes::store::{Entry, dump};

use crate::bayes::{Backend, BayesConfig};

/// `strainer bayes backup DIR`: a consistent, compacted copy of the LMDB store, taken while
/// `serve` and `train` keep running (copying `data.mdb` by hand during a commit can catch it half
/// written); says how to restore it.
pub fn backup(bayes: &BayesConfig, base: &Path, dir: &Path) -> anyhow::Result<()> {
    if bayes.backend == Backend::Redis {
        anyhow::bail!(
            "bayes.backend is redis: Redis keeps the model, so back it up there (BGSAVE, then copy its dump.rdb); `strainer bayes backup` copies the LMDB store"
        );
    }
    let path = bayes.lmdb_path(base);
    must_exist(bayes, base)?;
    let store = bayes.open_lmdb(base)?;
    let started = Instant::now();
    let (live, copy) = store.backup(dir)?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    crate::outln!(
        "backed up {} to {} in {:.1} s ({:.1} MiB, compacted from {:.1} MiB)",
        path.display(),
        dir.join("data.mdb").display(),
        started.elapsed().as_secs_f64(),
        mib(copy),
        mib(live)
    );
    crate::outln!("to restore it: strainer bayes restore {} (serve and train may keep running)", dir.display());
    Ok(())
}

/// Fails, with advice, when the configured LMDB store was never created (opening it would
/// create an empty one).
pub fn must_exist(bayes: &BayesConfig, base: &Path) -> anyhow::Result<()> {
    if !bayes.store_exists(base) {
        anyhow::bail!(
            "no Bayes store at {} yet (bayes.path): `strainer train` creates it",
            bayes.lmdb_path(base).display()
        );
    }
    Ok(())
}

/// `strainer bayes export [FILE]`: every record of the store as text (stdout without FILE).
pub fn export(bayes: &BayesConfig, base: &Path, file: Option<&Path>) -> anyhow::Result<()> {
    must_exist(bayes, base)?;
    let store = bayes.open(base)?;
    let mut n = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let Some(path) = file else {
        write_export(&*store, Stdout, "stdout", &mut n)?;
        return Ok(());
    };
    // Written under another name and renamed once synced: an export cut short never takes the
    // place of a whole one.
    let partial = path.with_extension("partial");
    let name = partial.display().to_string();
    let f = std::fs::File::create(&partial).with_context(|| name.clone())?;
    let synced = write_export(&*store, f, &name, &mut n).and_then(|f| f.sync_all().with_context(|| name.clone()));
    if let Err(e) = synced {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, path).with_context(|| format!("{}", path.display()))?;
    crate::outln!(
        "exported {} features, {} messages learnt and {} weights to {} in {:.1} s",
        n.0,
        n.1,
        n.2,
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Writes the export of `store` to `out` (called `name` in errors), counting in `n` the
/// features, messages learnt and weights; gives `out` back once all is written.
fn write_export<W: std::io::Write>(
    store: &dyn strainer_bayes::Store,
    out: W,
    name: &str,
    n: &mut (u64, u64, u64),
) -> anyhow::Result<W> {
    let mut w = std::io::BufWriter::with_capacity(1 << 16, out);
    writeln!(w, "{}", dump::HEADER).map_err(io(name))?;
    store.export(&mut |e| {
        count(n, &e);
        writeln!(w, "{}", e.to_line()).map_err(io(name))
    })?;
    w.into_inner().map_err(|e| anyhow::anyhow!("{name}: {}", e.error()))
}

/// Standard output through [`crate::write_stdout`] (a reader that goes away ends the output
/// quietly, as for every other command).
struct Stdout;

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::write_stdout(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn io(what: &str) -> impl Fn(std::io::Error) -> strainer_bayes::Error + '_ {
    move |source| strainer_bayes::Error::Io { path: what.to_string(), source }
}

fn count(n: &mut (u64, u64, u64), e: &Entry) {
    match e {
        Entry::Feature(..) => n.0 += 1,
        Entry::Seen(..) => n.1 += 1,
        Entry::Weight(..) => n.2 += 1,
        Entry::Totals(_) => {}
    }
}

/// `strainer bayes import FILE` (`-`: stdin): an export into the configured store, which must
/// be empty; gives back the store.
pub fn import(bayes: &BayesConfig, base: &Path, file: &Path) -> anyhow::Result<Arc<dyn strainer_bayes::Store>> {
    let (entries, n) = read_export(file)?;
    let started = Instant::now();
    let store = bayes.open(base)?;
    store.import(&entries, false)?;
    crate::outln!(
        "imported {} features, {} messages learnt and {} weights into {} in {:.1} s",
        n.0,
        n.1,
        n.2,
        target(bayes, base),
        started.elapsed().as_secs_f64()
    );
    Ok(store)
}

/// `strainer bayes restore SOURCE`: the model of a backup directory (`bayes backup`) or of an
/// export file (`bayes export`) takes the place of the configured store's, in one transaction
/// (LMDB) or one swap (Redis), while `serve` and `train` keep running; gives back the store.
pub fn restore(bayes: &BayesConfig, base: &Path, source: &Path) -> anyhow::Result<Arc<dyn strainer_bayes::Store>> {
    let (entries, n) = if source.is_dir() { read_backup(bayes, base, source)? } else { read_export(source)? };
    let started = Instant::now();
    let store = bayes.open(base)?;
    // The totals alone (stats would walk a Redis model whole).
    let before = store.lookup(&[], &mut Vec::new())?;
    store.import(&entries, true)?;
    crate::outln!(
        "restored {} features, {} messages learnt and {} weights from {} into {} in {:.1} s (it held {} spam and {} ham learnt)",
        n.0,
        n.1,
        n.2,
        source.display(),
        target(bayes, base),
        started.elapsed().as_secs_f64(),
        before.spam,
        before.ham
    );
    Ok(store)
}

/// Where the configured store is, for messages.
fn target(bayes: &BayesConfig, base: &Path) -> String {
    match bayes.backend {
        Backend::Lmdb => bayes.lmdb_path(base).display().to_string(),
        Backend::Redis => format!("{} under {}", bayes.redis_url, bayes.redis_prefix),
    }
}

/// Every record of the LMDB store in backup directory `dir`, counted as features, messages
/// learnt and weights.
fn read_backup(bayes: &BayesConfig, base: &Path, dir: &Path) -> anyhow::Result<(Vec<Entry>, (u64, u64, u64))> {
    if !dir.join("data.mdb").is_file() {
        anyhow::bail!(
            "{}: no data.mdb there, so not a backup; give a directory made by `strainer bayes backup`, or an export file",
            dir.display()
        );
    }
    let live = bayes.lmdb_path(base);
    if bayes.backend == Backend::Lmdb && std::fs::canonicalize(dir).ok() == std::fs::canonicalize(&live).ok() {
        anyhow::bail!("{} is the store itself (bayes.path); give a backup directory", dir.display());
    }
    let backup = strainer_bayes::store::lmdb::Lmdb::open_read_only(dir)
        .with_context(|| format!("{}: not a readable backup", dir.display()))?;
    let mut entries = Vec::new();
    let mut n = (0u64, 0u64, 0u64);
    strainer_bayes::Store::export(&backup, &mut |e| {
        count(&mut n, &e);
        entries.push(e);
        Ok(())
    })?;
    Ok((entries, n))
}

/// The records of export `file` (`-`: stdin), counted as features, messages learnt and weights;
/// names the line of anything it cannot read.
fn read_export(file: &Path) -> anyhow::Result<(Vec<Entry>, (u64, u64, u64))> {
    let name = if file == Path::new("-") { "stdin".to_string() } else { file.display().to_string() };
    let reader: Box<dyn std::io::BufRead> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(file).with_context(|| name.clone())?))
    };
    let mut entries = Vec::new();
    let mut n = (0u64, 0u64, 0u64);
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{name}:{}", i + 1))?;
        if i == 0 {
            if line.trim_end() != dump::HEADER {
                anyhow::bail!(
                    "{name}:1: not a strainer Bayes export (it starts with {:?}, not {:?}); make one with `strainer bayes export`",
                    line.chars().take(40).collect::<String>(),
                    dump::HEADER
                );
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let e = Entry::parse(&line).map_err(|why| anyhow::anyhow!("{name}:{}: {why}", i + 1))?;
        count(&mut n, &e);
        entries.push(e);
    }
    Ok((entries, n))
}
