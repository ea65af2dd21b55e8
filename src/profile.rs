//! The run-time profiler: forward and backward time per node, summed over the
//! cycles it was on for (see [`RunTime::enable_profiling`](crate::RunTime::enable_profiling)).
//!
//! ```
//! use adgraph as ad;
//! let g = ad::Graph::new();
//! let x = g.placeholder([64, 64]);
//! let y = ad::matmul(&x, &x).unwrap();
//! let loss = ad::reduce_sum(&ad::tanh(&y).unwrap(), ad::Axes::All, false).unwrap();
//! let feed = ad::Feed::new().with(&x, ad::Tensor::ones(vec![64, 64])).unwrap();
//! let mut rt = ad::RunTime::new();
//! rt.enable_profiling(true);
//! for _ in 0..3 {
//!     rt.forward_backward_cycle(|rt| rt.backward(&loss, &feed, None)).unwrap();
//! }
//! let profile = rt.profile().unwrap();
//! assert_eq!(profile.records().len(), 3); // MatMul, Tanh, ReduceSum
//! assert!(profile.records().iter().all(|r| r.calls == 3));
//! println!("{}", profile.top(5));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Time spent in one node.
#[derive(Debug, Clone)]
pub struct NodeRecord {
    /// The node's name.
    pub name: String,
    /// Its op type.
    pub op: &'static str,
    /// Its inputs' shapes and its output's shape, as last seen.
    pub shapes: String,
    /// Total forward time.
    pub forward: Duration,
    /// Total backward time.
    pub backward: Duration,
    /// How many forwards were timed.
    pub calls: u64,
}

impl NodeRecord {
    /// Forward plus backward time.
    pub fn total(&self) -> Duration {
        self.forward + self.backward
    }
}

/// Per-node timings, in node order.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    records: BTreeMap<usize, NodeRecord>,
}

impl Profile {
    pub(crate) fn record_forward(
        &mut self,
        index: usize,
        describe: impl FnOnce() -> (String, &'static str, String),
        time: Duration,
    ) {
        let rec = self.records.entry(index).or_insert_with(|| {
            let (name, op, shapes) = describe();
            NodeRecord {
                name,
                op,
                shapes,
                forward: Duration::ZERO,
                backward: Duration::ZERO,
                calls: 0,
            }
        });
        rec.forward += time;
        rec.calls += 1;
    }

    pub(crate) fn record_backward(&mut self, index: usize, time: Duration) {
        if let Some(rec) = self.records.get_mut(&index) {
            rec.backward += time;
        }
    }

    /// Every timed node, in node order.
    pub fn records(&self) -> Vec<&NodeRecord> {
        self.records.values().collect()
    }

    /// The total time of all nodes.
    pub fn total(&self) -> Duration {
        self.records.values().map(NodeRecord::total).sum()
    }

    /// The `n` nodes with the most time, as a printable table.
    pub fn top(&self, n: usize) -> TopNodes<'_> {
        let mut recs: Vec<&NodeRecord> = self.records.values().collect();
        recs.sort_by_key(|r| std::cmp::Reverse(r.total()));
        recs.truncate(n);
        TopNodes {
            records: recs,
            total: self.total(),
        }
    }

    /// Total time per op type, most first.
    pub fn by_op_type(&self) -> Vec<(&'static str, Duration)> {
        let mut per: BTreeMap<&'static str, Duration> = BTreeMap::new();
        for r in self.records.values() {
            *per.entry(r.op).or_default() += r.total();
        }
        let mut v: Vec<_> = per.into_iter().collect();
        v.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
        v
    }
}

/// The top nodes of a [`Profile`]; `Display` prints a table with each node's
/// name, op type, shapes, forward and backward milliseconds and share.
pub struct TopNodes<'a> {
    records: Vec<&'a NodeRecord>,
    total: Duration,
}

impl TopNodes<'_> {
    /// The records, most time first.
    pub fn records(&self) -> &[&NodeRecord] {
        &self.records
    }
}

impl fmt::Display for TopNodes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total.as_secs_f64().max(1e-12);
        writeln!(
            f,
            "{:<24} {:<16} {:>10} {:>10} {:>6}  shapes",
            "node", "op", "fwd ms", "bwd ms", "share"
        )?;
        for r in &self.records {
            let calls = r.calls.max(1) as f64;
            writeln!(
                f,
                "{:<24} {:<16} {:>10.3} {:>10.3} {:>5.1}%  {}",
                r.name,
                r.op,
                r.forward.as_secs_f64() * 1e3 / calls,
                r.backward.as_secs_f64() * 1e3 / calls,
                100.0 * r.total().as_secs_f64() / total,
                r.shapes
            )?;
        }
        write!(f, "(times are per call, averaged over the profiled cycles)")
    }
}
