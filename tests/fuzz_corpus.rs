//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) through
//! the same harness the cargo-fuzz target runs (`fuzz/harness/<target>.rs`), on
//! stable Rust, so CI catches a regression of any input the fuzzer once found
//! or kept. A test fails when any file panics, and when its corpus folder is
//! missing or empty (so it cannot pass by replaying nothing).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

#[path = "../fuzz/harness/checkpoint.rs"]
mod checkpoint_harness;
#[path = "../fuzz/harness/graph_build.rs"]
mod graph_build_harness;
#[path = "../fuzz/harness/idx.rs"]
mod idx_harness;

/// Runs `run` on every file of `fuzz/corpus/<target>/`; panics listing the
/// files that panicked.
fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus folder {} is missing: {e}", dir.display()))
        .map(|e| e.expect("readable corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "corpus folder {} has no files",
        dir.display()
    );
    let failed: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let data = std::fs::read(path).expect("readable corpus file");
            catch_unwind(AssertUnwindSafe(|| run(&data)))
                .err()
                .map(|_| path.display().to_string())
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} {target} corpus files panicked: {failed:#?}",
        failed.len(),
        files.len()
    );
    eprintln!("{target}: replayed {} corpus files", files.len());
}

#[test]
fn idx_corpus_replays_cleanly() {
    replay("idx", idx_harness::run);
}

#[test]
fn checkpoint_corpus_replays_cleanly() {
    replay("checkpoint", checkpoint_harness::run);
}

#[test]
fn graph_build_corpus_replays_cleanly() {
    replay("graph_build", graph_build_harness::run);
}
