//! Fuzz harness for the safetensors checkpoint reader, shared by the
//! `checkpoint` fuzz target and the stable replay test `tests/fuzz_corpus.rs`.
//!
//! The input is a checkpoint file's bytes. It is parsed from memory
//! ([`Checkpoint::from_bytes`]) and from a file ([`Checkpoint::load`]); what
//! parses is written back and re-read, then restored (strict and partial) into
//! two small graphs and, as a training state, into one with an Adam optimizer.
//! Every call must return `Ok` or a clean `Err`; a panic is a finding, and so
//! is a disagreement between the two routes or a restore that does not do
//! what its report says.

use std::collections::BTreeMap;

use adgraph::checkpoint::{Checkpoint, RestoreMode};
use adgraph::init::Ones;
use adgraph::optim::Adam;
use adgraph::{Graph, Tensor};

/// At most this many values in all of a checkpoint's tensors are made into
/// variables of a graph, so a restore stays fast.
const MAX_GRAPH_VALUES: usize = 1 << 12;

use super::temp_file::TempFile;

/// A tensor's shape and the bits of its values (NaN-proof equality).
fn bits(t: &Tensor) -> (Vec<usize>, Vec<u32>) {
    (t.shape().to_vec(), t.iter().map(|x| x.to_bits()).collect())
}

/// Checkpoint equality by names, shapes, value bits and metadata.
fn same(a: &Checkpoint, b: &Checkpoint) -> bool {
    a.metadata == b.metadata
        && a.tensors.len() == b.tensors.len()
        && a.tensors
            .iter()
            .zip(&b.tensors)
            .all(|((na, ta), (nb, tb))| na == nb && bits(ta) == bits(tb))
}

/// Restores `ckpt` into `g` both ways and checks the outcome against the report.
fn restore_and_check(g: &Graph, ckpt: &Checkpoint) {
    let before: Vec<_> = g
        .variables(false)
        .iter()
        .map(|v| bits(&g.variable_value(v).expect("own variable")))
        .collect();
    match g.restore_checkpoint(ckpt, RestoreMode::Strict) {
        Ok(report) => assert!(
            report.is_complete(),
            "strict restore with problems: {report}"
        ),
        Err(_) => {
            // Nothing may have changed.
            let after: Vec<_> = g
                .variables(false)
                .iter()
                .map(|v| bits(&g.variable_value(v).expect("own variable")))
                .collect();
            assert_eq!(before, after, "a failed strict restore changed variables");
        }
    }
    let report = g
        .restore_checkpoint(ckpt, RestoreMode::Partial)
        .expect("a partial restore of a parsed checkpoint cannot fail");
    for name in &report.restored {
        let var = g.node(name).expect("restored variable exists");
        let value = g.variable_value(&var).expect("own variable");
        let saved = ckpt.get(name).expect("restored from the checkpoint");
        assert_eq!(bits(&value), bits(saved), "{name} restored wrongly");
    }
    let _ = report.to_string();
}

/// Runs the checkpoint reader and restores on `data`.
pub fn run(data: &[u8]) {
    let parsed = Checkpoint::from_bytes(data);
    let file = TempFile::new("ckpt", data);
    let loaded = Checkpoint::load(file.path());
    match (&parsed, &loaded) {
        (Ok(a), Ok(b)) => assert!(same(a, b), "file and memory readers disagree"),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "file and memory readers disagree: {:?} vs {:?}",
            parsed.as_ref().err(),
            loaded.as_ref().err()
        ),
    }
    let Ok(ckpt) = parsed else { return };
    for t in ckpt.tensors.values() {
        assert_eq!(t.len(), t.shape().iter().product::<usize>());
    }

    // What was read can be written and read back unchanged (names permitting).
    if let Ok(bytes) = ckpt.to_bytes() {
        let back = Checkpoint::from_bytes(&bytes).expect("re-reading a written checkpoint");
        assert!(
            same(&back, &ckpt),
            "write/read round trip changed the checkpoint"
        );
    }

    // A fixed graph: Variable [2, 2], Variable_0 [3], Variable_1 [] (scalar).
    let fixed = Graph::with_seed(0);
    for shape in [&[2, 2][..], &[3], &[]] {
        fixed.variable(shape, Ones, true).expect("small variable");
    }
    restore_and_check(&fixed, &ckpt);

    // A graph shaped like the checkpoint (variables are named Variable,
    // Variable_0, ... in order of creation), bounded in size.
    let mirror = Graph::with_seed(0);
    let mut total = 0usize;
    for t in ckpt.tensors.values() {
        total = total.saturating_add(t.len());
        if total > MAX_GRAPH_VALUES {
            break;
        }
        mirror
            .variable(t.shape(), Ones, true)
            .expect("small variable");
    }
    restore_and_check(&mirror, &ckpt);

    // As a training state, with an Adam optimizer reading its slots.
    let mut adam = Adam::new(0.01);
    let metadata: BTreeMap<String, String> = mirror
        .restore_training_checkpoint(&ckpt, &mut adam)
        .unwrap_or_default();
    if !metadata.is_empty() {
        assert_eq!(metadata, ckpt.metadata);
    }
}
