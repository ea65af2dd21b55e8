//! The embedded word list and its split are exactly the benchmark README's
//! (`../shared/bench/README.md`, "W7 and W8"): counts, first words, SHA-256 of
//! each split, token and window counts.

use adgraph::data::words::{
    character, token, token_stream, validation_offsets, windows, Words, VOCAB,
};
use sha2::{Digest, Sha256};

fn sha256_lines(words: &[String]) -> String {
    let mut h = Sha256::new();
    for w in words {
        h.update(w.as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_embedded_list_splits_as_the_benchmark_defines() {
    let words = Words::embedded().unwrap();
    assert_eq!(words.len(), 63_612);
    let (train, val) = words.split(0);
    assert_eq!((train.len(), val.len()), (57_251, 6_361));
    assert_eq!(
        &train[..5],
        ["powerless", "tick", "suggests", "rankle", "strict"]
    );
    assert_eq!(&val[..3], ["yokes", "paltriness", "industriously"]);
    assert_eq!(
        sha256_lines(&train),
        "3d905eff877a90b8e826c64537e1148522077e9de99b190b54f072cbe836571c"
    );
    assert_eq!(
        sha256_lines(&val),
        "181aca3537505a7ef0fed5a94478ae58a9b987a591f674bd5e85265841d202ce"
    );
    let (train_stream, val_stream) = (token_stream(&train), token_stream(&val));
    assert_eq!((train_stream.len(), val_stream.len()), (529_538, 58_978));
    assert_eq!(validation_offsets(val_stream.len(), 16).len(), 3_686);
}

#[test]
fn tokens_and_windows() {
    assert_eq!(token('.'), Some(0));
    assert_eq!(token('a'), Some(1));
    assert_eq!(token('z'), Some(26));
    assert_eq!(token('A'), None);
    assert_eq!(VOCAB, 27);
    assert_eq!((character(0), character(1), character(26)), ('.', 'a', 'z'));
    let stream = token_stream(&["ab", "c"]); // . a b . c .
    assert_eq!(stream, [0, 1, 2, 0, 3, 0]);
    let (x, y) = windows(&stream, &[0, 2], 3).unwrap();
    assert_eq!(x, adgraph::tensor([[0., 1., 2.], [2., 0., 3.]]));
    assert_eq!(y, adgraph::tensor([[1., 2., 0.], [0., 3., 0.]]));
    assert!(windows(&stream, &[3], 3).is_err());
}

#[test]
fn loading_filters_and_reports_bad_files() {
    let w = Words::from_lines(["Apple", "it's", "a", "bb", "bb", "abc", "abcdefghijklmnop"]);
    assert_eq!(w.as_slice(), ["abc", "bb"]);
    let dir = std::env::temp_dir().join(format!("adgraph-words-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "A\nB\n").unwrap();
    let err = Words::load(&empty).unwrap_err().to_string();
    assert!(err.contains("empty.txt"), "{err}");
    let missing = Words::load(dir.join("missing.txt"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("missing.txt"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}
