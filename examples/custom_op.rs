//! Extending adgraph with node types of your own: `softplus(x) = ln(1 + e^x)`,
//! written twice, once with each form of gradient.
//!
//! An op is a struct implementing `adgraph::Op`: its static shape rule, its
//! forward computation and its gradient rule, side by side. Once added with
//! `Graph::add_op` it behaves like any built-in op: it has a unique name
//! (`Softplus`, `Softplus_0`, ...), takes part in forward and backward, and can be
//! checked with the public finite-difference gradient checker.
//!
//! The gradient comes in one of two forms:
//!
//! - `Softplus` gives a **numeric** backward (`Op::backward`): tensors in,
//!   tensors out. Enough for training, but its gradient node has no gradient of
//!   its own, so asking for a second derivative through it is an error that
//!   names the op.
//! - `SymbolicSoftplus` gives a **symbolic** gradient (`Op::gradient`): it
//!   builds `dy * sigmoid(x)` from graph nodes, so its gradient can be
//!   differentiated again, to any order (here: `sigmoid(x) (1 - sigmoid(x))`).
//!
//! Run: `cargo run --example custom_op`

use adgraph::{
    self as ad, BackwardContext, ForwardContext, GradientContext, Node, Op, Result, Tensor,
    TensorShape,
};

/// `ln(1 + e^x)` computed as `max(x, 0) + ln(1 + e^-|x|)`: equal, but never
/// overflows for large `x`.
fn softplus_value(x: &Tensor) -> Tensor {
    x.mapv(|x| x.max(0.0) + (-x.abs()).exp().ln_1p())
}

/// `softplus(x) = ln(1 + e^x)`, element-wise, with a numeric backward.
pub struct Softplus;

impl Op for Softplus {
    fn type_name(&self) -> &'static str {
        "Softplus"
    }

    // Element-wise: the output has the input's shape.
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        Ok(inputs[0].clone())
    }

    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(softplus_value(inputs[0]))
    }

    // d/dx softplus(x) = e^x / (1 + e^x) = sigmoid(x)
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
        let sigmoid = ctx.input(0).mapv(|x| 1.0 / (1.0 + (-x).exp()));
        Ok(vec![Some(grad * &sigmoid)])
    }
}

/// `softplus(x) = ln(1 + e^x)`, element-wise, with a symbolic gradient:
/// differentiable to any order.
pub struct SymbolicSoftplus;

impl Op for SymbolicSoftplus {
    fn type_name(&self) -> &'static str {
        "SymbolicSoftplus"
    }

    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        Ok(inputs[0].clone())
    }

    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        Ok(softplus_value(inputs[0]))
    }

    // d/dx softplus(x) = sigmoid(x), built from nodes: dx = dy * sigmoid(x)
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let sigmoid = ad::sigmoid(ctx.input(0))?;
        Ok(vec![Some(ad::multiply(ctx.grad(), &sigmoid)?)])
    }
}

/// Adds `softplus(x)` (numeric backward) to `x`'s graph, like the built-in op
/// functions do.
///
/// # Errors
/// When `x` is a failed operator node.
pub fn softplus(x: &Node) -> Result<Node> {
    x.graph().add_op(Softplus, &[x])
}

/// Adds `softplus(x)` (symbolic gradient) to `x`'s graph.
///
/// # Errors
/// When `x` is a failed operator node.
pub fn symbolic_softplus(x: &Node) -> Result<Node> {
    x.graph().add_op(SymbolicSoftplus, &[x])
}

/// The gradient node of `sum(y)` with respect to `x`.
///
/// # Errors
/// As [`ad::gradients`]; when `y` does not depend on `x`.
pub fn derivative(y: &Node, x: &Node) -> Result<Node> {
    ad::gradients(&[y], &[x], None)?
        .remove(0)
        .ok_or_else(|| ad::Error::invalid(format!("{} does not depend on {}", y.name(), x.name())))
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let x = ad::placeholder(ad::shape![None]);
    let feed = ad::feed! { x => [-20.0, -1.0, 0.0, 1.0, 20.0] }?;
    let mut rt = ad::RunTime::new();
    println!(
        "x                    = {}",
        feed.get(&x).map(|t| t.to_string()).unwrap_or_default()
    );

    // 1. Numeric backward: values and first derivatives.
    let y = softplus(&x)?;
    // Custom nodes compose with built-in ones and with operators.
    let z = (&y * 2.0).check()?;
    println!("softplus             = {}", rt.forward(&y, &feed)?);
    rt.backward(&z, &feed, None)?;
    println!("d(2 softplus)/dx     = {}", rt.grad(&x)?);
    println!(
        "gradient check       : {}",
        ad::gradcheck::check_gradients(&z, &[&x], &feed)?
    );

    // 2. Symbolic gradient: the first derivative is a node, and so is the second.
    let s = symbolic_softplus(&x)?;
    let ds = derivative(&s, &x)?;
    let d2s = derivative(&ds, &x)?;
    let values = rt.infer(&[&ds, &d2s], &feed)?;
    println!("d softplus/dx        = {}   (sigmoid(x))", values[0]);
    println!(
        "d2 softplus/dx2      = {}   (sigmoid(x) (1 - sigmoid(x)))",
        values[1]
    );
    println!(
        "second-order check   : {}",
        ad::gradcheck::check_second_derivatives(&s, &[&x], &feed)?
    );

    // 3. What a user sees asking the second derivative of the numeric form.
    let dy = derivative(&y, &x)?;
    match ad::gradients(&[&dy], &[&x], None) {
        Ok(_) => println!("unexpected: the numeric gradient was differentiated"),
        Err(e) => println!("d2 of the numeric one: error: {e}"),
    }
    Ok(())
}
