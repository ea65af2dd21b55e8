//! Array, reduction and matmul ops: finite-difference gradient checks on random
//! (seeded) shapes and attributes, static shapes with unknown dims, and bad
//! input that must give `Err`, never a panic.

use ad::gradcheck::{check_gradients, GradCheck};
use ad::{shape, Axes, Error, Feed, Graph, Node, RunTime, Tensor, TensorShape};
use adgraph as ad;
use ndarray::{Axis, Dimension, IxDyn};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn random_tensor(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    Tensor::from_shape_fn(IxDyn(shape), |_| rng.gen_range(-1.0f32..1.0))
}

fn random_shape(rng: &mut ChaCha8Rng, rank: usize, lo: usize, hi: usize) -> Vec<usize> {
    (0..rank).map(|_| rng.gen_range(lo..=hi)).collect()
}

/// A placeholder of `shape` fed with random values.
fn fed(g: &Graph, rng: &mut ChaCha8Rng, feed: &mut Feed, shape: &[usize]) -> Node {
    let x = g.placeholder(shape);
    feed.insert(&x, random_tensor(rng, shape)).unwrap();
    x
}

/// Checks the gradients of `out` w.r.t. `wrt`, with a context on failure.
fn check(out: &Node, wrt: &[&Node], feed: &Feed, context: &str) {
    if let Err(e) = check_gradients(out, wrt, feed) {
        panic!("{context}: {e}");
    }
}

fn forward(out: &Node, feed: &Feed) -> ad::Result<Tensor> {
    RunTime::new().forward(out, feed).cloned()
}

// ---------------------------------------------------------------------------
// gradient checks
// ---------------------------------------------------------------------------

#[test]
fn reshape_gradients() {
    let mut r = rng(1);
    for case in 0..12 {
        let rank = r.gen_range(1..=4);
        let s = random_shape(&mut r, rank, 1, 4);
        let n: usize = s.iter().product();
        // Targets: flat, the dims reversed, and the first dim with a -1.
        let mut reversed: Vec<isize> = s.iter().rev().map(|&d| d as isize).collect();
        if case % 2 == 0 {
            let w = r.gen_range(0..reversed.len());
            reversed[w] = -1;
        }
        for target in [
            vec![-1],
            vec![n as isize, 1],
            reversed,
            vec![s[0] as isize, -1],
        ] {
            let g = Graph::new();
            let mut feed = Feed::new();
            let x = fed(&g, &mut r, &mut feed, &s);
            let y = ad::reshape(&x, &target).unwrap();
            let value = forward(&y, &feed).unwrap();
            // Row-major: same elements in the same order.
            assert_eq!(
                value.iter().collect::<Vec<_>>(),
                feed.get(&x).unwrap().iter().collect::<Vec<_>>()
            );
            check(&y, &[&x], &feed, &format!("reshape {s:?} -> {target:?}"));
        }
    }
}

#[test]
fn transpose_gradients() {
    let mut r = rng(2);
    for _ in 0..12 {
        let rank = r.gen_range(1..=4);
        let s = random_shape(&mut r, rank, 1, 4);
        let mut perm: Vec<usize> = (0..rank).collect();
        perm.shuffle(&mut r);
        let g = Graph::new();
        let mut feed = Feed::new();
        let x = fed(&g, &mut r, &mut feed, &s);
        let y = ad::transpose(&x, &perm).unwrap();
        let value = forward(&y, &feed).unwrap();
        assert!(value.is_standard_layout());
        let want = feed.get(&x).unwrap().view().permuted_axes(perm.clone());
        assert_eq!(value, want);
        // A non-trivial function of the output, so the layout of the gradient matters.
        let w = g.constant(random_tensor(&mut r, value.shape())).unwrap();
        let z = ad::multiply(&y, &w).unwrap();
        check(&z, &[&x], &feed, &format!("transpose {s:?} by {perm:?}"));
    }
}

#[test]
fn pad_gradients() {
    let mut r = rng(3);
    for _ in 0..12 {
        let rank = r.gen_range(1..=4);
        let s = random_shape(&mut r, rank, 1, 3);
        let paddings: Vec<[usize; 2]> = (0..rank)
            .map(|_| [r.gen_range(0..=2), r.gen_range(0..=2)])
            .collect();
        let c = r.gen_range(-2.0f32..2.0);
        let g = Graph::new();
        let mut feed = Feed::new();
        let x = fed(&g, &mut r, &mut feed, &s);
        let y = ad::pad(&x, &paddings, c).unwrap();
        let value = forward(&y, &feed).unwrap();
        let padded: usize = value.len() - feed.get(&x).unwrap().len();
        assert_eq!(value.iter().filter(|&&v| v == c).count(), padded);
        check(&y, &[&x], &feed, &format!("pad {s:?} by {paddings:?}"));
    }
}

#[test]
fn concat_gradients() {
    let mut r = rng(4);
    for _ in 0..12 {
        let rank = r.gen_range(1..=4);
        let axis = r.gen_range(0..rank);
        let base = random_shape(&mut r, rank, 1, 3);
        let k = r.gen_range(1..=4);
        let g = Graph::new();
        let mut feed = Feed::new();
        let xs: Vec<Node> = (0..k)
            .map(|_| {
                let mut s = base.clone();
                s[axis] = r.gen_range(0..=3); // size 0 allowed along the axis
                fed(&g, &mut r, &mut feed, &s)
            })
            .collect();
        let refs: Vec<&Node> = xs.iter().collect();
        let y = ad::concat(&refs, axis).unwrap();
        let value = forward(&y, &feed).unwrap();
        let want: usize = xs.iter().map(|x| feed.get(x).unwrap().len()).sum();
        assert_eq!(value.len(), want);
        check(&y, &refs, &feed, &format!("concat of {k} on axis {axis}"));
    }
}

#[test]
fn concat_repeated_input_gets_every_contribution() {
    let mut r = rng(5);
    for axis in 0..2 {
        let g = Graph::new();
        let mut feed = Feed::new();
        let a = fed(&g, &mut r, &mut feed, &[2, 3]);
        let b = fed(&g, &mut r, &mut feed, &[2, 3]);
        let y = ad::concat(&[&a, &b, &a], axis).unwrap();
        check(&y, &[&a, &b], &feed, "concat [a, b, a]");

        // With upstream u, da = u[part 0] + u[part 2].
        let y = ad::concat(&[&a, &a], axis).unwrap();
        let u = random_tensor(&mut r, y.shape().to_vec().unwrap().as_slice());
        let mut rt = RunTime::new();
        rt.backward(&y, &feed, Some(u.clone())).unwrap();
        let n = 2 + axis; // the length of `a` along the axis
        let want =
            &u.slice_axis(Axis(axis), (0..n).into()) + &u.slice_axis(Axis(axis), (n..2 * n).into());
        assert_eq!(rt.grad(&a).unwrap(), &want);
    }
}

#[test]
fn slice_gradients() {
    let mut r = rng(6);
    for _ in 0..16 {
        let rank = r.gen_range(1..=4);
        let s = random_shape(&mut r, rank, 1, 5);
        let begin: Vec<usize> = s.iter().map(|&d| r.gen_range(0..=d)).collect();
        let sizes: Vec<isize> = s
            .iter()
            .zip(&begin)
            .map(|(&d, &b)| {
                if r.gen_bool(0.3) {
                    -1
                } else {
                    r.gen_range(0..=d - b) as isize
                }
            })
            .collect();
        let g = Graph::new();
        let mut feed = Feed::new();
        let x = fed(&g, &mut r, &mut feed, &s);
        let y = ad::slice(&x, &begin, &sizes).unwrap();
        let value = forward(&y, &feed).unwrap();
        for (i, &d) in value.shape().iter().enumerate() {
            let want = if sizes[i] == -1 {
                s[i] - begin[i]
            } else {
                sizes[i] as usize
            };
            assert_eq!(d, want);
        }
        if let Some(first) = value.first() {
            assert_eq!(*first, feed.get(&x).unwrap()[IxDyn(&begin)]);
        }
        check(
            &y,
            &[&x],
            &feed,
            &format!("slice {s:?} at {begin:?} sizes {sizes:?}"),
        );
    }
}

#[test]
fn stop_gradient_blocks_gradients() {
    let g = Graph::new();
    let x = g.placeholder([3]);
    let feed = ad::feed! { x => [1.0, -2.0, 0.5] }.unwrap();
    let s = ad::stop_gradient(&x).unwrap();
    assert_eq!(forward(&s, &feed).unwrap(), ad::tensor([1.0, -2.0, 0.5]));

    // x * stop(x): d/dx = stop(x) = x (not 2x).
    let y = ad::multiply(&x, &s).unwrap();
    let mut rt = RunTime::new();
    rt.backward(&y, &feed, None).unwrap();
    assert_eq!(rt.grad(&x).unwrap(), &ad::tensor([1.0, -2.0, 0.5]));

    // Nothing reaches x through stop_gradient alone.
    let z = ad::reduce_sum(&s, Axes::All, false).unwrap();
    let mut rt = RunTime::new();
    rt.backward(&z, &feed, None).unwrap();
    assert!(matches!(rt.grad(&x), Err(Error::NoGradient(_))));
}

/// A random non-empty subset of `0..rank`, in random order.
fn random_axes(r: &mut ChaCha8Rng, rank: usize) -> Vec<usize> {
    let mut axes: Vec<usize> = (0..rank).filter(|_| r.gen_bool(0.5)).collect();
    if axes.is_empty() {
        axes.push(r.gen_range(0..rank));
    }
    axes.shuffle(r);
    axes
}

#[test]
fn reduce_gradients() {
    let mut r = rng(7);
    for case in 0..24 {
        let rank = r.gen_range(1..=4);
        let s = random_shape(&mut r, rank, 1, 4);
        let axes = if case % 6 == 0 {
            Axes::All
        } else {
            Axes::List(random_axes(&mut r, rank))
        };
        let sorted = axes.resolve(rank).unwrap();
        for keep_dims in [false, true] {
            for mean in [false, true] {
                let g = Graph::new();
                let mut feed = Feed::new();
                let x = fed(&g, &mut r, &mut feed, &s);
                let y = if mean {
                    ad::reduce_mean(&x, axes.clone(), keep_dims).unwrap()
                } else {
                    ad::reduce_sum(&x, axes.clone(), keep_dims).unwrap()
                };
                let value = forward(&y, &feed).unwrap();
                // Compare with NumPy-style repeated sum_axis.
                let mut want = feed.get(&x).unwrap().clone();
                for &a in sorted.iter().rev() {
                    want = want.sum_axis(Axis(a));
                    if keep_dims {
                        want = want.insert_axis(Axis(a));
                    }
                }
                if mean {
                    let count: usize = sorted.iter().map(|&a| s[a]).product();
                    want /= count as f32;
                }
                assert_eq!(value.shape(), want.shape());
                assert!(value.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5));
                let context = format!(
                    "{} {s:?} over {axes:?} keep_dims {keep_dims}",
                    if mean { "mean" } else { "sum" }
                );
                check(&y, &[&x], &feed, &context);
            }
        }
    }
}

#[test]
fn reduce_of_a_scalar_is_the_identity() {
    for keep_dims in [false, true] {
        let g = Graph::new();
        let x = g.placeholder(shape![]);
        let feed = ad::feed! { x => 2.5 }.unwrap();
        for y in [
            ad::reduce_sum(&x, Axes::All, keep_dims).unwrap(),
            ad::reduce_mean(&x, Axes::All, keep_dims).unwrap(),
        ] {
            assert_eq!(y.shape(), shape![]);
            let mut rt = RunTime::new();
            rt.backward(&y, &feed, Some(ad::tensor(3.0))).unwrap();
            assert_eq!(rt.value(&y).unwrap(), &ad::tensor(2.5));
            assert_eq!(rt.grad(&x).unwrap(), &ad::tensor(3.0));
        }
    }
}

/// Naive batched product with broadcasting, to compare with.
fn naive_matmul(x: &Tensor, y: &Tensor) -> Tensor {
    let (rx, ry) = (x.ndim(), y.ndim());
    let (p, q, r) = (x.shape()[rx - 2], x.shape()[rx - 1], y.shape()[ry - 1]);
    let batch = ad::shape::broadcast_shapes(&x.shape()[..rx - 2], &y.shape()[..ry - 2]).unwrap();
    let mut out_shape = batch.clone();
    out_shape.extend([p, r]);
    Tensor::from_shape_fn(IxDyn(&out_shape), |idx| {
        let idx = idx.slice().to_vec();
        let nb = batch.len();
        let pick = |a: &Tensor, i: usize, j: usize| {
            let ab = a.ndim() - 2;
            let mut at: Vec<usize> = (0..ab)
                .map(|t| {
                    let d = a.shape()[t];
                    if d == 1 {
                        0
                    } else {
                        idx[nb - ab + t]
                    }
                })
                .collect();
            at.extend([i, j]);
            a[IxDyn(&at)]
        };
        (0..q)
            .map(|k| pick(x, idx[nb], k) * pick(y, k, idx[nb + 1]))
            .sum()
    })
}

#[test]
fn matmul_gradients() {
    let mut r = rng(8);
    let mut shapes: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
    for _ in 0..6 {
        let (p, q, n) = (r.gen_range(1..=4), r.gen_range(1..=4), r.gen_range(1..=4));
        shapes.push((vec![p, q], vec![q, n]));
        let b = r.gen_range(1..=3);
        shapes.push((vec![b, p, q], vec![b, q, n]));
        shapes.push((vec![2, b, p, q], vec![2, b, q, n]));
    }
    // Broadcast batch dims.
    shapes.push((vec![3, 2, 4], vec![4, 2]));
    shapes.push((vec![2, 3], vec![4, 3, 2]));
    shapes.push((vec![1, 2, 3], vec![3, 3, 2]));
    shapes.push((vec![2, 1, 2, 3], vec![3, 3, 4]));
    for (sx, sy) in shapes {
        let g = Graph::new();
        let mut feed = Feed::new();
        let x = fed(&g, &mut r, &mut feed, &sx);
        let y = fed(&g, &mut r, &mut feed, &sy);
        let z = ad::matmul(&x, &y).unwrap();
        let value = forward(&z, &feed).unwrap();
        let want = naive_matmul(feed.get(&x).unwrap(), feed.get(&y).unwrap());
        assert_eq!(value.shape(), want.shape(), "{sx:?} x {sy:?}");
        assert!(value.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5));
        assert_eq!(z.shape(), TensorShape::known(want.shape()));
        check(&z, &[&x, &y], &feed, &format!("matmul {sx:?} x {sy:?}"));
    }
}

#[test]
fn matmul_same_input_twice_and_zero_sizes() {
    let mut r = rng(9);
    let g = Graph::new();
    let mut feed = Feed::new();
    let a = fed(&g, &mut r, &mut feed, &[3, 3]);
    let z = ad::matmul(&a, &a).unwrap();
    GradCheck::default().check(&z, &[&a], &feed).unwrap();

    // Inner dim 0: the product is zeros; empty operands get empty gradients.
    let x = fed(&g, &mut r, &mut feed, &[2, 0]);
    let y = fed(&g, &mut r, &mut feed, &[0, 3]);
    let z = ad::matmul(&x, &y).unwrap();
    let mut rt = RunTime::new();
    rt.backward(&z, &feed, None).unwrap();
    assert_eq!(rt.value(&z).unwrap(), &Tensor::zeros(IxDyn(&[2, 3])));
    assert_eq!(rt.grad(&x).unwrap().shape(), &[2, 0]);
    assert_eq!(rt.grad(&y).unwrap().shape(), &[0, 3]);
}

#[test]
fn ops_compose_in_one_graph() {
    // mean over rows of relu-free layer: reduce_mean(pad(x) · w) and friends.
    let mut r = rng(10);
    let g = Graph::new();
    let mut feed = Feed::new();
    let x = fed(&g, &mut r, &mut feed, &[2, 3, 4]);
    let w = fed(&g, &mut r, &mut feed, &[4, 5]);
    let t = ad::transpose(&x, &[1, 0, 2]).unwrap(); // [3, 2, 4]
    let s = ad::slice(&t, &[1, 0, 0], &[-1, -1, -1]).unwrap(); // [2, 2, 4]
    let c = ad::concat(&[&s, &t], 0).unwrap(); // [5, 2, 4]
    let m = ad::matmul(&c, &w).unwrap(); // [5, 2, 5]
    let p = ad::pad(&m, &[[0, 0], [1, 0], [0, 2]], 1.0).unwrap(); // [5, 3, 7]
    let f = ad::reshape(&p, &[-1, 7]).unwrap(); // [15, 7]
    let y = ad::reduce_mean(&f, 0, true).unwrap(); // [1, 7]
    assert_eq!(y.shape(), shape![1, 7]);
    check(&y, &[&x, &w], &feed, "composite");
}

// ---------------------------------------------------------------------------
// static shapes with unknown dims, and their run-time checks
// ---------------------------------------------------------------------------

#[test]
fn unknown_dims_static_shapes() {
    let g = Graph::new();
    let x = g.placeholder(shape![None, 2, 3]);
    assert_eq!(ad::reshape(&x, &[-1, 6]).unwrap().shape(), shape![None, 6]);
    assert_eq!(
        ad::reshape(&x, &[2, -1, 3]).unwrap().shape(),
        shape![2, None, 3]
    );
    assert_eq!(ad::reshape(&x, &[12]).unwrap().shape(), shape![12]);
    assert_eq!(
        ad::transpose(&x, &[2, 0, 1]).unwrap().shape(),
        shape![3, None, 2]
    );
    assert_eq!(
        ad::pad(&x, &[[1, 1], [0, 1], [2, 0]], 0.0).unwrap().shape(),
        shape![None, 3, 5]
    );
    assert_eq!(
        ad::slice(&x, &[1, 0, 1], &[-1, 2, -1]).unwrap().shape(),
        shape![None, 2, 2]
    );
    assert_eq!(
        ad::slice(&x, &[1, 0, 1], &[4, 2, 2]).unwrap().shape(),
        shape![4, 2, 2]
    );
    let y = g.placeholder(shape![4, 2, None]);
    assert_eq!(
        ad::concat(&[&x, &y], 0).unwrap().shape(),
        shape![None, 2, 3]
    );
    let z = g.placeholder(shape![5, 2, 3]);
    assert_eq!(ad::concat(&[&z, &y], 0).unwrap().shape(), shape![9, 2, 3]);
    assert_eq!(
        ad::concat(&[&x, &y], 2).unwrap().shape(),
        shape![4, 2, None]
    );
    assert_eq!(
        ad::reduce_sum(&x, [2, 0], true).unwrap().shape(),
        shape![1, 2, 1]
    );
    assert_eq!(
        ad::reduce_mean(&x, 1, false).unwrap().shape(),
        shape![None, 3]
    );
    let w = g.placeholder(shape![3, None]);
    assert_eq!(ad::matmul(&x, &w).unwrap().shape(), shape![None, 2, None]);
    let v = g.placeholder(shape![None, None]);
    assert_eq!(ad::matmul(&v, &w).unwrap().shape(), shape![None, None]);
}

#[test]
fn unknown_dims_are_checked_at_run_time() {
    let mut r = rng(11);
    let g = Graph::new();
    let x = g.placeholder(shape![None, 2]);
    let batch =
        |n: usize, r: &mut ChaCha8Rng| Feed::new().with(&x, random_tensor(r, &[n, 2])).unwrap();

    // reshape [None, 2] -> [6]: fits 3 rows only.
    let y = ad::reshape(&x, &[6]).unwrap();
    assert_eq!(forward(&y, &batch(3, &mut r)).unwrap().shape(), &[6]);
    assert!(forward(&y, &batch(2, &mut r)).is_err());
    // -1 with an unknown batch.
    let y = ad::reshape(&x, &[-1, 4]).unwrap();
    assert_eq!(forward(&y, &batch(4, &mut r)).unwrap().shape(), &[2, 4]);
    assert!(forward(&y, &batch(3, &mut r)).is_err());

    // slice rows 2..5 needs 5 rows.
    let y = ad::slice(&x, &[2, 0], &[3, -1]).unwrap();
    assert_eq!(forward(&y, &batch(5, &mut r)).unwrap().shape(), &[3, 2]);
    let e = forward(&y, &batch(4, &mut r)).unwrap_err();
    assert!(matches!(e.root_cause(), Error::OutOfBounds(_)), "{e}");
    let y = ad::slice(&x, &[3, 0], &[-1, -1]).unwrap();
    assert_eq!(forward(&y, &batch(3, &mut r)).unwrap().shape(), &[0, 2]);
    assert!(forward(&y, &batch(2, &mut r)).is_err());

    // concat on axis 1 needs equal batches.
    let z = g.placeholder(shape![None, 3]);
    let c = ad::concat(&[&x, &z], 1).unwrap();
    let mut feed = batch(2, &mut r);
    feed.insert(&z, random_tensor(&mut r, &[3, 3])).unwrap();
    assert!(forward(&c, &feed).is_err());

    // matmul with an unknown inner dim.
    let a = g.placeholder(shape![None, None]);
    let b = g.placeholder(shape![3, 4]);
    let m = ad::matmul(&a, &b).unwrap();
    let feed = Feed::new()
        .with(&a, random_tensor(&mut r, &[2, 5]))
        .unwrap()
        .with(&b, random_tensor(&mut r, &[3, 4]))
        .unwrap();
    let e = forward(&m, &feed).unwrap_err();
    assert!(
        e.to_string().contains("(2, 5)") && e.to_string().contains("(3, 4)"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// bad input: Err, never a panic
// ---------------------------------------------------------------------------

/// The root cause of a build error.
fn root(r: ad::Result<Node>) -> Error {
    match r {
        Ok(n) => panic!("expected an error, got node {n:?}"),
        Err(e) => {
            // Build errors name the node and its inputs.
            assert!(
                matches!(
                    e,
                    Error::Node { .. } | Error::InvalidArgument(_) | Error::GraphMismatch { .. }
                ),
                "{e}"
            );
            e.root_cause().clone()
        }
    }
}

#[test]
fn reshape_bad_input() {
    let g = Graph::new();
    let x = g.placeholder([2, 3]);
    assert!(matches!(
        root(ad::reshape(&x, &[-1, -1])),
        Error::InvalidArgument(_)
    ));
    assert!(matches!(
        root(ad::reshape(&x, &[-2, -3])),
        Error::InvalidArgument(_)
    ));
    assert!(matches!(
        root(ad::reshape(&x, &[5])),
        Error::InvalidArgument(_)
    ));
    assert!(matches!(
        root(ad::reshape(&x, &[4, -1])),
        Error::InvalidArgument(_)
    ));
    assert!(matches!(
        root(ad::reshape(&x, &[0, -1])),
        Error::InvalidArgument(_)
    ));
    assert!(matches!(
        root(ad::reshape(&x, &[isize::MAX, isize::MAX])),
        Error::InvalidArgument(_)
    ));
    // Unknown batch, but no batch fits: [None, 2] has an even count.
    let u = g.placeholder(shape![None, 2]);
    assert!(matches!(
        root(ad::reshape(&u, &[5])),
        Error::InvalidArgument(_)
    ));
    // Zero elements with -1 is ambiguous.
    let e = g.placeholder([0, 3]);
    assert!(ad::reshape(&e, &[-1, 0]).is_err());
    assert_eq!(ad::reshape(&e, &[3, -1]).unwrap().shape(), shape![3, 0]);
}

#[test]
fn transpose_bad_input() {
    let g = Graph::new();
    let x = g.placeholder([2, 3, 4]);
    assert!(matches!(
        root(ad::transpose(&x, &[0, 1])),
        Error::Rank { .. }
    ));
    assert!(matches!(
        root(ad::transpose(&x, &[0, 1, 3])),
        Error::Axis { axis: 3, rank: 3 }
    ));
    assert!(matches!(
        root(ad::transpose(&x, &[0, 1, usize::MAX])),
        Error::Axis { .. }
    ));
    assert!(matches!(
        root(ad::transpose(&x, &[1, 1, 0])),
        Error::InvalidArgument(_)
    ));
    let s = g.placeholder(shape![]);
    assert_eq!(ad::transpose(&s, &[]).unwrap().shape(), shape![]);
}

#[test]
fn pad_bad_input() {
    let g = Graph::new();
    let x = g.placeholder([2, 3]);
    assert!(matches!(
        root(ad::pad(&x, &[[1, 1]], 0.0)),
        Error::Rank { .. }
    ));
    assert!(matches!(
        root(ad::pad(&x, &[[1, 1], [0, 0], [0, 0]], 0.0)),
        Error::Rank { .. }
    ));
    assert!(matches!(
        root(ad::pad(&x, &[[usize::MAX, 1], [0, 0]], 0.0)),
        Error::InvalidArgument(_)
    ));
    // Too large to allocate: refused in forward rather than panicking.
    let y = ad::pad(&x, &[[0, usize::MAX / 4], [0, usize::MAX / 4]], 0.0).unwrap();
    let feed = Feed::new().with(&x, Tensor::zeros(IxDyn(&[2, 3]))).unwrap();
    assert!(forward(&y, &feed).is_err());
}

#[test]
fn concat_bad_input() {
    let g = Graph::new();
    let a = g.placeholder([2, 3]);
    let b = g.placeholder([2, 4]);
    assert!(matches!(ad::concat(&[], 0), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        root(ad::concat(&[&a, &b], 0)),
        Error::InvalidArgument(_)
    ));
    assert!(matches!(
        root(ad::concat(&[&a, &b], 2)),
        Error::Axis { axis: 2, rank: 2 }
    ));
    let c = g.placeholder([2, 3, 1]);
    assert!(matches!(root(ad::concat(&[&a, &c], 0)), Error::Rank { .. }));
    let s = g.placeholder(shape![]);
    assert!(matches!(root(ad::concat(&[&s, &s], 0)), Error::Axis { .. }));
    let other = Graph::new().placeholder([2, 3]);
    assert!(matches!(
        ad::concat(&[&a, &other], 0),
        Err(Error::GraphMismatch { .. })
    ));
    // One input is a copy.
    assert_eq!(ad::concat(&[&a], 1).unwrap().shape(), shape![2, 3]);
    assert_eq!(ad::concat(&[&a, &b], 1).unwrap().shape(), shape![2, 7]);
}

#[test]
fn slice_bad_input() {
    let g = Graph::new();
    let x = g.placeholder([3, 4]);
    assert!(matches!(
        root(ad::slice(&x, &[0], &[1, 1])),
        Error::Rank { .. }
    ));
    assert!(matches!(
        root(ad::slice(&x, &[0, 0], &[1])),
        Error::Rank { .. }
    ));
    assert!(matches!(
        root(ad::slice(&x, &[0, 0], &[1, -2])),
        Error::InvalidArgument(_)
    ));
    assert!(matches!(
        root(ad::slice(&x, &[4, 0], &[0, 1])),
        Error::OutOfBounds(_)
    ));
    assert!(matches!(
        root(ad::slice(&x, &[4, 0], &[-1, 1])),
        Error::OutOfBounds(_)
    ));
    assert!(matches!(
        root(ad::slice(&x, &[1, 2], &[1, 3])),
        Error::OutOfBounds(_)
    ));
    assert!(matches!(
        root(ad::slice(&x, &[1, usize::MAX], &[1, 1])),
        Error::OutOfBounds(_)
    ));
    assert!(matches!(
        root(ad::slice(&x, &[1, 1], &[1, isize::MAX])),
        Error::OutOfBounds(_)
    ));
    // The empty boxes at the edge are fine.
    assert_eq!(
        ad::slice(&x, &[3, 4], &[0, -1]).unwrap().shape(),
        shape![0, 0]
    );
}

#[test]
fn reduce_bad_input() {
    let g = Graph::new();
    let x = g.placeholder([2, 3]);
    for mean in [false, true] {
        let f = |x: &Node, axes: Axes, keep_dims: bool| {
            if mean {
                ad::reduce_mean(x, axes, keep_dims)
            } else {
                ad::reduce_sum(x, axes, keep_dims)
            }
        };
        assert!(matches!(
            root(f(&x, 2.into(), false)),
            Error::Axis { axis: 2, rank: 2 }
        ));
        assert!(matches!(
            root(f(&x, [1, 0, 1].into(), false)),
            Error::InvalidArgument(_)
        ));
        assert!(matches!(
            root(f(&x, vec![usize::MAX].into(), true)),
            Error::Axis { .. }
        ));
        let s = g.placeholder(shape![]);
        assert!(matches!(
            root(f(&s, 0.into(), false)),
            Error::Axis { axis: 0, rank: 0 }
        ));
        // Unsorted and slice forms are fine.
        assert_eq!(
            f(&x, (&[1, 0][..]).into(), false).unwrap().shape(),
            shape![]
        );
        assert_eq!(
            f(&x, Axes::List(vec![]), false).unwrap().shape(),
            shape![2, 3]
        );
    }
}

#[test]
fn matmul_bad_input() {
    let g = Graph::new();
    let v = g.placeholder([3]);
    let s = g.placeholder(shape![]);
    let m = g.placeholder([3, 4]);
    let n = g.placeholder([5, 2]);
    assert!(matches!(root(ad::matmul(&v, &m)), Error::Rank { .. }));
    assert!(matches!(root(ad::matmul(&m, &v)), Error::Rank { .. }));
    assert!(matches!(root(ad::matmul(&s, &s)), Error::Rank { .. }));
    let e = root(ad::matmul(&m, &n));
    assert!(matches!(e, Error::InvalidArgument(_)));
    assert!(
        e.to_string().contains("(3, 4)") && e.to_string().contains("(5, 2)"),
        "{e}"
    );
    let a = g.placeholder([2, 3, 4]);
    let b = g.placeholder([3, 4, 5]);
    assert!(matches!(
        root(ad::matmul(&a, &b)),
        Error::InvalidArgument(_)
    ));
    let other = Graph::new().placeholder([4, 2]);
    assert!(matches!(
        ad::matmul(&m, &other),
        Err(Error::GraphMismatch { .. })
    ));
}
