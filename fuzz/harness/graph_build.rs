//! Fuzz harness for graph building and execution, shared by the `graph_build`
//! fuzz target and the stable replay test `tests/fuzz_corpus.rs`.
//!
//! The input bytes are read as a program: a run-time seed and flags, then a
//! sequence of steps, each adding a leaf (placeholder with known, unknown and
//! zero dims, constant, variable) or an op of the public API with arguments
//! taken from the bytes (legal or not). Then a node is picked and run forward
//! and backward under a feed whose shapes may or may not match. Every call must
//! return `Ok` or a clean `Err`; a panic is a finding.
//!
//! Sizes stay small so each input runs in well under a millisecond: fed and
//! constant dims are at most [`MAX_DIM`], and a node whose static shape
//! (unknown dims bounded from its inputs) may exceed [`MAX_ELEMENTS`] values
//! is discarded before it is used.

use adgraph::init::Zeros;
use adgraph::{
    avgpool2d, concat, conv2d, conv2d_transpose, divide, dropout, exp, fused_batch_norm, l2norm,
    leaky_relu, log, matmul, maxpool2d, multiply, negate, pad, pow, reduce_mean, reduce_sum, relu,
    reshape, sigmoid, sigmoid_cross_entropy_loss, slice, softmax, softmax_cross_entropy_loss, sqrt,
    square, stop_gradient, subtract, tanh, transpose, Axes, BatchNormConfig, Feed, Graph,
    IntoTensor, Node, Padding, RunTime, TensorShape,
};

/// The largest dimension of a leaf or a fed value.
const MAX_DIM: usize = 8;

/// The largest number of values a node may (by its bound) hold.
const MAX_ELEMENTS: usize = 4096;

/// The most steps (leaves and ops) a program may have.
const MAX_STEPS: usize = 32;

/// Values drawn for tensors and scalar arguments: ordinary ones, zeros of both
/// signs, extremes and non-finite ones.
const VALUES: [f32; 16] = [
    0.0,
    1.0,
    -1.0,
    0.5,
    2.0,
    -3.5,
    -0.0,
    1e-3,
    100.0,
    -100.0,
    f32::MAX,
    f32::MIN_POSITIVE,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    0.25,
];

/// The input read byte by byte; zeros once it is used up.
struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bytes<'_> {
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }

    fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    fn value(&mut self) -> f32 {
        VALUES[self.below(VALUES.len())]
    }

    fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.value()).collect()
    }

    /// A dim of a leaf: `0..=MAX_DIM`, or unknown (`None`) when `unknown_ok`.
    fn dim(&mut self, unknown_ok: bool) -> Option<usize> {
        match self.below(MAX_DIM + 3) {
            d if d <= MAX_DIM => Some(d),
            _ if unknown_ok => None,
            _ => Some(1),
        }
    }

    fn dims(&mut self, unknown_ok: bool) -> Vec<Option<usize>> {
        let rank = self.below(5);
        (0..rank).map(|_| self.dim(unknown_ok)).collect()
    }

    fn known_dims(&mut self) -> Vec<usize> {
        self.dims(false)
            .into_iter()
            .map(|d| d.unwrap_or(1))
            .collect()
    }

    fn axes(&mut self) -> Vec<usize> {
        let n = self.below(4);
        (0..n).map(|_| self.below(5)).collect()
    }

    fn padding(&mut self) -> Padding {
        if self.flag() {
            Padding::Same
        } else {
            Padding::Valid
        }
    }

    /// A pair of small window sizes or strides, zero included (illegal).
    fn pair(&mut self) -> [usize; 2] {
        [self.below(4), self.below(4)]
    }
}

/// A node with a bound on each of its dims at run time.
struct Built {
    node: Node,
    bound: Vec<usize>,
}

/// How an op's unknown output dims are bounded from its inputs.
enum Bound {
    /// Elementwise (unary or broadcast): an unknown dim is at most the largest
    /// input dim aligned with it from the right.
    Elementwise,
    /// Anything else: an unknown dim is at most 3 × all input values + 64
    /// (covers concat, pad, reshape with -1, transposed convolution).
    Generic,
}

/// Bounds `node`'s dims from its static shape and its inputs' bounds.
fn bound_of(node: &Node, inputs: &[&Built], how: Bound) -> Vec<usize> {
    let dims = node.shape().dims().to_vec();
    let rank = dims.len();
    let total: usize = inputs
        .iter()
        .map(|b| b.bound.iter().product::<usize>())
        .fold(0usize, usize::saturating_add);
    let generic = total.saturating_mul(3).saturating_add(64);
    dims.iter()
        .enumerate()
        .map(|(i, d)| match (d, &how) {
            (Some(d), _) => *d,
            (None, Bound::Elementwise) => inputs
                .iter()
                .filter_map(|b| {
                    let offset = rank - i;
                    b.bound.len().checked_sub(offset).map(|j| b.bound[j])
                })
                .max()
                .unwrap_or(generic)
                .min(generic),
            (None, Bound::Generic) => generic,
        })
        .collect()
}

/// Runs the program in `data`.
pub fn run(data: &[u8]) {
    let mut b = Bytes { data, pos: 0 };
    let g = Graph::with_seed(u64::from(b.byte()));
    let mut rt = RunTime::with_seed(u64::from(b.byte()));
    rt.set_check_numerics(b.flag());
    let mut nodes: Vec<Built> = Vec::new();

    for _ in 0..MAX_STEPS {
        if b.done() {
            break;
        }
        let step = b.below(40);
        if nodes.is_empty() || step < 6 {
            if let Some(leaf) = add_leaf(&g, &mut b, step) {
                nodes.push(leaf);
            }
            continue;
        }
        let n = nodes.len();
        let (i, j, k) = (b.below(n), b.below(n), b.below(n));
        let (x, y, z) = (&nodes[i], &nodes[j], &nodes[k]);
        let (r, how, inputs): (_, Bound, Vec<&Built>) = match step {
            6 => (
                adgraph::add(&x.node, &y.node),
                Bound::Elementwise,
                vec![x, y],
            ),
            7 => (subtract(&x.node, &y.node), Bound::Elementwise, vec![x, y]),
            8 => (multiply(&x.node, &y.node), Bound::Elementwise, vec![x, y]),
            9 => (divide(&x.node, &y.node), Bound::Elementwise, vec![x, y]),
            10 => (matmul(&x.node, &y.node), Bound::Generic, vec![x, y]),
            11 => {
                let rank = b.below(5);
                let shape: Vec<isize> = (0..rank).map(|_| b.below(11) as isize - 1).collect();
                (reshape(&x.node, &shape), Bound::Generic, vec![x])
            }
            12 => {
                let perm = b.axes();
                (transpose(&x.node, &perm), Bound::Generic, vec![x])
            }
            13 | 14 => {
                let axes = if b.flag() {
                    Axes::All
                } else {
                    Axes::List(b.axes())
                };
                let keep = b.flag();
                let r = if step == 13 {
                    reduce_sum(&x.node, axes, keep)
                } else {
                    reduce_mean(&x.node, axes, keep)
                };
                (r, Bound::Generic, vec![x])
            }
            15 => {
                let axis = b.below(5);
                let r = if b.flag() {
                    concat(&[&x.node, &y.node, &z.node], axis)
                } else {
                    concat(&[&x.node, &y.node], axis)
                };
                (r, Bound::Generic, vec![x, y, z])
            }
            16 => {
                let rank = b.below(5);
                let begin: Vec<usize> = (0..rank).map(|_| b.below(MAX_DIM + 2)).collect();
                let sizes: Vec<isize> = (0..rank)
                    .map(|_| b.below(MAX_DIM + 3) as isize - 1)
                    .collect();
                (slice(&x.node, &begin, &sizes), Bound::Generic, vec![x])
            }
            17 => {
                let rank = b.below(5);
                let paddings: Vec<[usize; 2]> =
                    (0..rank).map(|_| [b.below(4), b.below(4)]).collect();
                let v = b.value();
                (pad(&x.node, &paddings, v), Bound::Generic, vec![x])
            }
            18 | 19 => {
                let strides = b.pair();
                let padding = b.padding();
                let r = if step == 18 {
                    conv2d(&x.node, &y.node, strides, padding)
                } else {
                    conv2d_transpose(&x.node, &y.node, strides, padding)
                };
                (r, Bound::Generic, vec![x, y])
            }
            20 | 21 => {
                let (kernel, strides, padding) = (b.pair(), b.pair(), b.padding());
                let r = if step == 20 {
                    maxpool2d(&x.node, kernel, strides, padding)
                } else {
                    avgpool2d(&x.node, kernel, strides, padding)
                };
                (r, Bound::Generic, vec![x])
            }
            22 => (sigmoid(&x.node), Bound::Elementwise, vec![x]),
            23 => (tanh(&x.node), Bound::Elementwise, vec![x]),
            24 => (relu(&x.node), Bound::Elementwise, vec![x]),
            25 => {
                let alpha = b.value();
                (leaky_relu(&x.node, alpha), Bound::Elementwise, vec![x])
            }
            26 => (softmax(&x.node), Bound::Elementwise, vec![x]),
            27 => (
                softmax_cross_entropy_loss(&x.node, &y.node),
                Bound::Generic,
                vec![x, y],
            ),
            28 => (
                sigmoid_cross_entropy_loss(&x.node, &y.node),
                Bound::Generic,
                vec![x, y],
            ),
            29 => {
                let scale = b.value();
                (l2norm(&x.node, scale), Bound::Generic, vec![x])
            }
            30 => {
                // Statistics from existing nodes, or fresh variables of the
                // channel count (so training mode can update them).
                let config = BatchNormConfig {
                    epsilon: b.value(),
                    decay: b.value(),
                    is_training: b.flag(),
                    ..Default::default()
                };
                let channels = x.node.shape().dims().last().copied().flatten().unwrap_or(1);
                let fresh = |g: &Graph| g.variable(&[channels], Zeros, false);
                let r = if b.flag() {
                    match (fresh(&g), fresh(&g)) {
                        (Ok(m), Ok(v)) => {
                            fused_batch_norm(&x.node, &y.node, &z.node, &m, &v, config)
                        }
                        (Err(e), _) | (_, Err(e)) => Err(e),
                    }
                } else {
                    fused_batch_norm(&x.node, &y.node, &z.node, &y.node, &z.node, config)
                };
                (r, Bound::Elementwise, vec![x])
            }
            31 => {
                let (rate, training) = (b.value(), b.flag());
                (
                    dropout(&x.node, rate, training),
                    Bound::Elementwise,
                    vec![x],
                )
            }
            32 => (exp(&x.node), Bound::Elementwise, vec![x]),
            33 => (log(&x.node), Bound::Elementwise, vec![x]),
            34 => (sqrt(&x.node), Bound::Elementwise, vec![x]),
            35 => (square(&x.node), Bound::Elementwise, vec![x]),
            36 => {
                let e = b.value();
                (pow(&x.node, e), Bound::Elementwise, vec![x])
            }
            37 => (negate(&x.node), Bound::Elementwise, vec![x]),
            38 => (stop_gradient(&x.node), Bound::Elementwise, vec![x]),
            _ => (matmul(&x.node, &x.node), Bound::Generic, vec![x]),
        };
        // A build error is a fine outcome; its message must render.
        match r {
            Ok(node) => {
                let bound = bound_of(&node, &inputs, how);
                let size = bound.iter().fold(1usize, |a, &d| a.saturating_mul(d));
                if size <= MAX_ELEMENTS && bound.iter().all(|&d| d <= MAX_ELEMENTS) {
                    nodes.push(Built { node, bound });
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    if nodes.is_empty() {
        return;
    }
    execute(&mut b, &mut rt, &nodes);
}

/// Adds a leaf: placeholder, constant or variable of a small random shape.
fn add_leaf(g: &Graph, b: &mut Bytes, step: usize) -> Option<Built> {
    match step % 3 {
        0 => {
            let dims = b.dims(true);
            let bound = dims.iter().map(|d| d.unwrap_or(MAX_DIM)).collect();
            let node = g.placeholder(TensorShape::new(dims));
            Some(Built { node, bound })
        }
        kind => {
            let dims = b.known_dims();
            let n = dims.iter().product();
            let values = b.values(n);
            let node = if kind == 1 {
                g.constant((values, dims.clone()))
            } else {
                let trainable = b.flag();
                g.variable_from((values, dims.clone()), trainable)
            };
            node.ok().map(|node| Built { node, bound: dims })
        }
    }
}

/// Feeds the placeholders (shapes matching theirs or not), then runs a random
/// node forward and backward and reads values and gradients.
fn execute(b: &mut Bytes, rt: &mut RunTime, nodes: &[Built]) {
    let mut feed = Feed::new();
    for built in nodes {
        if built.node.op_type() != "Placeholder" || b.below(8) == 0 {
            continue; // sometimes left unfed
        }
        let dims: Vec<usize> = if b.below(4) == 0 {
            b.known_dims() // most likely mismatching
        } else {
            built
                .node
                .shape()
                .dims()
                .iter()
                .map(|d| d.unwrap_or_else(|| b.below(MAX_DIM + 1)))
                .collect()
        };
        let values = b.values(dims.iter().product());
        if let Err(e) = feed.insert(&built.node, (values, dims)) {
            let _ = e.to_string();
        }
    }
    let target = &nodes[b.below(nodes.len())].node;
    match rt.forward(target, &feed) {
        Ok(v) => {
            let _ = v.sum();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    // Upstream: none (ones), or a tensor of a random known shape (often wrong).
    let upstream = match b.below(3) {
        0 => None,
        1 => rt.value(target).ok().map(|v| v.mapv(|_| 0.5)),
        _ => {
            let dims = b.known_dims();
            let values = b.values(dims.iter().product());
            (values, dims).into_tensor().ok()
        }
    };
    if let Err(e) = rt.backward(target, &feed, upstream) {
        let _ = e.to_string();
    }
    for built in nodes {
        let _ = rt.grad(&built.node);
        let _ = rt.value(&built.node);
    }
    // A second pass over a random list of nodes in the same cycle.
    let picks: Vec<&Node> = (0..b.below(4))
        .map(|_| &nodes[b.below(nodes.len())].node)
        .collect();
    if let Err(e) = rt.evaluate(&picks, &feed) {
        let _ = e.to_string();
    }
}
