//! The quarantine store: messages strainer holds instead of delivering, with everything needed to
//! decide about them and to release them exactly as they came (format in `FORMAT.md`).
//!
//! Design choice: plain files, one message and one JSON document per entry, written with
//! temp-file + fsync + rename + directory fsync. Administrators can read, back up and grep them
//! with the tools they have, and durability is the filesystem's, not a database's.
#![deny(missing_docs)]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde::{Deserialize, Serialize};

/// A store error, with the path involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The id is not one strainer makes.
    #[error("`{0}` is not a quarantine id (20 characters, 0-9 and a-z); see `strainer quarantine list`")]
    BadId(String),
    /// No such entry.
    #[error("no quarantined message with id {0}; see `strainer quarantine list`")]
    NotFound(String),
    /// The metadata cannot be read.
    #[error("{path}: damaged metadata: {message}")]
    Damaged {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One recipient as it came in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rcpt {
    /// The address.
    pub address: String,
    /// NOTIFY=
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    /// ORCPT=
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
}

/// One release attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// When (UNIX seconds).
    pub at: u64,
    /// To whom.
    pub recipients: Vec<String>,
    /// What the downstream answered (or why nothing was sent).
    pub reply: String,
    /// Whether every recipient was accepted.
    pub accepted: bool,
}

/// Everything known about a held message.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Meta {
    /// The entry's id.
    pub id: String,
    /// When it was held (UNIX seconds).
    pub received: u64,
    /// Envelope sender (empty for the null sender).
    pub sender: String,
    /// Envelope recipients.
    pub recipients: Vec<Rcpt>,
    /// MAIL FROM parameters worth keeping: `BODY`, `SMTPUTF8`, `RET`, `ENVID`.
    #[serde(default)]
    pub params: Vec<(String, String)>,
    /// Client facts (XFORWARD name -> value).
    #[serde(default)]
    pub client: Vec<(String, String)>,
    /// Postfix's queue id.
    #[serde(default)]
    pub queue_id: String,
    /// `VIRUS`, `BANNED`, `HELD`, ...
    pub category: String,
    /// One-line reason.
    pub reason: String,
    /// Every finding, one line each.
    #[serde(default)]
    pub findings: Vec<String>,
    /// The spam score.
    #[serde(default)]
    pub score: f64,
    /// Message size in bytes.
    pub size: u64,
    /// Release attempts, oldest first.
    #[serde(default)]
    pub releases: Vec<Release>,
}

impl Meta {
    /// True when a release was accepted downstream.
    pub fn released(&self) -> bool {
        self.releases.iter().any(|r| r.accepted)
    }
}

/// Seconds since the epoch now.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

const ID_LEN: usize = 20;
const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

fn new_id() -> String {
    let mut rng = rand::rng();
    (0..ID_LEN).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// Refuses anything that is not an id we make (no path can be smuggled in).
pub fn check_id(id: &str) -> Result<(), Error> {
    if id.len() == ID_LEN && id.bytes().all(|b| ALPHABET.contains(&b)) {
        Ok(())
    } else {
        Err(Error::BadId(id.chars().take(40).collect()))
    }
}

/// How many entries the store in `dir` holds (0 when there is none), read without opening it.
pub fn held(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|rd| rd.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".json")).count())
        .unwrap_or(0)
}

/// The store in one directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn write_synced(path: &Path, data: &[u8]) -> Result<(), Error> {
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io(path))?;
    f.write_all(data).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

impl Store {
    /// Opens (creating with mode 0700 when missing) the store at `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store, Error> {
        let dir = dir.into();
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let store = Store { dir };
        store.adopt(&[&tmp]);
        for d in [&store.dir, &tmp] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o700)).map_err(io(d))?;
        }
        Ok(store)
    }

    /// Gives what this process just created in the store (`paths`) to the store directory's
    /// owner, when that is someone else (the CLI run as root on `serve`'s quarantine): `serve`
    /// must still be able to write `tmp`, and its user to read every entry. Not being allowed is
    /// not an error.
    fn adopt(&self, paths: &[&Path]) {
        let Ok(dir) = fs::metadata(&self.dir) else { return };
        for path in paths {
            if let Ok(made) = fs::metadata(path)
                && (dir.uid(), dir.gid()) != (made.uid(), made.gid())
            {
                let _ = std::os::unix::fs::chown(path, Some(dir.uid()), Some(dir.gid()));
            }
        }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn paths(&self, id: &str) -> (PathBuf, PathBuf) {
        (self.dir.join(format!("{id}.eml")), self.dir.join(format!("{id}.json")))
    }

    /// Stores a message durably and returns its new id (`meta.id` is set here).
    pub fn put(&self, meta: &mut Meta, message: &[u8]) -> Result<String, Error> {
        let id = new_id();
        meta.id = id.clone();
        meta.size = message.len() as u64;
        let json = serde_json::to_vec_pretty(meta)
            .map_err(|e| Error::Damaged { path: self.dir.clone(), message: e.to_string() })?;
        let t = self.dir.join("tmp");
        let (tm, tj) = (t.join(format!("{id}.eml")), t.join(format!("{id}.json")));
        let (em, ej) = self.paths(&id);
        write_synced(&tm, message)?;
        write_synced(&tj, &json)?;
        self.adopt(&[&tm, &tj]);
        fs::rename(&tm, &em).map_err(io(&em))?;
        // The metadata appears last: a crash before this leaves no visible entry.
        fs::rename(&tj, &ej).map_err(io(&ej))?;
        sync_dir(&self.dir)?;
        Ok(id)
    }

    /// Every entry's metadata, oldest first (damaged entries are skipped).
    pub fn list(&self) -> Result<Vec<Meta>, Error> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(io(&self.dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else { continue };
            if check_id(id).is_err() {
                continue;
            }
            if let Ok(m) = self.meta(id) {
                out.push(m);
            }
        }
        out.sort_by(|a, b| (a.received, &a.id).cmp(&(b.received, &b.id)));
        Ok(out)
    }

    /// One entry's metadata.
    pub fn meta(&self, id: &str) -> Result<Meta, Error> {
        check_id(id)?;
        let (_, ej) = self.paths(id);
        let text = match fs::read(&ej) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound(id.into())),
            Err(e) => return Err(Error::Io { path: ej, source: e }),
        };
        serde_json::from_slice(&text).map_err(|e| Error::Damaged { path: ej, message: e.to_string() })
    }

    /// One entry's message bytes.
    pub fn message(&self, id: &str) -> Result<Vec<u8>, Error> {
        check_id(id)?;
        let (em, _) = self.paths(id);
        fs::read(&em).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(id.into())
            } else {
                Error::Io { path: em, source: e }
            }
        })
    }

    /// Rewrites an entry's metadata atomically (release history).
    pub fn update(&self, meta: &Meta) -> Result<(), Error> {
        check_id(&meta.id)?;
        let (_, ej) = self.paths(&meta.id);
        let tmp = self.dir.join("tmp").join(format!("{}.json.{}", meta.id, new_id()));
        let json =
            serde_json::to_vec_pretty(meta).map_err(|e| Error::Damaged { path: ej.clone(), message: e.to_string() })?;
        write_synced(&tmp, &json)?;
        self.adopt(&[&tmp]);
        fs::rename(&tmp, &ej).map_err(io(&ej))?;
        sync_dir(&self.dir)
    }

    /// Removes an entry.
    pub fn delete(&self, id: &str) -> Result<(), Error> {
        check_id(id)?;
        let (em, ej) = self.paths(id);
        match fs::remove_file(&ej) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound(id.into())),
            Err(e) => return Err(Error::Io { path: ej, source: e }),
        }
        let _ = fs::remove_file(&em);
        sync_dir(&self.dir)
    }

    /// Removes entries held longer than `age`, and stale temp files; returns how many entries.
    pub fn purge(&self, age: Duration) -> Result<usize, Error> {
        let cutoff = now().saturating_sub(age.as_secs());
        let mut n = 0;
        for m in self.list()? {
            if m.received < cutoff {
                self.delete(&m.id)?;
                n += 1;
            }
        }
        let tmp = self.dir.join("tmp");
        for e in fs::read_dir(&tmp).map_err(io(&tmp))?.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(3600));
            if old.unwrap_or(false) {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            received: now(),
            sender: "a@example.org".into(),
            recipients: vec![Rcpt { address: "b@example.net".into(), notify: None, orcpt: None }],
            category: "VIRUS".into(),
            reason: "Eicar-Test-Signature".into(),
            ..Meta::default()
        }
    }

    #[test]
    fn put_list_show_update_delete() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path().join("q")).unwrap();
        let mut m = meta();
        let id = s.put(&mut m, b"Subject: x\r\n\r\nbody\r\n").unwrap();
        assert_eq!(s.message(&id).unwrap(), b"Subject: x\r\n\r\nbody\r\n");
        let mode = fs::metadata(s.dir().join(format!("{id}.eml"))).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "not world-readable");
        assert_eq!(fs::metadata(s.dir()).unwrap().permissions().mode() & 0o777, 0o700);
        let listed = s.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].size, 20);
        let mut m = s.meta(&id).unwrap();
        m.releases.push(Release {
            at: now(),
            recipients: vec!["b@example.net".into()],
            reply: "250 ok".into(),
            accepted: true,
        });
        s.update(&m).unwrap();
        assert!(s.meta(&id).unwrap().released());
        s.delete(&id).unwrap();
        assert!(matches!(s.meta(&id), Err(Error::NotFound(_))));
        assert!(matches!(s.delete(&id), Err(Error::NotFound(_))));
    }

    #[test]
    fn hostile_ids_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        for bad in ["../../etc/passwd", "", "ABCDEFGHIJKLMNOPQRST", "aaaaaaaaaaaaaaaaaaa/", "aaaaaaaaaaaaaaaaaaa.", "a"]
        {
            assert!(matches!(s.meta(bad), Err(Error::BadId(_))), "{bad}");
            assert!(matches!(s.delete(bad), Err(Error::BadId(_))), "{bad}");
        }
    }

    #[test]
    fn a_write_that_never_got_its_metadata_is_invisible() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        // As if strainer died between writing the message and renaming the metadata into place.
        fs::write(d.path().join("tmp/aaaaaaaaaaaaaaaaaaaa.json"), b"{}").unwrap();
        fs::write(d.path().join("aaaaaaaaaaaaaaaaaaaa.eml"), b"x").unwrap();
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn purge_removes_old_entries_only() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let mut old = meta();
        old.received = now() - 40 * 86400;
        s.put(&mut old, b"old").unwrap();
        s.put(&mut meta(), b"new").unwrap();
        assert_eq!(s.purge(Duration::from_secs(30 * 86400)).unwrap(), 1);
        assert_eq!(s.list().unwrap().len(), 1);
    }

    #[test]
    fn concurrent_writes_do_not_collide() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for j in 0..25 {
                        s.put(&mut meta(), format!("{i}-{j}").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(s.list().unwrap().len(), 200);
    }

    /// Run as root on a quarantine that belongs to `serve`'s user, what the CLI writes is that
    /// user's: `serve` can still write `tmp`, and the user read every entry.
    #[test]
    fn what_root_writes_belongs_to_the_quarantines_owner() {
        let d = tempfile::tempdir().unwrap();
        let q = d.path().join("q");
        fs::create_dir(&q).unwrap();
        if std::os::unix::fs::chown(&q, Some(65534), Some(65534)).is_err() {
            eprintln!("skipped: changing a directory's owner needs root");
            return;
        }
        let s = Store::open(&q).unwrap();
        let mut m = meta();
        let id = s.put(&mut m, b"x").unwrap();
        m.releases.push(Release { at: now(), recipients: vec![], reply: "250".into(), accepted: true });
        s.update(&m).unwrap();
        for p in [q.join("tmp"), q.join(format!("{id}.eml")), q.join(format!("{id}.json"))] {
            let md = fs::metadata(&p).unwrap();
            assert_eq!((md.uid(), md.gid()), (65534, 65534), "{}", p.display());
        }
    }
}
