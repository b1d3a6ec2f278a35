//! Large messages go to disk while they are received, and are read back for scanning within a
//! shared memory budget: memory per session stays flat whatever the message size, and the
//! memory taken by messages being scanned at once is bounded, whatever the number of sessions.
//!
//! Spool files are anonymous (`O_TMPFILE` where the kernel offers it): they have no name, so a
//! crash or a kill leaves nothing behind to clean up. The message is not ours until the handler
//! answered 2xx, so nothing here is fsynced: if we die, Postfix still has the message.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Memory scanning takes per message byte: the message, its decoded attachments and what the
/// scanners derive (measured with the load tool: a 20 MB message raised RSS by about 60 MB).
pub const SCAN_COST: usize = 3;

/// Where and above what size messages are spooled, and the memory budget for reading them back.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Directory for spool files; on disk, not a tmpfs, or spooling saves nothing.
    pub dir: PathBuf,
    /// Messages larger than this many bytes are written to `dir` while being received.
    pub threshold: usize,
    /// KiB of memory that scanning spooled messages may take at once.
    budget_kib: u32,
    permits: Arc<Semaphore>,
}

impl SpoolConfig {
    /// Spools messages above `threshold` bytes in `dir`; scanning them may take `budget` bytes
    /// of memory at once ([`SCAN_COST`] per message byte; one message larger than the whole
    /// budget waits until it has it to itself).
    pub fn new(dir: impl Into<PathBuf>, threshold: usize, budget: usize) -> SpoolConfig {
        let budget_kib = u32::try_from(budget.div_ceil(1024)).unwrap_or(u32::MAX).max(1);
        SpoolConfig { dir: dir.into(), threshold, budget_kib, permits: Arc::new(Semaphore::new(budget_kib as usize)) }
    }

    /// An anonymous file in the spool directory.
    pub fn create(&self) -> std::io::Result<File> {
        tempfile::tempfile_in(&self.dir)
    }

    /// Waits for room in the memory budget to scan a message of `len` bytes.
    pub async fn reserve(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        let cost = len.saturating_mul(SCAN_COST);
        let kib = u32::try_from(cost.div_ceil(1024)).unwrap_or(u32::MAX).clamp(1, self.budget_kib);
        Arc::clone(&self.permits).acquire_many_owned(kib).await.ok()
    }

    /// KiB of the budget free right now.
    pub fn available_kib(&self) -> usize {
        self.permits.available_permits()
    }
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig::new(std::env::temp_dir(), 256 * 1024, 64 * 1024 * 1024)
    }
}

/// Reads a whole spool file back, from the start.
pub fn read_back(mut file: File, len: usize) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(0))?;
    let mut message = Vec::with_capacity(len);
    file.read_to_end(&mut message)?;
    if message.len() != len {
        return Err(std::io::Error::other(format!("spool file holds {} bytes, {len} were written", message.len())));
    }
    Ok(message)
}
