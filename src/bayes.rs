//! The Bayes scanner as `serve` and `scan` use it (`[bayes]`), and the store the CLI trains.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strainer_bayes::store::{lmdb::Lmdb, redis::Redis};
use strainer_bayes::{Bayes, Classified, Digest, Expiry, Item, Store, Vector};
use strainer_mime::View;
use strainer_types::Finding;

/// Policy points per unit of Bayes score by default: puts the default threshold just over
/// policy.spam (6.5 x 0.77 = 5.005).
pub const DEFAULT_POINTS_PER_LOG_ODDS: f64 = 0.77;

/// Passes of the linear layer over a training batch by default.
pub const DEFAULT_TRAIN_PASSES: usize = 3;

/// Default messages `strainer train` learns per store transaction.
pub const DEFAULT_TRAIN_BATCH: usize = 5_000;

/// Bayes score at and above which `serve` learns a message as spam by default (autolearn).
pub const DEFAULT_AUTOLEARN_SPAM: f64 = 30.0;

/// Bayes score at and below which `serve` learns a message as ham by default (autolearn).
pub const DEFAULT_AUTOLEARN_HAM: f64 = -30.0;

/// Which store holds the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// LMDB files in `bayes.path` (one host; `serve` and `strainer train` share it).
    #[default]
    Lmdb,
    /// A Redis server at `bayes.redis_url` (several hosts share one model).
    Redis,
}

/// `[bayes]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BayesConfig {
    /// Score messages with the Bayesian token scorer.
    pub enabled: bool,
    /// `lmdb` or `redis`.
    pub backend: Backend,
    /// The LMDB store's directory (relative to the config file's folder).
    pub path: PathBuf,
    /// Most bytes the LMDB file may grow to, in MiB.
    pub map_size_mb: usize,
    /// The Redis server.
    pub redis_url: String,
    /// Prefix of the Redis keys.
    pub redis_prefix: String,
    /// Deadline of one store operation (Redis).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// No score until this many spam messages were learnt (SpamAssassin: 200).
    pub min_spam: u64,
    /// No score until this many ham messages were learnt.
    pub min_ham: u64,
    /// Score at and above which the scorer calls a message spam (BAYES_SPAM); at or below
    /// minus this, ham (BAYES_HAM); between, BAYES_UNSURE.
    pub threshold: f64,
    /// Policy points per unit of score (the default puts `threshold` near policy.spam = 5).
    pub points_per_log_odds: f64,
    /// Most points Bayes adds (the default stays under policy.quarantine: Bayes alone tags).
    pub max_points: f64,
    /// Most points Bayes takes away.
    pub min_points: f64,
    /// Features the store keeps; over this, training expires the rarest, oldest down to 3/4.
    pub max_tokens: u64,
    /// Message digests remembered (for "learnt once").
    pub max_seen: u64,
    /// Passes of the linear layer over each batch `strainer train` learns (the first learns
    /// each message; each further one steps again those a later message pushed back).
    pub train_passes: usize,
    /// Messages `strainer train` learns per store transaction: the linear layer averages its
    /// runs over each batch, which helps more the larger the batch; each message held costs
    /// about 17 KiB until the batch is committed.
    pub train_batch: usize,
    /// Strongest features named in the finding and the log (costs a copy of every feature's
    /// text per message; `strainer scan --explain N` names them on demand).
    pub explain: usize,
    /// Let `serve` learn the messages Bayes is sure of and the other scanners agree with
    /// (SpamAssassin's bayes_auto_learn), so the model follows the mail as it changes.
    pub autolearn: bool,
    /// Score at and above which a message is learnt as spam.
    pub autolearn_spam: f64,
    /// Score at and below which a message is learnt as ham.
    pub autolearn_ham: f64,
    /// Header fields neither learnt nor scored (a name, or a prefix ending in `*`), as
    /// SpamAssassin's bayes_ignore_header: other filters' verdicts and stamps, which a model
    /// trained from old mailboxes would otherwise take as a short cut. Strainer's own fields
    /// (`X-Spam-*`, `X-Strainer-*`, clamav.header) are always left out.
    pub ignore_headers: Vec<String>,
}

/// Verdict and stamp fields of the filters strainer replaces or sits beside: amavisd-new,
/// rspamd, bogofilter, DSPAM, CRM114 and ClamAV's milters.
pub const DEFAULT_IGNORE_HEADERS: &[&str] = &[
    "X-Amavis-*",
    "X-Quarantine-ID",
    "X-Rspamd-*",
    "X-Spamd-Result",
    "X-Spamd-Bar",
    "X-Bogosity",
    "X-DSPAM-*",
    "X-CRM114-*",
    "X-Virus-Scanned",
    "X-Virus-Status",
];

impl Default for BayesConfig {
    fn default() -> Self {
        BayesConfig {
            enabled: true,
            backend: Backend::Lmdb,
            path: "/var/lib/strainer/bayes".into(),
            map_size_mb: 1024,
            redis_url: "redis://127.0.0.1:6379/0".into(),
            redis_prefix: "strainer:bayes".into(),
            timeout: Duration::from_secs(2),
            min_spam: 200,
            min_ham: 200,
            threshold: strainer_bayes::DEFAULT_THRESHOLD,
            points_per_log_odds: DEFAULT_POINTS_PER_LOG_ODDS,
            max_points: 12.0,
            min_points: -5.0,
            max_tokens: 1_000_000,
            max_seen: 200_000,
            train_passes: DEFAULT_TRAIN_PASSES,
            train_batch: DEFAULT_TRAIN_BATCH,
            explain: 0,
            autolearn: false,
            autolearn_spam: DEFAULT_AUTOLEARN_SPAM,
            autolearn_ham: DEFAULT_AUTOLEARN_HAM,
            ignore_headers: DEFAULT_IGNORE_HEADERS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// How often `serve` checks whether another process committed to the LMDB store, and rebuilds
/// its copy if so.
const COPY_REFRESH: Duration = Duration::from_secs(1);

impl BayesConfig {
    /// The cap.
    pub fn expiry(&self) -> Expiry {
        Expiry { max_tokens: self.max_tokens, max_seen: self.max_seen }
    }

    /// The classifier's parameters for training.
    pub fn params(&self) -> strainer_bayes::Params {
        strainer_bayes::Params { revisits: self.train_passes.saturating_sub(1), ..Default::default() }
    }

    /// Opens (creating, for LMDB) the store; `base` resolves a relative path.
    pub fn open(&self, base: &Path) -> anyhow::Result<Arc<dyn Store>> {
        Ok(match self.backend {
            Backend::Lmdb => Arc::new(self.open_lmdb(base)?),
            Backend::Redis => Arc::new(
                Redis::open(&self.redis_url, &self.redis_prefix, self.timeout)
                    .map_err(|e| anyhow::anyhow!("bayes.redis_url: {e}"))?,
            ),
        })
    }

    /// Opens the store for scoring: LMDB is read through an in-memory copy of its features.
    pub fn open_for_serve(&self, base: &Path) -> anyhow::Result<Arc<dyn Store>> {
        Ok(match self.backend {
            Backend::Lmdb => {
                let store = Arc::new(strainer_bayes::store::lmdb::Snapshotted::new(self.open_lmdb(base)?));
                if let Err(e) = strainer_bayes::store::lmdb::Snapshotted::watch(&store, COPY_REFRESH) {
                    tracing::warn!(error = %e, "bayes: no thread to keep the store's copy current; messages will rebuild it");
                }
                store
            }
            Backend::Redis => self.open(base)?,
        })
    }

    /// Opens (creating) the LMDB store itself, whatever the backend.
    pub fn open_lmdb(&self, base: &Path) -> anyhow::Result<Lmdb> {
        let path = self.lmdb_path(base);
        if !path.join("data.mdb").exists() {
            not_for_another_user(&path)?;
        }
        Lmdb::open(&path, self.map_size_mb.saturating_mul(1 << 20)).map_err(|e| {
            anyhow::anyhow!(
                "bayes.path: {e} (is the directory writable by this user? `strainer serve` runs as `strainer`)"
            )
        })
    }

    /// False while an LMDB store has not been created yet (`strainer train` creates it); a Redis
    /// store always counts as there.
    pub fn store_exists(&self, base: &Path) -> bool {
        self.backend != Backend::Lmdb || self.lmdb_path(base).join("data.mdb").exists()
    }

    /// Where autolearning learns a batch: for LMDB a `strainer learn-items` process given this
    /// store and these settings (see [`crate::autolearn`]), for Redis `store` itself.
    pub fn learn_target(&self, base: &Path, store: Arc<dyn Store>) -> crate::autolearn::Target {
        match self.backend {
            Backend::Redis => crate::autolearn::Target::Store(store),
            Backend::Lmdb => crate::autolearn::Target::Child(
                vec![
                    "learn-items".into(),
                    "--path".into(),
                    self.lmdb_path(base).into_os_string(),
                    "--map-size-mb".into(),
                    self.map_size_mb.to_string().into(),
                    "--train-passes".into(),
                    self.train_passes.to_string().into(),
                    "--max-tokens".into(),
                    self.max_tokens.to_string().into(),
                    "--max-seen".into(),
                    self.max_seen.to_string().into(),
                ],
                store,
            ),
        }
    }

    /// The LMDB directory.
    pub fn lmdb_path(&self, base: &Path) -> PathBuf {
        if self.path.is_absolute() { self.path.clone() } else { base.join(&self.path) }
    }
}

/// Refuses to create the store at `path` when the directory it would go in belongs to another
/// user: `sudo strainer train` would leave a store that `serve`, running as `strainer`, cannot
/// open.
fn not_for_another_user(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let holder = if path.exists() { Some(path) } else { path.parent() };
    let (Some(holder), Ok(me)) = (holder, std::fs::metadata("/proc/self").map(|m| m.uid())) else {
        return Ok(());
    };
    let Ok(owner) = std::fs::metadata(holder).map(|m| m.uid()) else { return Ok(()) };
    if owner == me {
        return Ok(());
    }
    let name = crate::user_name(owner);
    anyhow::bail!(
        "bayes.path: {} would be created by {} in a directory that belongs to {}, and `serve` \
         could not then open it: run this as that user (`sudo -u {} strainer ...`)",
        path.display(),
        crate::user_name(me).unwrap_or_else(|| format!("uid {me}")),
        name.clone().unwrap_or_else(|| format!("uid {owner}")),
        name.unwrap_or_else(|| format!("'#{owner}'")),
    )
}

/// The scanner: opens the store when it first exists (a fresh install has none until
/// `strainer train` makes it) and turns classifications into findings.
pub struct Scanner {
    config: BayesConfig,
    base: PathBuf,
    store: OnceLock<Arc<dyn Store>>,
    options: strainer_bayes::Options,
    params: strainer_bayes::Params,
    /// After a failure the store is left alone until this instant, then tried again; the wait
    /// doubles while it keeps failing. Without it, every message waited `bayes.timeout` on a
    /// Redis that was down.
    down: std::sync::Mutex<Option<(std::time::Instant, Duration)>>,
    /// Autolearning's queue, started with the first message to learn.
    learner: OnceLock<Option<crate::autolearn::Learner>>,
}

/// What the scanner says of one message.
pub struct Scored {
    /// The finding.
    pub finding: Finding,
    /// With `bayes.autolearn`, the message to learn when the other scanners agree (its class is
    /// what Bayes is sure of).
    pub learn: Option<Item>,
}

/// First wait after the store failed; doubled on each further failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait between attempts on a failing store.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Scanner {
    /// A scanner for `config` that tokenizes with `options`.
    pub fn new(config: &BayesConfig, options: strainer_bayes::Options, base: &Path) -> Scanner {
        Scanner {
            config: config.clone(),
            base: base.to_path_buf(),
            store: OnceLock::new(),
            options,
            params: strainer_bayes::Params::default(),
            down: std::sync::Mutex::new(None),
            learner: OnceLock::new(),
        }
    }

    /// The store, when there is one.
    fn store(&self) -> anyhow::Result<Option<Arc<dyn Store>>> {
        if let Some(s) = self.store.get() {
            return Ok(Some(s.clone()));
        }
        if !self.config.store_exists(&self.base) {
            return Ok(None);
        }
        let s = self.config.open_for_serve(&self.base)?;
        Ok(Some(self.store.get_or_init(|| s).clone()))
    }

    /// Classifies message `raw` (taken apart as `view`); `explain` names that many strongest
    /// features. Also returns the message's features, to learn it.
    fn classify(
        &self,
        raw: &[u8],
        view: &View,
        explain: usize,
    ) -> anyhow::Result<Option<(Classified, Vec<u64>, Vector)>> {
        let Some(store) = self.store()? else { return Ok(None) };
        let b = Bayes { store: &*store, options: self.options.clone(), params: self.params };
        let (tokens, vector) = b.features(raw, view, explain > 0);
        let classified = b.classify_tokens(&tokens, &vector, explain)?;
        Ok(Some((classified, tokens.hashes, vector)))
    }

    /// Opens the store, when there is one, and reads it once (for LMDB that builds `serve`'s
    /// in-memory copy); failures are left for the first message to meet and report.
    pub fn warm(&self) {
        if let Ok(Some(store)) = self.store() {
            let _ = store.evidence(&[], &mut Vec::new(), &Vector::default());
        }
    }

    /// Waits until what autolearning queued is learnt.
    pub fn finish_learning(&self) {
        if let Some(Some(l)) = self.learner.get() {
            l.finish();
        }
    }

    /// Queues `item` (a message [`Scored::learn`] offered, which the other scanners agreed
    /// with) for autolearning; false when it was not queued.
    pub fn autolearn(&self, item: Item) -> bool {
        let learner = self.learner.get_or_init(|| {
            let store = self.store().ok().flatten()?;
            let target = self.config.learn_target(&self.base, store);
            crate::autolearn::Learner::start(target, self.config.params(), self.config.expiry())
                .map_err(|e| tracing::warn!(error = %e, "autolearn: cannot start its thread; not learning"))
                .ok()
        });
        learner.as_ref().is_some_and(|l| l.offer(item))
    }

    /// The finding for a message: BAYES_SPAM / BAYES_UNSURE / BAYES_HAM with points, or
    /// BAYES_UNTRAINED (no points) until enough was learnt, or BAYES_UNAVAILABLE when the store
    /// cannot be read (the message is still scanned by everything else).
    pub fn finding(&self, raw: &[u8], view: &View) -> Scored {
        let c = &self.config;
        let now = std::time::Instant::now();
        let down = self.down.lock().map(|d| *d).unwrap_or(None);
        if let Some((until, _)) = down.filter(|(until, _)| now < *until) {
            return Finding::new(
                "BAYES_UNAVAILABLE",
                format!("store failed; next attempt in {}s", until.saturating_duration_since(now).as_secs() + 1),
            )
            .into();
        }
        let result = self.classify(raw, view, c.explain);
        if let Ok(mut d) = self.down.lock() {
            match (&result, *d) {
                (Err(e), prev) => {
                    let wait = prev.map_or(FIRST_BACKOFF, |(_, w)| (w * 2).min(MAX_BACKOFF));
                    tracing::warn!(error = %e, retry_s = wait.as_secs(), "bayes store unavailable; scoring without it");
                    *d = Some((std::time::Instant::now() + wait, wait));
                }
                (Ok(_), Some(_)) => {
                    tracing::info!("bayes store available again");
                    *d = None;
                }
                (Ok(_), None) => {}
            }
        }
        let (classified, hashes, vector) = match result {
            Ok(Some(x)) => x,
            Ok(None) => {
                return Finding::new(
                    "BAYES_UNTRAINED",
                    format!(
                        "no store yet; learns with `strainer train`, scores from {} spam and {} ham",
                        c.min_spam, c.min_ham
                    ),
                )
                .into();
            }
            Err(e) => return Finding::new("BAYES_UNAVAILABLE", e.to_string()).into(),
        };
        let t = classified.totals;
        if t.spam < c.min_spam || t.ham < c.min_ham {
            // Never learns on its own verdicts before it has any.
            return Finding::new(
                "BAYES_UNTRAINED",
                format!("learnt {} spam and {} ham; scores from {} and {}", t.spam, t.ham, c.min_spam, c.min_ham),
            )
            .into();
        }
        let l = classified.score.log_odds;
        let name = if l >= c.threshold {
            "BAYES_SPAM"
        } else if l <= -c.threshold {
            "BAYES_HAM"
        } else {
            "BAYES_UNSURE"
        };
        let strongest: Vec<String> =
            classified.explain.iter().map(|(n, f, k)| format!("{n}={f:.3}({}/{})", k.spam, k.ham)).collect();
        let linear: Vec<String> = classified.linear.iter().map(|(n, s)| format!("{n}={s:+.2}")).collect();
        let mut f = Finding::new(
            name,
            format!(
                "p={:.4} score={l:.2} margin={:.2} features={}{}{}{}{}",
                classified.score.probability,
                classified.score.margin,
                classified.score.used,
                if strongest.is_empty() { "" } else { " strongest: " },
                strongest.join(" "),
                if linear.is_empty() { "" } else { " linear: " },
                linear.join(" ")
            ),
        );
        f.score = Some((l * c.points_per_log_odds).clamp(c.min_points, c.max_points));
        let sure = crate::autolearn::sure(l, c.autolearn_spam, c.autolearn_ham);
        let learn = sure.filter(|_| c.autolearn).map(|class| {
            // It waits in autolearning's queue: keep only what it needs.
            let (mut hashes, mut vector) = (hashes, vector);
            hashes.shrink_to_fit();
            vector.shrink_to_fit();
            Item { digest: Digest::of(raw), class, hashes, vector }
        });
        Scored { finding: f, learn }
    }
}

impl From<Finding> for Scored {
    fn from(finding: Finding) -> Scored {
        Scored { finding, learn: None }
    }
}
