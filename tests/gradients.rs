//! `gradients()`, `hessian_vector_product` and `jacobian` against closed forms:
//! derivatives of first to third order, Hessians, weighting, several targets,
//! unreachable and stopped paths, gradients fed into other ops, the backward
//! plan's reuse, custom ops with a numeric backward, and the Graphviz export
//! (`Graph::to_dot`, `Graph::to_dot_of`) of graphs holding gradient nodes.
//!
//! Each assertion has the analytic value it checks in a comment above it.

use adgraph::{
    self as ad, Axes, BackwardContext, Feed, ForwardContext, Graph, Node, Op, RunTime, Tensor,
    TensorShape,
};

/// The one gradient of `sum(y)` w.r.t. `x`, which must exist.
fn grad(y: &Node, x: &Node) -> Node {
    ad::gradients(&[y], &[x], None).unwrap()[0]
        .clone()
        .unwrap_or_else(|| panic!("no gradient of {} w.r.t. {}", y.name(), x.name()))
}

/// The value of `node` for `feed`, in a fresh run time.
fn eval(node: &Node, feed: &Feed) -> Tensor {
    RunTime::new().forward(node, feed).unwrap().clone()
}

/// Asserts `got` holds `want` element-wise, within `1e-4 + 1e-4 |want|`.
fn assert_close(got: &Tensor, want: &[f64], what: &str) {
    let got: Vec<f32> = got.iter().copied().collect();
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-4 + 1e-4 * w.abs();
        assert!(
            (f64::from(g) - w).abs() <= tol,
            "{what}[{i}]: got {g}, want {w} (all: {got:?} vs {want:?})"
        );
    }
}

fn scalar_feed(x: &Node, v: f32) -> Feed {
    Feed::new().with(x, v).unwrap()
}

// ---------------------------------------------------------------- polynomials

#[test]
fn cube_first_second_and_third_derivatives() {
    let g = Graph::new();
    let x = g.placeholder([3]);
    // y = x^3, element-wise (so d sum(y)/dx_i = dy_i/dx_i)
    let y = ad::multiply(&ad::multiply(&x, &x).unwrap(), &x).unwrap();
    let dy = grad(&y, &x);
    let d2y = grad(&dy, &x);
    let d3y = grad(&d2y, &x);
    let xs = [-2.0f64, 0.5, 3.0];
    let feed = Feed::new().with(&x, xs.map(|v| v as f32)).unwrap();
    // d/dx x^3 = 3x^2
    assert_close(&eval(&dy, &feed), &xs.map(|x| 3.0 * x * x), "3x^2");
    // d²/dx² x^3 = 6x
    assert_close(&eval(&d2y, &feed), &xs.map(|x| 6.0 * x), "6x");
    // d³/dx³ x^3 = 6
    assert_close(&eval(&d3y, &feed), &[6.0; 3], "6");
    assert!(dy.is_gradient() && d2y.is_gradient() && d3y.is_gradient());
}

#[test]
fn pow_first_and_second_derivatives() {
    let g = Graph::new();
    let x = g.placeholder([]);
    // y = x^3 with the pow op
    let y = ad::pow(&x, 3.0).unwrap();
    let dy = grad(&y, &x);
    let d2y = grad(&dy, &x);
    let feed = scalar_feed(&x, 1.5);
    // d/dx x^3 = 3x^2 = 6.75 at 1.5
    assert_close(&eval(&dy, &feed), &[6.75], "3x^2");
    // d²/dx² x^3 = 6x = 9 at 1.5
    assert_close(&eval(&d2y, &feed), &[9.0], "6x");
}

#[test]
fn two_variable_polynomial_partial_derivatives() {
    let g = Graph::new();
    let x = g.placeholder([]);
    let y = g.placeholder([]);
    // f = x^2 y + 3 x y^3
    let x2y = &(&x * &x) * &y;
    let xy3 = &x * &(&(&y * &y) * &y);
    let f = (&x2y + &(3.0 * &xy3)).check().unwrap();
    let first = ad::gradients(&[&f], &[&x, &y], None).unwrap();
    let (fx, fy) = (first[0].clone().unwrap(), first[1].clone().unwrap());
    let dfx = ad::gradients(&[&fx], &[&x, &y], None).unwrap();
    let dfy = ad::gradients(&[&fy], &[&x, &y], None).unwrap();
    let (fxx, fxy) = (dfx[0].clone().unwrap(), dfx[1].clone().unwrap());
    let (fyx, fyy) = (dfy[0].clone().unwrap(), dfy[1].clone().unwrap());
    let dfxy = ad::gradients(&[&fxy], &[&x, &y], None).unwrap();
    let fyyy = grad(&fyy, &y);

    let feed = ad::feed! { x => 2.0, y => -1.0 }.unwrap();
    let mut rt = RunTime::new();
    let mut at = |n: &Node| rt.forward(n, &feed).unwrap().clone();
    // f(2, -1) = 4·(-1) + 3·2·(-1) = -10
    assert_close(&at(&f), &[-10.0], "f");
    // df/dx = 2xy + 3y^3 = -4 - 3 = -7
    assert_close(&at(&fx), &[-7.0], "fx");
    // df/dy = x^2 + 9xy^2 = 4 + 18 = 22
    assert_close(&at(&fy), &[22.0], "fy");
    // d²f/dx² = 2y = -2
    assert_close(&at(&fxx), &[-2.0], "fxx");
    // d²f/dxdy = 2x + 9y^2 = 13, the same in either order
    assert_close(&at(&fxy), &[13.0], "fxy");
    assert_close(&at(&fyx), &[13.0], "fyx");
    // d²f/dy² = 18xy = -36
    assert_close(&at(&fyy), &[-36.0], "fyy");
    // d³f/dx²dy = 2
    assert_close(&at(dfxy[0].as_ref().unwrap()), &[2.0], "fxyx");
    // d³f/dxdy² = 18y = -18
    assert_close(&at(dfxy[1].as_ref().unwrap()), &[-18.0], "fxyy");
    // d³f/dy³ = 18x = 36
    assert_close(&at(&fyyy), &[36.0], "fyyy");
}

// ---------------------------------------------------------------- exp, tanh, log chains

#[test]
fn exp_tanh_log_chain_first_and_second_derivatives() {
    let g = Graph::new();
    let x = g.placeholder([4]);
    // f = log(1 + exp(tanh x)), element-wise
    let t = ad::tanh(&x).unwrap();
    let f = ad::log(&(&ad::exp(&t).unwrap() + 1.0)).unwrap();
    let df = grad(&f, &x);
    let d2f = grad(&df, &x);
    let xs = [-1.5f64, -0.2, 0.3, 2.0];
    let feed = Feed::new().with(&x, xs.map(|v| v as f32)).unwrap();
    let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
    // f' = s(t) (1 - t^2), with t = tanh x and s the logistic sigmoid
    let want1 = xs.map(|x| {
        let t = x.tanh();
        sigmoid(t) * (1.0 - t * t)
    });
    assert_close(&eval(&df, &feed), &want1, "f'");
    // f'' = s(t)(1 - s(t)) (1 - t^2)^2 - 2 t s(t) (1 - t^2)
    let want2 = xs.map(|x| {
        let (t, s) = (x.tanh(), sigmoid(x.tanh()));
        s * (1.0 - s) * (1.0 - t * t).powi(2) - 2.0 * t * s * (1.0 - t * t)
    });
    assert_close(&eval(&d2f, &feed), &want2, "f''");
}

#[test]
fn exp_times_tanh_derivative() {
    let g = Graph::new();
    let x = g.placeholder([3]);
    // f = e^x tanh(x)
    let f = ad::multiply(&ad::exp(&x).unwrap(), &ad::tanh(&x).unwrap()).unwrap();
    let xs = [-1.0f64, 0.0, 0.7];
    let feed = Feed::new().with(&x, xs.map(|v| v as f32)).unwrap();
    // f' = e^x (tanh x + 1 - tanh^2 x)
    let want = xs.map(|x| x.exp() * (x.tanh() + 1.0 - x.tanh().powi(2)));
    assert_close(&eval(&grad(&f, &x), &feed), &want, "f'");
}

// ---------------------------------------------------------------- a Hessian

/// Logistic regression on 5 examples of 3 features: `loss = mean_i CE(y_i,
/// x_i·w)`, with Hessian `X^T diag(p(1-p)) X / n`, `p = sigmoid(X w)`.
struct Logistic {
    graph: Graph,
    w: Node,
    loss: Node,
    feed: Feed,
    x: [[f64; 3]; 5],
    wv: [f64; 3],
    labels: [f64; 5],
}

fn logistic() -> Logistic {
    let x = [
        [0.5, -1.0, 2.0],
        [1.5, 0.3, -0.7],
        [-0.2, 0.8, 0.1],
        [1.0, 1.0, 1.0],
        [-1.3, 0.4, 0.9],
    ];
    let wv = [0.3, -0.6, 0.25];
    let labels = [1.0, 0.0, 1.0, 1.0, 0.0];
    let graph = Graph::new();
    let xn = graph.constant(x.map(|r| r.map(|v| v as f32))).unwrap();
    let w = graph.placeholder([3, 1]);
    let y = graph.placeholder([5, 1]);
    let logits = ad::matmul(&xn, &w).unwrap();
    let ce = ad::sigmoid_cross_entropy_loss(&y, &logits).unwrap();
    let loss = ad::reduce_mean(&ce, Axes::All, false).unwrap();
    let feed = Feed::new()
        .with(&w, wv.map(|v| [v as f32]))
        .unwrap()
        .with(&y, labels.map(|v| [v as f32]))
        .unwrap();
    Logistic {
        graph,
        w,
        loss,
        feed,
        x,
        wv,
        labels,
    }
}

impl Logistic {
    fn p(&self) -> Vec<f64> {
        self.x
            .iter()
            .map(|r| {
                let z: f64 = r.iter().zip(&self.wv).map(|(a, b)| a * b).sum();
                1.0 / (1.0 + (-z).exp())
            })
            .collect()
    }
    /// dL/dw = X^T (p - y) / n
    fn gradient(&self) -> Vec<f64> {
        let p = self.p();
        (0..3)
            .map(|j| {
                (0..5)
                    .map(|i| self.x[i][j] * (p[i] - self.labels[i]))
                    .sum::<f64>()
                    / 5.0
            })
            .collect()
    }
    /// H = X^T diag(p(1-p)) X / n, row-major
    fn hessian(&self) -> Vec<f64> {
        let p = self.p();
        let mut h = vec![0.0; 9];
        for (j, k) in (0..3).flat_map(|j| (0..3).map(move |k| (j, k))) {
            h[3 * j + k] = (0..5)
                .map(|i| self.x[i][j] * p[i] * (1.0 - p[i]) * self.x[i][k])
                .sum::<f64>()
                / 5.0;
        }
        h
    }
}

#[test]
fn logistic_regression_hessian_by_jacobian_of_the_gradient() {
    let lr = logistic();
    let gw = grad(&lr.loss, &lr.w);
    // dL/dw = X^T (p - y) / n
    assert_close(&eval(&gw, &lr.feed), &lr.gradient(), "dL/dw");
    let h = ad::jacobian(&gw, &lr.w).unwrap();
    assert_eq!(h.shape(), ad::shape![3, 1, 3, 1]);
    // d²L/dw² = X^T diag(p(1-p)) X / n
    assert_close(&eval(&h, &lr.feed), &lr.hessian(), "H by jacobian");
}

#[test]
fn logistic_regression_hessian_by_hvp_with_basis_vectors() {
    let lr = logistic();
    let v = lr.graph.placeholder([3, 1]);
    let hv = ad::hessian_vector_product(&lr.loss, &[&lr.w], &[&v]).unwrap()[0]
        .clone()
        .unwrap();
    let h = lr.hessian();
    for j in 0..3 {
        let mut e = [[0.0f32]; 3];
        e[j] = [1.0];
        let mut feed = lr.feed.clone();
        feed.insert(&v, e).unwrap();
        // H e_j = column j of X^T diag(p(1-p)) X / n
        let column: Vec<f64> = (0..3).map(|i| h[3 * i + j]).collect();
        assert_close(&eval(&hv, &feed), &column, &format!("H e_{j}"));
    }
}

// ---------------------------------------------------------------- weighting and targets

#[test]
fn grad_ys_weight_each_target() {
    let g = Graph::new();
    let x = g.placeholder([3]);
    let u1 = g.placeholder([3]);
    let u2 = g.placeholder([3]);
    let y1 = ad::multiply(&x, &x).unwrap();
    let y2 = ad::exp(&x).unwrap();
    let xs = [0.5f64, -1.0, 2.0];
    let (w1, w2) = ([1.0f64, 2.0, -3.0], [0.5f64, 0.0, 4.0]);
    let feed = Feed::new()
        .with(&x, xs.map(|v| v as f32))
        .unwrap()
        .with(&u1, w1.map(|v| v as f32))
        .unwrap()
        .with(&u2, w2.map(|v| v as f32))
        .unwrap();
    let one = ad::gradients(&[&y1], &[&x], Some(&[&u1])).unwrap()[0]
        .clone()
        .unwrap();
    // d sum(u1 · x^2)/dx = 2 x u1
    let want: Vec<f64> = (0..3).map(|i| 2.0 * xs[i] * w1[i]).collect();
    assert_close(&eval(&one, &feed), &want, "2 x u1");
    let both = ad::gradients(&[&y1, &y2], &[&x], Some(&[&u1, &u2])).unwrap()[0]
        .clone()
        .unwrap();
    // d sum(u1 · x^2 + u2 · e^x)/dx = 2 x u1 + e^x u2
    let want: Vec<f64> = (0..3)
        .map(|i| 2.0 * xs[i] * w1[i] + xs[i].exp() * w2[i])
        .collect();
    assert_close(&eval(&both, &feed), &want, "2 x u1 + e^x u2");
}

#[test]
fn several_targets_and_several_xs() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    let y = g.placeholder([2]);
    let a = ad::multiply(&x, &y).unwrap();
    let b = ad::tanh(&y).unwrap();
    let grads = ad::gradients(&[&a, &b], &[&x, &y], None).unwrap();
    let feed = ad::feed! { x => [1.0, -2.0], y => [0.5, 3.0] }.unwrap();
    // d(sum(xy) + sum(tanh y))/dx = y
    assert_close(&eval(grads[0].as_ref().unwrap(), &feed), &[0.5, 3.0], "y");
    // d(sum(xy) + sum(tanh y))/dy = x + 1 - tanh^2 y
    let want = [
        1.0 + 1.0 - 0.5f64.tanh().powi(2),
        -2.0 + 1.0 - 3.0f64.tanh().powi(2),
    ];
    assert_close(
        &eval(grads[1].as_ref().unwrap(), &feed),
        &want,
        "x + sech^2 y",
    );
}

#[test]
fn an_x_the_targets_do_not_depend_on_gets_none() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    let unrelated = g.placeholder([2]);
    let beside = ad::exp(&unrelated).unwrap(); // in the graph, but not below y
    let c = g.constant([1.0, 2.0]).unwrap();
    let y = ad::multiply(&ad::exp(&x).unwrap(), &c).unwrap();
    let grads = ad::gradients(&[&y], &[&unrelated, &x, &beside, &c], None).unwrap();
    // dy/d(unrelated) does not exist: None, as TensorFlow's tf.gradients
    assert!(grads[0].is_none());
    // a node beside the path has none either
    assert!(grads[2].is_none());
    // dy/dx = c e^x
    let feed = ad::feed! { x => [0.0, 1.0] }.unwrap();
    let e = 1f64.exp();
    assert_close(
        &eval(grads[1].as_ref().unwrap(), &feed),
        &[1.0, 2.0 * e],
        "c e^x",
    );
    // a constant asked about explicitly gets its gradient (as in TensorFlow): dy/dc = e^x
    assert_close(&eval(grads[3].as_ref().unwrap(), &feed), &[1.0, e], "e^x");
}

// ---------------------------------------------------------------- stopped paths

#[test]
fn stop_gradient_is_respected() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    // y = x · stop(x): the stopped factor counts as a constant
    let y = ad::multiply(&x, &ad::stop_gradient(&x).unwrap()).unwrap();
    let dy = grad(&y, &x);
    let feed = ad::feed! { x => [3.0, -0.5] }.unwrap();
    // dy/dx = stop(x) = x (not 2x)
    assert_close(&eval(&dy, &feed), &[3.0, -0.5], "x");
    // d²y/dx² through the stopped factor only: no path, or 0
    let d2 = ad::gradients(&[&dy], &[&x], None).unwrap().remove(0);
    if let Some(d2) = d2 {
        assert_close(&eval(&d2, &feed), &[0.0, 0.0], "0");
    }
    // only through stop_gradient: no gradient at all
    let z = ad::exp(&ad::stop_gradient(&x).unwrap()).unwrap();
    assert!(ad::gradients(&[&z], &[&x], None).unwrap()[0].is_none());
}

#[test]
fn runtime_stop_gradients_at_is_respected() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    let a = ad::exp(&x).unwrap();
    // y = a · x with a = e^x
    let y = ad::multiply(&a, &x).unwrap();
    let feed = ad::feed! { x => [0.0, 1.0] }.unwrap();
    let e = 1f64.exp();
    let mut rt = RunTime::new();
    rt.stop_gradients_at(&[&a]);
    rt.backward(&y, &feed, None).unwrap();
    // with a stopped: dy/dx = a = e^x
    assert_close(rt.grad(&x).unwrap(), &[1.0, e], "e^x");
    assert!(rt.grad(&a).is_err()); // a stopped node receives nothing
    rt.reset();
    rt.clear_stop_gradients();
    rt.backward(&y, &feed, None).unwrap();
    // not stopped: dy/dx = e^x (1 + x)
    assert_close(rt.grad(&x).unwrap(), &[1.0, 2.0 * e], "e^x (1 + x)");
}

// ---------------------------------------------------------------- gradients as inputs

#[test]
fn a_gradient_norm_penalty_is_differentiated() {
    let g = Graph::new();
    let x = g.placeholder([3]);
    let w = g.placeholder([3]);
    // L = sum(exp(w x)), G = dL/dx = w e^{wx}, P = sum(G^2) = sum(w^2 e^{2wx})
    let l = ad::reduce_sum(
        &ad::exp(&ad::multiply(&w, &x).unwrap()).unwrap(),
        Axes::All,
        false,
    )
    .unwrap();
    let gx = grad(&l, &x);
    let p = ad::reduce_sum(&ad::square(&gx).unwrap(), Axes::All, false).unwrap();
    let dp = ad::gradients(&[&p], &[&w, &x], None).unwrap();
    let (xs, ws) = ([0.5f64, -1.0, 0.2], [1.0f64, 0.5, -2.0]);
    let feed = Feed::new()
        .with(&x, xs.map(|v| v as f32))
        .unwrap()
        .with(&w, ws.map(|v| v as f32))
        .unwrap();
    let mut rt = RunTime::new();
    // P = sum(w^2 e^{2wx})
    let want: f64 = (0..3)
        .map(|i| ws[i].powi(2) * (2.0 * ws[i] * xs[i]).exp())
        .sum();
    assert_close(rt.forward(&p, &feed).unwrap(), &[want], "P");
    // dP/dw = 2 w e^{2wx} (1 + w x)
    let want: Vec<f64> = (0..3)
        .map(|i| 2.0 * ws[i] * (2.0 * ws[i] * xs[i]).exp() * (1.0 + ws[i] * xs[i]))
        .collect();
    assert_close(
        rt.forward(dp[0].as_ref().unwrap(), &feed).unwrap(),
        &want,
        "dP/dw",
    );
    // dP/dx = 2 w^3 e^{2wx}
    let want: Vec<f64> = (0..3)
        .map(|i| 2.0 * ws[i].powi(3) * (2.0 * ws[i] * xs[i]).exp())
        .collect();
    assert_close(
        rt.forward(dp[1].as_ref().unwrap(), &feed).unwrap(),
        &want,
        "dP/dx",
    );
}

#[test]
fn a_node_used_twice_by_one_op() {
    let g = Graph::new();
    let x = g.placeholder([3]);
    let a = ad::tanh(&x).unwrap();
    // y = a · a, both inputs the same node
    let y = ad::multiply(&a, &a).unwrap();
    let dy = grad(&y, &x);
    let d2y = grad(&dy, &x);
    let xs = [-0.8f64, 0.1, 1.2];
    let feed = Feed::new().with(&x, xs.map(|v| v as f32)).unwrap();
    // dy/dx = 2a (1 - a^2): each occurrence contributes a (1 - a^2)
    let want = xs.map(|x| 2.0 * x.tanh() * (1.0 - x.tanh().powi(2)));
    assert_close(&eval(&dy, &feed), &want, "2a(1-a^2)");
    // d²y/dx² = 2 (1 - a^2)(1 - 3a^2)
    let want = xs.map(|x| {
        let a = x.tanh();
        2.0 * (1.0 - a * a) * (1.0 - 3.0 * a * a)
    });
    assert_close(&eval(&d2y, &feed), &want, "2(1-a^2)(1-3a^2)");
}

// ---------------------------------------------------------------- the backward plan

#[test]
fn the_backward_plan_is_built_once_and_reused() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    let w = g.variable_from([0.5f32, -1.0], true).unwrap();
    let loss = ad::reduce_sum(
        &ad::tanh(&ad::multiply(&x, &w).unwrap()).unwrap(),
        Axes::All,
        false,
    )
    .unwrap();
    let forward_nodes = g.len();
    let mut rt = RunTime::new();
    let mut sizes = Vec::new();
    for step in 0..3 {
        let xs = [1.0 + step as f32, -0.5];
        let feed = Feed::new().with(&x, xs).unwrap();
        rt.forward_backward_cycle(|rt| {
            rt.backward(&loss, &feed, None).unwrap();
            // d/dw sum(tanh(x w)) = x (1 - tanh^2(x w))
            let want: Vec<f64> = [(xs[0], 0.5f32), (xs[1], -1.0)]
                .iter()
                .map(|&(x, w)| {
                    let t = f64::from(x * w).tanh();
                    f64::from(x) * (1.0 - t * t)
                })
                .collect();
            assert_close(rt.grad(&w).unwrap(), &want, &format!("step {step}"));
        });
        sizes.push(g.len());
    }
    // The first backward builds the gradient graph; later ones only run it.
    assert!(sizes[0] > forward_nodes, "{sizes:?}");
    assert_eq!(sizes, [sizes[0]; 3]);
    // Another run time uses the graph's plan too.
    RunTime::new()
        .backward(&loss, &Feed::new().with(&x, [1.0, 1.0]).unwrap(), None)
        .unwrap();
    assert_eq!(g.len(), sizes[0]);
}

// ---------------------------------------------------------------- custom ops

/// `x^2` with only a numeric backward: first order works, second order
/// refuses, naming the op.
struct NumericSquare;

impl Op for NumericSquare {
    fn type_name(&self) -> &'static str {
        "NumericSquare"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> ad::Result<TensorShape> {
        Ok(inputs[0].clone())
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> ad::Result<Tensor> {
        Ok(inputs[0].mapv(|v| v * v))
    }
    // d(x^2)/dx = 2x
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> ad::Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(grad * &ctx.input(0).mapv(|v| 2.0 * v))])
    }
}

#[test]
fn a_numeric_backward_works_at_first_order_and_refuses_the_second() {
    let g = Graph::new();
    let x = g.placeholder([3]);
    let y = g.add_op(NumericSquare, &[&x]).unwrap();
    let z = ad::exp(&y).unwrap();
    let feed = ad::feed! { x => [0.5, -1.0, 0.0] }.unwrap();
    // d/dx e^{x^2} = 2x e^{x^2}
    let dz = grad(&z, &x);
    let want = [0.5f64, -1.0, 0.0].map(|x| 2.0 * x * (x * x).exp());
    assert_close(&eval(&dz, &feed), &want, "2x e^{x^2}");
    let mut rt = RunTime::new();
    rt.backward(&z, &feed, None).unwrap();
    assert_close(rt.grad(&x).unwrap(), &want, "backward");

    // The second derivative needs the gradient of the numeric gradient node.
    let err = ad::gradients(&[&dz], &[&x], None).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("NumericSquare"), "{message}");
    assert!(message.contains("Op::gradient"), "{message}");
    let err = ad::gradcheck::check_second_derivatives(&y, &[&x], &feed).unwrap_err();
    assert!(err.to_string().contains("NumericSquare"), "{err}");
}

/// `sin(x)`, its gradient built from nodes (with [`CosOp`]): differentiable
/// to any order.
struct SinOp;
/// `cos(x)`, with `d cos/dx = -sin x` from nodes.
struct CosOp;

impl Op for SinOp {
    fn type_name(&self) -> &'static str {
        "MySin"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> ad::Result<TensorShape> {
        Ok(inputs[0].clone())
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> ad::Result<Tensor> {
        Ok(inputs[0].mapv(f32::sin))
    }
    // d sin(x)/dx = cos(x)
    fn gradient(&self, ctx: &ad::GradientContext) -> ad::Result<Vec<Option<Node>>> {
        let cos = ctx.graph().add_op(CosOp, &[ctx.input(0)])?;
        Ok(vec![Some(ad::multiply(ctx.grad(), &cos)?)])
    }
}

impl Op for CosOp {
    fn type_name(&self) -> &'static str {
        "MyCos"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> ad::Result<TensorShape> {
        Ok(inputs[0].clone())
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> ad::Result<Tensor> {
        Ok(inputs[0].mapv(f32::cos))
    }
    // d cos(x)/dx = -sin(x)
    fn gradient(&self, ctx: &ad::GradientContext) -> ad::Result<Vec<Option<Node>>> {
        let sin = ctx.graph().add_op(SinOp, &[ctx.input(0)])?;
        Ok(vec![Some(ad::negate(&ad::multiply(ctx.grad(), &sin)?)?)])
    }
}

#[test]
fn a_symbolic_custom_op_is_differentiated_to_the_fourth_order() {
    let g = Graph::new();
    let x = g.placeholder([3]);
    let y = g.add_op(SinOp, &[&x]).unwrap();
    let mut d = vec![y.clone()];
    for _ in 0..4 {
        let next = grad(d.last().unwrap(), &x);
        d.push(next);
    }
    let xs = [-1.0f64, 0.3, 2.0];
    let feed = Feed::new().with(&x, xs.map(|v| v as f32)).unwrap();
    // sin' = cos, sin'' = -sin, sin''' = -cos, sin'''' = sin
    let want: [fn(f64) -> f64; 5] = [f64::sin, f64::cos, |x| -x.sin(), |x| -x.cos(), f64::sin];
    let mut rt = RunTime::new();
    for (k, (node, f)) in d.iter().zip(want).enumerate() {
        let got = rt.forward(node, &feed).unwrap();
        assert_close(got, &xs.map(f), &format!("order {k}"));
    }
}

// ---------------------------------------------------------------- jacobian

#[test]
fn jacobian_of_a_small_output() {
    let g = Graph::new();
    let x = g.placeholder([3]);
    // y = x^2 element-wise: J = diag(2x)
    let y = ad::multiply(&x, &x).unwrap();
    let j = ad::jacobian(&y, &x).unwrap();
    assert_eq!(j.shape(), ad::shape![3, 3]);
    let feed = ad::feed! { x => [1.0, -2.0, 0.5] }.unwrap();
    assert_close(
        &eval(&j, &feed),
        &[2.0, 0.0, 0.0, 0.0, -4.0, 0.0, 0.0, 0.0, 1.0],
        "diag(2x)",
    );

    // z = tanh(W v), W [2, 3], v [3, 1]: J[i, 0, k, 0] = (1 - z_i^2) W[i, k]
    let w = [[1.0f64, -0.5, 2.0], [0.3, 0.8, -1.2]];
    let wn = g.constant(w.map(|r| r.map(|v| v as f32))).unwrap();
    let v = g.placeholder([3, 1]);
    let z = ad::tanh(&ad::matmul(&wn, &v).unwrap()).unwrap();
    let jz = ad::jacobian(&z, &v).unwrap();
    assert_eq!(jz.shape(), ad::shape![2, 1, 3, 1]);
    let vs = [0.2f64, -0.4, 0.1];
    let feed = Feed::new().with(&v, vs.map(|e| [e as f32])).unwrap();
    let mut want = Vec::new();
    for row in &w {
        let zi = row.iter().zip(&vs).map(|(a, b)| a * b).sum::<f64>().tanh();
        want.extend(row.iter().map(|wik| (1.0 - zi * zi) * wik));
    }
    assert_close(&eval(&jz, &feed), &want, "diag(1 - z^2) W");

    // an output that does not depend on x: a zero Jacobian
    let c = ad::exp(&g.placeholder([2])).unwrap();
    let jc = ad::jacobian(&c, &x).unwrap();
    let other = Feed::new().with(&c.inputs()[0], [0.0, 0.0]).unwrap();
    assert_close(&eval(&jc, &other), &[0.0; 6], "0");
}

// ---------------------------------------------------------------- Graphviz export

/// Checks that every line of `dot` closes its quoted strings (escapes
/// respected): the lexical well-formedness Graphviz needs.
fn assert_quotes_balanced(dot: &str) {
    for line in dot.lines() {
        let (mut open, mut escaped) = (false, false);
        for c in line.chars() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') if open => escaped = true,
                (false, '"') => open = !open,
                _ => {}
            }
        }
        assert!(!open, "unclosed string in: {line}");
    }
    assert_eq!(dot.matches('{').count(), dot.matches('}').count(), "{dot}");
}

/// The DOT line of node `n` (its id is `n<index>`).
fn dot_line<'a>(dot: &'a str, n: &Node) -> &'a str {
    let id = format!("n{} [", n.id().index());
    dot.lines()
        .find(|l| l.trim_start().starts_with(&id))
        .unwrap_or_else(|| panic!("no line for {} in\n{dot}", n.name()))
}

#[test]
fn to_dot_draws_every_node_edge_and_kind() {
    let g = Graph::new();
    let x = g.placeholder(ad::shape![None, 2]);
    let w = g.variable_from([[0.5f32], [-1.0]], true).unwrap();
    let c = g.constant(2.0).unwrap();
    let h = ad::matmul(&x, &w).unwrap();
    let sq = ad::multiply(&h, &h).unwrap(); // one input, two edges
    let y = ad::multiply(&sq, &c).unwrap();
    let dw = grad(&y, &w);
    let dot = g.to_dot();
    assert_quotes_balanced(&dot);
    assert!(dot.starts_with("digraph adgraph {\n") && dot.ends_with("}\n"));

    // One DOT node per graph node, one edge per input.
    let nodes = g.nodes();
    let node_lines = dot
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('n') && l[1..].starts_with(|c: char| c.is_ascii_digit()))
        .filter(|l| !l.contains("->"))
        .count();
    assert_eq!(node_lines, nodes.len());
    let edges: usize = nodes.iter().map(|n| n.inputs().len()).sum();
    assert_eq!(dot.matches(" -> ").count(), edges);
    let (hi, si) = (h.id().index(), sq.id().index());
    assert_eq!(dot.matches(&format!("n{hi} -> n{si};")).count(), 2);

    // Name, op type and static shape; each kind styled its own way.
    assert!(dot_line(&dot, &x).contains("label=\"Placeholder\\nPlaceholder (None, 2)\""));
    assert!(dot_line(&dot, &x).contains("shape=ellipse"));
    assert!(dot_line(&dot, &w).contains("rounded,bold"));
    assert!(dot_line(&dot, &w).contains("trainable"));
    assert!(dot_line(&dot, &c).contains("= 2"));
    assert!(dot_line(&dot, &h).contains("MatMul\\nMatMul (None, 1)"));
    let styles: Vec<&str> = [&x, &w, &c, &h]
        .iter()
        .map(|n| {
            let line = dot_line(&dot, n);
            &line[line.find("fillcolor").unwrap()..]
        })
        .collect();
    for (i, a) in styles.iter().enumerate() {
        for b in &styles[i + 1..] {
            assert_ne!(a, b, "two kinds drawn alike");
        }
    }

    // Gradient nodes: dashed, in the gradients cluster, naming their forward node.
    assert!(dw.is_gradient() && !h.is_gradient());
    let cluster = &dot[dot.find("subgraph cluster_gradients").unwrap()..];
    let cluster = &cluster[..cluster.find("\n  }\n").unwrap()];
    for n in nodes.iter() {
        let line = format!("n{} [", n.id().index());
        assert_eq!(cluster.contains(&line), n.is_gradient(), "{}", n.name());
        if n.is_gradient() {
            assert!(
                dot_line(&dot, n).contains("dashed"),
                "{}",
                dot_line(&dot, n)
            );
            assert!(
                dot_line(&dot, n).contains("\\ngrad of "),
                "{}",
                dot_line(&dot, n)
            );
        }
    }
    // dw is the gradient flowing into w: part of MatMul's gradient.
    assert!(
        dot_line(&dot, &dw).contains("grad of MatMul"),
        "{}",
        dot_line(&dot, &dw)
    );
    assert!(!dot_line(&dot, &h).contains("dashed"));
}

#[test]
fn to_dot_of_draws_only_what_the_targets_reach() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    let a = ad::exp(&x).unwrap();
    let b = ad::tanh(&x).unwrap();
    let y = ad::add(&a, &x).unwrap();
    let dy = grad(&y, &x);
    let dot = g.to_dot_of(&[&y]);
    assert_quotes_balanced(&dot);
    // y, a, x: and nothing of tanh or of the gradient
    assert!(
        dot.contains("\"Add\\n") && dot.contains("\"Exp\\n") && dot.contains("\"Placeholder\\n")
    );
    assert!(
        !dot.contains("Tanh") && !dot.contains("cluster_gradients"),
        "{dot}"
    );
    assert_eq!(dot.matches(" -> ").count(), 3);
    assert!(dot_line(&dot, &y).contains("peripheries=2"));
    assert!(!dot_line(&dot, &a).contains("peripheries"));

    // The gradient's part of the graph: the gradient nodes and the forward
    // nodes they read.
    let dot = g.to_dot_of(&[&dy]);
    assert_quotes_balanced(&dot);
    assert!(dot.contains("subgraph cluster_gradients"));
    assert!(dot_line(&dot, &dy).contains("peripheries=2"));
    assert!(!dot.contains(&format!("n{} [", b.id().index())));

    // A target of another graph is left out, with a comment.
    let other = Graph::new().placeholder([1]);
    let dot = g.to_dot_of(&[&a, &other]);
    assert!(dot.contains("// left out: target Placeholder belongs to another graph"));
    assert_eq!(dot.matches(" -> ").count(), 1);
}

#[test]
fn to_dot_escapes_names() {
    let g = Graph::new();
    let x = g.placeholder([1]);
    let y = g
        .name_scope("say \"hi\"\\ there\nnow", || ad::exp(&x))
        .unwrap();
    assert_eq!(y.name(), "say \"hi\"\\ there\nnow/Exp");
    let dot = g.to_dot();
    assert_quotes_balanced(&dot);
    assert!(
        dot.contains(r#"label="say \"hi\"\\ there\nnow/Exp\nExp (1,)""#),
        "{dot}"
    );
    assert_eq!(dot.lines().filter(|l| l.contains("there")).count(), 1);
}

#[test]
fn graphviz_accepts_the_text_when_installed() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let g = Graph::new();
    let x = g.placeholder([2]);
    let y = g
        .name_scope("a \"quoted\"\\scope\n", || ad::tanh(&ad::multiply(&x, &x)?))
        .unwrap();
    let dy = grad(&y, &x);
    let _d2y = ad::gradients(&[&dy], &[&x], None); // as far as it goes today
    for dot in [g.to_dot(), g.to_dot_of(&[&dy])] {
        let child = Command::new("dot")
            .arg("-Tsvg")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("Graphviz's dot is not installed: not checked");
            return;
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(dot.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{stderr}\n{dot}"
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
    }
}
