//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) through
//! the same harness the cargo-fuzz target runs (`fuzz/harness/<target>.rs`), on
//! stable Rust, so CI catches a regression of any input the fuzzer once found
//! or kept. A test fails when any file panics, and when its corpus folder is
//! missing or empty (so it cannot pass by replaying nothing).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "../fuzz/harness/checkpoint.rs"]
mod checkpoint_harness;
#[path = "../fuzz/harness/graph_build.rs"]
mod graph_build_harness;
#[path = "../fuzz/harness/idx.rs"]
mod idx_harness;
#[path = "../fuzz/harness/temp_file.rs"]
mod temp_file;

/// Runs `run` on every file of `fuzz/corpus/<target>/`; panics listing the
/// files that panicked.
fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    replay_dir(&dir, target, run);
}

/// Runs `run` on every file of `dir`; panics when `dir` is missing or empty,
/// or listing the files that panicked.
fn replay_dir(dir: &Path, target: &str, run: fn(&[u8])) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
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

// The replay itself must fail when it should, or the tests above prove nothing.

/// Whether `replay_dir` panics on `dir` with `run`.
fn replay_fails(dir: &Path, run: fn(&[u8])) -> bool {
    catch_unwind(|| replay_dir(dir, "probe", run)).is_err()
}

#[test]
fn replay_fails_on_a_panicking_file_and_on_a_missing_or_empty_folder() {
    let dir = std::env::temp_dir().join(format!("adgraph-fuzz-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(replay_fails(&dir, |_| {}), "a missing folder passed");
    std::fs::create_dir_all(&dir).unwrap();
    assert!(replay_fails(&dir, |_| {}), "an empty folder passed");
    std::fs::write(dir.join("a"), b"ok").unwrap();
    std::fs::write(dir.join("b"), b"boom").unwrap();
    assert!(!replay_fails(&dir, |_| {}), "a clean corpus failed");
    assert!(
        replay_fails(&dir, |d| assert_ne!(d, b"boom")),
        "a panicking file passed"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
