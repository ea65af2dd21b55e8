//! The number of threads does not change results: the same seeded training of
//! a small conv net (convolutions, batch norm, dropout, Adam) gives bitwise the
//! same losses and variables with 1, 2 or 3 rayon threads and 1 to 3 gemm
//! (matrixmultiply) threads.
//!
//! Both pools read their size from the environment once per process
//! (`RAYON_NUM_THREADS`, `MATMUL_NUM_THREADS`), so the test runs the training
//! in child processes: this test binary re-executed with `--exact` on the
//! ignored `child_training_run` and `THREADS_CHILD` set; each child prints one
//! line per loss and variable, and the lines must be identical.

use std::collections::BTreeMap;
use std::process::Command;

use adgraph::init::{Ones, TruncatedNormal, Zeros};
use adgraph::optim::{Adam, Optimizer};
use adgraph::{self as ad, BatchNormConfig, Feed, Graph, Padding, RunTime, Tensor};

/// Set (to anything) in the child processes.
const CHILD_ENV: &str = "THREADS_CHILD";
/// Prefix of the lines a child prints for the parent.
const TAG: &str = "RESULT ";
/// Images per batch: each conv activation holds 32·16·16·32 = 262,144 values,
/// above the kernels' thresholds for splitting work over threads.
const BATCH: usize = 32;

/// FNV-1a over the bit patterns of `t`'s values, with its shape.
fn digest(t: &Tensor) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in t.iter() {
        for b in v.to_bits().to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{:?} {h:016x}", t.shape())
}

/// Deterministic inputs (no generator involved) of `shape`.
fn inputs(shape: &[usize], salt: f32) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_shape_vec(
        shape.to_vec(),
        (0..n).map(|i| ((i as f32) * 0.618 + salt).sin()).collect(),
    )
    .unwrap()
}

/// Five steps of training; returns its result lines (losses, then variables by name).
fn train() -> Vec<String> {
    let g = Graph::with_seed(21);
    let x = g.placeholder(ad::shape![None, 16, 16, 3]);
    let y = g.placeholder(ad::shape![None, 10]);
    let w = TruncatedNormal::new(0.0, 0.1);
    let k1 = g.variable(&[3, 3, 3, 32], w, true).unwrap();
    let scale = g.variable(&[32], Ones, true).unwrap();
    let offset = g.variable(&[32], Zeros, true).unwrap();
    let mean = g.variable(&[32], Zeros, false).unwrap();
    let var = g.variable(&[32], Ones, false).unwrap();
    let k2 = g.variable(&[3, 3, 32, 32], w, true).unwrap();
    let dense = g.variable(&[32, 10], w, true).unwrap();
    let bn = BatchNormConfig {
        epsilon: 1e-3,
        decay: 0.9,
        is_training: true,
        ..Default::default()
    };
    let h = ad::conv2d(&x, &k1, [1, 1], Padding::Same).unwrap();
    let h = ad::fused_batch_norm(&h, &scale, &offset, &mean, &var, bn).unwrap();
    let h = ad::dropout(&ad::relu(&h).unwrap(), 0.3, true).unwrap();
    let h = ad::relu(&ad::conv2d(&h, &k2, [2, 2], Padding::Same).unwrap()).unwrap();
    let pooled = ad::reduce_mean(&h, [1, 2], false).unwrap();
    let logits = ad::matmul(&pooled, &dense).unwrap();
    let ce = ad::softmax_cross_entropy_loss(&y, &logits).unwrap();
    let loss = ad::reduce_mean(&ce, ad::Axes::All, false).unwrap();

    let mut opt = Adam::new(0.01);
    let mut rt = RunTime::with_seed(5);
    let mut lines = Vec::new();
    for step in 0..5 {
        let xb = inputs(&[BATCH, 16, 16, 3], step as f32);
        let labels: Vec<f32> = (0..BATCH * 10)
            .map(|i| f32::from(u8::from(i % 10 == (i / 10 * 7 + step) % 10)))
            .collect();
        let yb = Tensor::from_shape_vec(vec![BATCH, 10], labels).unwrap();
        let feed = Feed::new().with(&x, xb).unwrap().with(&y, yb).unwrap();
        let value = rt
            .forward_backward_cycle(|rt| {
                opt.optimize(rt, &loss, &feed, None)?;
                rt.value(&loss).map(|v| v.sum())
            })
            .unwrap();
        assert!(value.is_finite());
        lines.push(format!("loss {step} {:08x} ({value})", value.to_bits()));
    }
    let by_name: BTreeMap<String, Tensor> = g
        .variables(false)
        .iter()
        .map(|v| (v.name(), g.variable_value(v).unwrap()))
        .collect();
    for (name, value) in &by_name {
        lines.push(format!("variable {name} {}", digest(value)));
    }
    lines
}

/// Run in a child process only: prints the thread count and the result lines.
#[test]
#[ignore = "run by same_results_with_any_thread_count in a child process"]
fn child_training_run() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    println!("{TAG}rayon_threads {}", rayon::current_num_threads());
    for line in train() {
        println!("{TAG}{line}");
    }
}

/// Runs the training in a child with `rayon` and `gemm` threads; returns its result lines.
fn child(rayon: usize, gemm: usize) -> Vec<String> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_training_run", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_ENV, "1")
        .env("RAYON_NUM_THREADS", rayon.to_string())
        .env("MATMUL_NUM_THREADS", gemm.to_string())
        .output()
        .expect("cannot re-run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child (rayon {rayon}, gemm {gemm}) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = stdout
        .lines()
        // The harness's "test child_training_run ... " may precede the first one.
        .filter_map(|l| l.find(TAG).map(|i| &l[i + TAG.len()..]))
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines.first().map(String::as_str),
        Some(format!("rayon_threads {rayon}").as_str()),
        "the child did not get its thread count"
    );
    lines[1..].to_vec()
}

#[test]
fn same_results_with_any_thread_count() {
    let reference = child(1, 1);
    assert_eq!(reference.len(), 5 + 7, "{reference:#?}");
    for (rayon, gemm) in [(2, 1), (3, 1), (1, 2), (2, 2), (3, 3)] {
        let other = child(rayon, gemm);
        for (a, b) in reference.iter().zip(&other) {
            assert_eq!(a, b, "1 thread vs rayon {rayon}, gemm {gemm}");
        }
        assert_eq!(reference.len(), other.len());
    }
    // And the same in this process, with the default pool sizes.
    let again = train();
    assert_eq!(again, reference, "in-process run differs from the children");
}
