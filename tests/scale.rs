//! A graph of over a million nodes builds, runs forward and backward, and is
//! dropped without overflowing the stack (nothing on these paths recurses over
//! the graph's depth), with the exact values and gradients.
//!
//! `cargo test --release --test scale -- --nocapture` prints the time of each
//! phase and the peak resident memory (Linux).

use std::time::Instant;

use adgraph::{self as ad, Feed, Graph, RunTime};

/// Nodes in the chain: negations, with `x` added back every `ADD_EVERY` steps.
const CHAIN: usize = 1_000_000;
const ADD_EVERY: usize = 1000;

/// `VmHWM` (peak resident memory) of this process in MiB, if readable.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line["VmHWM:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

#[test]
fn million_node_chain_runs_forward_backward_and_drops() {
    let t0 = Instant::now();
    let g = Graph::new();
    let x = g.placeholder([4]);
    // h = a·x throughout; track a to know the exact value and gradient.
    let mut h = x.clone();
    let mut a: i64 = 1;
    for k in 1..CHAIN {
        if k % ADD_EVERY == 0 {
            h = ad::add(&h, &x).unwrap();
            a += 1;
        } else {
            h = ad::negate(&h).unwrap();
            a = -a;
        }
    }
    let loss = ad::reduce_sum(&h, ad::Axes::All, false).unwrap();
    let nodes = g.len();
    let built = t0.elapsed();
    assert!(nodes > 1_000_000, "{nodes} nodes");

    let xs = [1.0f32, -2.0, 0.5, 3.0];
    let feed = Feed::new().with(&x, xs).unwrap();
    let mut rt = RunTime::new();
    let t1 = Instant::now();
    let value = rt.forward(&loss, &feed).unwrap().sum();
    let forward = t1.elapsed();
    let t2 = Instant::now();
    rt.backward(&loss, &feed, None).unwrap();
    let backward = t2.elapsed();
    let grad = rt.grad(&x).unwrap().clone();

    assert_eq!(value, a as f32 * xs.iter().sum::<f32>(), "a = {a}");
    assert_eq!(grad.as_slice().unwrap(), &[a as f32; 4]);

    let t3 = Instant::now();
    drop(rt);
    drop((h, loss, x));
    drop(g);
    let dropped = t3.elapsed();
    let peak = peak_rss_mib().map_or_else(|| "n/a".into(), |m| format!("{m:.0}"));
    println!(
        "nodes={nodes} build_s={:.2} forward_s={:.2} backward_s={:.2} drop_s={:.2} peak_rss_mib={peak}",
        built.as_secs_f64(),
        forward.as_secs_f64(),
        backward.as_secs_f64(),
        dropped.as_secs_f64(),
    );
}
