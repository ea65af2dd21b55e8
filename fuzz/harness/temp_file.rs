//! A temporary file holding the fuzz input, for the harnesses that also read
//! through the file route (`read_idx`, `Checkpoint::load`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A temporary file holding some bytes, removed on drop.
pub struct TempFile(PathBuf);

impl TempFile {
    /// Writes `bytes` to a fresh file named after `tag`, the process and a counter.
    pub fn new(tag: &str, bytes: &[u8]) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "adgraph-fuzz-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, bytes).expect("harness: cannot write a temporary file");
        TempFile(path)
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
