//! Fuzz target `graph_build`: the logic is in `fuzz/harness/graph_build.rs`, which the stable
//! replay test `tests/fuzz_corpus.rs` runs on every file of `fuzz/corpus/graph_build/`.
#![no_main]

#[path = "../harness/graph_build.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
