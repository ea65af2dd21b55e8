//! User-written node types (the `custom_op` example's softplus, with a numeric
//! backward and with a symbolic gradient) behave like built-in ops and pass the
//! public gradient checker, at first order and (the symbolic one) at second;
//! the checker catches wrong first and second derivatives.

#[path = "../examples/custom_op.rs"]
mod custom_op;

use adgraph::{
    self as ad, gradcheck::GradCheck, ForwardContext, GradientContext, Node, Op, Result, Tensor,
    TensorShape,
};
use adgraph::{Feed, Graph, RunTime};
use custom_op::{derivative, softplus, symbolic_softplus};

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Asserts `got` holds `want` element-wise, within `1e-5 + 1e-5 |want|`.
fn assert_close(got: &Tensor, want: &[f64], what: &str) {
    let got: Vec<f32> = got.iter().copied().collect();
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (f64::from(*g) - w).abs() <= 1e-5 + 1e-5 * w.abs(),
            "{what}: {got:?} vs {want:?}"
        );
    }
}

#[test]
fn softplus_gradient_matches_finite_differences() {
    let g = Graph::new();
    let x = g.placeholder(ad::shape![2, 3]);
    let w = g
        .variable(
            &[3],
            ad::init::FromTensor(ad::tensor([0.5, -1.5, 2.0])),
            true,
        )
        .unwrap();
    let y = softplus(&(&x * &w)).unwrap();
    assert_eq!(y.name(), "Softplus");
    let feed = Feed::new()
        .with(&x, [[-3.0, -0.5, 0.0], [0.25, 1.0, 4.0]])
        .unwrap();
    let report = GradCheck::default().check(&y, &[&x, &w], &feed).unwrap();
    assert_eq!(report.elements, 9);
    assert!(report.max_abs_error < 5e-3, "{report}");
}

#[test]
fn softplus_is_stable_for_large_inputs() {
    let g = Graph::new();
    let x = g.placeholder([3]);
    let y = softplus(&x).unwrap();
    let feed = Feed::new().with(&x, [-1e4, 0.0, 1e4]).unwrap();
    let mut rt = RunTime::new();
    let v = rt.forward(&y, &feed).unwrap().clone();
    assert_eq!(v[0], 0.0);
    assert!((v[1] - 2f32.ln()).abs() < 1e-6);
    assert_eq!(v[2], 1e4);
    rt.backward(&y, &feed, None).unwrap();
    assert_eq!(rt.grad(&x).unwrap(), &ad::tensor([0.0, 0.5, 1.0]));
}

#[test]
fn a_wrong_gradient_is_caught_by_the_checker() {
    use ad::{BackwardContext, ForwardContext, Op, Result, Tensor, TensorShape};
    // Forward is x^2 but backward claims 3x: the checker must object.
    struct BadSquare;
    impl Op for BadSquare {
        fn type_name(&self) -> &'static str {
            "BadSquare"
        }
        fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
            Ok(inputs[0].clone())
        }
        fn forward(&self, inputs: &[&Tensor], _: &mut ForwardContext) -> Result<Tensor> {
            Ok(inputs[0].mapv(|v| v * v))
        }
        fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
            Ok(vec![Some(grad * &ctx.input(0).mapv(|v| 3.0 * v))])
        }
    }
    let g = Graph::new();
    let x = g.placeholder([2]);
    let y = g.add_op(BadSquare, &[&x]).unwrap();
    let feed = Feed::new().with(&x, [1.0, 2.0]).unwrap();
    let err = ad::gradcheck::check_gradients(&y, &[&x], &feed).unwrap_err();
    assert!(matches!(err, ad::Error::GradCheck(_)), "{err}");
}

#[test]
fn symbolic_softplus_is_differentiated_twice_and_three_times() {
    let g = Graph::new();
    let x = g.placeholder([4]);
    let s = symbolic_softplus(&x).unwrap();
    let ds = derivative(&s, &x).unwrap();
    let d2s = derivative(&ds, &x).unwrap();
    let d3s = derivative(&d2s, &x).unwrap();
    let xs = [-3.0f64, -0.5, 0.25, 2.0];
    let feed = Feed::new().with(&x, xs.map(|v| v as f32)).unwrap();
    let out = RunTime::new().infer(&[&s, &ds, &d2s, &d3s], &feed).unwrap();
    // softplus(x) = ln(1 + e^x)
    assert_close(&out[0], &xs.map(|x| x.exp().ln_1p()), "softplus");
    // d/dx softplus = sigmoid(x)
    assert_close(&out[1], &xs.map(sigmoid), "sigmoid");
    // d²/dx² softplus = s (1 - s), s = sigmoid(x)
    assert_close(
        &out[2],
        &xs.map(|x| sigmoid(x) * (1.0 - sigmoid(x))),
        "s(1-s)",
    );
    // d³/dx³ softplus = s (1 - s) (1 - 2s)
    let third = xs.map(|x| {
        let s = sigmoid(x);
        s * (1.0 - s) * (1.0 - 2.0 * s)
    });
    assert_close(&out[3], &third, "s(1-s)(1-2s)");
}

#[test]
fn both_forms_agree_at_first_order() {
    let g = Graph::new();
    let x = g.placeholder([3]);
    let feed = Feed::new().with(&x, [-1.0, 0.5, 3.0]).unwrap();
    let numeric = derivative(&softplus(&x).unwrap(), &x).unwrap();
    let symbolic = derivative(&symbolic_softplus(&x).unwrap(), &x).unwrap();
    let out = RunTime::new().infer(&[&numeric, &symbolic], &feed).unwrap();
    // both sigmoid(x)
    assert_close(&out[0], &[-1.0f64, 0.5, 3.0].map(sigmoid), "numeric");
    assert_close(&out[1], &[-1.0f64, 0.5, 3.0].map(sigmoid), "symbolic");
}

#[test]
fn symbolic_softplus_passes_the_second_order_check() {
    let g = Graph::new();
    let x = g.placeholder(ad::shape![2, 3]);
    let w = g.variable_from([0.5f32, -1.5, 2.0], true).unwrap();
    let y = symbolic_softplus(&(&x * &w)).unwrap();
    let feed = Feed::new()
        .with(&x, [[-3.0, -0.5, 0.0], [0.25, 1.0, 2.0]])
        .unwrap();
    let first = ad::gradcheck::check_gradients(&y, &[&x, &w], &feed).unwrap();
    assert_eq!(first.elements, 9);
    let second = ad::gradcheck::check_second_derivatives(&y, &[&x, &w], &feed).unwrap();
    assert_eq!(second.elements, 9);
    assert!(second.max_abs_error < 5e-3, "{second}");
}

#[test]
fn the_numeric_form_refuses_a_second_derivative_naming_the_op() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    let y = softplus(&x).unwrap();
    let dy = derivative(&y, &x).unwrap();
    let err = ad::gradients(&[&dy], &[&x], None).unwrap_err();
    let message = err.to_string();
    // The error names the op type, and says what to do.
    assert!(message.contains("op Softplus"), "{message}");
    assert!(message.contains("Op::gradient"), "{message}");
    let feed = Feed::new().with(&x, [0.5, -0.5]).unwrap();
    let err = ad::gradcheck::check_second_derivatives(&y, &[&x], &feed).unwrap_err();
    assert!(err.to_string().contains("op Softplus"), "{err}");
    // First order is unaffected.
    ad::gradcheck::check_gradients(&y, &[&x], &feed).unwrap();
}

/// `2x`, with a wrong numeric backward (it claims the derivative is 3).
struct BadDouble;

impl Op for BadDouble {
    fn type_name(&self) -> &'static str {
        "BadDouble"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        Ok(inputs[0].clone())
    }
    fn forward(&self, inputs: &[&Tensor], _: &mut ForwardContext) -> Result<Tensor> {
        Ok(inputs[0].mapv(|v| 2.0 * v))
    }
    fn backward(&self, grad: &Tensor, _: &ad::BackwardContext) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(grad * 3.0)])
    }
}

/// `x^2` whose symbolic gradient `dy * BadDouble(x)` is right in value (so
/// the first-order check passes) but wrong in its own derivative.
struct SquareWithBadSecond;

impl Op for SquareWithBadSecond {
    fn type_name(&self) -> &'static str {
        "SquareWithBadSecond"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        Ok(inputs[0].clone())
    }
    fn forward(&self, inputs: &[&Tensor], _: &mut ForwardContext) -> Result<Tensor> {
        Ok(inputs[0].mapv(|v| v * v))
    }
    // d(x^2)/dx = 2x, through an op whose own derivative is wrong
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let two_x = ctx.add_op(BadDouble, &[ctx.input(0)])?;
        Ok(vec![Some(ad::multiply(ctx.grad(), &two_x)?)])
    }
}

#[test]
fn a_wrong_second_derivative_is_caught_by_the_second_order_check() {
    let g = Graph::new();
    let x = g.placeholder([3]);
    let y = g.add_op(SquareWithBadSecond, &[&x]).unwrap();
    let feed = Feed::new().with(&x, [0.5, -1.0, 2.0]).unwrap();
    ad::gradcheck::check_gradients(&y, &[&x], &feed).unwrap();
    let err = ad::gradcheck::check_second_derivatives(&y, &[&x], &feed).unwrap_err();
    match &err {
        ad::Error::GradCheck(message) => {
            assert!(
                message.contains("second derivatives of SquareWithBadSecond"),
                "{message}"
            );
            assert!(message.contains("Placeholder"), "{message}");
        }
        other => panic!("{other}"),
    }
}

/// The identity on input 0 that counts its forward runs in input 1 (a
/// variable), as batch norm updates its moving statistics.
struct CountingIdentity;

impl Op for CountingIdentity {
    fn type_name(&self) -> &'static str {
        "CountingIdentity"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        Ok(inputs[0].clone())
    }
    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        ctx.assign_input_variable(1, inputs[1].mapv(|c| c + 1.0));
        Ok(inputs[0].clone())
    }
    // d identity/dx = 1; the counter takes no gradient
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        Ok(vec![Some(ctx.grad().clone()), None])
    }
}

#[test]
fn the_checks_leave_variables_as_they_found_them() {
    let g = Graph::new();
    let x = g.placeholder([2]);
    let counter = g.variable_from(0.0f32, false).unwrap();
    let w = g.variable_from([1.5f32, -0.5], true).unwrap();
    let h = g.add_op(CountingIdentity, &[&x, &counter]).unwrap();
    // y = x^2 w
    let y = ad::multiply(&ad::multiply(&h, &x).unwrap(), &w).unwrap();
    let feed = Feed::new().with(&x, [0.5, -2.0]).unwrap();
    ad::gradcheck::check_gradients(&y, &[&x, &w], &feed).unwrap();
    let report = ad::gradcheck::check_second_derivatives(&y, &[&x, &w], &feed).unwrap();
    assert_eq!(report.elements, 4);
    assert_eq!(g.variable_value(&counter).unwrap(), ad::tensor(0.0));
    assert_eq!(g.variable_value(&w).unwrap(), ad::tensor([1.5, -0.5]));
    // A failed check restores them too.
    let bad = g.add_op(SquareWithBadSecond, &[&h]).unwrap();
    assert!(ad::gradcheck::check_second_derivatives(&bad, &[&x], &feed).is_err());
    assert_eq!(g.variable_value(&counter).unwrap(), ad::tensor(0.0));
}
