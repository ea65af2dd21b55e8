//! Fuzz harness for the IDX reader, shared by the `idx` fuzz target and the
//! stable replay test `tests/fuzz_corpus.rs`.
//!
//! The input is an IDX file's bytes (gzipped or not). It is read from memory
//! ([`read_idx_bytes`], every rank filter) and from a file ([`read_idx`],
//! [`read_idx_images`], [`read_idx_labels`]). Each read must return `Ok` or a
//! clean `Err`; a panic is a finding. Beyond not panicking, the two routes
//! must agree, and what they accept must be self-consistent.

use adgraph::data::{read_idx, read_idx_bytes, read_idx_images, read_idx_labels, IdxData};

use super::temp_file::TempFile;

/// Checks what a reader accepted: the data fills the dims exactly.
fn check_accepted(idx: &IdxData, rank: Option<u8>) {
    let n: usize = idx.dims().iter().product();
    assert_eq!(n, idx.data().len(), "dims {:?} vs data", idx.dims());
    if let Some(r) = rank {
        assert_eq!(idx.dims().len(), usize::from(r));
    }
}

/// Reads `data` every way; panics only on a reader's panic or inconsistency.
pub fn run(data: &[u8]) {
    let any = read_idx_bytes(data, None);
    let labels = read_idx_bytes(data, Some(1));
    let images = read_idx_bytes(data, Some(3));
    for (r, rank) in [(&any, None), (&labels, Some(1)), (&images, Some(3))] {
        if let Ok(idx) = r {
            check_accepted(idx, rank);
        }
    }
    // A rank filter only narrows what is accepted.
    if let Ok(l) = &labels {
        assert_eq!(any.as_ref().ok(), Some(l));
    }
    if let Ok(i) = &images {
        assert_eq!(any.as_ref().ok(), Some(i));
    }

    let file = TempFile::new("idx", data);
    let from_file = read_idx(file.path());
    assert_eq!(
        from_file.as_ref().ok(),
        any.as_ref().ok(),
        "file and memory readers disagree"
    );
    assert_eq!(from_file.is_err(), any.is_err());
    match read_idx_labels(file.path()) {
        Ok(l) => assert_eq!(Some(l.as_slice()), labels.as_ref().ok().map(IdxData::data)),
        Err(_) => assert!(labels.is_err()),
    }
    match read_idx_images(file.path()) {
        Ok(set) => {
            let idx = images.as_ref().expect("images read from file only");
            assert_eq!(set.images().shape(), idx.dims());
            assert!(set.images().iter().all(|p| (0.0..=1.0).contains(p)));
        }
        Err(_) => assert!(images.is_err()),
    }
}
