//! Loading the SpamAssassin corpus for the benches (fetched by benches/fetch-corpus.sh).

use std::path::{Path, PathBuf};

/// Where the corpus is: STRAINER_CORPUS, else benches/corpus/package/data.
pub fn root() -> PathBuf {
    std::env::var_os("STRAINER_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("benches/corpus/package/data"))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "txt") {
            out.push(p);
        }
    }
}

/// Every message, as SMTP would carry it, in file name order; empty when there is no corpus.
pub fn load() -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    collect(&root(), &mut files);
    files.sort();
    files.iter().filter_map(|f| std::fs::read(f).ok()).map(strainer::scan_cmd::as_received).collect()
}
