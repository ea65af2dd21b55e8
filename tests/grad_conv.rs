//! conv2d, conv2d_transpose, maxpool2d, avgpool2d: finite-difference gradient
//! checks, comparisons with direct (naive) loops, shape inference with unknown
//! dims, and bad input giving `Err`, never a panic.

use adgraph as ad;
use adgraph::gradcheck::GradCheck;
use adgraph::{Error, Padding, Tensor};
use ndarray::IxDyn;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const PADDINGS: [Padding; 2] = [Padding::Same, Padding::Valid];

fn random(shape: &[usize], rng: &mut ChaCha8Rng) -> Tensor {
    Tensor::from_shape_fn(IxDyn(shape), |_| rng.gen_range(-1.0f32..1.0))
}

/// Distinct values 0.1 apart, shuffled: no ties in a max, even after a +-eps probe.
fn distinct(shape: &[usize], rng: &mut ChaCha8Rng) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f32> = (0..n).map(|i| (i as f32 - n as f32 / 2.0) * 0.1).collect();
    v.shuffle(rng);
    Tensor::from_shape_vec(IxDyn(shape), v).unwrap()
}

fn check() -> GradCheck {
    GradCheck {
        eps: 1e-2,
        atol: 1e-2,
        rtol: 1e-2,
        seed: 7,
    }
}

/// TF's rule, written out again independently of the crate: (out, pad_before).
fn out_pad(n: usize, k: usize, s: usize, p: Padding) -> (usize, usize) {
    match p {
        Padding::Same => {
            let out = n.div_ceil(s);
            let total = ((out - 1) * s + k).saturating_sub(n);
            (out, total / 2)
        }
        Padding::Valid => ((n - k) / s + 1, 0),
    }
}

/// Direct-loop conv2d: y[n,oy,ox,co] = sum x[n, oy*sh-pt+ky, ox*sw-pl+kx, ci] k[ky,kx,ci,co].
fn naive_conv(x: &Tensor, k: &Tensor, s: [usize; 2], p: Padding) -> Tensor {
    let (xs, ks) = (x.shape(), k.shape());
    let (oh, pt) = out_pad(xs[1], ks[0], s[0], p);
    let (ow, pl) = out_pad(xs[2], ks[1], s[1], p);
    let mut y = Tensor::zeros(IxDyn(&[xs[0], oh, ow, ks[3]]));
    for n in 0..xs[0] {
        for oy in 0..oh {
            for ox in 0..ow {
                for co in 0..ks[3] {
                    let mut acc = 0.0;
                    for ky in 0..ks[0] {
                        for kx in 0..ks[1] {
                            let iy = (oy * s[0] + ky) as isize - pt as isize;
                            let ix = (ox * s[1] + kx) as isize - pl as isize;
                            if iy < 0 || ix < 0 || iy >= xs[1] as isize || ix >= xs[2] as isize {
                                continue;
                            }
                            for ci in 0..xs[3] {
                                acc += x[[n, iy as usize, ix as usize, ci]] * k[[ky, kx, ci, co]];
                            }
                        }
                    }
                    y[[n, oy, ox, co]] = acc;
                }
            }
        }
    }
    y
}

/// Direct-loop pooling (max or mean over the real cells of each window).
fn naive_pool(x: &Tensor, ksz: [usize; 2], s: [usize; 2], p: Padding, max: bool) -> Tensor {
    let xs = x.shape();
    let (oh, pt) = out_pad(xs[1], ksz[0], s[0], p);
    let (ow, pl) = out_pad(xs[2], ksz[1], s[1], p);
    let mut y = Tensor::zeros(IxDyn(&[xs[0], oh, ow, xs[3]]));
    for n in 0..xs[0] {
        for oy in 0..oh {
            for ox in 0..ow {
                for c in 0..xs[3] {
                    let mut vals = Vec::new();
                    for ky in 0..ksz[0] {
                        for kx in 0..ksz[1] {
                            let iy = (oy * s[0] + ky) as isize - pt as isize;
                            let ix = (ox * s[1] + kx) as isize - pl as isize;
                            if iy >= 0 && ix >= 0 && iy < xs[1] as isize && ix < xs[2] as isize {
                                vals.push(x[[n, iy as usize, ix as usize, c]]);
                            }
                        }
                    }
                    y[[n, oy, ox, c]] = if max {
                        vals.iter().copied().fold(f32::NEG_INFINITY, f32::max)
                    } else {
                        vals.iter().sum::<f32>() / vals.len() as f32
                    };
                }
            }
        }
    }
    y
}

fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-4 + 1e-4 * w.abs(), "{what}: {g} vs {w}");
    }
}

/// The (input size, kernel, strides) grid of the gradient checks.
fn grid() -> Vec<([usize; 2], [usize; 2], [usize; 2])> {
    vec![
        ([5, 6], [1, 1], [1, 1]), // pointwise: no im2col
        ([5, 6], [1, 1], [2, 3]),
        ([5, 7], [2, 3], [1, 1]),
        ([5, 7], [3, 2], [2, 2]),
        ([6, 5], [3, 3], [3, 1]),
        ([7, 7], [2, 3], [3, 3]),
        ([4, 4], [4, 3], [1, 2]),
    ]
}

#[test]
fn conv2d_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (i, (hw, k, s)) in grid().into_iter().enumerate() {
        for p in PADDINGS {
            let batch = [1, 3][i % 2];
            let (cin, cout) = ([1, 2, 3][i % 3], [2, 3][(i + 1) % 2]);
            let g = ad::Graph::new();
            let xv = random(&[batch, hw[0], hw[1], cin], &mut rng);
            let kv = random(&[k[0], k[1], cin, cout], &mut rng);
            let x = g.placeholder(xv.shape());
            let kn = g.placeholder(kv.shape());
            let y = ad::conv2d(&x, &kn, s, p).unwrap();
            let feed = ad::feed! { x => &xv, kn => &kv }.unwrap();
            let value = ad::RunTime::new().forward(&y, &feed).unwrap().clone();
            assert_close(
                &value,
                &naive_conv(&xv, &kv, s, p),
                &format!("conv2d {hw:?} {k:?} {s:?} {p}"),
            );
            check()
                .check(&y, &[&x, &kn], &feed)
                .unwrap_or_else(|e| panic!("conv2d {hw:?} {k:?} {s:?} {p}: {e}"));
        }
    }
}

#[test]
fn conv2d_transpose_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for (i, (hw, k, s)) in grid().into_iter().enumerate() {
        for p in PADDINGS {
            let batch = [1, 3][i % 2];
            let (cx, cres) = ([1, 2, 3][i % 3], [2, 3][(i + 1) % 2]);
            // Smaller inputs: the result is up to 3x larger per dim.
            let hw = [hw[0].div_ceil(2), hw[1].div_ceil(2)];
            let g = ad::Graph::new();
            let xv = random(&[batch, hw[0], hw[1], cx], &mut rng);
            let kv = random(&[k[0], k[1], cres, cx], &mut rng);
            let x = g.placeholder(xv.shape());
            let kn = g.placeholder(kv.shape());
            let y = ad::conv2d_transpose(&x, &kn, s, p).unwrap();
            let feed = ad::feed! { x => &xv, kn => &kv }.unwrap();
            check()
                .check(&y, &[&x, &kn], &feed)
                .unwrap_or_else(|e| panic!("conv2d_transpose {hw:?} {k:?} {s:?} {p}: {e}"));
        }
    }
}

/// A batch large enough is lowered in blocks of whole images
/// (`kernels::conv_blocks`): 17 images of 14x14 at stride 1 make 9 blocks of
/// 2 images, the last of one. Values against the direct loops, gradients by
/// finite differences, for both convolutions (conv2d's 9-element patches are
/// kept by its forward, block by block, for the kernel gradient).
#[test]
fn gradients_of_a_batch_in_blocks_of_images() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let g = ad::Graph::new();
    let xv = random(&[17, 14, 14, 1], &mut rng);
    let kv = random(&[3, 3, 1, 2], &mut rng);
    let x = g.placeholder(xv.shape());
    let kn = g.placeholder(kv.shape());
    let y = ad::conv2d(&x, &kn, [1, 1], Padding::Same).unwrap();
    let feed = ad::feed! { x => &xv, kn => &kv }.unwrap();
    let value = ad::RunTime::new().forward(&y, &feed).unwrap().clone();
    assert_close(
        &value,
        &naive_conv(&xv, &kv, [1, 1], Padding::Same),
        "conv2d",
    );
    check()
        .check(&y, &[&x, &kn], &feed)
        .unwrap_or_else(|e| panic!("conv2d in blocks: {e}"));

    let uv = random(&[17, 14, 14, 2], &mut rng);
    let u = g.placeholder(uv.shape());
    let t = ad::conv2d_transpose(&u, &kn, [1, 1], Padding::Same).unwrap();
    let feed = ad::feed! { u => &uv, kn => &kv }.unwrap();
    check()
        .check(&t, &[&u, &kn], &feed)
        .unwrap_or_else(|e| panic!("conv2d_transpose in blocks: {e}"));
}

/// The gradients of a batch in blocks (48 images of 14x14 at stride 2: 8
/// blocks of 6; 36-element patches, rebuilt block by block for the kernel
/// gradient) are those of its images one at a time (each too small to
/// split): input gradients side by side, kernel gradients summed.
#[test]
fn a_batch_in_blocks_has_the_gradients_of_its_images() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (n, s) = (48, [2, 2]);
    let xv = random(&[n, 14, 14, 4], &mut rng);
    let kv = random(&[3, 3, 4, 4], &mut rng);
    // dX and dK of sum(conv2d(x, k) * w) for fixed weights w, and likewise
    // for conv2d_transpose of dY-shaped inputs.
    let grads = |xv: &Tensor, transpose: bool| -> (Tensor, Tensor) {
        let g = ad::Graph::new();
        let x = g.placeholder(xv.shape());
        let kn = g.placeholder(kv.shape());
        let y = if transpose {
            ad::conv2d_transpose(&x, &kn, s, Padding::Same).unwrap()
        } else {
            ad::conv2d(&x, &kn, s, Padding::Same).unwrap()
        };
        let feed = ad::feed! { x => xv, kn => &kv }.unwrap();
        let mut rt = ad::RunTime::new();
        let out = rt.forward(&y, &feed).unwrap().clone();
        let w = out.mapv(|v| v.sin());
        rt.backward(&y, &feed, Some(w)).unwrap();
        (rt.grad(&x).unwrap().clone(), rt.grad(&kn).unwrap().clone())
    };
    for transpose in [false, true] {
        let xv = if transpose {
            random(&[n, 7, 7, 4], &mut rng)
        } else {
            xv.clone()
        };
        let (dx, dk) = grads(&xv, transpose);
        let mut dk_sum = Tensor::zeros(dk.raw_dim());
        for i in 0..n {
            let xi = xv
                .slice_axis(ndarray::Axis(0), (i..i + 1).into())
                .to_owned();
            let (dxi, dki) = grads(&xi, transpose);
            let want = dx
                .slice_axis(ndarray::Axis(0), (i..i + 1).into())
                .to_owned();
            assert_close(
                &dxi,
                &want,
                &format!("dx of image {i}, transpose {transpose}"),
            );
            dk_sum = dk_sum + dki;
        }
        assert_close(&dk, &dk_sum, &format!("dk, transpose {transpose}"));
    }
}

/// conv2d_transpose(u, K) is the gradient of conv2d(a, K) w.r.t. a, for
/// upstream u and a of the transpose's result shape.
#[test]
fn conv2d_transpose_is_conv2d_input_gradient() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (hw, k, s) in grid() {
        for p in PADDINGS {
            let g = ad::Graph::new();
            let uv = random(&[2, hw[0], hw[1], 3], &mut rng);
            let kv = random(&[k[0], k[1], 2, 3], &mut rng);
            let u = g.placeholder(uv.shape());
            let kn = g.placeholder(kv.shape());
            let t = ad::conv2d_transpose(&u, &kn, s, p).unwrap();
            let dims = t.shape().to_vec().unwrap();
            let av = random(&dims, &mut rng);
            let a = g.placeholder(av.shape());
            let c = ad::conv2d(&a, &kn, s, p).unwrap();
            assert_eq!(c.shape(), ad::TensorShape::known(uv.shape()));
            let feed = ad::feed! { u => &uv, kn => &kv, a => &av }.unwrap();
            let mut rt = ad::RunTime::new();
            let tv = rt.forward(&t, &feed).unwrap().clone();
            rt.backward(&c, &feed, Some(uv.clone())).unwrap();
            assert_close(
                &tv,
                rt.grad(&a).unwrap(),
                &format!("{hw:?} {k:?} {s:?} {p}"),
            );
        }
    }
}

#[test]
fn maxpool2d_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for (i, (hw, k, s)) in grid().into_iter().enumerate() {
        for p in PADDINGS {
            let shape = [[1, 3][i % 2], hw[0], hw[1], [1, 2, 3][i % 3]];
            let g = ad::Graph::new();
            let xv = distinct(&shape, &mut rng);
            let x = g.placeholder(xv.shape());
            let y = ad::maxpool2d(&x, k, s, p).unwrap();
            let feed = ad::feed! { x => &xv }.unwrap();
            let value = ad::RunTime::new().forward(&y, &feed).unwrap().clone();
            assert_close(
                &value,
                &naive_pool(&xv, k, s, p, true),
                &format!("maxpool {hw:?} {k:?} {s:?} {p}"),
            );
            check()
                .check(&y, &[&x], &feed)
                .unwrap_or_else(|e| panic!("maxpool2d {hw:?} {k:?} {s:?} {p}: {e}"));
        }
    }
}

#[test]
fn maxpool2d_padding_never_wins() {
    // All inputs negative: a zero from padding would win if padding counted.
    let g = ad::Graph::new();
    let x = g
        .constant((vec![-3.0f32, -1.0, -2.0, -4.0], [1, 2, 2, 1]))
        .unwrap();
    let y = ad::maxpool2d(&x, [3, 3], [1, 1], Padding::Same).unwrap();
    let v = ad::RunTime::new()
        .forward(&y, &ad::Feed::new())
        .unwrap()
        .clone();
    assert!(v.iter().all(|&v| v == -1.0), "{v:?}");
}

#[test]
fn avgpool2d_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (i, (hw, k, s)) in grid().into_iter().enumerate() {
        for p in PADDINGS {
            let shape = [[1, 3][i % 2], hw[0], hw[1], [1, 2, 3][i % 3]];
            let g = ad::Graph::new();
            let xv = random(&shape, &mut rng);
            let x = g.placeholder(xv.shape());
            let y = ad::avgpool2d(&x, k, s, p).unwrap();
            let feed = ad::feed! { x => &xv }.unwrap();
            let value = ad::RunTime::new().forward(&y, &feed).unwrap().clone();
            assert_close(
                &value,
                &naive_pool(&xv, k, s, p, false),
                &format!("avgpool {hw:?} {k:?} {s:?} {p}"),
            );
            check()
                .check(&y, &[&x], &feed)
                .unwrap_or_else(|e| panic!("avgpool2d {hw:?} {k:?} {s:?} {p}: {e}"));
        }
    }
}

#[test]
fn kernel_as_variable_gets_gradient() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let g = ad::Graph::new();
    let x = g.placeholder(ad::shape![None, 6, 6, 2]);
    let kv = random(&[3, 3, 2, 4], &mut rng);
    let k = g
        .variable(&[3, 3, 2, 4], ad::init::FromTensor(kv), true)
        .unwrap();
    let y = ad::conv2d(&x, &k, [2, 2], Padding::Same).unwrap();
    let feed = ad::feed! { x => random(&[2, 6, 6, 2], &mut rng) }.unwrap();
    check().check(&y, &[&x, &k], &feed).unwrap();
}

#[test]
fn shapes_with_unknown_dims() {
    let g = ad::Graph::new();
    let k = g.placeholder([3, 2, 4, 8]);
    let x = g.placeholder(ad::shape![None, 9, 8, 4]);
    let same = ad::conv2d(&x, &k, [2, 3], Padding::Same).unwrap();
    assert_eq!(same.shape(), ad::shape![None, 5, 3, 8]);
    let valid = ad::conv2d(&x, &k, [2, 3], Padding::Valid).unwrap();
    assert_eq!(valid.shape(), ad::shape![None, 4, 3, 8]);

    let xu = g.placeholder(ad::shape![None, None, 8, None]);
    let y = ad::conv2d(&xu, &k, [1, 1], Padding::Valid).unwrap();
    assert_eq!(y.shape(), ad::shape![None, None, 7, 8]);
    let ku = g.placeholder(ad::shape![None, None, None, None]);
    let y = ad::conv2d(&x, &ku, [1, 1], Padding::Same).unwrap();
    assert_eq!(y.shape(), ad::shape![None, 9, 8, None]);
    let y = ad::conv2d(&x, &ku, [1, 1], Padding::Valid).unwrap();
    assert_eq!(y.shape(), ad::shape![None, None, None, None]);

    let kt = g.placeholder([3, 2, 5, 4]);
    let t = ad::conv2d_transpose(&x, &kt, [2, 3], Padding::Same).unwrap();
    assert_eq!(t.shape(), ad::shape![None, 18, 24, 5]);
    let t = ad::conv2d_transpose(&x, &kt, [2, 3], Padding::Valid).unwrap();
    assert_eq!(t.shape(), ad::shape![None, 19, 24, 5]);
    let t = ad::conv2d_transpose(&xu, &kt, [2, 1], Padding::Valid).unwrap();
    assert_eq!(t.shape(), ad::shape![None, None, 9, 5]);

    let m = ad::maxpool2d(&x, [2, 2], [2, 2], Padding::Same).unwrap();
    assert_eq!(m.shape(), ad::shape![None, 5, 4, 4]);
    let a = ad::avgpool2d(&xu, [3, 3], [2, 2], Padding::Valid).unwrap();
    assert_eq!(a.shape(), ad::shape![None, None, 3, None]);

    // Runs with any batch; the unknown spatial dims resolve at run time.
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for batch in [1, 4] {
        let feed = ad::feed! {
            x => random(&[batch, 9, 8, 4], &mut rng),
            xu => random(&[batch, 5, 8, 4], &mut rng),
            k => random(&[3, 2, 4, 8], &mut rng),
            kt => random(&[3, 2, 5, 4], &mut rng),
        }
        .unwrap();
        let mut rt = ad::RunTime::new();
        assert_eq!(rt.forward(&same, &feed).unwrap().shape(), &[batch, 5, 3, 8]);
        assert_eq!(rt.forward(&t, &feed).unwrap().shape(), &[batch, 11, 9, 5]);
        assert_eq!(rt.forward(&a, &feed).unwrap().shape(), &[batch, 2, 3, 4]);
        rt.backward(&same, &feed, None).unwrap();
        assert_eq!(rt.grad(&x).unwrap().shape(), &[batch, 9, 8, 4]);
    }
}

#[test]
fn empty_batch_and_channels_do_not_panic() {
    let g = ad::Graph::new();
    let x = g.placeholder(ad::shape![None, 5, 5, None]);
    let k = g.placeholder(ad::shape![3, 3, None, None]);
    let kt = g.placeholder(ad::shape![2, 2, None, None]);
    let c = ad::conv2d(&x, &k, [2, 2], Padding::Same).unwrap();
    let t = ad::conv2d_transpose(&x, &kt, [2, 2], Padding::Valid).unwrap();
    let m = ad::maxpool2d(&x, [2, 2], [1, 1], Padding::Same).unwrap();
    let a = ad::avgpool2d(&x, [2, 2], [1, 1], Padding::Valid).unwrap();
    for (b, cin, cout) in [(0, 2, 3), (2, 0, 3), (2, 2, 0)] {
        let feed = ad::feed! {
            x => Tensor::ones(IxDyn(&[b, 5, 5, cin])),
            k => Tensor::ones(IxDyn(&[3, 3, cin, cout])),
            kt => Tensor::ones(IxDyn(&[2, 2, cout, cin])),
        }
        .unwrap();
        let mut rt = ad::RunTime::new();
        assert_eq!(rt.forward(&c, &feed).unwrap().shape(), &[b, 3, 3, cout]);
        assert_eq!(rt.forward(&t, &feed).unwrap().shape(), &[b, 10, 10, cout]);
        assert_eq!(rt.forward(&m, &feed).unwrap().shape(), &[b, 5, 5, cin]);
        assert_eq!(rt.forward(&a, &feed).unwrap().shape(), &[b, 4, 4, cin]);
        for out in [&c, &t, &m, &a] {
            rt.backward(out, &feed, None).unwrap();
        }
        assert_eq!(rt.grad(&x).unwrap().shape(), &[b, 5, 5, cin]);
        if cin == 0 || b == 0 {
            assert!(rt.grad(&k).unwrap().iter().all(|&v| v == 0.0));
        }
    }
}

fn invalid(r: ad::Result<ad::Node>) -> Error {
    match r {
        Ok(n) => panic!("expected an error, got node {} {}", n.name(), n.shape()),
        Err(e) => e,
    }
}

#[test]
fn bad_inputs_are_rejected_at_build_time() {
    let g = ad::Graph::new();
    let x = g.placeholder([2, 5, 5, 3]);
    let k = g.placeholder([3, 3, 3, 4]);
    let rank3 = g.placeholder([5, 5, 3]);
    let k3 = g.placeholder([3, 3, 3]);

    // Wrong ranks.
    for e in [
        invalid(ad::conv2d(&rank3, &k, [1, 1], Padding::Same)),
        invalid(ad::conv2d(&x, &k3, [1, 1], Padding::Same)),
        invalid(ad::conv2d_transpose(&rank3, &k, [1, 1], Padding::Same)),
        invalid(ad::maxpool2d(&rank3, [2, 2], [2, 2], Padding::Same)),
        invalid(ad::avgpool2d(&rank3, [2, 2], [2, 2], Padding::Same)),
    ] {
        assert!(matches!(e, Error::Node { .. }), "{e}");
        assert!(matches!(e.root_cause(), Error::Rank { .. }), "{e}");
    }
    // Channel mismatch, zero strides, zero sizes, kernel larger than a VALID input.
    let k_bad_c = g.placeholder([3, 3, 2, 4]);
    let k_zero = g.placeholder([0, 3, 3, 4]);
    let k_big = g.placeholder([6, 3, 3, 4]);
    let kt_bad = g.placeholder([3, 3, 4, 2]);
    for (e, needle) in [
        (
            invalid(ad::conv2d(&x, &k_bad_c, [1, 1], Padding::Same)),
            "channels",
        ),
        (
            invalid(ad::conv2d_transpose(&x, &kt_bad, [1, 1], Padding::Same)),
            "channels",
        ),
        (
            invalid(ad::conv2d(&x, &k, [0, 1], Padding::Same)),
            "strides",
        ),
        (
            invalid(ad::conv2d_transpose(&x, &k, [1, 0], Padding::Valid)),
            "strides",
        ),
        (
            invalid(ad::conv2d(&x, &k_zero, [1, 1], Padding::Same)),
            "kernel height",
        ),
        (
            invalid(ad::conv2d(&x, &k_big, [1, 1], Padding::Valid)),
            "exceeds",
        ),
        (
            invalid(ad::maxpool2d(&x, [0, 2], [1, 1], Padding::Same)),
            "kernel_size",
        ),
        (
            invalid(ad::avgpool2d(&x, [2, 2], [1, 0], Padding::Same)),
            "strides",
        ),
        (
            invalid(ad::maxpool2d(&x, [2, 6], [1, 1], Padding::Valid)),
            "width",
        ),
        (
            invalid(ad::avgpool2d(&x, [6, 2], [1, 1], Padding::Valid)),
            "height",
        ),
    ] {
        assert!(matches!(e.root_cause(), Error::InvalidArgument(_)), "{e}");
        assert!(
            e.to_string().contains(needle),
            "{e} should mention {needle}"
        );
    }
    // A kernel larger than the input is fine with SAME (as in TF).
    let y = ad::conv2d(&x, &k_big, [1, 1], Padding::Same).unwrap();
    assert_eq!(y.shape(), ad::shape![2, 5, 5, 4]);
    assert!("same".parse::<Padding>().is_ok());
    assert!("FULL".parse::<Padding>().is_err());
}

#[test]
fn bad_inputs_with_unknown_dims_fail_at_run_time() {
    let g = ad::Graph::new();
    let x = g.placeholder(ad::shape![None, None, None, None]);
    let k = g.placeholder(ad::shape![None, None, None, None]);
    let c = ad::conv2d(&x, &k, [1, 1], Padding::Valid).unwrap();
    let t = ad::conv2d_transpose(&x, &k, [1, 1], Padding::Valid).unwrap();
    let m = ad::maxpool2d(&x, [4, 4], [1, 1], Padding::Valid).unwrap();
    let a = ad::avgpool2d(&x, [4, 4], [1, 1], Padding::Valid).unwrap();
    let run = |node: &ad::Node, xs: &[usize], ks: &[usize]| -> ad::Result<Tensor> {
        let feed = ad::feed! { x => Tensor::ones(IxDyn(xs)), k => Tensor::ones(IxDyn(ks)) }?;
        ad::RunTime::new().forward(node, &feed).cloned()
    };
    // Channel mismatch, kernel too large for VALID, zero kernel size.
    assert!(run(&c, &[1, 5, 5, 3], &[3, 3, 2, 4]).is_err());
    assert!(run(&c, &[1, 3, 3, 2], &[4, 3, 2, 4]).is_err());
    assert!(run(&c, &[1, 3, 3, 2], &[0, 3, 2, 4]).is_err());
    assert!(run(&t, &[1, 3, 3, 2], &[3, 3, 4, 3]).is_err());
    assert!(run(&t, &[1, 3, 3, 2], &[3, 0, 4, 2]).is_err());
    assert!(run(&m, &[1, 3, 5, 2], &[1, 1, 1, 1]).is_err());
    assert!(run(&a, &[1, 5, 3, 2], &[1, 1, 1, 1]).is_err());
    // And the same shapes that fit work.
    assert_eq!(
        run(&c, &[1, 5, 5, 2], &[3, 3, 2, 4]).unwrap().shape(),
        &[1, 3, 3, 4]
    );
    assert_eq!(
        run(&t, &[1, 3, 3, 4], &[3, 3, 2, 4]).unwrap().shape(),
        &[1, 5, 5, 2]
    );
    assert_eq!(
        run(&m, &[1, 5, 4, 2], &[1, 1, 1, 1]).unwrap().shape(),
        &[1, 2, 1, 2]
    );
}

/// Training results must not depend on the number of threads: gemm splits
/// only rows and columns, reductions add their blocks in a fixed order, and
/// dropout's mask depends on element indices alone. A conv → batch norm →
/// relu → dropout → conv_transpose chain, large enough for every parallel
/// path, gives bitwise the same loss and gradients on 1, 2 and 3 threads.
#[test]
fn results_do_not_depend_on_thread_count() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let shapes: [&[usize]; 5] = [
        &[16, 28, 28, 3],
        &[3, 3, 3, 32],
        &[3, 3, 16, 32],
        &[32],
        &[32],
    ];
    let values: Vec<Tensor> = shapes.iter().map(|s| random(s, &mut rng)).collect();
    // The loss and the gradients of the inputs, as bits; built and run inside
    // the pool (graphs are not Send).
    let run = |values: &[Tensor]| -> Vec<Vec<u32>> {
        let g = ad::Graph::new();
        let p: Vec<ad::Node> = shapes.iter().map(|s| g.placeholder(*s)).collect();
        let mean = g.variable(&[32], ad::init::Zeros, false).unwrap();
        let var = g.variable(&[32], ad::init::Ones, false).unwrap();
        let h = ad::conv2d(&p[0], &p[1], [2, 2], Padding::Same).unwrap();
        let bn = ad::BatchNormConfig {
            epsilon: 1e-3,
            decay: 0.9,
            is_training: true,
            ..Default::default()
        };
        let h = ad::fused_batch_norm(&h, &p[3], &p[4], &mean, &var, bn).unwrap();
        let h = ad::dropout(&ad::relu(&h).unwrap(), 0.3, true).unwrap();
        let y = ad::conv2d_transpose(&h, &p[2], [2, 2], Padding::Same).unwrap();
        let loss = ad::reduce_sum(&ad::square(&y).unwrap(), ad::Axes::All, false).unwrap();
        let mut feed = ad::Feed::new();
        for (n, v) in p.iter().zip(values) {
            feed.insert(n, v.clone()).unwrap();
        }
        let mut rt = ad::RunTime::with_seed(5);
        rt.backward(&loss, &feed, None).unwrap();
        let mut out = vec![rt.value(&loss).unwrap().clone()];
        for n in &p {
            out.push(rt.grad(n).unwrap().clone());
        }
        out.iter()
            .map(|t| t.iter().map(|v| v.to_bits()).collect())
            .collect()
    };
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| run(&values))
    };
    let one = on(1);
    assert!(one[0][0] != 0, "the loss is not trivially zero");
    for threads in [2, 3] {
        assert!(on(threads) == one, "{threads} threads differ from 1");
    }
}

// ---------------------------------------------------------------------------
// Second derivatives: the gradient ops (Conv2DBackpropInput,
// Conv2DBackpropFilter, MaxPoolGrad, MaxPoolGradGrad, AvgPoolGrad) have
// gradients of their own.

/// Second derivatives of `y` w.r.t. `wrt`, two ways, both by the public
/// checker: `check_second_order` (the Hessian of `sum(u * y)` times random
/// vectors, `u` fixed), and each gradient node `dL/dw = gradients(y, w, u)`
/// checked as an output of its own against finite differences w.r.t. `wrt`
/// **and** the upstream `u` (fed, so the gradient ops' gradients w.r.t. their
/// `dy` input are checked too). Returns the upstream placeholder, the feed
/// with it, and the gradient nodes (for checks of a higher order).
fn check_second(
    y: &ad::Node,
    wrt: &[&ad::Node],
    feed: &ad::Feed,
    rng: &mut ChaCha8Rng,
    what: &str,
) -> (ad::Node, ad::Feed, Vec<Option<ad::Node>>) {
    check()
        .check_second_order(y, wrt, feed)
        .unwrap_or_else(|e| panic!("{what}, check_second_order: {e}"));
    let out_shape = ad::RunTime::new()
        .forward(y, feed)
        .unwrap()
        .shape()
        .to_vec();
    let u = y.graph().placeholder(out_shape.as_slice());
    let mut feed = feed.clone();
    feed.insert(&u, random(&out_shape, rng)).unwrap();
    let grads = ad::gradients(&[y], wrt, Some(&[&u])).unwrap();
    let mut all: Vec<&ad::Node> = wrt.to_vec();
    all.push(&u);
    for (grad, w) in grads.iter().zip(wrt) {
        // None: piecewise constant (max pooling's gradient in x).
        let Some(grad) = grad else { continue };
        check()
            .check(grad, &all, &feed)
            .unwrap_or_else(|e| panic!("{what}, d/d{} ({}): {e}", w.name(), grad.op_type()));
    }
    (u, feed, grads)
}

/// The op type of gradient `i` of a [`check_second`] result.
fn op_of(grads: &[Option<ad::Node>], i: usize) -> &'static str {
    grads[i].as_ref().map_or("none", |g| g.op_type())
}

/// The (input size, kernel, strides) cases of the second-derivative checks:
/// pointwise, stride 1, stride 2, uneven.
fn grid2() -> Vec<([usize; 2], [usize; 2], [usize; 2])> {
    vec![
        ([4, 5], [1, 1], [1, 1]),
        ([5, 5], [3, 3], [1, 1]),
        ([5, 6], [3, 2], [2, 2]),
        ([6, 5], [2, 3], [2, 1]),
    ]
}

#[test]
fn conv2d_second_derivatives() {
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    for (i, (hw, k, s)) in grid2().into_iter().enumerate() {
        for p in PADDINGS {
            let (batch, cin, cout) = ([1, 2][i % 2], [1, 2][(i / 2) % 2], 2);
            let g = ad::Graph::new();
            let xv = random(&[batch, hw[0], hw[1], cin], &mut rng);
            let kv = random(&[k[0], k[1], cin, cout], &mut rng);
            let x = g.placeholder(xv.shape());
            let kn = g.placeholder(kv.shape());
            let y = ad::conv2d(&x, &kn, s, p).unwrap();
            let feed = ad::feed! { x => &xv, kn => &kv }.unwrap();
            let what = format!("conv2d {hw:?} {k:?} {s:?} {p}");
            let (_, _, grads) = check_second(&y, &[&x, &kn], &feed, &mut rng, &what);
            assert_eq!(op_of(&grads, 0), "Conv2DBackpropInput");
            assert_eq!(op_of(&grads, 1), "Conv2DBackpropFilter");
        }
    }
}

#[test]
fn conv2d_transpose_second_derivatives() {
    let mut rng = ChaCha8Rng::seed_from_u64(32);
    for (i, (hw, k, s)) in grid2().into_iter().enumerate() {
        for p in PADDINGS {
            let (batch, cx, cres) = ([1, 2][i % 2], 2, [1, 2][(i / 2) % 2]);
            let hw = [hw[0].div_ceil(2), hw[1].div_ceil(2)];
            let g = ad::Graph::new();
            let xv = random(&[batch, hw[0], hw[1], cx], &mut rng);
            let kv = random(&[k[0], k[1], cres, cx], &mut rng);
            let x = g.placeholder(xv.shape());
            let kn = g.placeholder(kv.shape());
            let y = ad::conv2d_transpose(&x, &kn, s, p).unwrap();
            let feed = ad::feed! { x => &xv, kn => &kv }.unwrap();
            let what = format!("conv2d_transpose {hw:?} {k:?} {s:?} {p}");
            let (_, _, grads) = check_second(&y, &[&x, &kn], &feed, &mut rng, &what);
            // dX is a conv2d of dY that also computes dK from the same
            // patches; the filter-gradient node takes it from there.
            assert_eq!(op_of(&grads, 0), "Conv2D");
            assert_eq!(op_of(&grads, 1), "Conv2DBackpropFilter");
            let (dx, dk) = (grads[0].as_ref().unwrap(), grads[1].as_ref().unwrap());
            assert!(dk.inputs().contains(dx));
        }
    }
}

/// The second derivatives of a batch in blocks of images (8 images of
/// 16x16: 8 blocks of one), with short patches (3x3, kept by conv2d's
/// forward) and long ones (6x6, rebuilt block by block by the filter
/// gradient), and of the transposed convolution (dX and dK from the same
/// block patches).
#[test]
fn second_derivatives_of_a_batch_in_blocks() {
    let mut rng = ChaCha8Rng::seed_from_u64(33);
    for k in [3, 6] {
        let g = ad::Graph::new();
        let xv = random(&[8, 16, 16, 1], &mut rng);
        let kv = random(&[k, k, 1, 1], &mut rng);
        let x = g.placeholder(xv.shape());
        let kn = g.placeholder(kv.shape());
        let y = ad::conv2d(&x, &kn, [1, 1], Padding::Same).unwrap();
        let feed = ad::feed! { x => &xv, kn => &kv }.unwrap();
        check()
            .check_second_order(&y, &[&x, &kn], &feed)
            .unwrap_or_else(|e| panic!("conv2d in blocks, {k}x{k}: {e}"));
    }
    let g = ad::Graph::new();
    let uv = random(&[8, 16, 16, 1], &mut rng);
    let kv = random(&[6, 6, 1, 1], &mut rng);
    let u = g.placeholder(uv.shape());
    let kn = g.placeholder(kv.shape());
    let t = ad::conv2d_transpose(&u, &kn, [1, 1], Padding::Same).unwrap();
    let feed = ad::feed! { u => &uv, kn => &kv }.unwrap();
    check()
        .check_second_order(&t, &[&u, &kn], &feed)
        .unwrap_or_else(|e| panic!("conv2d_transpose in blocks: {e}"));
}

#[test]
fn maxpool2d_second_and_third_derivatives() {
    let mut rng = ChaCha8Rng::seed_from_u64(34);
    for (i, (hw, k, s)) in grid().into_iter().enumerate().skip(1) {
        for p in PADDINGS {
            let shape = [[1, 2][i % 2], hw[0], hw[1], [1, 2][(i / 2) % 2]];
            let g = ad::Graph::new();
            let xv = distinct(&shape, &mut rng);
            let x = g.placeholder(xv.shape());
            let y = ad::maxpool2d(&x, k, s, p).unwrap();
            let feed = ad::feed! { x => &xv }.unwrap();
            let what = format!("maxpool2d {hw:?} {k:?} {s:?} {p}");
            let (u, feed, grads) = check_second(&y, &[&x], &feed, &mut rng, &what);
            assert_eq!(op_of(&grads, 0), "MaxPoolGrad");
            // MaxPoolGrad's gradient w.r.t. its dy (the gather at the arg-max
            // cells), and that one's gradient (the scatter again).
            let what = format!("{what}, MaxPoolGrad");
            let grad = grads[0].clone().unwrap();
            let (_, _, grads) = check_second(&grad, &[&x, &u], &feed, &mut rng, &what);
            assert!(grads[0].is_none(), "piecewise constant in x");
            assert_eq!(op_of(&grads, 1), "MaxPoolGradGrad");
        }
    }
}

#[test]
fn avgpool2d_second_derivatives() {
    let mut rng = ChaCha8Rng::seed_from_u64(35);
    for (i, (hw, k, s)) in grid().into_iter().enumerate() {
        for p in PADDINGS {
            let shape = [[1, 2][i % 2], hw[0], hw[1], [1, 2][(i / 2) % 2]];
            let g = ad::Graph::new();
            let xv = random(&shape, &mut rng);
            let x = g.placeholder(xv.shape());
            let y = ad::avgpool2d(&x, k, s, p).unwrap();
            let feed = ad::feed! { x => &xv }.unwrap();
            let what = format!("avgpool2d {hw:?} {k:?} {s:?} {p}");
            let (u, feed, grads) = check_second(&y, &[&x], &feed, &mut rng, &what);
            assert_eq!(op_of(&grads, 0), "AvgPoolGrad");
            let what = format!("{what}, AvgPoolGrad");
            let grad = grads[0].clone().unwrap();
            check_second(&grad, &[&x, &u], &feed, &mut rng, &what);
        }
    }
}

/// The gradient ops read what their forward node kept (conv2d's patches,
/// max pooling's arg-max) and compute it again when it is absent: in an
/// inference pass, which keeps nothing, the gradients are the same.
#[test]
fn gradient_ops_recompute_what_an_inference_pass_did_not_keep() {
    let mut rng = ChaCha8Rng::seed_from_u64(36);
    // Whole batch (kept patches) and a batch in blocks with short patches.
    for n in [2, 17] {
        let g = ad::Graph::new();
        let xv = distinct(&[n, 14, 14, 1], &mut rng);
        let kv = random(&[3, 3, 1, 3], &mut rng);
        let x = g.placeholder(xv.shape());
        let kn = g.placeholder(kv.shape());
        let c = ad::conv2d(&x, &kn, [1, 1], Padding::Same).unwrap();
        let m = ad::maxpool2d(&c, [2, 2], [2, 2], Padding::Valid).unwrap();
        let grads = ad::gradients(&[&m], &[&x, &kn], None).unwrap();
        let (dx, dk) = (grads[0].clone().unwrap(), grads[1].clone().unwrap());
        let feed = ad::feed! { x => &xv, kn => &kv }.unwrap();
        let mut rt = ad::RunTime::new();
        let kept = rt.evaluate(&[&dx, &dk], &feed).unwrap();
        let recomputed = ad::RunTime::new().infer(&[&dx, &dk], &feed).unwrap();
        assert_close(&recomputed[0], &kept[0], &format!("dx, batch {n}"));
        assert_close(&recomputed[1], &kept[1], &format!("dk, batch {n}"));
        rt.backward(&m, &feed, None).unwrap();
        assert_close(
            rt.grad(&kn).unwrap(),
            &kept[1],
            &format!("backward dk, batch {n}"),
        );
    }
}

/// conv2d_backprop_input and conv2d_backprop_filter, called directly, are
/// conv2d's gradients; bad shapes are errors.
#[test]
fn backprop_functions_are_conv2d_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(37);
    let g = ad::Graph::new();
    let (xv, kv) = (
        random(&[2, 7, 6, 3], &mut rng),
        random(&[3, 2, 3, 4], &mut rng),
    );
    let x = g.placeholder(ad::shape![None, 7, 6, 3]);
    let kn = g.placeholder(kv.shape());
    let y = ad::conv2d(&x, &kn, [2, 2], Padding::Same).unwrap();
    let dyv = random(&[2, 4, 3, 4], &mut rng);
    let dy = g.placeholder(ad::shape![None, 4, 3, 4]);
    let dx = ad::conv2d_backprop_input(&x, &kn, &dy, [2, 2], Padding::Same).unwrap();
    let dk = ad::conv2d_backprop_filter(&x, &kn, &dy, [2, 2], Padding::Same).unwrap();
    assert_eq!(dx.shape(), ad::shape![None, 7, 6, 3]);
    assert_eq!(dk.shape(), ad::shape![3, 2, 3, 4]);
    let feed = ad::feed! { x => &xv, kn => &kv, dy => &dyv }.unwrap();
    let mut rt = ad::RunTime::new();
    let got = rt.evaluate(&[&dx, &dk], &feed).unwrap();
    rt.backward(&y, &feed, Some(dyv.clone())).unwrap();
    assert_close(&got[0], rt.grad(&x).unwrap(), "dx");
    assert_close(&got[1], rt.grad(&kn).unwrap(), "dk");

    // A dy of the wrong shape, statically and at run time.
    let bad = g.placeholder([2, 4, 4, 4]);
    let e = invalid(ad::conv2d_backprop_input(
        &x,
        &kn,
        &bad,
        [2, 2],
        Padding::Same,
    ));
    assert!(matches!(e.root_cause(), Error::ShapeMismatch { .. }), "{e}");
    let e = invalid(ad::conv2d_backprop_filter(
        &x,
        &kn,
        &bad,
        [2, 2],
        Padding::Same,
    ));
    assert!(matches!(e.root_cause(), Error::ShapeMismatch { .. }), "{e}");
    let loose = g.placeholder(ad::shape![None, None, None, 4]);
    let dk = ad::conv2d_backprop_filter(&x, &kn, &loose, [2, 2], Padding::Same).unwrap();
    let feed = ad::feed! { x => &xv, kn => &kv, loose => random(&[2, 4, 4, 4], &mut rng) }.unwrap();
    assert!(ad::RunTime::new().forward(&dk, &feed).is_err());
}

/// A cheap timing printout (release build): `cargo test --release --test grad_conv
/// -- --ignored --nocapture timing`.
#[test]
#[ignore]
fn timing() {
    use std::time::Instant;
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let convs: [([usize; 4], usize, usize); 5] = [
        ([64, 28, 28, 1], 16, 1),
        ([64, 28, 28, 16], 32, 2),
        ([64, 14, 14, 32], 64, 1),
        ([64, 14, 14, 64], 128, 2),
        ([64, 7, 7, 128], 256, 2),
    ];
    let reps = 7;
    // Best and mean of `reps` cycles: the machine may be shared.
    let time = |label: &str, y: &ad::Node, feed: &ad::Feed| {
        let mut rt = ad::RunTime::new();
        rt.forward_backward_cycle(|rt| rt.backward(y, feed, None))
            .unwrap(); // warm-up
        let (mut fwd, mut total) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            rt.reset();
            let t0 = Instant::now();
            rt.forward(y, feed).unwrap();
            let t1 = Instant::now();
            rt.backward(y, feed, None).unwrap();
            let t2 = Instant::now();
            fwd.push((t1 - t0).as_secs_f64() * 1e3);
            total.push((t2 - t0).as_secs_f64() * 1e3);
        }
        let best = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        println!(
            "{label:<42} forward {:6.2} ms (mean {:6.2})   forward+backward {:6.2} ms (mean {:6.2})",
            best(&fwd),
            mean(&fwd),
            best(&total),
            mean(&total)
        );
    };
    for (xs, cout, s) in convs {
        let g = ad::Graph::new();
        let x = g.placeholder(xs);
        let k = g.placeholder([3, 3, xs[3], cout]);
        let y = ad::conv2d(&x, &k, [s, s], Padding::Same).unwrap();
        let feed =
            ad::feed! { x => random(&xs, &mut rng), k => random(&[3, 3, xs[3], cout], &mut rng) }
                .unwrap();
        time(&format!("conv2d {xs:?} -> {cout} s{s} 3x3 SAME"), &y, &feed);
    }
    let g = ad::Graph::new();
    let x = g.placeholder([64, 28, 28, 16]);
    let feed = ad::feed! { x => random(&[64, 28, 28, 16], &mut rng) }.unwrap();
    let m = ad::maxpool2d(&x, [2, 2], [2, 2], Padding::Valid).unwrap();
    time("maxpool2d [64, 28, 28, 16] 2x2/2", &m, &feed);
    let a = ad::avgpool2d(&x, [2, 2], [2, 2], Padding::Valid).unwrap();
    time("avgpool2d [64, 28, 28, 16] 2x2/2", &a, &feed);
}
