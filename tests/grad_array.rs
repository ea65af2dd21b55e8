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

// ---------------------------------------------------------------------------
// second derivatives (finite differences of the gradient graph) and the
// symbolic gradient nodes
// ---------------------------------------------------------------------------

/// A placeholder of static shape `static_shape` fed with random values of
/// shape `concrete`.
fn fed_as(
    g: &Graph,
    rng: &mut ChaCha8Rng,
    feed: &mut Feed,
    static_shape: TensorShape,
    concrete: &[usize],
) -> Node {
    let x = g.placeholder(static_shape);
    feed.insert(&x, random_tensor(rng, concrete)).unwrap();
    x
}

/// Checks the second derivatives of `out` w.r.t. `wrt`, with a context on failure.
fn check2(out: &Node, wrt: &[&Node], feed: &Feed, context: &str) {
    match ad::gradcheck::check_second_derivatives(out, wrt, feed) {
        Ok(report) => assert!(report.elements > 0, "{context}: nothing checked"),
        Err(e) => panic!("{context} (second order): {e}"),
    }
}

/// `q · W · qᵀ` for `q` = the `n` elements of `y` as a row and a random
/// constant `W`: a quadratic function of a linear op's output (whose Hessian
/// `W + Wᵀ` tells every element apart), so that the second derivative runs
/// through the gradient of the op's gradient node. Built from reshape and
/// matmul only, whose gradients are symbolic.
fn quad(y: &Node, n: usize, r: &mut ChaCha8Rng) -> Node {
    let w = y.graph().constant(random_tensor(r, &[n, n])).unwrap();
    let q = ad::reshape(y, &[1, -1]).unwrap();
    let qw = ad::matmul(&q, &w).unwrap();
    ad::matmul_transposed(&qw, &q, false, true).unwrap()
}

/// The number of elements of a concrete shape.
fn count(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The op types of the gradient of `out` w.r.t. `x` and of everything it needs
/// down to (not including) nodes of the forward graph.
fn gradient_op_types(out: &Node, x: &Node) -> Vec<String> {
    let dx = ad::gradients(&[out], &[x], None).unwrap()[0]
        .clone()
        .unwrap();
    let mut types = Vec::new();
    let mut stack = vec![dx];
    while let Some(n) = stack.pop() {
        if !n.is_gradient() {
            continue;
        }
        types.push(n.op_type().to_string());
        stack.extend(n.inputs());
    }
    types
}

#[test]
fn reshape_second_derivatives() {
    let mut r = rng(20);
    for (static_shape, concrete, target) in [
        (shape![2, 3, 2], vec![2, 3, 2], vec![3, -1]),
        (shape![4], vec![4], vec![2, 2]),
        (shape![None, 3], vec![2, 3], vec![-1]),
        (shape![None, 2, None], vec![2, 2, 3], vec![3, 4]),
        (shape![], vec![], vec![1, 1]),
    ] {
        let g = Graph::new();
        let mut feed = Feed::new();
        let x = fed_as(&g, &mut r, &mut feed, static_shape.clone(), &concrete);
        let y = ad::reshape(&x, &target).unwrap();
        let z = quad(&y, count(&concrete), &mut r);
        let context = format!("reshape {static_shape} -> {target:?}");
        check(&z, &[&x], &feed, &context);
        check2(&z, &[&x], &feed, &context);
        // A run-time shape only where the static one has unknown dims.
        let types = gradient_op_types(&z, &x);
        assert_eq!(
            types.contains(&"ReshapeLike".to_string()),
            !static_shape.is_fully_defined(),
            "{context}: {types:?}"
        );
    }
}

#[test]
fn transpose_second_derivatives() {
    let mut r = rng(21);
    for (static_shape, concrete, perm) in [
        (shape![2, 3], vec![2, 3], vec![1, 0]),
        (shape![2, 3, 4], vec![2, 3, 4], vec![2, 0, 1]),
        (shape![None, 2, 3], vec![3, 2, 3], vec![1, 2, 0]),
    ] {
        let g = Graph::new();
        let mut feed = Feed::new();
        let x = fed_as(&g, &mut r, &mut feed, static_shape.clone(), &concrete);
        let z = quad(&ad::transpose(&x, &perm).unwrap(), count(&concrete), &mut r);
        let context = format!("transpose {static_shape} by {perm:?}");
        check2(&z, &[&x], &feed, &context);
        assert!(gradient_op_types(&z, &x).contains(&"Transpose".to_string()));
    }
}

#[test]
fn pad_second_derivatives() {
    let mut r = rng(22);
    for (static_shape, concrete, paddings) in [
        (shape![2, 3], vec![2, 3], vec![[1, 0], [2, 1]]),
        (shape![3], vec![3], vec![[0, 0]]),
        (
            shape![None, 2, None],
            vec![2, 2, 3],
            vec![[1, 1], [0, 2], [2, 0]],
        ),
    ] {
        let g = Graph::new();
        let mut feed = Feed::new();
        let x = fed_as(&g, &mut r, &mut feed, static_shape.clone(), &concrete);
        let y = ad::pad(&x, &paddings, 0.5).unwrap();
        let z = quad(&y, forward(&y, &feed).unwrap().len(), &mut r);
        let context = format!("pad {static_shape} by {paddings:?}");
        check(&z, &[&x], &feed, &context);
        check2(&z, &[&x], &feed, &context);
        assert!(gradient_op_types(&z, &x).contains(&"PadGrad".to_string()));
    }
}

#[test]
fn slice_second_derivatives() {
    let mut r = rng(23);
    for (static_shape, concrete, begin, sizes) in [
        (shape![3, 4], vec![3, 4], vec![1, 0], vec![2, -1]),
        (shape![5], vec![5], vec![2], vec![0]),
        (shape![None, 4], vec![3, 4], vec![1, 1], vec![-1, 2]),
        (
            shape![None, None, 2],
            vec![4, 3, 2],
            vec![1, 0, 1],
            vec![2, -1, 1],
        ),
    ] {
        let g = Graph::new();
        let mut feed = Feed::new();
        let x = fed_as(&g, &mut r, &mut feed, static_shape.clone(), &concrete);
        let y = ad::slice(&x, &begin, &sizes).unwrap();
        let z = quad(&y, forward(&y, &feed).unwrap().len(), &mut r);
        let context = format!("slice {static_shape} at {begin:?} sizes {sizes:?}");
        check(&z, &[&x], &feed, &context);
        check2(&z, &[&x], &feed, &context);
        // A zero padding when the input's shape is known, else a SliceGrad.
        let types = gradient_op_types(&z, &x);
        let want = if static_shape.is_fully_defined() {
            "Pad"
        } else {
            "SliceGrad"
        };
        assert!(types.contains(&want.to_string()), "{context}: {types:?}");
    }
}

#[test]
fn concat_second_derivatives() {
    let mut r = rng(24);
    // (static shapes, concrete shapes, axis)
    let cases: Vec<(Vec<TensorShape>, Vec<Vec<usize>>, usize)> = vec![
        (
            vec![shape![2, 3], shape![2, 1]],
            vec![vec![2, 3], vec![2, 1]],
            1,
        ),
        // A zero-size input.
        (
            vec![shape![0, 3], shape![2, 3], shape![1, 3]],
            vec![vec![0, 3], vec![2, 3], vec![1, 3]],
            0,
        ),
        // Unknown lengths along the axis: the parts are found at run time.
        (
            vec![shape![None, 2], shape![3, 2], shape![None, 2]],
            vec![vec![2, 2], vec![3, 2], vec![0, 2]],
            0,
        ),
        (
            vec![shape![2, None, 2], shape![None, 2, 2]],
            vec![vec![2, 3, 2], vec![2, 2, 2]],
            1,
        ),
    ];
    for (statics, concretes, axis) in cases {
        let g = Graph::new();
        let mut feed = Feed::new();
        let xs: Vec<Node> = statics
            .iter()
            .zip(&concretes)
            .map(|(s, c)| fed_as(&g, &mut r, &mut feed, s.clone(), c))
            .collect();
        let refs: Vec<&Node> = xs.iter().collect();
        let y = ad::concat(&refs, axis).unwrap();
        let z = quad(&y, forward(&y, &feed).unwrap().len(), &mut r);
        let context = format!("concat {statics:?} on axis {axis}");
        check(&z, &refs, &feed, &context);
        check2(&z, &refs, &feed, &context);
    }
    // A repeated input, with an unknown length (ConcatGrad) and a known one.
    for s in [shape![None, 2], shape![2, 2]] {
        let g = Graph::new();
        let mut feed = Feed::new();
        let a = fed_as(&g, &mut r, &mut feed, s.clone(), &[2, 2]);
        let b = fed_as(&g, &mut r, &mut feed, shape![1, 2], &[1, 2]);
        let y = ad::concat(&[&a, &b, &a], 0).unwrap();
        let z = quad(&y, forward(&y, &feed).unwrap().len(), &mut r);
        check(&z, &[&a, &b], &feed, "concat [a, b, a]");
        check2(&z, &[&a, &b], &feed, "concat [a, b, a]");
        let types = gradient_op_types(&z, &a);
        assert_eq!(
            types.contains(&"ConcatGrad".to_string()),
            !s.is_fully_defined(),
            "{types:?}"
        );
    }
}

#[test]
fn reduce_second_derivatives() {
    let mut r = rng(25);
    let cases: Vec<(TensorShape, Vec<usize>, Axes)> = vec![
        (shape![2, 3, 4], vec![2, 3, 4], Axes::All),
        (shape![2, 3, 4], vec![2, 3, 4], Axes::from([2, 0])),
        (shape![2, 3], vec![2, 3], Axes::from(1)),
        (shape![], vec![], Axes::All),
        // Unknown dims: the count of a mean is read at run time.
        (shape![None, 3], vec![4, 3], Axes::from(0)),
        (shape![None, 3, None], vec![2, 3, 2], Axes::from([0, 2])),
        (shape![None, 2], vec![3, 2], Axes::All),
        (shape![2, None], vec![2, 3], Axes::from(0)),
    ];
    for (static_shape, concrete, axes) in cases {
        for keep_dims in [false, true] {
            for mean in [false, true] {
                let g = Graph::new();
                let mut feed = Feed::new();
                let x = fed_as(&g, &mut r, &mut feed, static_shape.clone(), &concrete);
                let y = if mean {
                    ad::reduce_mean(&x, axes.clone(), keep_dims).unwrap()
                } else {
                    ad::reduce_sum(&x, axes.clone(), keep_dims).unwrap()
                };
                let z = quad(&y, forward(&y, &feed).unwrap().len(), &mut r);
                let context = format!(
                    "{} {static_shape} over {axes:?} keep_dims {keep_dims}",
                    if mean { "mean" } else { "sum" }
                );
                check(&z, &[&x], &feed, &context);
                check2(&z, &[&x], &feed, &context);
                assert!(gradient_op_types(&z, &x).contains(&"ReduceGrad".to_string()));
            }
        }
    }
}

/// `t` with its last two dims swapped (a copy in standard layout).
fn swap_last_two(t: &Tensor) -> Tensor {
    let n = t.ndim();
    let mut perm: Vec<usize> = (0..n).collect();
    perm.swap(n - 2, n - 1);
    t.view()
        .permuted_axes(perm)
        .as_standard_layout()
        .into_owned()
}

/// The stored shape of an operand whose product shape is `s`: the last two
/// dims swapped when it is transposed.
fn stored(mut s: Vec<usize>, transpose: bool) -> Vec<usize> {
    if transpose {
        let n = s.len();
        s.swap(n - 2, n - 1);
    }
    s
}

#[test]
fn matmul_transposed_values_and_gradients() {
    let mut r = rng(26);
    // Shapes of the product's operands, before any transpose flag.
    let shapes: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![2, 3], vec![3, 4]),
        (vec![3, 2, 3], vec![3, 3, 2]),
        // Broadcast batch dims, both ways.
        (vec![2, 1, 2, 3], vec![3, 3, 2]),
        (vec![3, 2], vec![2, 2, 4]),
        (vec![1, 2, 3], vec![2, 1, 3, 2]),
    ];
    for (sa, sb) in shapes {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let g = Graph::new();
            let mut feed = Feed::new();
            let x = fed(&g, &mut r, &mut feed, &stored(sa.clone(), ta));
            let y = fed(&g, &mut r, &mut feed, &stored(sb.clone(), tb));
            let z = ad::matmul_transposed(&x, &y, ta, tb).unwrap();
            let context = format!("matmul {sa:?} x {sb:?}, transposes {ta} {tb}");
            let value = forward(&z, &feed).unwrap();
            let (xv, yv) = (feed.get(&x).unwrap(), feed.get(&y).unwrap());
            let a = if ta { swap_last_two(xv) } else { xv.clone() };
            let b = if tb { swap_last_two(yv) } else { yv.clone() };
            let want = naive_matmul(&a, &b);
            assert_eq!(value.shape(), want.shape(), "{context}");
            assert!(
                value.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5),
                "{context}"
            );
            assert_eq!(z.shape(), TensorShape::known(want.shape()), "{context}");
            check(&z, &[&x, &y], &feed, &context);
            // Bilinear: the cross terms of the Hessian, matmuls of matmuls.
            check2(&z, &[&x, &y], &feed, &context);
            check2(
                &quad(&z, forward(&z, &feed).unwrap().len(), &mut r),
                &[&x, &y],
                &feed,
                &context,
            );
        }
    }
}

#[test]
fn matmul_second_derivatives_with_unknown_dims() {
    let mut r = rng(27);
    // (static x, concrete x, static y, concrete y)
    let cases = vec![
        // A dense layer on an unknown batch: no sum at all in the gradient.
        (shape![None, 3], vec![4, 3], shape![3, 2], vec![3, 2]),
        // Batch dims that tell statically which axes were broadcast.
        (
            shape![None, 1, 2, 3],
            vec![2, 1, 2, 3],
            shape![3, 3, 4],
            vec![3, 3, 4],
        ),
        // Unknown batch dims on both sides: the sums read run-time shapes.
        (
            shape![None, 2, 3],
            vec![1, 2, 3],
            shape![None, 3, 2],
            vec![3, 3, 2],
        ),
        (
            shape![None, 2, 3],
            vec![2, 2, 3],
            shape![None, 3, 2],
            vec![1, 3, 2],
        ),
    ];
    for (sx, cx, sy, cy) in cases {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let g = Graph::new();
            let mut feed = Feed::new();
            let swap = |s: &TensorShape, t: bool| {
                let mut d = s.dims().to_vec();
                if t {
                    let n = d.len();
                    d.swap(n - 2, n - 1);
                }
                TensorShape::new(d)
            };
            let x = fed_as(
                &g,
                &mut r,
                &mut feed,
                swap(&sx, ta),
                &stored(cx.clone(), ta),
            );
            let y = fed_as(
                &g,
                &mut r,
                &mut feed,
                swap(&sy, tb),
                &stored(cy.clone(), tb),
            );
            let z = ad::matmul_transposed(&x, &y, ta, tb).unwrap();
            let context = format!("matmul {sx} x {sy}, transposes {ta} {tb}");
            check(&z, &[&x, &y], &feed, &context);
            check2(
                &quad(&z, forward(&z, &feed).unwrap().len(), &mut r),
                &[&x, &y],
                &feed,
                &context,
            );
        }
    }
    // The 2-D case's gradients are one MatMul each, nothing else.
    let g = Graph::new();
    let x = g.placeholder(shape![None, 3]);
    let w = g.placeholder([3, 2]);
    let z = ad::matmul(&x, &w).unwrap();
    for input in [&x, &w] {
        let types = gradient_op_types(&z, input);
        assert_eq!(types[0], "MatMul");
        assert!(!types.iter().any(|t| t.starts_with("SumTo")), "{types:?}");
    }
}

#[test]
fn matmul_same_input_twice_second_derivatives() {
    let mut r = rng(28);
    for (ta, tb) in [(false, false), (true, false), (false, true)] {
        let g = Graph::new();
        let mut feed = Feed::new();
        let a = fed(&g, &mut r, &mut feed, &[3, 3]);
        let z = ad::matmul_transposed(&a, &a, ta, tb).unwrap();
        check2(&z, &[&a], &feed, &format!("a·a transposes {ta} {tb}"));
    }
}

#[test]
fn matmul_transposed_bad_input() {
    let g = Graph::new();
    let x = g.placeholder([3, 4]);
    let y = g.placeholder([3, 5]);
    assert!(ad::matmul(&x, &y).is_err());
    assert_eq!(
        ad::matmul_transposed(&x, &y, true, false).unwrap().shape(),
        shape![4, 5]
    );
    let e = root(ad::matmul_transposed(&x, &y, false, true));
    assert!(matches!(e, Error::InvalidArgument(_)));
    assert!(
        e.to_string().contains("(3, 4)") && e.to_string().contains("(3, 5)"),
        "{e}"
    );
    // Unknown inner dims are checked at run time, after the swaps.
    let u = g.placeholder(shape![None, None]);
    let m = ad::matmul_transposed(&u, &y, true, false).unwrap();
    let feed = Feed::new()
        .with(&u, Tensor::zeros(IxDyn(&[2, 4])))
        .unwrap()
        .with(&y, Tensor::zeros(IxDyn(&[3, 5])))
        .unwrap();
    assert!(forward(&m, &feed).is_err());
}

// ---------------------------------------------------------------------------
// stack, unstack, split, tile, expand_dims, squeeze, broadcast_to, cumsum,
// reduce_max / reduce_min, argmax / argmin
// ---------------------------------------------------------------------------

/// The sum of a quadratic form of each node of `ys` (see [`quad`]).
fn quads(ys: &[Node], feed: &Feed, r: &mut ChaCha8Rng) -> Node {
    let terms: Vec<Node> = ys
        .iter()
        .map(|y| {
            let n = forward(y, feed).unwrap().len();
            quad(&ad::reshape(y, &[-1]).unwrap(), n, r)
        })
        .collect();
    let refs: Vec<&Node> = terms.iter().collect();
    ad::add_n(&refs).unwrap()
}

/// Values of `shape` that are a permutation of a grid of step 0.07: no two
/// within a finite-difference step of each other, so no max/min tie moves.
fn distinct(r: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n = count(shape);
    let mut v: Vec<f32> = (0..n).map(|k| (k as f32 - n as f32 / 2.0) * 0.07).collect();
    v.shuffle(r);
    Tensor::from_shape_vec(IxDyn(shape), v).unwrap()
}

#[test]
fn stack_values_and_gradients() {
    let mut r = rng(40);
    for _ in 0..10 {
        let rank = r.gen_range(0..=3);
        let s = random_shape(&mut r, rank, 1, 3);
        let axis = r.gen_range(0..=rank);
        let k = r.gen_range(1..=3);
        let g = Graph::new();
        let mut feed = Feed::new();
        let xs: Vec<Node> = (0..k).map(|_| fed(&g, &mut r, &mut feed, &s)).collect();
        let mut refs: Vec<&Node> = xs.iter().collect();
        refs.push(&xs[0]); // a repeated input
        let y = ad::stack(&refs, axis).unwrap();
        let views: Vec<_> = refs.iter().map(|x| feed.get(x).unwrap().view()).collect();
        let want = ndarray::stack(Axis(axis), &views).unwrap();
        assert_eq!(forward(&y, &feed).unwrap(), want);
        assert_eq!(y.shape(), TensorShape::known(want.shape()));
        let context = format!("stack {k}+1 of {s:?} on axis {axis}");
        let xrefs: Vec<&Node> = xs.iter().collect();
        let z = quad(&y, want.len(), &mut r);
        check(&z, &xrefs, &feed, &context);
        check2(&z, &xrefs, &feed, &context);
        assert!(gradient_op_types(&z, &xs[0]).contains(&"Unstack".to_string()));
    }
    // Unknown dims merge across the inputs.
    let g = Graph::new();
    let mut feed = Feed::new();
    let a = fed_as(&g, &mut r, &mut feed, shape![None, 3], &[2, 3]);
    let b = fed_as(&g, &mut r, &mut feed, shape![2, None], &[2, 3]);
    let y = ad::stack(&[&a, &b], 2).unwrap();
    assert_eq!(y.shape(), shape![2, 3, 2]);
    let z = quad(&y, 12, &mut r);
    check2(&z, &[&a, &b], &feed, "stack with unknown dims");
}

#[test]
fn unstack_values_and_gradients() {
    let mut r = rng(41);
    for (static_shape, concrete, axis) in [
        (shape![3, 2], vec![3, 2], 0),
        (shape![2, 3, 2], vec![2, 3, 2], 1),
        (shape![None, 4], vec![2, 4], 1),
        (shape![2, None, 3], vec![2, 2, 3], 2),
        (shape![4], vec![4], 0),
    ] {
        let g = Graph::new();
        let mut feed = Feed::new();
        let x = fed_as(&g, &mut r, &mut feed, static_shape.clone(), &concrete);
        let pieces = ad::unstack(&x, axis).unwrap();
        assert_eq!(pieces.len(), concrete[axis]);
        let xv = feed.get(&x).unwrap().clone();
        for (i, p) in pieces.iter().enumerate() {
            assert_eq!(forward(p, &feed).unwrap(), xv.index_axis(Axis(axis), i));
        }
        let context = format!("unstack {static_shape} on axis {axis}");
        // All pieces, and only some (the others get no gradient).
        let z = quads(&pieces, &feed, &mut r);
        check(&z, &[&x], &feed, &context);
        check2(&z, &[&x], &feed, &context);
        // The pieces' gradients are placed by one node (UnstackGrad for a
        // lone piece, PieceGrads joining several).
        let want = if pieces.len() > 1 {
            "PieceGrads"
        } else {
            "UnstackGrad"
        };
        assert!(gradient_op_types(&z, &x).contains(&want.to_string()));
        let z = quads(&pieces[1..2], &feed, &mut r);
        check2(&z, &[&x], &feed, &context);
        assert!(gradient_op_types(&z, &x).contains(&"UnstackGrad".to_string()));
        // Stacking the pieces back gives x.
        let refs: Vec<&Node> = pieces.iter().collect();
        let back = ad::stack(&refs, axis).unwrap();
        assert_eq!(forward(&back, &feed).unwrap(), xv);
    }
}

#[test]
fn split_values_and_gradients() {
    let mut r = rng(42);
    let cases: Vec<(TensorShape, Vec<usize>, ad::SplitSizes, usize)> = vec![
        (shape![6, 2], vec![6, 2], ad::SplitSizes::Num(3), 0),
        (
            shape![2, 5],
            vec![2, 5],
            ad::SplitSizes::from([2, -1, 0, 1]),
            1,
        ),
        (shape![None, 4], vec![3, 4], ad::SplitSizes::Num(2), 1),
        (shape![None, 2], vec![4, 2], ad::SplitSizes::Num(2), 0),
        (
            shape![None, 2],
            vec![5, 2],
            ad::SplitSizes::from([1, -1]),
            0,
        ),
        (shape![3], vec![3], ad::SplitSizes::Num(1), 0),
    ];
    for (static_shape, concrete, sizes, axis) in cases {
        let g = Graph::new();
        let mut feed = Feed::new();
        let x = fed_as(&g, &mut r, &mut feed, static_shape.clone(), &concrete);
        let pieces = ad::split(&x, sizes.clone(), axis).unwrap();
        let xv = feed.get(&x).unwrap().clone();
        let mut offset = 0;
        for p in &pieces {
            let v = forward(p, &feed).unwrap();
            let n = v.shape()[axis];
            assert_eq!(v, xv.slice_axis(Axis(axis), (offset..offset + n).into()));
            offset += n;
        }
        assert_eq!(offset, concrete[axis]);
        let context = format!("split {static_shape} by {sizes:?} on axis {axis}");
        let z = quads(&pieces, &feed, &mut r);
        check(&z, &[&x], &feed, &context);
        check2(&z, &[&x], &feed, &context);
        let want = if pieces.len() > 1 {
            "PieceGrads"
        } else {
            "SplitGrad"
        };
        assert!(gradient_op_types(&z, &x).contains(&want.to_string()));
    }
    // Static shapes of the pieces.
    let g = Graph::new();
    let x = g.placeholder(shape![None, 7]);
    let p = ad::split(&x, [2, -1, 1], 1).unwrap();
    let shapes: Vec<TensorShape> = p.iter().map(Node::shape).collect();
    assert_eq!(
        shapes,
        vec![shape![None, 2], shape![None, 4], shape![None, 1]]
    );
    let p = ad::split(&x, 2, 0).unwrap();
    assert_eq!(p[1].shape(), shape![None, 7]);
}

/// A naive tile, element by element.
fn naive_tile(x: &Tensor, multiples: &[usize]) -> Tensor {
    let dims: Vec<usize> = x
        .shape()
        .iter()
        .zip(multiples)
        .map(|(d, m)| d * m)
        .collect();
    Tensor::from_shape_fn(IxDyn(&dims), |ix| {
        let at: Vec<usize> = ix
            .slice()
            .iter()
            .zip(x.shape())
            .map(|(&i, &d)| i % d)
            .collect();
        x[IxDyn(&at)]
    })
}

#[test]
fn tile_values_and_gradients() {
    let mut r = rng(43);
    for _ in 0..10 {
        let rank = r.gen_range(0..=3);
        let s = random_shape(&mut r, rank, 1, 3);
        let multiples: Vec<usize> = (0..rank).map(|_| r.gen_range(1..=3)).collect();
        let g = Graph::new();
        let mut feed = Feed::new();
        let x = fed(&g, &mut r, &mut feed, &s);
        let y = ad::tile(&x, &multiples).unwrap();
        let want = naive_tile(feed.get(&x).unwrap(), &multiples);
        assert_eq!(forward(&y, &feed).unwrap(), want);
        let context = format!("tile {s:?} by {multiples:?}");
        let z = quad(&y, want.len(), &mut r);
        check(&z, &[&x], &feed, &context);
        check2(&z, &[&x], &feed, &context);
    }
    // Unknown dims, and a multiple of 0 (an empty output, a zero gradient).
    let g = Graph::new();
    let mut feed = Feed::new();
    let x = fed_as(&g, &mut r, &mut feed, shape![None, 2], &[3, 2]);
    let y = ad::tile(&x, &[2, 3]).unwrap();
    assert_eq!(y.shape(), shape![None, 6]);
    let z = quad(&y, 36, &mut r);
    check2(&z, &[&x], &feed, "tile with an unknown dim");
    assert!(gradient_op_types(&z, &x).contains(&"TileGrad".to_string()));
    let e = ad::tile(&x, &[0, 2]).unwrap();
    assert_eq!(e.shape(), shape![0, 4]);
    let mut rt = RunTime::new();
    rt.backward(&e, &feed, None).unwrap();
    assert_eq!(rt.grad(&x).unwrap(), &Tensor::zeros(IxDyn(&[3, 2])));
}

#[test]
fn expand_dims_and_squeeze_gradients() {
    let mut r = rng(44);
    for (static_shape, concrete) in [
        (shape![2, 3], vec![2, 3]),
        (shape![], vec![]),
        (shape![None, 1, 3], vec![2, 1, 3]),
    ] {
        let rank = concrete.len();
        for axis in 0..=rank {
            let g = Graph::new();
            let mut feed = Feed::new();
            let x = fed_as(&g, &mut r, &mut feed, static_shape.clone(), &concrete);
            let y = ad::expand_dims(&x, axis).unwrap();
            let mut want = concrete.clone();
            want.insert(axis, 1);
            let v = forward(&y, &feed).unwrap();
            assert_eq!(v.shape(), want.as_slice());
            assert_eq!(
                v.iter().collect::<Vec<_>>(),
                feed.get(&x).unwrap().iter().collect::<Vec<_>>()
            );
            // And back.
            let back = ad::squeeze(&y, &[axis]).unwrap();
            assert_eq!(back.shape(), static_shape);
            let context = format!("expand_dims {static_shape} at {axis}, squeeze back");
            let z = quad(&back, count(&concrete), &mut r);
            check(&z, &[&x], &feed, &context);
            check2(&z, &[&x], &feed, &context);
            let types = gradient_op_types(&z, &x);
            assert_eq!(
                types.contains(&"ReshapeLike".to_string()),
                !static_shape.is_fully_defined(),
                "{context}: {types:?}"
            );
        }
    }
    // Squeeze several axes in any order, and every size-1 dim.
    let g = Graph::new();
    let mut feed = Feed::new();
    let x = fed_as(
        &g,
        &mut r,
        &mut feed,
        shape![1, 3, 1, 2, 1],
        &[1, 3, 1, 2, 1],
    );
    let y = ad::squeeze(&x, &[4, 0]).unwrap();
    assert_eq!(y.shape(), shape![3, 1, 2]);
    let all = ad::squeeze(&x, &[]).unwrap();
    assert_eq!(all.shape(), shape![3, 2]);
    let z = quad(&all, 6, &mut r);
    check2(&z, &[&x], &feed, "squeeze all");
    // An unknown dim named by squeeze is checked at run time.
    let u = fed_as(&g, &mut r, &mut feed, shape![None, 3], &[1, 3]);
    let s = ad::squeeze(&u, &[0]).unwrap();
    assert_eq!(s.shape(), shape![3]);
    let z = quad(&s, 3, &mut r);
    check2(&z, &[&u], &feed, "squeeze an unknown dim");
}

#[test]
fn broadcast_to_values_and_gradients() {
    let mut r = rng(45);
    let cases: Vec<(TensorShape, Vec<usize>, Vec<usize>)> = vec![
        (shape![3], vec![3], vec![2, 3]),
        (shape![], vec![], vec![2, 2]),
        (shape![2, 1], vec![2, 1], vec![2, 5]),
        (shape![1, 3], vec![1, 3], vec![2, 4, 3]),
        (shape![2, 3], vec![2, 3], vec![2, 3]),
        // Unknown dims: broadcast (1) or not, found at run time.
        (shape![None], vec![1], vec![2, 3]),
        (shape![None], vec![3], vec![2, 3]),
        (shape![None, 1], vec![4, 1], vec![4, 2]),
    ];
    for (static_shape, concrete, target) in cases {
        let g = Graph::new();
        let mut feed = Feed::new();
        let x = fed_as(&g, &mut r, &mut feed, static_shape.clone(), &concrete);
        let y = ad::broadcast_to(&x, &target).unwrap();
        assert_eq!(y.shape(), TensorShape::known(&target));
        let xv = feed.get(&x).unwrap();
        assert_eq!(
            forward(&y, &feed).unwrap(),
            xv.broadcast(target.clone()).unwrap()
        );
        let context = format!("broadcast_to {static_shape} ({concrete:?}) -> {target:?}");
        let z = quad(&y, count(&target), &mut r);
        check(&z, &[&x], &feed, &context);
        check2(&z, &[&x], &feed, &context);
    }
}

/// A naive cumsum along `axis`.
fn naive_cumsum(x: &Tensor, axis: usize, exclusive: bool, reverse: bool) -> Tensor {
    let n = x.shape()[axis];
    Tensor::from_shape_fn(x.raw_dim(), |ix| {
        let i = ix[axis];
        let mut at = ix.clone();
        (0..n)
            .filter(|&j| match (exclusive, reverse) {
                (false, false) => j <= i,
                (true, false) => j < i,
                (false, true) => j >= i,
                (true, true) => j > i,
            })
            .map(|j| {
                at[axis] = j;
                x[&at]
            })
            .sum()
    })
}

#[test]
fn cumsum_values_and_gradients() {
    let mut r = rng(46);
    for (static_shape, concrete, axis) in [
        (shape![5], vec![5], 0),
        (shape![3, 4], vec![3, 4], 1),
        (shape![3, 4], vec![3, 4], 0),
        (shape![None, 3, 2], vec![2, 3, 2], 1),
        (shape![2, 0], vec![2, 0], 1),
    ] {
        for exclusive in [false, true] {
            for reverse in [false, true] {
                let g = Graph::new();
                let mut feed = Feed::new();
                let x = fed_as(&g, &mut r, &mut feed, static_shape.clone(), &concrete);
                let y = ad::cumsum(&x, axis, exclusive, reverse).unwrap();
                assert_eq!(y.shape(), static_shape);
                let want = naive_cumsum(feed.get(&x).unwrap(), axis, exclusive, reverse);
                let got = forward(&y, &feed).unwrap();
                assert!(
                    got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5),
                    "{got} vs {want}"
                );
                if count(&concrete) == 0 {
                    continue;
                }
                let context = format!(
                    "cumsum {static_shape} axis {axis} exclusive {exclusive} reverse {reverse}"
                );
                let z = quad(&y, count(&concrete), &mut r);
                check(&z, &[&x], &feed, &context);
                check2(&z, &[&x], &feed, &context);
                let types = gradient_op_types(&z, &x);
                assert!(types.contains(&"Cumsum".to_string()), "{types:?}");
            }
        }
    }
}

/// A naive reduction with `f` over `axes` (keeping the dims).
fn naive_reduce(x: &Tensor, axes: &[usize], init: f32, f: fn(f32, f32) -> f32) -> Tensor {
    let mut acc = x.clone();
    for &a in axes {
        acc = acc
            .fold_axis(Axis(a), init, |&m, &v| f(m, v))
            .insert_axis(Axis(a));
    }
    acc
}

#[test]
fn reduce_max_min_values_and_gradients() {
    let mut r = rng(47);
    let cases: Vec<(TensorShape, Vec<usize>, Axes)> = vec![
        (shape![2, 3, 4], vec![2, 3, 4], Axes::All),
        (shape![2, 3, 4], vec![2, 3, 4], Axes::from([2, 0])),
        (shape![2, 3, 4], vec![2, 3, 4], Axes::from([1, 2])),
        (shape![2, 3, 4], vec![2, 3, 4], Axes::from(1)),
        (shape![3, 4], vec![3, 4], Axes::from(0)),
        (shape![5], vec![5], Axes::from(0)),
        (shape![], vec![], Axes::All),
        (shape![None, 3], vec![4, 3], Axes::from(1)),
        (shape![None, 3, None], vec![2, 3, 2], Axes::from([0, 2])),
        (shape![2, 3], vec![2, 3], Axes::List(vec![])),
    ];
    for (static_shape, concrete, axes) in cases {
        for keep_dims in [false, true] {
            for max in [true, false] {
                let g = Graph::new();
                let mut feed = Feed::new();
                let x = g.placeholder(static_shape.clone());
                let xv = distinct(&mut r, &concrete);
                feed.insert(&x, xv.clone()).unwrap();
                let y = if max {
                    ad::reduce_max(&x, axes.clone(), keep_dims).unwrap()
                } else {
                    ad::reduce_min(&x, axes.clone(), keep_dims).unwrap()
                };
                let resolved = axes.resolve(concrete.len()).unwrap();
                let want = if max {
                    naive_reduce(&xv, &resolved, f32::NEG_INFINITY, f32::max)
                } else {
                    naive_reduce(&xv, &resolved, f32::INFINITY, f32::min)
                };
                let got = forward(&y, &feed).unwrap();
                assert_eq!(
                    got.iter().collect::<Vec<_>>(),
                    want.iter().collect::<Vec<_>>()
                );
                let context = format!(
                    "{} {static_shape} over {axes:?} keep_dims {keep_dims}",
                    if max { "max" } else { "min" }
                );
                let z = quad(&y, got.len(), &mut r);
                check(&z, &[&x], &feed, &context);
                check2(&z, &[&x], &feed, &context);
                if !resolved.is_empty() {
                    let types = gradient_op_types(&z, &x);
                    assert!(types.contains(&"ReduceMinMaxGrad".to_string()), "{types:?}");
                }
            }
        }
    }
}

#[test]
fn reduce_max_min_split_ties_equally() {
    let g = Graph::new();
    let x = g.placeholder([2, 4]);
    let feed = ad::feed! { x => [[3.0, 1.0, 3.0, 3.0], [-2.0, 0.0, -2.0, 5.0]] }.unwrap();
    let u = ad::tensor([6.0, 4.0]);
    let m = ad::reduce_max(&x, 1, false).unwrap();
    let mut rt = RunTime::new();
    rt.backward(&m, &feed, Some(u.clone())).unwrap();
    assert_eq!(
        rt.grad(&x).unwrap(),
        &ad::tensor([[2.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 4.0]])
    );
    let m = ad::reduce_min(&x, 1, false).unwrap();
    let mut rt = RunTime::new();
    rt.backward(&m, &feed, Some(u)).unwrap();
    assert_eq!(
        rt.grad(&x).unwrap(),
        &ad::tensor([[0.0, 6.0, 0.0, 0.0], [2.0, 0.0, 2.0, 0.0]])
    );
    // Over a leading axis (the general path) and over everything.
    let m = ad::reduce_max(&x, 0, true).unwrap();
    let mut rt = RunTime::new();
    rt.backward(&m, &feed, Some(ad::tensor([[1.0, 1.0, 1.0, 1.0]])))
        .unwrap();
    assert_eq!(
        rt.grad(&x).unwrap(),
        &ad::tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    );
    let y = g.placeholder([2, 2]);
    let feed = ad::feed! { y => [[1.0, 1.0], [1.0, 1.0]] }.unwrap();
    let m = ad::reduce_min(&y, Axes::All, false).unwrap();
    let mut rt = RunTime::new();
    rt.backward(&m, &feed, None).unwrap();
    assert_eq!(
        rt.grad(&y).unwrap(),
        &ad::tensor([[0.25, 0.25], [0.25, 0.25]])
    );
}

#[test]
fn reduce_max_min_edge_values() {
    let g = Graph::new();
    let x = g.placeholder(shape![None, 3]);
    let m = ad::reduce_max(&x, 0, false).unwrap();
    let n = ad::reduce_min(&x, 0, false).unwrap();
    let empty = Feed::new().with(&x, Tensor::zeros(IxDyn(&[0, 3]))).unwrap();
    assert!(forward(&m, &empty)
        .unwrap()
        .iter()
        .all(|&v| v == f32::NEG_INFINITY));
    assert!(forward(&n, &empty)
        .unwrap()
        .iter()
        .all(|&v| v == f32::INFINITY));
    let nan = ad::feed! { x => [[1.0, f32::NAN, 2.0], [f32::NAN, 0.0, 5.0]] }.unwrap();
    let v = forward(&m, &nan).unwrap();
    assert!(v[0].is_nan() && v[1].is_nan() && v[2] == 5.0, "{v}");
    let v = forward(&n, &nan).unwrap();
    assert!(v[0].is_nan() && v[1].is_nan() && v[2] == 2.0, "{v}");
}

#[test]
fn argmax_argmin_values() {
    let mut r = rng(48);
    for _ in 0..10 {
        let rank = r.gen_range(1..=4);
        let s = random_shape(&mut r, rank, 1, 4);
        let axis = r.gen_range(0..rank);
        let g = Graph::new();
        let mut feed = Feed::new();
        // Few distinct values: ties are common, and the first index wins.
        let xv = Tensor::from_shape_fn(IxDyn(&s), |_| r.gen_range(0..3) as f32);
        let x = g.placeholder(s.as_slice());
        feed.insert(&x, xv.clone()).unwrap();
        for max in [true, false] {
            let i = if max {
                ad::argmax(&x, axis).unwrap()
            } else {
                ad::argmin(&x, axis).unwrap()
            };
            let want = xv.map_axis(Axis(axis), |lane| {
                let best = if max {
                    lane.iter().copied().fold(f32::NEG_INFINITY, f32::max)
                } else {
                    lane.iter().copied().fold(f32::INFINITY, f32::min)
                };
                lane.iter().position(|&v| v == best).unwrap() as f32
            });
            assert_eq!(forward(&i, &feed).unwrap(), want, "{s:?} axis {axis}");
            assert_eq!(i.shape(), TensorShape::known(want.shape()));
            assert!(ad::gradients(&[&i], &[&x], None).unwrap()[0].is_none());
        }
    }
    // NaN wins, like NumPy.
    let g = Graph::new();
    let x = g.placeholder([4]);
    let feed = ad::feed! { x => [1.0, f32::NAN, 7.0, f32::NAN] }.unwrap();
    for i in [ad::argmax(&x, 0).unwrap(), ad::argmin(&x, 0).unwrap()] {
        assert_eq!(forward(&i, &feed).unwrap(), ad::tensor(1.0));
    }
    assert_eq!(
        ad::argmax(&g.placeholder(shape![None, 3, 2]), 1)
            .unwrap()
            .shape(),
        shape![None, 2]
    );
}

#[test]
fn new_array_ops_bad_input() {
    let g = Graph::new();
    let a = g.placeholder([2, 3]);
    let b = g.placeholder([3, 2]);
    let u = g.placeholder(shape![None, 3]);
    // stack
    assert!(matches!(
        root(ad::stack(&[&a, &b], 0)),
        Error::InvalidArgument(_)
    ));
    assert!(matches!(root(ad::stack(&[&a], 3)), Error::Axis { .. }));
    assert!(ad::stack(&[], 0).is_err());
    let s = ad::stack(&[&a, &u], 0).unwrap();
    let feed = Feed::new()
        .with(&a, Tensor::zeros(IxDyn(&[2, 3])))
        .unwrap()
        .with(&u, Tensor::zeros(IxDyn(&[4, 3])))
        .unwrap();
    assert!(forward(&s, &feed).is_err());
    // unstack
    assert!(ad::unstack(&u, 0).is_err());
    assert!(matches!(
        ad::unstack(&a, 2).unwrap_err(),
        Error::Axis { .. }
    ));
    // split
    assert!(ad::split(&a, 0, 0).is_err());
    assert!(ad::split(&a, 2, 1).is_err()); // 3 into 2
    assert!(ad::split(&a, [1, 1], 1).is_err()); // 2 != 3
    assert!(ad::split(&a, [2, 2], 1).is_err()); // 4 > 3
    assert!(ad::split(&a, [-1, -1], 1).is_err());
    assert!(ad::split(&a, [-2, 5], 1).is_err());
    assert!(ad::split(&a, 1, 2).is_err());
    assert!(ad::split(&a, ad::SplitSizes::Sizes(vec![]), 1).is_err());
    let parts = ad::split(&u, 2, 0).unwrap();
    let odd = Feed::new().with(&u, Tensor::zeros(IxDyn(&[3, 3]))).unwrap();
    let e = forward(&parts[0], &odd).unwrap_err();
    assert!(e.to_string().contains("3 does not split into 2"), "{e}");
    // tile
    assert!(matches!(root(ad::tile(&a, &[2])), Error::Rank { .. }));
    // expand_dims, squeeze
    assert!(matches!(root(ad::expand_dims(&a, 3)), Error::Axis { .. }));
    assert!(matches!(
        root(ad::squeeze(&a, &[0])),
        Error::InvalidArgument(_)
    ));
    assert!(matches!(root(ad::squeeze(&a, &[2])), Error::Axis { .. }));
    let one = g.placeholder([1, 1]);
    assert!(matches!(
        root(ad::squeeze(&one, &[0, 0])),
        Error::InvalidArgument(_)
    ));
    assert!(ad::squeeze(&u, &[]).is_err());
    let sq = ad::squeeze(&u, &[0]).unwrap();
    let e = forward(&sq, &feed).unwrap_err();
    assert!(e.to_string().contains("size 4, not 1"), "{e}");
    // broadcast_to
    assert!(matches!(
        root(ad::broadcast_to(&a, &[3])),
        Error::Broadcast { .. }
    ));
    assert!(matches!(
        root(ad::broadcast_to(&a, &[2, 4])),
        Error::Broadcast { .. }
    ));
    let bt = ad::broadcast_to(&u, &[2, 3]).unwrap();
    assert!(forward(&bt, &feed).is_err()); // 4 rows into 2
                                           // cumsum, reductions, arg-reductions
    assert!(matches!(
        root(ad::cumsum(&a, 2, false, false)),
        Error::Axis { .. }
    ));
    let s0 = g.placeholder(shape![]);
    assert!(matches!(
        root(ad::cumsum(&s0, 0, false, false)),
        Error::Axis { .. }
    ));
    assert!(matches!(
        root(ad::reduce_max(&a, 2, false)),
        Error::Axis { .. }
    ));
    assert!(matches!(
        root(ad::reduce_min(&a, [1, 1], false)),
        Error::InvalidArgument(_)
    ));
    assert!(matches!(root(ad::argmax(&a, 2)), Error::Axis { .. }));
    assert!(matches!(root(ad::argmin(&s0, 0)), Error::Axis { .. }));
    let empty = g.placeholder([2, 0]);
    assert!(matches!(
        root(ad::argmax(&empty, 1)),
        Error::InvalidArgument(_)
    ));
    let z = g.placeholder(shape![2, None]);
    let am = ad::argmax(&z, 1).unwrap();
    let feed = Feed::new().with(&z, Tensor::zeros(IxDyn(&[2, 0]))).unwrap();
    assert!(forward(&am, &feed).is_err());
}

#[test]
fn new_grad_ops_reject_bad_shapes() {
    use ad::ops::array::{SplitGrad, TileGrad, UnstackGrad};
    use ad::ops::reduce::ReduceMinMaxGrad;
    let g = Graph::new();
    let x = g.placeholder([2, 3]);
    let wrong = g.placeholder([5]);
    assert!(g
        .add_op(UnstackGrad { axis: 0, index: 1 }, &[&wrong, &x])
        .is_err());
    assert!(g
        .add_op(
            UnstackGrad { axis: 0, index: 2 },
            &[&g.placeholder([3]), &x]
        )
        .is_err());
    let sg = || SplitGrad {
        axis: 1,
        sizes: ad::SplitSizes::Num(3),
        index: 0,
    };
    assert!(g.add_op(sg(), &[&wrong, &x]).is_err());
    assert!(g.add_op(sg(), &[&x]).is_err());
    assert!(g
        .add_op(
            TileGrad {
                multiples: vec![2, 2]
            },
            &[&x, &x]
        )
        .is_err());
    let mm = || ReduceMinMaxGrad {
        axes: Axes::from(1),
        keep_dims: false,
    };
    let y = g.placeholder([2]);
    assert_eq!(g.add_op(mm(), &[&y, &x, &y]).unwrap().shape(), shape![2, 3]);
    assert!(g.add_op(mm(), &[&wrong, &x, &y]).is_err());
    assert!(g.add_op(mm(), &[&y, &x]).is_err());
    // Run-time mismatches are errors too.
    let u = g.placeholder(shape![None]);
    let d = g.add_op(mm(), &[&u, &x, &y]).unwrap();
    let feed = Feed::new()
        .with(&u, Tensor::zeros(IxDyn(&[3])))
        .unwrap()
        .with(&x, Tensor::zeros(IxDyn(&[2, 3])))
        .unwrap()
        .with(&y, Tensor::zeros(IxDyn(&[2])))
        .unwrap();
    assert!(forward(&d, &feed).is_err());
}

#[test]
fn third_derivatives_through_the_new_grad_ops() {
    // The second derivative of a quadratic form's gradient: checks the
    // gradients of the grad ops' gradients (third order overall).
    let mut r = rng(49);
    type Build = fn(&Node) -> Node;
    let cases: Vec<(&str, Vec<usize>, Build)> = vec![
        ("reduce_max", vec![2, 3], |x| {
            ad::reduce_max(x, 1, false).unwrap()
        }),
        ("reduce_min", vec![2, 3], |x| {
            ad::reduce_min(x, 0, true).unwrap()
        }),
        ("tile", vec![2, 2], |x| ad::tile(x, &[2, 1]).unwrap()),
        ("unstack", vec![3, 2], |x| {
            ad::unstack(x, 0).unwrap()[1].clone()
        }),
        ("split", vec![4, 2], |x| {
            ad::split(x, [1, -1], 0).unwrap()[1].clone()
        }),
        ("stack", vec![2, 2], |x| ad::stack(&[x, x], 1).unwrap()),
        ("cumsum", vec![2, 3], |x| {
            ad::cumsum(x, 1, true, false).unwrap()
        }),
        ("broadcast_to", vec![1, 2], |x| {
            ad::broadcast_to(x, &[3, 2]).unwrap()
        }),
    ];
    for (name, s, f) in cases {
        let g = Graph::new();
        let mut feed = Feed::new();
        let x = g.placeholder(s.as_slice());
        feed.insert(&x, distinct(&mut r, &s)).unwrap();
        let y = f(&x);
        let n = forward(&y, &feed).unwrap().len();
        // A cubic: its third derivative is a nonzero constant.
        let q = ad::reshape(&y, &[1, -1]).unwrap();
        let w = g.constant(random_tensor(&mut r, &[n, n])).unwrap();
        let qw = ad::multiply(&ad::matmul(&q, &w).unwrap(), &q).unwrap();
        let z = ad::reduce_sum(&ad::multiply(&qw, &q).unwrap(), Axes::All, false).unwrap();
        let dz = ad::gradients(&[&z], &[&x], None).unwrap()[0]
            .clone()
            .unwrap();
        check2(&dz, &[&x], &feed, &format!("{name}: third order"));
    }
}

#[test]
fn new_array_ops_on_empty_and_failed_inputs() {
    let g = Graph::new();
    let x = g.placeholder(shape![None, 3]);
    let feed = Feed::new().with(&x, Tensor::zeros(IxDyn(&[0, 3]))).unwrap();
    // Empty tensors: empty results, no panic.
    let am = ad::argmax(&x, 1).unwrap();
    assert_eq!(forward(&am, &feed).unwrap().shape(), &[0]);
    let cs = ad::cumsum(&x, 0, true, true).unwrap();
    assert_eq!(forward(&cs, &feed).unwrap().shape(), &[0, 3]);
    let t = ad::tile(&x, &[3, 2]).unwrap();
    assert_eq!(forward(&t, &feed).unwrap().shape(), &[0, 6]);
    let b = ad::broadcast_to(&ad::reshape(&x, &[-1]).unwrap(), &[2, 0]).unwrap();
    assert_eq!(forward(&b, &feed).unwrap().shape(), &[2, 0]);
    let p = ad::split(&x, 3, 1).unwrap();
    assert_eq!(forward(&p[2], &feed).unwrap().shape(), &[0, 1]);
    let s = ad::stack(&[&x, &x], 0).unwrap();
    let mut rt = RunTime::new();
    rt.backward(&s, &feed, None).unwrap();
    assert_eq!(rt.grad(&x).unwrap().shape(), &[0, 3]);
    // A failed node given to unstack or split reports its own error.
    let bad = &g.placeholder([2, 3]) + &g.placeholder([4]);
    let want = bad.clone().check().unwrap_err().to_string();
    assert_eq!(ad::unstack(&bad, 0).unwrap_err().to_string(), want);
    assert_eq!(ad::split(&bad, 2, 0).unwrap_err().to_string(), want);
}
