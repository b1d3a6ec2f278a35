//! Loading the SpamAssassin corpus for the benches (fetched by benches/fetch-corpus.sh).

use std::path::{Path, PathBuf};

/// Where the corpus is: STRAINER_CORPUS, else benches/corpus/package/data.
#[allow(dead_code)]
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
        } else if p.extension().is_some_and(|x| x == "txt")
            || p.parent().is_some_and(|d| d.ends_with("new") || d.ends_with("cur"))
        {
            out.push(p);
        }
    }
}

/// Every message, as SMTP would carry it, in file name order; empty when there is no corpus.
#[allow(dead_code)]
pub fn load() -> Vec<Vec<u8>> {
    load_from(&root())
}

/// Every message under `dir` (files ending .txt, and Maildir files), as SMTP would carry it.
pub fn load_from(dir: &Path) -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    collect(dir, &mut files);
    files.sort();
    files.iter().filter_map(|f| std::fs::read(f).ok()).map(strainer::scan_cmd::as_received).collect()
}
