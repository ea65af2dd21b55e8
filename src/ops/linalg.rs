//! Linear algebra: matmul (2-D and batched, with NumPy broadcasting of the
//! batch dims, and TensorFlow's `transpose_a` / `transpose_b` flags). Every
//! matrix product goes through [`crate::kernels::gemm`].

use ndarray::{Array3, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::kernels::gemm::{matmul_serial_add, matmul_vec, sgemm};
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::array::{checked_num_elements, expect_inputs};
use crate::ops::broadcast::{SumTo, SumToShapeOf};
use crate::ops::build;
use crate::shape::{broadcast_shapes, TensorShape};
use crate::tensor::Tensor;

/// Multiply-adds of one product of a batch below which the product runs on
/// one thread (the gemm kernel splits larger ones itself, from 4M).
const PARALLEL_PRODUCT_WORK: usize = 1 << 22;
/// Multiply-adds of a whole batch of small products from which the batch is
/// split over threads (below, waking the pool costs more than it saves).
const PARALLEL_BATCH_WORK: usize = 1 << 18;

/// Matrix product over the last two dims: `[..., p, q] x [..., q, r] -> [..., p, r]`,
/// where `transpose_a` (`transpose_b`) swaps the last two dims of the first
/// (second) input before the product, as TensorFlow's `tf.matmul` does. The
/// swap is a strided view, never a copy.
pub struct MatMul {
    /// Swap the last two dims of the first input before the product.
    pub transpose_a: bool,
    /// Swap the last two dims of the second input before the product.
    pub transpose_b: bool,
}

/// The static (or, with concrete shapes, the run-time) shape rule of matmul.
fn matmul_rule(
    x: &TensorShape,
    y: &TensorShape,
    transpose_a: bool,
    transpose_b: bool,
) -> Result<TensorShape> {
    for (name, s) in [("x", x), ("y", y)] {
        if s.rank() < 2 {
            return Err(Error::Rank {
                what: format!("matmul {name} (a matrix or a batch of matrices)"),
                expected: "2 or more".into(),
                got: s.clone(),
            });
        }
    }
    let (xb, xm) = x.dims().split_at(x.rank() - 2);
    let (yb, ym) = y.dims().split_at(y.rank() - 2);
    // The matrix dims each input contributes once its flag is applied.
    let (p, q1) = if transpose_a {
        (xm[1], xm[0])
    } else {
        (xm[0], xm[1])
    };
    let (q2, r) = if transpose_b {
        (ym[1], ym[0])
    } else {
        (ym[0], ym[1])
    };
    if let (Some(q1), Some(q2)) = (q1, q2) {
        if q1 != q2 {
            let (xd, yd) = (
                if transpose_a {
                    "second-to-last dim, the last once transposed"
                } else {
                    "last dim"
                },
                if transpose_b {
                    "last dim, the second-to-last once transposed"
                } else {
                    "second-to-last dim"
                },
            );
            return Err(Error::invalid(format!(
                "matmul: inner dims differ: x has shape {x} (its {xd} is {q1}) but y has \
                 shape {y} (its {yd} is {q2})"
            )));
        }
    }
    let batch = TensorShape::new(xb.to_vec())
        .broadcast(&TensorShape::new(yb.to_vec()))
        .map_err(|_| {
            Error::invalid(format!(
                "matmul: the batch dims of x {x} and y {y} (all but the last two) do not broadcast"
            ))
        })?;
    let mut dims = batch.dims().to_vec();
    dims.extend([p, r]);
    Ok(TensorShape::new(dims))
}

/// The index into a batch of shape `sub` (right-aligned and broadcast to `full`)
/// of each of the `prod(full)` batch positions, in row-major order.
fn batch_indices(full: &[usize], sub: &[usize]) -> Vec<usize> {
    let total: usize = full.iter().product();
    if full == sub {
        return (0..total).collect();
    }
    let offset = full.len() - sub.len();
    (0..total)
        .map(|mut k| {
            // Row-major digits of k in `full`, least significant first.
            let mut index = 0;
            let mut stride = 1;
            for (t, &f) in full.iter().enumerate().rev() {
                let digit = k % f;
                k /= f;
                if t >= offset {
                    let s = sub[t - offset];
                    if s != 1 {
                        index += digit * stride;
                    }
                    stride *= s;
                }
            }
            index
        })
        .collect()
}

/// Views `a` (`[..., m, n]`) as a stack of matrices `[prod(...), m, n]`,
/// copying only when `a` is not in standard layout.
fn as_stack(a: &Tensor) -> Result<ndarray::CowArray<'_, f32, ndarray::Ix3>> {
    let r = a.ndim();
    let (m, n) = (a.shape()[r - 2], a.shape()[r - 1]);
    let b: usize = a.shape()[..r - 2].iter().product();
    Ok(a.to_shape((b, m, n))?)
}

/// Matrix `k` of a stack, transposed (a strided view) when `transpose` is set.
fn matrix<'a>(
    stack: &'a ndarray::CowArray<'_, f32, ndarray::Ix3>,
    k: usize,
    transpose: bool,
) -> ArrayView2<'a, f32> {
    let m = stack.index_axis(Axis(0), k);
    if transpose {
        m.reversed_axes()
    } else {
        m
    }
}

/// Everything forward needs about one product's shapes.
struct Plan {
    out_shape: Vec<usize>,
    /// For each output batch position, the batch index into x and into y.
    xi: Vec<usize>,
    yi: Vec<usize>,
}

impl MatMul {
    fn plan(&self, x: &Tensor, y: &Tensor) -> Result<Plan> {
        let out = matmul_rule(
            &TensorShape::known(x.shape()),
            &TensorShape::known(y.shape()),
            self.transpose_a,
            self.transpose_b,
        )?;
        let out_shape = out
            .to_vec()
            .ok_or_else(|| Error::invalid("internal: matmul shape rule left a dim unknown"))?;
        checked_num_elements(&out_shape)?;
        let (xb, yb) = (&x.shape()[..x.ndim() - 2], &y.shape()[..y.ndim() - 2]);
        let batch = broadcast_shapes(xb, yb)?;
        Ok(Plan {
            xi: batch_indices(&batch, xb),
            yi: batch_indices(&batch, yb),
            out_shape,
        })
    }
}

impl Op for MatMul {
    fn type_name(&self) -> &'static str {
        "MatMul"
    }
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        expect_inputs(inputs, 2, "MatMul")?;
        matmul_rule(inputs[0], inputs[1], self.transpose_a, self.transpose_b)
    }
    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        expect_inputs(inputs, 2, "MatMul")?;
        let (x, y) = (inputs[0], inputs[1]);
        let plan = self.plan(x, y)?;
        let (x3, y3) = (as_stack(x)?, as_stack(y)?);
        let (ta, tb) = (self.transpose_a, self.transpose_b);
        if plan.xi.len() == 1 {
            // One product (every 2-D matmul): written once, no zero fill first.
            let c = matmul_vec(matrix(&x3, 0, ta), matrix(&y3, 0, tb));
            return Ok(Tensor::from_shape_vec(plan.out_shape, c)?);
        }
        let r = plan.out_shape.len();
        let (p, n) = (plan.out_shape[r - 2], plan.out_shape[r - 1]);
        let inner = if ta { x3.shape()[1] } else { x3.shape()[2] };
        let mut out = Array3::<f32>::zeros((plan.xi.len(), p, n));
        let product = |k: usize, mut c: ArrayViewMut2<f32>| {
            let a = matrix(&x3, plan.xi[k], ta);
            let b = matrix(&y3, plan.yi[k], tb);
            sgemm(1.0, a, b, 0.0, &mut c);
        };
        let each = p.saturating_mul(n).saturating_mul(inner);
        if each < PARALLEL_PRODUCT_WORK && each.saturating_mul(plan.xi.len()) >= PARALLEL_BATCH_WORK
        {
            // Many small products (attention's [B·heads, T, T] scores):
            // each on one thread, the batch split over rayon's pool. Every
            // product is computed whole on one thread as in the loop below,
            // so the result is the same for any number of threads.
            out.outer_iter_mut()
                .into_par_iter()
                .enumerate()
                .for_each(|(k, c)| product(k, c));
        } else {
            for (k, c) in out.outer_iter_mut().enumerate() {
                product(k, c);
            }
        }
        Ok(out.into_shape_with_order(plan.out_shape)?)
    }
    // TensorFlow's _BatchMatMulV2 gradient, with C = op(A) · op(B):
    //   no flags:  dA = g · Bᵀ       dB = Aᵀ · g
    //   tb:        dA = g · B        dB = gᵀ · A
    //   ta:        dA = B · gᵀ       dB = A · g
    //   ta, tb:    dA = Bᵀ · gᵀ      dB = gᵀ · Aᵀ
    // each a MatMul with flags (transposed views, no copies), then summed over
    // the batch dims where A (or B) was broadcast.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let (a, b, g) = (ctx.input(0), ctx.input(1), ctx.grad());
        let da = if ctx.needs_grad(0) {
            let da = match (self.transpose_a, self.transpose_b) {
                (false, false) => matmul_transposed(g, b, false, true)?,
                (false, true) => matmul_transposed(g, b, false, false)?,
                (true, false) => matmul_transposed(b, g, false, true)?,
                (true, true) => matmul_transposed(b, g, true, true)?,
            };
            Some(sum_batch_to(&da, a, b)?)
        } else {
            None
        };
        let db = if ctx.needs_grad(1) {
            let db = match (self.transpose_a, self.transpose_b) {
                (false, false) => matmul_transposed(a, g, true, false)?,
                (false, true) => matmul_transposed(g, a, true, false)?,
                (true, false) => matmul_transposed(a, g, false, false)?,
                (true, true) => matmul_transposed(g, a, true, true)?,
            };
            Some(sum_batch_to(&db, b, a)?)
        } else {
            None
        };
        Ok(vec![da, db])
    }
}

/// `grad` (the gradient of a product, with the broadcast batch dims of the
/// output and the matrix dims of `like`) summed back over the batch dims
/// where `like` was broadcast against `other`: nothing when the static shapes
/// prove there was no broadcast, fixed axes when they tell which, and the
/// run-time shape of `like` otherwise. Only batch dims are looked at: the
/// matrix dims of `grad` are `like`'s by construction.
fn sum_batch_to(grad: &Node, like: &Node, other: &Node) -> Result<Node> {
    let (o, k, s) = (grad.shape(), like.shape(), other.shape());
    let (out_batch, k_batch, s_batch) = (o.rank() - 2, k.rank() - 2, s.rank() - 2);
    let leading = out_batch - k_batch;
    let mut axes = Vec::new();
    for a in 0..k_batch {
        let t = leading + a; // the output batch axis
                             // `other`'s batch dim aligned with it, if it has one.
        let s_dim = (t + s_batch).checked_sub(out_batch).map(|i| s.dims()[i]);
        let other_trivial = matches!(s_dim, None | Some(Some(1)));
        match k.dims()[a] {
            Some(1) => {
                if !other_trivial {
                    axes.push(a);
                }
            }
            Some(_) => {}
            None => {
                if !other_trivial {
                    // Broadcast only if this dim turns out to be 1: read it at run time.
                    return build(SumToShapeOf, &[grad, like]);
                }
            }
        }
    }
    if leading == 0 && axes.is_empty() {
        return Ok(grad.clone());
    }
    build(
        SumTo {
            leading,
            axes,
            shape: k,
        },
        &[grad],
    )
}

/// The matrix product of `x` and `y` over their last two dims:
/// `[p, q] x [q, r] -> [p, r]`, and for batches `[..., p, q] x [..., q, r] ->
/// [..., p, r]`, where the batch dims (all but the last two) broadcast as in
/// NumPy (`[b, p, q] x [q, r]` multiplies every matrix of the batch by `y`).
/// Its gradients are matmuls too ([`matmul_transposed`]), so it can be
/// differentiated to any order.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder(ad::shape![None, 784]);
/// let w = g.placeholder([784, 10]);
/// assert_eq!(ad::matmul(&x, &w).unwrap().shape(), ad::shape![None, 10]);
/// let a = g.placeholder([8, 2, 3]);
/// let b = g.placeholder([8, 3, 5]);
/// assert_eq!(ad::matmul(&a, &b).unwrap().shape(), ad::shape![8, 2, 5]);
/// assert!(ad::matmul(&x, &b).is_err());
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::Rank`] when an input has rank below 2, or
/// [`Error::InvalidArgument`] (naming both shapes) when the inner dims differ or
/// the batch dims do not broadcast, at build time when the dims are known,
/// otherwise in forward.
pub fn matmul(x: &Node, y: &Node) -> Result<Node> {
    matmul_transposed(x, y, false, false)
}

/// The matrix product of `x` and `y` with the last two dims of `x` swapped
/// first if `transpose_a`, and those of `y` if `transpose_b` (TensorFlow's
/// `tf.matmul(x, y, transpose_a, transpose_b)`); batch dims broadcast as in
/// [`matmul`]. The swap costs nothing: the product reads a transposed view.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([3, 2]);
/// let y = g.placeholder([4, 3]);
/// let z = ad::matmul_transposed(&x, &y, true, true).unwrap(); // xᵀ · yᵀ
/// assert_eq!(z.shape(), ad::shape![2, 4]);
/// let feed = ad::feed! {
///     x => [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]],
///     y => [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [0.0, 0.0, 1.0]],
/// }.unwrap();
/// let value = ad::RunTime::new().forward(&z, &feed).unwrap().clone();
/// assert_eq!(value, ad::tensor([[1.0, 4.0, 7.0, 0.0], [2.0, 5.0, 8.0, 0.0]]));
/// assert!(ad::matmul_transposed(&x, &y, false, false).is_err());
/// ```
///
/// # Errors
/// As [`matmul`], for the shapes after the swaps.
pub fn matmul_transposed(x: &Node, y: &Node, transpose_a: bool, transpose_b: bool) -> Result<Node> {
    build(
        MatMul {
            transpose_a,
            transpose_b,
        },
        &[x, y],
    )
}

// ---------------------------------------------------------------------------
// sums of products
// ---------------------------------------------------------------------------

/// `Σ_i op(a_i) · op(b_i)` over 2-D products of one shape, `op` each term's
/// own `transpose_a` / `transpose_b`: inputs `a_0, b_0, a_1, b_1, ...`.
///
/// What [`add_n`](crate::add_n) makes of several [`MatMul`] terms: the
/// gradient of a weight used by many products, such as an LSTM's recurrent
/// kernel (`Σ_t h_{t-1}ᵀ · dz_t`, one term per step). Summed as separate
/// nodes, each small product is split over the threads and each adds a
/// full-size temporary; here the terms are cut into fixed groups (by count,
/// never by the number of threads, so the bits do not depend on it), each
/// group accumulated on one thread into its own buffer, the groups side by
/// side, then added in order.
pub struct MatMulSum {
    /// `(transpose_a, transpose_b)` of each term.
    pub flags: Vec<(bool, bool)>,
}

/// Groups of terms a [`MatMulSum`] accumulates side by side (at most).
const SUM_GROUPS: usize = 4;

impl MatMulSum {
    fn check(&self, n: usize) -> Result<()> {
        if self.flags.is_empty() || n != 2 * self.flags.len() {
            return Err(Error::invalid(format!(
                "MatMulSum of {} terms takes {} inputs (a_i, b_i), got {n}",
                self.flags.len(),
                2 * self.flags.len()
            )));
        }
        Ok(())
    }
}

impl Op for MatMulSum {
    fn type_name(&self) -> &'static str {
        "MatMulSum"
    }

    // Each term: [p, q] x [q, r] -> [p, r] (after its flags); all alike.
    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        self.check(inputs.len())?;
        let mut out: Option<TensorShape> = None;
        for (k, &(ta, tb)) in self.flags.iter().enumerate() {
            let (a, b) = (inputs[2 * k], inputs[2 * k + 1]);
            if a.rank() != 2 || b.rank() != 2 {
                return Err(Error::invalid(format!(
                    "MatMulSum term {k}: the operands {a} and {b} are not both matrices"
                )));
            }
            let s = matmul_rule(a, b, ta, tb)?;
            out = Some(match out {
                None => s,
                Some(o) => o.merge(&s).ok_or_else(|| Error::ShapeMismatch {
                    what: format!("MatMulSum term {k} (the terms' products must have one shape)"),
                    expected: o.clone(),
                    got: s.clone(),
                })?,
            });
        }
        out.ok_or_else(|| Error::invalid("MatMulSum of no terms"))
    }

    fn forward(&self, inputs: &[&Tensor], _ctx: &mut ForwardContext) -> Result<Tensor> {
        self.check(inputs.len())?;
        let known: Vec<TensorShape> = inputs
            .iter()
            .map(|t| TensorShape::known(t.shape()))
            .collect();
        let refs: Vec<&TensorShape> = known.iter().collect();
        let shape = self.infer_shape(&refs)?;
        let (p, r) = match (shape.dim(0), shape.dim(1)) {
            (Some(p), Some(r)) => (p, r),
            _ => {
                return Err(Error::invalid(
                    "MatMulSum: unknown result shape at run time",
                ))
            }
        };
        let views = inputs
            .iter()
            .map(|t| t.view().into_dimensionality::<ndarray::Ix2>())
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let term = |k: usize| {
            let (ta, tb) = self.flags[k];
            let a = if ta {
                views[2 * k].t()
            } else {
                views[2 * k].view()
            };
            let b = if tb {
                views[2 * k + 1].t()
            } else {
                views[2 * k + 1].view()
            };
            (a, b)
        };
        let n = self.flags.len();
        let per_group = n.div_ceil(SUM_GROUPS.min(n));
        let groups: Vec<Vec<f32>> = (0..n.div_ceil(per_group))
            .into_par_iter()
            .map(|g| {
                let mut acc = vec![0.0f32; p * r];
                for k in g * per_group..((g + 1) * per_group).min(n) {
                    let (a, b) = term(k);
                    matmul_serial_add(a, b, &mut acc);
                }
                acc
            })
            .collect();
        let mut groups = groups.into_iter();
        let mut sum = groups.next().unwrap_or_else(|| vec![0.0; p * r]);
        for g in groups {
            sum.iter_mut().zip(&g).for_each(|(s, v)| *s += v);
        }
        Ok(Tensor::from_shape_vec(ndarray::IxDyn(&[p, r]), sum)?)
    }

    // d/da_i and d/db_i are those of the i-th product alone: the same sum
    // written with MatMul and AddN nodes, differentiated.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        ctx.gradient_of_composition(|inputs| {
            let terms = self
                .flags
                .iter()
                .enumerate()
                .map(|(k, &(ta, tb))| matmul_transposed(&inputs[2 * k], &inputs[2 * k + 1], ta, tb))
                .collect::<Result<Vec<Node>>>()?;
            let refs: Vec<&Node> = terms.iter().collect();
            build(crate::ops::arithmetic::AddN, &refs)
        })
    }
}

/// The 2-D [`MatMul`] node `n` as `(transpose_a, transpose_b, a, b)`, if it is
/// one built for a gradient (a product of the user's own graph may have other
/// uses, which would then compute it twice).
fn matrix_product(n: &Node) -> Option<(bool, bool, Node, Node)> {
    if !n.is_gradient() {
        return None;
    }
    let graph = n.graph().clone();
    let flags = {
        let inner = graph.borrow();
        let crate::graph::NodeKind::Op(op) = &inner.nodes[n.id().index()].kind else {
            return None;
        };
        let any: &dyn std::any::Any = &**op;
        let m = any.downcast_ref::<MatMul>()?;
        (m.transpose_a, m.transpose_b)
    };
    match n.inputs().as_slice() {
        [a, b] if a.shape().rank() == 2 && b.shape().rank() == 2 => {
            Some((flags.0, flags.1, a.clone(), b.clone()))
        }
        _ => None,
    }
}

/// The terms of a sum with its 2-D [`MatMul`] gradient terms of one static
/// shape joined into one [`MatMulSum`] each (in the place of the first), or `None`
/// when no two such terms share a shape.
pub(crate) fn join_matmul_terms(xs: &[Node]) -> Result<Option<Vec<Node>>> {
    let products: Vec<Option<(bool, bool, Node, Node)>> = xs.iter().map(matrix_product).collect();
    // For each term: the index of the first product term of its shape.
    let mut leader: Vec<Option<usize>> = vec![None; xs.len()];
    let mut joined = false;
    for i in 0..xs.len() {
        if products[i].is_none() {
            continue;
        }
        let first = (0..i).find(|&j| products[j].is_some() && xs[j].shape() == xs[i].shape());
        leader[i] = Some(first.unwrap_or(i));
        joined |= first.is_some();
    }
    if !joined {
        return Ok(None);
    }
    let mut terms = Vec::with_capacity(xs.len());
    for i in 0..xs.len() {
        match leader[i] {
            None => terms.push(xs[i].clone()),
            Some(l) if l == i => {
                let members: Vec<usize> = (i..xs.len()).filter(|&k| leader[k] == Some(i)).collect();
                if members.len() == 1 {
                    terms.push(xs[i].clone());
                    continue;
                }
                let mut flags = Vec::with_capacity(members.len());
                let mut args = Vec::with_capacity(2 * members.len());
                for &k in &members {
                    if let Some((ta, tb, a, b)) = &products[k] {
                        flags.push((*ta, *tb));
                        args.push(a.clone());
                        args.push(b.clone());
                    }
                }
                let refs: Vec<&Node> = args.iter().collect();
                terms.push(build(MatMulSum { flags }, &refs)?);
            }
            Some(_) => {}
        }
    }
    Ok(Some(terms))
}
