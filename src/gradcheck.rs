//! A finite-difference gradient checker, for built-in ops and for users' own,
//! of first and second derivatives.
//!
//! [`check_gradients`] compares the gradients backward computes with central
//! differences of the scalar `L = sum(u * output)`, where `u` is a fixed random
//! upstream gradient (so every output element counts, with a different weight).
//! [`check_second_derivatives`] does the same for the gradient graph itself:
//! it builds `G_k = dL/dx_k` as nodes ([`gradients()`](crate::gradients())),
//! forms `S = sum_k sum(v_k * G_k)` with fixed random `v_k`, and checks `dS/dx`
//! (the Hessian of `L` times `v`, built by differentiating the gradient nodes)
//! against central differences of `S`. An op that gives only a numeric
//! [`Op::backward`](crate::Op::backward) has no second derivative: the second
//! check then fails with an error naming it.
//!
//! The nodes to differentiate with respect to (`wrt`) are placeholders, fed in
//! `feed`, or variables; inputs must stay away from kinks (relu at 0, ties of
//! a max), where finite differences are meaningless. Both checks restore every
//! variable of the graph to its value before the check.
//!
//! ```
//! use adgraph as ad;
//! let g = ad::Graph::new();
//! let x = g.placeholder([2, 3]);
//! let y = g.placeholder([3]);
//! let z = ad::multiply(&x, &y).unwrap();
//! let feed = ad::feed! {
//!     x => [[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]],
//!     y => [1.5, -2.0, 0.25],
//! }.unwrap();
//! let report = ad::gradcheck::check_gradients(&z, &[&x, &y], &feed).unwrap();
//! assert!(report.max_abs_error < 1e-2);
//! assert_eq!(report.elements, 9);
//! // d²z/dx dy is not zero: the gradient graph is differentiated once more.
//! let report = ad::gradcheck::check_second_derivatives(&z, &[&x, &y], &feed).unwrap();
//! assert_eq!(report.elements, 9);
//! ```

use std::fmt;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::graph::{Node, NodeKind};
use crate::runtime::{Feed, RunTime};
use crate::tensor::Tensor;

/// Settings of a gradient check.
#[derive(Debug, Clone, Copy)]
pub struct GradCheck {
    /// Step of the central difference.
    pub eps: f32,
    /// Absolute tolerance.
    pub atol: f32,
    /// Relative tolerance (of the numeric gradient's magnitude).
    pub rtol: f32,
    /// Seed of the random upstream gradient and of the run times used.
    pub seed: u64,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck {
            eps: 5e-3,
            atol: 1e-2,
            rtol: 1e-2,
            seed: 0,
        }
    }
}

/// The outcome of a passed gradient check.
#[derive(Debug, Clone)]
pub struct GradCheckReport {
    /// The largest `|analytic - numeric|` over all checked elements.
    pub max_abs_error: f32,
    /// The number of elements checked.
    pub elements: usize,
}

impl fmt::Display for GradCheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} elements, max abs error {:.3e}",
            self.elements, self.max_abs_error
        )
    }
}

/// Checks the gradients of `output` w.r.t. each node of `wrt` (placeholders fed
/// in `feed`, or variables) with the default settings.
///
/// # Errors
/// [`Error::GradCheck`] naming the node and element where the gradients disagree;
/// any error of forward or backward.
pub fn check_gradients(output: &Node, wrt: &[&Node], feed: &Feed) -> Result<GradCheckReport> {
    GradCheck::default().check(output, wrt, feed)
}

impl GradCheck {
    /// Runs the check (see [`check_gradients`]).
    ///
    /// Variables are restored to their values before the check, whatever happens.
    ///
    /// # Errors
    /// As [`check_gradients`].
    pub fn check(&self, output: &Node, wrt: &[&Node], feed: &Feed) -> Result<GradCheckReport> {
        restoring_variables(output, || self.check_inner(output, wrt, feed))
    }

    fn check_inner(&self, output: &Node, wrt: &[&Node], feed: &Feed) -> Result<GradCheckReport> {
        let graph = output.graph().clone();
        let out_shape = RunTime::with_seed(self.seed)
            .forward(output, feed)?
            .shape()
            .to_vec();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let upstream = Tensor::from_shape_fn(out_shape, |_| rng.gen_range(-1.0f32..1.0));

        let mut rt = RunTime::with_seed(self.seed);
        rt.backward(output, feed, Some(upstream.clone()))?;
        let analytic: Vec<Tensor> = wrt
            .iter()
            .map(|n| {
                rt.grad(n).cloned().or_else(|_| {
                    // Not reached by backward: the gradient is zero.
                    Ok(Tensor::zeros(input_value(n, feed)?.shape()))
                })
            })
            .collect::<Result<_>>()?;

        let loss = |feed: &Feed| -> Result<f64> {
            let mut rt = RunTime::with_seed(self.seed);
            let value = rt.forward(output, feed)?;
            Ok(value
                .iter()
                .zip(upstream.iter())
                .map(|(&v, &u)| f64::from(v) * f64::from(u))
                .sum())
        };

        let mut max_abs_error = 0.0f32;
        let mut elements = 0;
        for (node, analytic) in wrt.iter().zip(&analytic) {
            let base = input_value(node, feed)?;
            let is_variable = node.op_type() == "Variable";
            let shape = base.shape().to_vec();
            let values: Vec<f32> = base.iter().copied().collect();
            let analytic: Vec<f32> = analytic.iter().copied().collect();
            let evaluate = |k: usize, x: f32| -> Result<f64> {
                let mut data = values.clone();
                data[k] = x;
                let probe = Tensor::from_shape_vec(shape.clone(), data)?;
                if is_variable {
                    graph.set_variable_value(node, probe)?;
                    loss(feed)
                } else {
                    let mut f = feed.clone();
                    f.insert(node, probe)?;
                    loss(&f)
                }
            };
            for (k, (&x, &got)) in values.iter().zip(&analytic).enumerate() {
                let plus = evaluate(k, x + self.eps)?;
                let minus = evaluate(k, x - self.eps)?;
                let numeric = ((plus - minus) / (2.0 * f64::from(self.eps))) as f32;
                let err = (got - numeric).abs();
                max_abs_error = max_abs_error.max(err);
                elements += 1;
                // A NaN error fails too.
                let within = err <= self.atol + self.rtol * numeric.abs();
                if !within {
                    return Err(Error::GradCheck(format!(
                        "d(output {})/d({}) at flat index {k}: backward gives {got}, \
                         finite differences give {numeric} (eps {}, atol {}, rtol {})",
                        output.name(),
                        node.name(),
                        self.eps,
                        self.atol,
                        self.rtol
                    )));
                }
            }
            if is_variable {
                graph.set_variable_value(node, base)?;
            }
        }
        Ok(GradCheckReport {
            max_abs_error,
            elements,
        })
    }
}

/// Checks the second derivatives of `output` w.r.t. `wrt` with the default
/// settings (see [`GradCheck::check_second_order`]).
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([3]);
/// // y = x^3: the check compares the gradient of sum_i v_i (3 u_i x_i^2),
/// // i.e. 6 u x v, with finite differences.
/// let y = ad::multiply(&ad::multiply(&x, &x).unwrap(), &x).unwrap();
/// let feed = ad::feed! { x => [0.5, -1.0, 2.0] }.unwrap();
/// let report = ad::gradcheck::check_second_derivatives(&y, &[&x], &feed).unwrap();
/// assert_eq!(report.elements, 3);
/// ```
///
/// # Errors
/// As [`GradCheck::check_second_order`].
pub fn check_second_derivatives(
    output: &Node,
    wrt: &[&Node],
    feed: &Feed,
) -> Result<GradCheckReport> {
    GradCheck::default().check_second_order(output, wrt, feed)
}

impl GradCheck {
    /// Checks second derivatives: with `L = sum(u * output)` (`u` fixed and
    /// random), builds the gradients `G_k = dL/dwrt_k` as nodes, then checks the
    /// gradient of `S = sum_k sum(v_k * G_k)` (random fixed `v_k`), which is the
    /// Hessian of `L` times `v`, against central differences of `S`.
    ///
    /// It adds nodes to `output`'s graph (the gradient graphs and `S`).
    /// Variables are restored to their values before the check, whatever happens.
    ///
    /// # Errors
    /// [`Error::GradCheck`] naming the node and element where the second
    /// derivatives disagree; an [`Error::Node`] from an op whose gradient cannot
    /// be differentiated; any error of forward or backward.
    pub fn check_second_order(
        &self,
        output: &Node,
        wrt: &[&Node],
        feed: &Feed,
    ) -> Result<GradCheckReport> {
        // Forward runs here too (for the output's shape): ops that assign
        // variables (batch norm's moving statistics) must not leave a trace.
        restoring_variables(output, || self.second_order_inner(output, wrt, feed))
    }

    fn second_order_inner(
        &self,
        output: &Node,
        wrt: &[&Node],
        feed: &Feed,
    ) -> Result<GradCheckReport> {
        let graph = output.graph().clone();
        let out_shape = RunTime::with_seed(self.seed)
            .forward(output, feed)?
            .shape()
            .to_vec();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x005e_c04d);
        let mut random = |shape: &[usize]| {
            Tensor::from_shape_fn(shape.to_vec(), |_| rng.gen_range(-1.0f32..1.0))
        };
        let upstream = graph.constant(random(&out_shape))?;
        let grads = crate::gradients(&[output], wrt, Some(&[&upstream]))?;
        let mut terms = Vec::new();
        for (grad, node) in grads.iter().zip(wrt) {
            let Some(grad) = grad else { continue };
            let v = graph.constant(random(input_value(node, feed)?.shape()))?;
            let product = crate::multiply(grad, &v)?;
            terms.push(crate::reduce_sum(&product, crate::Axes::All, false)?);
        }
        if terms.is_empty() {
            return Ok(GradCheckReport {
                max_abs_error: 0.0,
                elements: 0,
            });
        }
        let refs: Vec<&Node> = terms.iter().collect();
        let s = crate::add_n(&refs)?;
        self.check_inner(&s, wrt, feed).map_err(|e| match e {
            Error::GradCheck(m) => Error::GradCheck(format!(
                "second derivatives of {} (through S = {}, the sum of the gradients \
                 times random directions): {m}",
                output.name(),
                s.name()
            )),
            e => e,
        })
    }
}

/// Runs `f`, then gives every variable of `node`'s graph back the value it had
/// before, whatever `f` returned.
fn restoring_variables<T>(node: &Node, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let graph = node.graph().clone();
    let saved: Vec<(Node, Tensor)> = graph
        .variables(false)
        .into_iter()
        .map(|v| {
            let value = graph.variable_value(&v)?;
            Ok((v, value))
        })
        .collect::<Result<_>>()?;
    let result = f();
    for (v, value) in saved {
        graph.set_variable_value(&v, value)?;
    }
    result
}

/// The current value of a placeholder (from `feed`) or a variable.
fn input_value(node: &Node, feed: &Feed) -> Result<Tensor> {
    let graph = node.graph();
    let kind_ok = matches!(
        graph.borrow().nodes[node.id.index()].kind,
        NodeKind::Placeholder | NodeKind::Variable(_)
    );
    if !kind_ok {
        return Err(Error::WrongKind {
            name: node.name(),
            kind: node.op_type().to_string(),
            expected: "Placeholder or Variable".into(),
        });
    }
    let value = match feed.get(node) {
        Some(v) => v.clone(),
        None if node.op_type() == "Variable" => graph.variable_value(node)?,
        None => {
            return Err(Error::MissingFeed {
                name: node.name(),
                shape: node.shape(),
            })
        }
    };
    Ok(value)
}
