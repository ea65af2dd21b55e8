//! Broadcasting kernels: a binary element-wise map with NumPy broadcasting, and
//! its adjoint, reducing a gradient back to the shape of a broadcast input.
//!
//! The common cases of a network (a bias row added to every row, a scalar
//! scale) run as straight loops over contiguous rows; ndarray's general
//! broadcasting iterator, and its `sum_axis` over a leading axis, cost about a
//! nanosecond per element and dominated small models (W1: 160 of 350 us per step).

use ndarray::{Axis, IxDyn, Zip};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::elementwise::{map1, map2, row_major, PARALLEL_MIN_LEN};
use crate::shape::{broadcast_shapes, TensorShape};
use crate::tensor::Tensor;

/// `f(x, y)` element by element, with NumPy broadcasting.
///
/// ```
/// use adgraph::kernels::broadcast::broadcast_map2;
/// let x = adgraph::tensor([[1.0, 2.0], [3.0, 4.0]]);
/// let bias = adgraph::tensor([10.0, 20.0]);
/// let z = broadcast_map2(&x, &bias, |a, b| a + b).unwrap();
/// assert_eq!(z, adgraph::tensor([[11.0, 22.0], [13.0, 24.0]]));
/// ```
///
/// # Errors
/// [`crate::Error::Broadcast`] when the shapes do not broadcast.
pub fn broadcast_map2(
    x: &Tensor,
    y: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync + Send,
) -> Result<Tensor> {
    if x.shape() == y.shape() {
        return map2(x, y, f);
    }
    let out_shape = broadcast_shapes(x.shape(), y.shape())?;
    if y.len() == 1 && out_shape == x.shape() {
        let b = y.iter().next().copied().unwrap_or_default();
        return Ok(map1(x, |a| f(a, b)));
    }
    if x.len() == 1 && out_shape == y.shape() {
        let a = x.iter().next().copied().unwrap_or_default();
        return Ok(map1(y, |b| f(a, b)));
    }
    if out_shape == x.shape() && repeats_as_rows(y.shape(), x.shape()) {
        if let (Some(xs), Some(ys)) = (x.as_slice(), y.as_slice()) {
            let out = map_rows(xs, ys, &f);
            return Ok(Tensor::from_shape_vec(IxDyn(&out_shape), out)?);
        }
    }
    if out_shape == y.shape() && repeats_as_rows(x.shape(), y.shape()) {
        if let (Some(xs), Some(ys)) = (x.as_slice(), y.as_slice()) {
            let out = map_rows(ys, xs, |b, a| f(a, b));
            return Ok(Tensor::from_shape_vec(IxDyn(&out_shape), out)?);
        }
    }
    // Anything else (a column broadcast against a row, a middle axis): ndarray's
    // broadcasting views. Both broadcasts succeed: `out_shape` came from them.
    let (Some(xb), Some(yb)) = (x.broadcast(out_shape.clone()), y.broadcast(out_shape)) else {
        return Err(Error::Broadcast {
            lhs: TensorShape::known(x.shape()),
            rhs: TensorShape::known(y.shape()),
        });
    };
    Ok(Zip::from(&xb).and(&yb).map_collect(|&a, &b| f(a, b)))
}

/// Whether `small`, broadcast to `big`, repeats itself as the rows of `big`:
/// after dropping leading 1s it equals a suffix of `big`'s shape.
fn repeats_as_rows(small: &[usize], big: &[usize]) -> bool {
    let first_real = small.iter().position(|&d| d != 1).unwrap_or(small.len());
    let core = &small[first_real..];
    core.len() <= big.len() && big.ends_with(core) && !core.is_empty()
}

/// `f(big[r*n + j], row[j])` for every row `r` of `big` (`n = row.len()`), in
/// parallel when `big` is large.
fn map_rows(big: &[f32], row: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send) -> Vec<f32> {
    let n = row.len();
    let mut out = vec![0.0f32; big.len()];
    if n == 0 {
        return out; // `big` is empty too: it is made of rows of `n`.
    }
    let one_row = |(o, b): (&mut [f32], &[f32])| {
        for ((o, &b), &r) in o.iter_mut().zip(b).zip(row) {
            *o = f(b, r);
        }
    };
    if big.len() >= PARALLEL_MIN_LEN {
        // Whole rows per task (at least 16k elements) keep the hand-offs few.
        let rows_per_task = (1 << 14) / n + 1;
        out.par_chunks_mut(rows_per_task * n)
            .zip(big.par_chunks(rows_per_task * n))
            .for_each(|(o, b)| o.chunks_mut(n).zip(b.chunks(n)).for_each(&one_row));
    } else {
        out.chunks_mut(n).zip(big.chunks(n)).for_each(one_row);
    }
    out
}

/// Sums `grad` (shaped like a broadcast result) down to `shape`, the shape of an
/// input that was broadcast to it: leading axes are summed away, and axes where
/// `shape` has 1 are summed with the dimension kept.
///
/// Sums run in a fixed order that does not depend on the number of threads.
/// When `shape` does not broadcast to `grad`'s shape, `grad` comes back as it
/// is (the caller's shape check then names the mismatch).
///
/// ```
/// use adgraph::kernels::broadcast::sum_to_shape;
/// let g = ndarray::ArrayD::<f32>::ones(ndarray::IxDyn(&[2, 3, 4]));
/// assert_eq!(sum_to_shape(&g, &[3, 1]).shape(), &[3, 1]);
/// assert_eq!(sum_to_shape(&g, &[3, 1])[[0, 0]], 8.0);
/// assert_eq!(sum_to_shape(&g, &[]).into_raw_vec_and_offset().0, vec![24.0]);
/// ```
pub fn sum_to_shape(grad: &Tensor, shape: &[usize]) -> Tensor {
    if grad.shape() == shape || shape.len() > grad.ndim() {
        return grad.clone();
    }
    let lead = grad.ndim() - shape.len();
    let broadcasts = shape
        .iter()
        .zip(&grad.shape()[lead..])
        .all(|(&s, &g)| s == g || s == 1);
    if !broadcasts {
        return grad.clone();
    }
    let out_len: usize = shape.iter().product();
    if grad.is_empty() {
        return Tensor::zeros(IxDyn(shape));
    }
    let groups = merged_axes(grad.shape(), shape);
    let src = row_major(grad);
    let mut out = vec![0.0f32; out_len];
    match groups.split_first() {
        Some((first, rest)) if first.summed && src.len() >= PARALLEL_MIN_LEN => {
            sum_leading_in_parallel(first.len, rest, &src, &mut out);
        }
        _ => accumulate(&groups, &src, &mut out),
    }
    Tensor::from_shape_vec(IxDyn(shape), out).unwrap_or_else(|_| fallback(grad, shape))
}

/// `x` repeated along the axes where its shape has 1 (and along new leading
/// axes) up to `shape`, times `scale`: the adjoint of [`sum_to_shape`] (a
/// reduction's gradient). `x`'s shape must broadcast to `shape`.
///
/// ```
/// use adgraph::kernels::broadcast::broadcast_to_shape;
/// let x = adgraph::tensor([[1.0], [2.0]]);
/// let y = broadcast_to_shape(&x, &[2, 3], 0.5).unwrap();
/// assert_eq!(y, adgraph::tensor([[0.5, 0.5, 0.5], [1.0, 1.0, 1.0]]));
/// ```
///
/// # Errors
/// [`Error::Broadcast`] when `x`'s shape does not broadcast to `shape`.
pub fn broadcast_to_shape(x: &Tensor, shape: &[usize], scale: f32) -> Result<Tensor> {
    let refused = || Error::Broadcast {
        lhs: TensorShape::known(x.shape()),
        rhs: TensorShape::known(shape),
    };
    if x.ndim() > shape.len() {
        return Err(refused());
    }
    let lead = shape.len() - x.ndim();
    let fits = x
        .shape()
        .iter()
        .zip(&shape[lead..])
        .all(|(&s, &b)| s == b || s == 1);
    if !fits {
        return Err(refused());
    }
    let len: usize = shape.iter().product();
    if len == 0 {
        return Ok(Tensor::zeros(IxDyn(shape)));
    }
    let groups = merged_axes(shape, x.shape());
    let src = row_major(x);
    let mut out = vec![0.0f32; len];
    expand(&groups, &src, &mut out, scale);
    Ok(Tensor::from_shape_vec(IxDyn(shape), out)?)
}

/// Writes `src` (the kept groups only) into `out` (laid out as `groups`),
/// repeating it along the repeated groups, times `scale`.
fn expand(groups: &[Group], src: &[f32], out: &mut [f32], scale: f32) {
    match groups {
        [] => out[0] = src[0] * scale,
        [last] if last.summed => out.fill(src[0] * scale),
        [_] => out.iter_mut().zip(src).for_each(|(o, &s)| *o = s * scale),
        [first, rest @ ..] => {
            let out_block = out.len() / first.len;
            let src_block = if first.summed {
                src.len()
            } else {
                src.len() / first.len
            };
            for (i, o) in out.chunks_exact_mut(out_block).enumerate() {
                let s = if first.summed {
                    src
                } else {
                    &src[i * src_block..(i + 1) * src_block]
                };
                expand(rest, s, o, scale);
            }
        }
    }
}

/// A run of neighbouring axes, merged: `len` elements, all summed (or
/// repeated, for [`broadcast_to_shape`]) or all kept.
#[derive(Clone, Copy)]
struct Group {
    len: usize,
    summed: bool,
}

/// The axes of `big` as runs that are all broadcast from `small` (new leading
/// axes, or 1 in `small`) or all kept, neighbours of a kind merged and axes of
/// size 1 dropped: a reduction to `small`, or a broadcast from it, is then an
/// alternation of contiguous blocks. `small` must broadcast to `big`.
fn merged_axes(big: &[usize], small: &[usize]) -> Vec<Group> {
    let lead = big.len() - small.len();
    let mut groups: Vec<Group> = Vec::new();
    for (axis, &len) in big.iter().enumerate() {
        if len == 1 {
            continue;
        }
        let summed = axis < lead || small[axis - lead] == 1;
        match groups.last_mut() {
            Some(last) if last.summed == summed => last.len *= len,
            _ => groups.push(Group { len, summed }),
        }
    }
    groups
}

/// Adds `src` (laid out as `groups`) into `out` (the kept groups only).
fn accumulate(groups: &[Group], src: &[f32], out: &mut [f32]) {
    match groups {
        [] => out[0] += src[0],
        [last] if last.summed => out[0] += sum(src),
        [_] => out.iter_mut().zip(src).for_each(|(o, &s)| *o += s),
        [first, rest @ ..] => {
            let src_block = src.len() / first.len;
            let out_block = if first.summed {
                out.len()
            } else {
                out.len() / first.len
            };
            for (i, s) in src.chunks_exact(src_block).enumerate() {
                let o = if first.summed {
                    &mut out[..]
                } else {
                    &mut out[i * out_block..(i + 1) * out_block]
                };
                accumulate(rest, s, o);
            }
        }
    }
}

/// [`accumulate`] for a large gradient whose first group is summed (a bias over
/// a batch): fixed blocks of the leading axis are summed in parallel, then the
/// block sums are added in block order, so the result is the same on any
/// number of threads.
fn sum_leading_in_parallel(lead: usize, rest: &[Group], src: &[f32], out: &mut [f32]) {
    let row = src.len() / lead;
    let rows_per_block = (1 << 15) / row + 1;
    let block_groups: Vec<Group> = std::iter::once(Group {
        len: 0,
        summed: true,
    })
    .chain(rest.iter().copied())
    .collect();
    let partials: Vec<Vec<f32>> = src
        .par_chunks(rows_per_block * row)
        .map(|block| {
            let mut groups = block_groups.clone();
            groups[0].len = block.len() / row;
            let mut part = vec![0.0f32; out.len()];
            accumulate(&groups, block, &mut part);
            part
        })
        .collect();
    for part in &partials {
        out.iter_mut().zip(part).for_each(|(o, &p)| *o += p);
    }
}

/// The sum of `xs` over eight interleaved partial sums (so it vectorises).
fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The axis-by-axis reduction, for shapes the fast path cannot lay out.
fn fallback(grad: &Tensor, shape: &[usize]) -> Tensor {
    let lead = grad.ndim() - shape.len();
    let mut out = grad.to_owned();
    for _ in 0..lead {
        out = out.sum_axis(Axis(0));
    }
    for (axis, &d) in shape.iter().enumerate() {
        if d == 1 && out.shape()[axis] != 1 {
            out = out.sum_axis(Axis(axis)).insert_axis(Axis(axis));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic tensor of the given shape with varied entries.
    fn ramp(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_shape_vec(
            IxDyn(shape),
            (0..n)
                .map(|i| ((i * 37) % 101) as f32 * 0.25 - 12.0)
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn sum_to_shape_agrees_with_the_axis_by_axis_reduction() {
        for (from, to) in [
            (vec![300, 50], vec![50]),
            (vec![300, 50], vec![1, 50]),
            (vec![300, 50], vec![300, 1]),
            (vec![4, 5, 6], vec![5, 1]),
            (vec![4, 5, 6], vec![4, 1, 6]),
            (vec![2, 3, 4, 5], vec![3, 1, 5]),
            (vec![2, 3, 4], vec![]),
            (vec![2, 1, 4], vec![1, 4]),
            (vec![64, 32, 32, 16], vec![16]),
            (vec![64, 32, 32, 16], vec![1, 1, 1, 16]),
            (vec![3, 0, 2], vec![2]),
            (vec![100_000], vec![]),
            (vec![70_000, 2], vec![1, 1]),
        ] {
            let g = ramp(&from);
            let fast = sum_to_shape(&g, &to);
            let slow = fallback(&g, &to);
            assert_eq!(fast.shape(), slow.shape(), "{from:?} -> {to:?}");
            for (a, b) in fast.iter().zip(slow.iter()) {
                assert!(
                    (a - b).abs() <= 1e-3 * b.abs().max(1.0),
                    "{from:?} -> {to:?}"
                );
            }
        }
        // A transposed (non-contiguous) gradient.
        let g = ramp(&[6, 4]).reversed_axes();
        assert_eq!(sum_to_shape(&g, &[6]), fallback(&g, &[6]));
    }

    #[test]
    fn broadcast_to_shape_agrees_with_ndarray_and_refuses_misfits() {
        for (from, to) in [
            (vec![32, 1, 1, 1], vec![32, 28, 28, 1]),
            (vec![50], vec![300, 50]),
            (vec![300, 1], vec![300, 50]),
            (vec![1, 5, 1], vec![4, 5, 6]),
            (vec![], vec![3, 2]),
            (vec![2, 3], vec![2, 3]),
            (vec![1], vec![0, 4]),
        ] {
            let x = ramp(&from);
            let got = broadcast_to_shape(&x, &to, 0.5).unwrap();
            let want = x.broadcast(IxDyn(&to)).unwrap().mapv(|v| v * 0.5);
            assert_eq!(got, want, "{from:?} -> {to:?}");
        }
        assert!(broadcast_to_shape(&ramp(&[3]), &[4], 1.0).is_err());
        assert!(broadcast_to_shape(&ramp(&[2, 3]), &[3], 1.0).is_err());
    }

    #[test]
    fn sum_to_shape_returns_incompatible_shapes_unchanged() {
        let g = ramp(&[3, 4]);
        assert_eq!(sum_to_shape(&g, &[5]), g);
        assert_eq!(sum_to_shape(&g, &[1, 3, 4]), g);
    }

    #[test]
    fn broadcast_map2_agrees_with_ndarray_broadcasting() {
        for (xs, ys) in [
            (vec![300, 50], vec![50]),
            (vec![50], vec![300, 50]),
            (vec![4, 5, 6], vec![1, 5, 6]),
            (vec![4, 5, 6], vec![]),
            (vec![], vec![4, 5]),
            (vec![4, 1], vec![1, 5]),
            (vec![4, 5, 6], vec![5, 1]),
            (vec![512, 256], vec![256]),
            (vec![2, 3], vec![2, 3]),
            (vec![5, 0], vec![0]),
            (vec![0], vec![5, 0]),
        ] {
            let (x, y) = (ramp(&xs), ramp(&ys));
            let got = broadcast_map2(&x, &y, |a, b| a * 2.0 - b).unwrap();
            let want = &x * 2.0 - &y;
            assert_eq!(got, want, "{xs:?} with {ys:?}");
        }
        assert!(broadcast_map2(&ramp(&[3]), &ramp(&[4]), |a, b| a + b).is_err());
    }
}
