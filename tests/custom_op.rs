//! A user-written node type (the `custom_op` example's softplus) behaves like a
//! built-in op and passes the public gradient checker.

#[path = "../examples/custom_op.rs"]
mod custom_op;

use adgraph::{self as ad, gradcheck::GradCheck, Feed, Graph, RunTime};
use custom_op::softplus;

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
