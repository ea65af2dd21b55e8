//! Fuzz target `idx`: the logic is in `fuzz/harness/idx.rs`, which the stable
//! replay test `tests/fuzz_corpus.rs` runs on every file of `fuzz/corpus/idx/`.
#![no_main]

#[path = "../harness/idx.rs"]
mod harness;
#[path = "../harness/temp_file.rs"]
mod temp_file;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
