//! Extending adgraph with a node type of your own: `softplus(x) = ln(1 + e^x)`.
//!
//! An op is a struct implementing `adgraph::Op`: its static shape rule, its
//! forward computation and its backward rule, side by side. Once added with
//! `Graph::add_op` it behaves like any built-in op: it has a unique name
//! (`Softplus`, `Softplus_0`, ...), takes part in forward and backward, and can be
//! checked with the public finite-difference gradient checker.
//!
//! Run: `cargo run --example custom_op`

use adgraph::{self as ad, BackwardContext, ForwardContext, Node, Op, Result, Tensor, TensorShape};

/// `softplus(x) = ln(1 + e^x)`, element-wise; a smooth relu.
pub struct Softplus;

impl Op for Softplus {
    fn type_name(&self) -> &'static str {
        "Softplus"
    }

    // Element-wise: the output has the input's shape.
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        Ok(inputs[0].clone())
    }

    // max(x, 0) + ln(1 + e^-|x|): equal to ln(1 + e^x), but never overflows.
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(inputs[0].mapv(|x| x.max(0.0) + (-x.abs()).exp().ln_1p()))
    }

    // d/dx softplus(x) = e^x / (1 + e^x) = sigmoid(x)
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
        let sigmoid = ctx.input(0).mapv(|x| 1.0 / (1.0 + (-x).exp()));
        Ok(vec![Some(grad * &sigmoid)])
    }
}

/// Adds `softplus(x)` to `x`'s graph, like the built-in op functions do.
///
/// # Errors
/// When `x` is a failed operator node.
pub fn softplus(x: &Node) -> Result<Node> {
    x.graph().add_op(Softplus, &[x])
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let x = ad::placeholder(ad::shape![None]);
    let y = softplus(&x)?;
    // Custom nodes compose with built-in ones and with operators.
    let z = (&y * 2.0).check()?;

    let feed = ad::feed! { x => [-20.0, -1.0, 0.0, 1.0, 20.0] }?;
    let mut rt = ad::RunTime::new();
    println!(
        "x          = {}",
        feed.get(&x).map(|t| t.to_string()).unwrap_or_default()
    );
    println!("softplus   = {}", rt.forward(&y, &feed)?);
    rt.backward(&z, &feed, None)?;
    println!("d(2*sp)/dx = {}", rt.grad(&x)?);

    let report = ad::gradcheck::check_gradients(&z, &[&x], &feed)?;
    println!("gradient check: {report}");
    Ok(())
}
