//! Fuzz target `checkpoint`: the logic is in `fuzz/harness/checkpoint.rs`, which the stable
//! replay test `tests/fuzz_corpus.rs` runs on every file of `fuzz/corpus/checkpoint/`.
#![no_main]

#[path = "../harness/checkpoint.rs"]
mod harness;
#[path = "../harness/temp_file.rs"]
mod temp_file;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
