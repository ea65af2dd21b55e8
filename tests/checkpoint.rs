//! Checkpoints: round trips, strict and partial restores, corrupt and hostile
//! files, atomic saves, optimizer state, and exact resumption of training.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use adgraph::checkpoint::{Checkpoint, MismatchedShape, RestoreMode, OPTIMIZER_PREFIX};
use adgraph::init::{ConstantInit, GlorotNormal, GlorotUniform, HeUniform, Zeros};
use adgraph::optim::{
    step_from_tensor, step_to_tensor, Adam, AdamW, GradientDescent, Momentum, Optimizer, RmsProp,
    Schedule,
};
use adgraph::{self as ad, Error, Feed, Graph, Node, RunTime, Tensor};
use rand::{Rng, SeedableRng};

mod alloc_meter;
use alloc_meter::largest_allocation;
use rand_chacha::ChaCha8Rng;

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "adgraph-ckpt-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn random_tensor(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Tensor::from_shape_fn(shape, |_| rng.gen_range(-10.0f32..10.0))
}

fn checkpoint_message(e: &Error) -> String {
    match e {
        Error::Checkpoint { message, .. } => message.clone(),
        other => panic!("expected Error::Checkpoint, got {other:?}"),
    }
}

// ------------------------------------------------------------------ round trips

#[test]
fn checkpoint_round_trip_preserves_tensors_bits_and_metadata() {
    let dir = TempDir::new("rt");
    let mut c = Checkpoint::new();
    c.insert("a", random_tensor(&[3, 4, 5], 1)).unwrap();
    c.insert("scalar", ndarray::arr0(-0.0f32).into_dyn())
        .unwrap();
    c.insert("empty", Tensor::zeros(ndarray::IxDyn(&[0, 3])))
        .unwrap();
    // Special values and a non-standard layout (a transposed view).
    c.insert(
        "special",
        ndarray::arr1(&[
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            1e-45,
            f32::MAX,
        ])
        .into_dyn(),
    )
    .unwrap();
    let t = random_tensor(&[4, 6], 2);
    c.insert("transposed", t.t().to_owned()).unwrap();
    c.metadata.insert("epoch".into(), "12".into());
    c.metadata
        .insert("note".into(), "ünïcode, \"quotes\"".into());
    let path = dir.path("c.safetensors");
    c.save(&path).unwrap();
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(back, c);
    assert_eq!(back.get("transposed").unwrap(), &t.t());
    assert!(back
        .get("scalar")
        .unwrap()
        .iter()
        .all(|x| x.to_bits() == (-0.0f32).to_bits()));
    // NaN payload survives (compare bits).
    let mut n = Checkpoint::new();
    n.insert(
        "nan",
        ndarray::arr1(&[f32::from_bits(0x7fc0_1234)]).into_dyn(),
    )
    .unwrap();
    let back = Checkpoint::from_bytes(&n.to_bytes().unwrap()).unwrap();
    assert_eq!(back.get("nan").unwrap()[0].to_bits(), 0x7fc0_1234);
    assert_eq!(dir.entries(), vec!["c.safetensors".to_string()]);
}

#[test]
fn insert_rejects_duplicates() {
    let mut c = Checkpoint::new();
    c.insert("w", random_tensor(&[2], 0)).unwrap();
    assert!(matches!(
        c.insert("w", random_tensor(&[2], 1)),
        Err(Error::Checkpoint { .. })
    ));
    assert_eq!(c.get("w").unwrap(), &random_tensor(&[2], 0));
}

fn three_variable_graph(seed: u64) -> (Graph, Vec<Node>) {
    let g = Graph::with_seed(seed);
    let a = g.variable(&[4, 3], GlorotUniform::new(), true).unwrap();
    let b = g.variable(&[3], HeUniform::new(), true).unwrap();
    let c = g.variable(&[2, 2, 2], GlorotNormal::new(), false).unwrap();
    (g, vec![a, b, c])
}

fn values(g: &Graph, vars: &[Node]) -> Vec<Tensor> {
    vars.iter().map(|v| g.variable_value(v).unwrap()).collect()
}

#[test]
fn variables_round_trip_strict() {
    let dir = TempDir::new("vars");
    let path = dir.path("model.safetensors");
    let (g1, v1) = three_variable_graph(1);
    g1.save_variables(&path, false).unwrap();
    let (g2, v2) = three_variable_graph(2);
    assert_ne!(values(&g1, &v1), values(&g2, &v2));
    let report = g2.restore_variables(&path, RestoreMode::Strict).unwrap();
    assert!(report.is_complete());
    assert_eq!(
        report.restored,
        vec!["Variable", "Variable_0", "Variable_1"]
    );
    assert_eq!(values(&g1, &v1), values(&g2, &v2));
}

#[test]
fn only_trainable_saves_the_trainable_ones() {
    let dir = TempDir::new("trainable");
    let path = dir.path("model.safetensors");
    let (g1, _) = three_variable_graph(1);
    g1.save_variables(&path, true).unwrap();
    let c = Checkpoint::load(&path).unwrap();
    assert_eq!(
        c.tensors.keys().cloned().collect::<Vec<_>>(),
        vec!["Variable", "Variable_0"]
    );
    // Strict restore into the full graph misses the non-trainable one.
    let (g2, v2) = three_variable_graph(2);
    let before = values(&g2, &v2);
    let err = g2
        .restore_variables(&path, RestoreMode::Strict)
        .unwrap_err();
    assert!(checkpoint_message(&err).contains("Variable_1"));
    assert_eq!(
        values(&g2, &v2),
        before,
        "a failed strict restore changes nothing"
    );
    let report = g2.restore_variables(&path, RestoreMode::Partial).unwrap();
    assert_eq!(report.missing, vec!["Variable_1"]);
    assert_eq!(values(&g2, &v2)[2], before[2]);
    assert_eq!(values(&g2, &v2)[..2], values(&g1, &g1.variables(true))[..]);
}

// ------------------------------------------------------- strict and partial restores

/// A graph with Variable [2, 3], Variable_0 [4], Variable_1 [5], Variable_2 [1],
/// and a file with Variable [3, 2], Variable_0 [4], foo [1], bar [2].
fn mismatched() -> (Graph, Vec<Node>, Checkpoint) {
    let g = Graph::with_seed(3);
    let vars = vec![
        g.variable(&[2, 3], GlorotUniform::new(), true).unwrap(),
        g.variable(&[4], GlorotUniform::new(), true).unwrap(),
        g.variable(&[5], GlorotUniform::new(), true).unwrap(),
        g.variable(&[1], ConstantInit(3.0), false).unwrap(),
    ];
    let mut c = Checkpoint::new();
    c.insert("Variable", random_tensor(&[3, 2], 1)).unwrap();
    c.insert("Variable_0", random_tensor(&[4], 2)).unwrap();
    c.insert("foo", random_tensor(&[1], 3)).unwrap();
    c.insert("bar", random_tensor(&[2], 4)).unwrap();
    (g, vars, c)
}

#[test]
fn strict_restore_reports_every_problem_at_once_and_changes_nothing() {
    let dir = TempDir::new("strict");
    let path = dir.path("m.safetensors");
    let (g, vars, c) = mismatched();
    c.save(&path).unwrap();
    let before = values(&g, &vars);
    let err = g.restore_variables(&path, RestoreMode::Strict).unwrap_err();
    let msg = checkpoint_message(&err);
    for needle in [
        "Variable_1",
        "Variable_2",
        "foo",
        "bar",
        "Variable: graph [2, 3], checkpoint [3, 2]",
        "2 missing",
        "2 unexpected",
        "1 shape mismatches",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    }
    assert!(err.to_string().contains("m.safetensors"), "{err}");
    // Variable_0 matched but strict mode restores nothing when anything is wrong.
    assert_eq!(values(&g, &vars), before);
    // The in-memory variant reports the same.
    let err2 = g.restore_checkpoint(&c, RestoreMode::Strict).unwrap_err();
    assert_eq!(checkpoint_message(&err2), msg);
}

#[test]
fn partial_restore_restores_matches_and_reports_the_rest() {
    let (g, vars, c) = mismatched();
    let before = values(&g, &vars);
    let report = g.restore_checkpoint(&c, RestoreMode::Partial).unwrap();
    assert_eq!(report.restored, vec!["Variable_0"]);
    assert_eq!(report.missing, vec!["Variable_1", "Variable_2"]);
    assert_eq!(report.unexpected, vec!["bar", "foo"]);
    assert_eq!(
        report.mismatched,
        vec![MismatchedShape {
            name: "Variable".into(),
            variable: vec![2, 3],
            checkpoint: vec![3, 2],
        }]
    );
    assert!(!report.is_complete());
    assert!(report
        .to_string()
        .contains("Variable: graph [2, 3], checkpoint [3, 2]"));
    let after = values(&g, &vars);
    assert_eq!(after[0], before[0]);
    assert_eq!(&after[1], c.get("Variable_0").unwrap());
    assert_eq!(after[2..], before[2..]);
}

// ------------------------------------------------------- corrupt and hostile files

fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

fn load_bytes(dir: &TempDir, name: &str, bytes: &[u8]) -> adgraph::Result<Checkpoint> {
    let path = dir.path(name);
    std::fs::write(&path, bytes).unwrap();
    Checkpoint::load(&path)
}

fn assert_bad(dir: &TempDir, name: &str, bytes: &[u8], needle: &str) {
    let err = load_bytes(dir, name, bytes).unwrap_err();
    let msg = checkpoint_message(&err);
    assert!(
        msg.to_lowercase().contains(&needle.to_lowercase()),
        "{name}: {needle:?} not in {msg:?}"
    );
    // Also through bytes in memory, when the file-level checks did not catch it first.
    assert!(Checkpoint::from_bytes(bytes).is_err(), "{name}");
}

#[test]
fn corrupt_files_are_errors() {
    let dir = TempDir::new("corrupt");
    assert_bad(&dir, "empty", b"", "too short");
    assert_bad(&dir, "short", b"abc", "too short");
    assert_bad(
        &dir,
        "text",
        b"this is not a safetensors file at all",
        "header length",
    );
    // Header length larger than the file.
    assert_bad(&dir, "trunc-header", &raw_file("{}", b"")[..9], "truncated");
    // Absurd header length: refused before reading or allocating.
    let mut absurd = u64::MAX.to_le_bytes().to_vec();
    absurd.extend_from_slice(b"{}");
    assert_bad(&dir, "absurd-header", &absurd, "exceeds the limit");
    let mut big = (200_000_000u64).to_le_bytes().to_vec();
    big.extend_from_slice(&[b' '; 64]);
    assert_bad(&dir, "big-header", &big, "exceeds the limit");
    assert_bad(
        &dir,
        "bad-json",
        &raw_file("{not json", b""),
        "not a valid safetensors",
    );
    assert_bad(&dir, "bad-utf8", &raw_file("\u{0}", b"")[..], "not a valid");
    // Wrong dtype.
    let i32_file = raw_file(
        r#"{"w":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    assert_bad(&dir, "i32", &i32_file, "dtype I32");
    let f64_file = raw_file(
        r#"{"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    assert_bad(&dir, "f64", &f64_file, "dtype F64");
    // Shape that does not fit its byte range.
    let shape_mismatch = raw_file(
        r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    assert_bad(&dir, "shape-mismatch", &shape_mismatch, "not a valid");
    // Absurd shape whose element count overflows.
    let overflow = raw_file(
        r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    assert_bad(&dir, "overflow", &overflow, "not a valid");
    // Offsets past the end of the file.
    let past_end = raw_file(
        r#"{"w":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4000000000]}}"#,
        &[0; 8],
    );
    assert_bad(&dir, "past-end", &past_end, "not a valid");
    // Data not covered exactly (trailing bytes).
    let trailing = raw_file(
        r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        &[0; 12],
    );
    assert_bad(&dir, "trailing", &trailing, "not a valid");
    // Overlapping tensors.
    let overlap = raw_file(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
        &[0; 12],
    );
    assert_bad(&dir, "overlap", &overlap, "not a valid");
    // Metadata that is not string -> string.
    let meta = raw_file(r#"{"__metadata__":{"a":1}}"#, b"");
    assert_bad(&dir, "meta", &meta, "not a valid");
    // A well-formed file written by hand loads.
    let good = raw_file(
        r#"{"__metadata__":{"k":"v"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
        &[0, 0, 128, 63, 0, 0, 0, 64],
    );
    let c = load_bytes(&dir, "good", &good).unwrap();
    assert_eq!(c.get("w").unwrap().as_slice().unwrap(), &[1.0, 2.0]);
    assert_eq!(c.metadata.get("k").map(String::as_str), Some("v"));
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let dir = TempDir::new("trunc");
    let (g, _) = three_variable_graph(5);
    let path = dir.path("full.safetensors");
    g.save_variables(&path, false).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert!(Checkpoint::load(&path).is_ok());
    for cut in 0..bytes.len() {
        let r = load_bytes(&dir, "cut", &bytes[..cut]);
        assert!(
            matches!(r, Err(Error::Checkpoint { .. })),
            "cut at {cut} of {}: {r:?}",
            bytes.len()
        );
    }
}

#[test]
fn random_corruption_never_panics() {
    let (g, _) = three_variable_graph(6);
    let bytes = g.variables_checkpoint(false).unwrap().to_bytes().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut errors = 0;
    for _ in 0..3000 {
        let mut b = bytes.clone();
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(0..b.len());
            b[i] = rng.gen();
        }
        // Any outcome but a panic is fine; a flipped data byte still parses.
        if Checkpoint::from_bytes(&b).is_err() {
            errors += 1;
        }
    }
    assert!(errors > 0);
}

#[test]
fn missing_file_and_directory_are_errors() {
    let dir = TempDir::new("missing");
    assert!(matches!(
        Checkpoint::load(dir.path("nope.safetensors")),
        Err(Error::Io { .. })
    ));
    assert!(Checkpoint::load(&dir.0).is_err());
    let (g, _) = three_variable_graph(1);
    assert!(g
        .restore_variables(dir.path("nope.safetensors"), RestoreMode::Partial)
        .is_err());
}

// ------------------------------------------- hostile files, one test per class
//
// Each class goes through `Checkpoint::load` (a file) and
// `Checkpoint::from_bytes`, and must give `Error::Checkpoint` whose message
// names the problem, with no allocation near what the file claims.

/// Asserts `bytes` is refused from a file and from memory, both with a
/// message containing `needle`, each allocating less than 1 MiB at once; returns the file
/// reader's message.
fn refused(name: &str, bytes: &[u8], needle: &str) -> String {
    let dir = TempDir::new("hostile");
    let path = dir.path(name);
    std::fs::write(&path, bytes).unwrap();
    let (from_file, a1) = largest_allocation(|| Checkpoint::load(&path));
    let (from_mem, a2) = largest_allocation(|| Checkpoint::from_bytes(bytes));
    let msg = checkpoint_message(&from_file.unwrap_err());
    let in_memory = checkpoint_message(&from_mem.unwrap_err());
    for m in [&msg, &in_memory] {
        assert!(m.contains(needle), "{name}: {needle:?} not in {m:?}");
    }
    assert!(
        a1.max(a2) < 1 << 20,
        "{name}: allocated {} bytes",
        a1.max(a2)
    );
    // What the user sees (`cargo test --test checkpoint hostile -- --nocapture`).
    eprintln!("{name}: {msg} [largest allocation {} bytes]", a1.max(a2));
    msg
}

/// A valid file of one F32 tensor `w` of shape [2].
fn one_tensor_file() -> Vec<u8> {
    raw_file(
        r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
        &[0, 0, 128, 63, 0, 0, 0, 64],
    )
}

#[test]
fn hostile_checkpoint_too_short() {
    refused(
        "short",
        b"abc",
        "3 bytes is too short for a safetensors file",
    );
}

#[test]
fn hostile_checkpoint_truncated_header() {
    let good = one_tensor_file();
    refused("trunc-header", &good[..20], "truncated: the header needs");
}

#[test]
fn hostile_checkpoint_truncated_data() {
    let good = one_tensor_file();
    assert!(Checkpoint::from_bytes(&good).is_ok());
    refused(
        "trunc-data",
        &good[..good.len() - 1],
        "not a valid safetensors file",
    );
}

#[test]
fn hostile_checkpoint_oversized_with_trailing_bytes() {
    let mut long = one_tensor_file();
    long.extend_from_slice(&[0; 4]);
    refused(
        "trailing",
        &long,
        "data offsets do not end where the file does (12 data bytes after the header)",
    );
}

#[test]
fn hostile_checkpoint_wrong_magic() {
    // safetensors has no magic number: the first 8 bytes are the header
    // length, which text makes absurd; a short length makes the JSON invalid.
    refused(
        "text",
        b"this is not a safetensors file at all",
        "exceeds the limit",
    );
    refused(
        "png",
        &raw_file("\u{89}PNG\r\n", b""),
        "not a valid safetensors file",
    );
}

#[test]
fn hostile_checkpoint_wrong_dtype() {
    let f = raw_file(
        r#"{"w":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    refused(
        "i32",
        &f,
        "tensor \"w\" has dtype I32; adgraph reads F32 tensors only",
    );
}

#[test]
fn hostile_checkpoint_inconsistent_header() {
    // A shape that does not fit its byte range, and overlapping ranges.
    let shape = raw_file(
        r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    refused("shape", &shape, "not a valid safetensors file");
    let overlap = raw_file(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
        &[0; 12],
    );
    refused("overlap", &overlap, "not a valid safetensors file");
}

#[test]
fn hostile_checkpoint_absurd_header_length() {
    let mut f = u64::MAX.to_le_bytes().to_vec();
    f.extend_from_slice(b"{}");
    refused("absurd", &f, "exceeds the limit of 100000000 bytes");
}

#[test]
fn hostile_checkpoint_header_length_beyond_the_file() {
    // Under the limit, but far more than the 100-byte file holds.
    let mut f = 99_999_999u64.to_le_bytes().to_vec();
    f.extend_from_slice(&[b' '; 92]);
    refused(
        "beyond",
        &f,
        "truncated: the header needs 99999999 bytes, but the file has 92",
    );
}

#[test]
fn hostile_checkpoint_absurd_tensor_shape() {
    // 2^40 values claimed, backed by offsets far past the end of the file.
    let huge = raw_file(
        r#"{"w":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4398046511104]}}"#,
        &[0; 8],
    );
    refused("huge", &huge, "offsets past the end");
    // An element count that overflows 64 bits, with small offsets.
    let overflow = raw_file(
        r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    refused("overflow", &overflow, "a tensor's shape overflows");
}

// ------------------------------------------------------------------ atomic saves

fn write_good(dir: &TempDir) -> (PathBuf, Checkpoint) {
    let path = dir.path("ckpt.safetensors");
    let mut c = Checkpoint::new();
    c.insert("w", random_tensor(&[3], 9)).unwrap();
    c.save(&path).unwrap();
    (path, c)
}

#[test]
fn overwriting_replaces_the_file() {
    let dir = TempDir::new("overwrite");
    let (path, _) = write_good(&dir);
    let mut c2 = Checkpoint::new();
    c2.insert("other", random_tensor(&[2, 2], 10)).unwrap();
    c2.save(&path).unwrap();
    assert_eq!(Checkpoint::load(&path).unwrap(), c2);
    assert_eq!(dir.entries(), vec!["ckpt.safetensors"]);
}

#[test]
fn failed_saves_leave_the_previous_file_and_no_temp_file() {
    let dir = TempDir::new("atomic");
    let (path, good) = write_good(&dir);

    // A checkpoint that cannot be serialized (reserved name) fails before writing.
    let mut bad = Checkpoint::new();
    bad.tensors
        .insert("__metadata__".into(), random_tensor(&[1], 0));
    assert!(bad.save(&path).is_err());
    assert_eq!(Checkpoint::load(&path).unwrap(), good);

    // The target is a directory: the final rename fails after the data was written.
    let as_dir = dir.path("is_a_dir.safetensors");
    std::fs::create_dir(&as_dir).unwrap();
    let err = good.save(&as_dir).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(as_dir.is_dir());

    // The directory path is actually a file.
    let err = good.save(path.join("nested.safetensors")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");

    // A path naming no file.
    assert!(good.save(Path::new("/")).is_err());

    assert_eq!(Checkpoint::load(&path).unwrap(), good);
    assert_eq!(
        dir.entries(),
        vec!["ckpt.safetensors", "is_a_dir.safetensors"],
        "no temporary file left behind"
    );
}

// ------------------------------------------------------------------ optimizer state

#[test]
fn step_counts_round_trip_exactly() {
    for n in [
        0u64,
        1,
        16_777_215,
        16_777_216,
        16_777_217,
        1 << 40,
        (1 << 48) + 3,
        u64::MAX,
    ] {
        let t = step_to_tensor(n);
        assert_eq!(t.shape(), &[3]);
        assert!(t
            .iter()
            .all(|&w| (0.0..16_777_216.0).contains(&w) && w.fract() == 0.0));
        assert_eq!(step_from_tensor(&t).unwrap(), n);
    }
    for bad in [
        ndarray::arr1(&[1.0f32, 2.0]).into_dyn(),
        ndarray::arr1(&[0.5f32, 0.0, 0.0]).into_dyn(),
        ndarray::arr1(&[-1.0f32, 0.0, 0.0]).into_dyn(),
        ndarray::arr1(&[16_777_216.0f32, 0.0, 0.0]).into_dyn(),
        ndarray::arr1(&[f32::NAN, 0.0, 0.0]).into_dyn(),
        ndarray::arr1(&[0.0f32, 0.0, 65_536.0]).into_dyn(), // > u64::MAX
    ] {
        assert!(step_from_tensor(&bad).is_err(), "{bad:?}");
    }
}

/// A small model with trainable and non-trainable variables; the loss depends on
/// all of them.
struct Model {
    g: Graph,
    x: Node,
    t: Node,
    loss: Node,
}

fn model(seed: u64) -> Model {
    let g = Graph::with_seed(seed);
    let _scope = g.as_default();
    let w = g.variable(&[4, 3], GlorotNormal::new(), true).unwrap();
    let b = g.variable(&[3], Zeros, true).unwrap();
    let s = g.variable(&[1], ConstantInit(0.5), false).unwrap();
    let x = g.placeholder([4, 3]);
    let t = g.placeholder([4, 3]);
    let z = ((&(&x * &w) + &b) * &s).check().unwrap();
    let y = ad::exp(&z).unwrap();
    let d = (&y - &t).check().unwrap();
    let loss = (&d * &d).check().unwrap();
    Model { g, x, t, loss }
}

fn feed_for_step(m: &Model, step: u64) -> Feed {
    let x = random_tensor(&[4, 3], 1000 + step).mapv(|v| v / 10.0);
    let t = random_tensor(&[4, 3], 2000 + step).mapv(|v| (v / 10.0).exp());
    Feed::new().with(&m.x, &x).unwrap().with(&m.t, &t).unwrap()
}

fn train(m: &Model, opt: &mut dyn Optimizer, steps: std::ops::Range<u64>) {
    let mut rt = RunTime::new();
    for step in steps {
        let feed = feed_for_step(m, step);
        rt.forward_backward_cycle(|rt| opt.optimize(rt, &m.loss, &feed, None))
            .unwrap();
    }
}

fn all_values(g: &Graph) -> Vec<Tensor> {
    values(g, &g.variables(false))
}

fn resume_is_exact(kind: &str, make: &dyn Fn() -> Box<dyn Optimizer>) {
    let (k, n) = (4, 11);
    let dir = TempDir::new("resume");
    let path = dir.path("train.safetensors");

    // Uninterrupted.
    let full = model(1);
    let mut opt = make();
    train(&full, &mut *opt, 0..n);

    // k steps, saved.
    let first = model(1);
    let mut opt1 = make();
    train(&first, &mut *opt1, 0..k);
    let mut meta = BTreeMap::new();
    meta.insert("step".to_string(), k.to_string());
    first.g.save_training_state(&path, &*opt1, &meta).unwrap();
    let saved = Checkpoint::load(&path).unwrap();
    assert!(
        saved
            .tensors
            .keys()
            .any(|name| name.starts_with(&format!("{OPTIMIZER_PREFIX}{kind}/"))),
        "{kind}: {:?}",
        saved.tensors.keys().collect::<Vec<_>>()
    );

    // Restored into a fresh graph (other seed: other initial values) and optimizer.
    let second = model(99);
    assert_ne!(all_values(&second.g), all_values(&first.g));
    let mut opt2 = make();
    let got_meta = second.g.restore_training_state(&path, &mut *opt2).unwrap();
    assert_eq!(got_meta, meta);
    assert_eq!(opt2.state(), opt1.state(), "{kind}: state round trip");
    let step: u64 = got_meta["step"].parse().unwrap();
    train(&second, &mut *opt2, step..n);

    let (want, got) = (all_values(&full.g), all_values(&second.g));
    for (w, g) in want.iter().zip(&got) {
        let bits = |t: &Tensor| t.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(w), bits(g), "{kind}: resumed run differs");
    }
    assert_eq!(opt2.state(), opt.state(), "{kind}: final optimizer state");

    // Without the optimizer state, resuming does not give the same result (so
    // the check above is meaningful).
    let third = model(99);
    third
        .g
        .restore_variables(&path, RestoreMode::Strict)
        .unwrap();
    let mut opt3 = make();
    train(&third, &mut *opt3, k..n);
    assert_ne!(
        all_values(&third.g),
        want,
        "{kind}: state made no difference"
    );
}

#[test]
fn resume_adam_exactly() {
    resume_is_exact("adam", &|| {
        Box::new(Adam::new(0.05).schedule(Schedule::Step {
            initial: 0.05,
            every: 3,
            factor: 0.5,
        }))
    });
}

#[test]
fn resume_adamw_exactly() {
    resume_is_exact("adamw", &|| Box::new(AdamW::new(0.03, 0.1)));
}

#[test]
fn resume_momentum_exactly() {
    resume_is_exact("momentum", &|| Box::new(Momentum::new(0.01, 0.9)));
}

#[test]
fn resume_rmsprop_exactly() {
    resume_is_exact("rmsprop", &|| Box::new(RmsProp::new(0.01).momentum(0.5)));
}

#[test]
fn resume_gradient_descent_with_schedule_exactly() {
    resume_is_exact("sgd", &|| {
        Box::new(GradientDescent::new(0.02).schedule(Schedule::Step {
            initial: 0.02,
            every: 2,
            factor: 0.5,
        }))
    });
}

#[test]
fn state_names_and_contents() {
    let m = model(1);
    let mut opt = Adam::new(0.1);
    assert_eq!(opt.state(), vec![("adam/t".to_string(), step_to_tensor(0))]);
    train(&m, &mut opt, 0..3);
    let names: Vec<String> = opt.state().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        vec![
            "adam/t",
            "adam/m/Variable",
            "adam/m/Variable_0",
            "adam/v/Variable",
            "adam/v/Variable_0"
        ]
    );
    assert_eq!(step_from_tensor(&opt.state()[0].1).unwrap(), 3);
    // No name of the state is a variable name.
    for (name, _) in opt.state() {
        assert!(m.g.node(&name).is_err());
    }
}

#[test]
fn bad_optimizer_state_is_rejected_and_changes_nothing() {
    let m = model(1);
    let mut adam = Adam::new(0.1);
    train(&m, &mut adam, 0..2);
    let good = adam.state();

    let mut momentum = Momentum::new(0.1, 0.9);
    train(&m, &mut momentum, 0..1);
    let before = momentum.state();
    // Another optimizer's state.
    let err = momentum.load_state(&good, &m.g).unwrap_err();
    assert!(err.to_string().contains("adam/t"), "{err}");
    assert_eq!(momentum.state(), before);

    let mut target = Adam::new(0.1);
    let mut cases: Vec<(&str, Vec<(String, Tensor)>)> = Vec::new();
    let without_t: Vec<_> = good
        .iter()
        .filter(|(n, _)| n != "adam/t")
        .cloned()
        .collect();
    cases.push(("no entry adam/t", without_t));
    let mut dup = good.clone();
    dup.push(good[1].clone());
    cases.push(("duplicate", dup.clone()));
    let mut dup_t = good.clone();
    dup_t.push(good[0].clone());
    cases.push(("duplicate", dup_t));
    let mut unknown_var = good.clone();
    unknown_var.push(("adam/m/Variable_9".into(), random_tensor(&[3], 0)));
    cases.push(("Variable_9", unknown_var));
    let mut not_var = good.clone();
    not_var.push(("adam/m/Placeholder".into(), random_tensor(&[4, 3], 0)));
    cases.push(("not a Variable", not_var));
    let mut wrong_shape = good.clone();
    wrong_shape[1].1 = random_tensor(&[3, 4], 0);
    cases.push(("has shape", wrong_shape));
    let mut bad_slot = good.clone();
    bad_slot.push(("adam/u/Variable".into(), random_tensor(&[4, 3], 0)));
    cases.push(("no slot", bad_slot));
    let mut bad_t = good.clone();
    bad_t[0].1 = ndarray::arr1(&[0.5f32, 0.0, 0.0]).into_dyn();
    cases.push(("integer", bad_t));
    let mut bare = good.clone();
    bare.push(("adam/extra".into(), random_tensor(&[1], 0)));
    cases.push(("not known", bare));
    for (needle, state) in cases {
        let err = target.load_state(&state, &m.g).unwrap_err();
        assert!(err.to_string().contains(needle), "{needle:?} not in {err}");
        assert_eq!(target.state(), Adam::new(0.1).state(), "{needle}: changed");
    }
    target.load_state(&good, &m.g).unwrap();
    assert_eq!(target.state(), good);
}

#[test]
fn default_load_state_accepts_only_empty_state() {
    struct Plain;
    impl Optimizer for Plain {
        fn apply_gradients(&mut self, _: &[(Node, Tensor)]) -> adgraph::Result<()> {
            Ok(())
        }
    }
    let g = Graph::new();
    let mut p = Plain;
    assert!(p.state().is_empty());
    assert!(p.load_state(&[], &g).is_ok());
    assert!(p
        .load_state(&[("x/y".into(), random_tensor(&[1], 0))], &g)
        .is_err());
    // A training checkpoint of an optimizer without state holds only variables.
    let (g, _) = three_variable_graph(1);
    let c = g.training_checkpoint(&Plain, &BTreeMap::new()).unwrap();
    assert_eq!(c.len(), 3);
    g.restore_training_checkpoint(&c, &mut Plain).unwrap();
}

#[test]
fn training_restore_checks_everything_before_changing_anything() {
    let m = model(1);
    let mut adam = Adam::new(0.1);
    train(&m, &mut adam, 0..2);
    let ckpt = m.g.training_checkpoint(&adam, &BTreeMap::new()).unwrap();

    // Optimizer of another kind: the variables must stay as they were.
    let other = model(2);
    let before = all_values(&other.g);
    let mut rms = RmsProp::new(0.1);
    let err = other
        .g
        .restore_training_checkpoint(&ckpt, &mut rms)
        .unwrap_err();
    assert!(
        checkpoint_message(&err).contains("optimizer state"),
        "{err}"
    );
    assert_eq!(all_values(&other.g), before);
    assert_eq!(rms.state(), RmsProp::new(0.1).state());

    // A graph that does not match: neither the variables nor the optimizer change.
    let g = Graph::new();
    let v = g.variable(&[4, 3], Zeros, true).unwrap();
    let mut fresh = Adam::new(0.1);
    let err = g
        .restore_training_checkpoint(&ckpt, &mut fresh)
        .unwrap_err();
    assert!(
        checkpoint_message(&err).contains("missing")
            || checkpoint_message(&err).contains("unexpected")
    );
    assert_eq!(fresh.state(), Adam::new(0.1).state());
    assert!(g.variable_value(&v).unwrap().iter().all(|&x| x == 0.0));

    // Weights alone can be taken from a training checkpoint (optimizer/ ignored).
    let third = model(3);
    let report = third
        .g
        .restore_checkpoint(&ckpt, RestoreMode::Strict)
        .unwrap();
    assert!(report.unexpected.is_empty());
    assert_eq!(all_values(&third.g), all_values(&m.g));
}

#[test]
fn optimizer_used_on_two_graphs_cannot_be_saved_ambiguously() {
    let (a, b) = (model(1), model(2));
    let mut adam = Adam::new(0.1);
    train(&a, &mut adam, 0..1);
    train(&b, &mut adam, 0..1);
    let err =
        a.g.training_checkpoint(&adam, &BTreeMap::new())
            .unwrap_err();
    assert!(
        checkpoint_message(&err).contains("two tensors named"),
        "{err}"
    );
}
