//! A training run with dropout, saved to a checkpoint mid-way (variables,
//! optimizer state, data position and the run time's random generator) and
//! resumed in a fresh graph and run time, continues bitwise as the uninterrupted
//! run does; without the generator state it would draw other dropout masks.

use std::collections::BTreeMap;

use adgraph::checkpoint::Checkpoint;
use adgraph::data::{spiral, Batches, Position};
use adgraph::init::{GlorotUniform, Zeros};
use adgraph::optim::{Adam, Optimizer};
use adgraph::{self as ad, Feed, Graph, Node, RngState, RunTime, Tensor};

/// Steps before the checkpoint, and after it.
const HALF: usize = 25;

/// A 2-32-3 MLP with dropout on the spiral set, its Adam optimizer, run time and batches.
struct Run {
    graph: Graph,
    xs: Node,
    ys: Node,
    loss: Node,
    opt: Adam,
    rt: RunTime,
    batches: Batches,
}

/// Builds the model; `graph_seed` sets the initial weights, `rt_seed` the dropout generator.
fn build(graph_seed: u64, rt_seed: u64) -> Run {
    let (x, y) = spiral(60, 3, 0).unwrap();
    let graph = Graph::with_seed(graph_seed);
    let xs = graph.placeholder(ad::shape![None, 2]);
    let ys = graph.placeholder(ad::shape![None, 3]);
    let w1 = graph
        .variable(&[2, 32], GlorotUniform::new(), true)
        .unwrap();
    let b1 = graph.variable(&[32], Zeros, true).unwrap();
    let w2 = graph
        .variable(&[32, 3], GlorotUniform::new(), true)
        .unwrap();
    let h = ad::relu(&(ad::matmul(&xs, &w1).unwrap() + &b1)).unwrap();
    let h = ad::dropout(&h, 0.3, true).unwrap();
    let logits = ad::matmul(&h, &w2).unwrap();
    let ce = ad::softmax_cross_entropy_loss(&ys, &logits).unwrap();
    let loss = ad::reduce_mean(&ce, ad::Axes::All, false).unwrap();
    Run {
        graph,
        xs,
        ys,
        loss,
        opt: Adam::new(0.02),
        rt: RunTime::with_seed(rt_seed),
        batches: Batches::new(x, y, 32, 5).unwrap(),
    }
}

impl Run {
    /// Trains `n` steps; returns the bit patterns of their losses.
    fn steps(&mut self, n: usize) -> Vec<u32> {
        (0..n)
            .map(|_| {
                let (bx, by) = self.batches.next_batch().unwrap();
                let feed = Feed::new()
                    .with(&self.xs, bx)
                    .unwrap()
                    .with(&self.ys, by)
                    .unwrap();
                let (opt, loss) = (&mut self.opt, &self.loss);
                self.rt
                    .forward_backward_cycle(|rt| {
                        opt.optimize(rt, loss, &feed, None)?;
                        rt.value(loss).map(|v| v.sum().to_bits())
                    })
                    .unwrap()
            })
            .collect()
    }

    /// All variables' values.
    fn weights(&self) -> Vec<Tensor> {
        let g = &self.graph;
        g.variables(false)
            .iter()
            .map(|v| g.variable_value(v).unwrap())
            .collect()
    }

    /// The training checkpoint as bytes of a safetensors file.
    fn save(&self) -> Vec<u8> {
        let pos = self.batches.position();
        let meta = BTreeMap::from([
            ("epoch".to_string(), pos.epoch.to_string()),
            ("batch".to_string(), pos.batch.to_string()),
            ("rng".to_string(), self.rt.rng_state().to_string()),
        ]);
        self.graph
            .training_checkpoint(&self.opt, &meta)
            .unwrap()
            .to_bytes()
            .unwrap()
    }

    /// Restores a checkpoint written by [`save`](Run::save); the generator too
    /// when `with_rng`.
    fn load(&mut self, bytes: &[u8], with_rng: bool) {
        let ckpt = Checkpoint::from_bytes(bytes).unwrap();
        let meta = self
            .graph
            .restore_training_checkpoint(&ckpt, &mut self.opt)
            .unwrap();
        let get = |k: &str| meta[k].parse::<usize>().unwrap();
        self.batches
            .seek(Position {
                epoch: get("epoch"),
                batch: get("batch"),
            })
            .unwrap();
        if with_rng {
            self.rt
                .set_rng_state(&meta["rng"].parse::<RngState>().unwrap());
        }
    }
}

#[test]
fn resumed_run_draws_the_same_dropout_masks() {
    let mut straight = build(3, 3);
    let losses = straight.steps(2 * HALF);

    let mut first = build(3, 3);
    assert_eq!(first.steps(HALF), losses[..HALF]);
    let bytes = first.save();
    drop(first);

    // Fresh graph and run time, other seeds: everything must come from the checkpoint.
    let mut resumed = build(11, 12);
    resumed.load(&bytes, true);
    assert_eq!(resumed.rt.rng_state(), {
        let ckpt = Checkpoint::from_bytes(&bytes).unwrap();
        ckpt.metadata["rng"].parse::<RngState>().unwrap()
    });
    assert_eq!(resumed.steps(HALF), losses[HALF..], "losses after resuming");
    assert_eq!(resumed.weights(), straight.weights(), "final weights");

    // The control: the same resume without the generator's state goes elsewhere.
    let mut no_rng = build(11, 12);
    no_rng.load(&bytes, false);
    assert_ne!(no_rng.steps(HALF), losses[HALF..]);
}

#[test]
fn malformed_generator_state_is_refused() {
    let mut rt = RunTime::with_seed(1);
    let before = rt.rng_state();
    for bad in ["", "chacha8:", "chacha20:00:00:00", "chacha8:xyz:0:0"] {
        let err = bad.parse::<RngState>().unwrap_err();
        assert!(
            matches!(err, ad::Error::InvalidArgument(ref m) if m.contains("random generator state")),
            "{bad:?}: {err}"
        );
    }
    // A valid one from another run time moves the generator.
    rt.set_rng_state(&RunTime::with_seed(2).rng_state());
    assert_ne!(rt.rng_state(), before);
}
