//! The running configuration, replaceable while serving (SIGHUP): transactions in flight finish
//! with the settings they started with, new ones use the new settings, and a configuration that
//! does not load or compile is refused with the old one left in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use strainer_receive::{DataReply, Handler};
use strainer_types::Transaction;

use crate::config::Config;
use crate::filter::Filter;
use crate::scanners::Local;

/// The handler `serve` runs: the current filter, swapped whole on reload.
pub struct Live {
    metrics: Arc<crate::metrics::Metrics>,
    current: RwLock<Arc<Filter>>,
    config: RwLock<Config>,
    path: Option<PathBuf>,
}

/// Relative rule paths are taken from the config file's folder.
pub fn base_dir(path: Option<&Path>) -> PathBuf {
    path.and_then(Path::parent)
        .map(PathBuf::from)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Loads what the scanners read (Bayes's copy of its store) now, on a thread of its own, rather
/// than in the first message while every other session reads the store's file directly.
fn warm(local: &Arc<Local>) {
    let local = Arc::clone(local);
    if let Err(e) = std::thread::Builder::new().name("bayes-warm".into()).spawn(move || local.warm()) {
        tracing::debug!(error = %e, "no thread to load the Bayes store ahead; the first message will");
    }
}

impl Live {
    /// Serving `config` (read from `path`, if any) with its compiled scanners.
    pub fn new(config: Config, local: Arc<Local>, path: Option<PathBuf>) -> Arc<Live> {
        let metrics = crate::metrics::Metrics::new(config.quarantine.dir.clone());
        warm(&local);
        let filter = Filter::new(&config, local, Arc::clone(&metrics));
        Arc::new(Live { metrics, current: RwLock::new(filter), config: RwLock::new(config), path })
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.config.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Re-reads the configuration file and swaps it in; on any error the old one stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            anyhow::bail!("running on the embedded defaults: there is no file to reload");
        };
        let config = Config::load(path)?;
        self.apply(config, &base_dir(Some(path)))
    }

    /// Swaps in an already parsed configuration (compiling its scanners first).
    pub fn apply(&self, config: Config, base: &Path) -> anyhow::Result<()> {
        let local = Arc::new(Local::compile(&config, base)?);
        warm(&local);
        let old = self.config();
        if old.server != config.server {
            tracing::warn!("[server] settings changed: they take effect at the next restart, not on reload");
        }
        let filter = Filter::new(&config, local, Arc::clone(&self.metrics));
        if let (Ok(mut cur), Ok(mut cfg)) = (self.current.write(), self.config.write()) {
            *cur = filter;
            *cfg = config;
        }
        Ok(())
    }

    /// Waits until what autolearning queued is learnt (`serve` stopping).
    pub fn finish_learning(&self) {
        if let Some(f) = self.filter() {
            f.finish_learning();
        }
    }

    /// The metrics, kept across reloads.
    pub fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        Arc::clone(&self.metrics)
    }

    fn filter(&self) -> Option<Arc<Filter>> {
        self.current.read().ok().map(|f| Arc::clone(&f))
    }
}

impl Handler for Live {
    async fn data(&self, tx: Transaction) -> DataReply {
        match self.filter() {
            // The transaction keeps the filter it started with, whatever reloads happen meanwhile.
            Some(f) => f.data(tx).await,
            None => DataReply::One(strainer_types::Reply::tempfail("Error: internal error, try again later")),
        }
    }
}
