//! Fuzz target `idx`: the logic is in `fuzz/harness/idx.rs`, which the stable
//! replay test `tests/fuzz_corpus.rs` runs on every file of `fuzz/corpus/idx/`.
#![no_main]

#[path = "../harness/idx.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
