//! Axis permutations (transposes) into a new row-major array.
//!
//! ndarray's `permuted_axes(..).as_standard_layout()` walks the output one
//! element at a time through a strided view: for attention's head split
//! (`[B, T, 3, heads, dh] -> [3, B, heads, T, dh]`) that is ~15 ns an element.
//! When the permutation keeps some trailing axes in place (every transpose
//! that moves heads or time but not the features), each output row is a
//! contiguous run of the input: [`permute`] copies whole runs instead, and
//! splits the output's leading axis over rayon's pool for large arrays. The
//! result is exact (a copy), whatever the number of threads.

use rayon::prelude::*;

/// Arrays with fewer elements than this are copied on the calling thread.
const PAR_MIN_ELEMENTS: usize = 1 << 16;

/// `src` (row-major, of `shape`) with its axes permuted (output axis `k` is
/// input axis `perm[k]`), row-major; `None` when no trailing axis stays in
/// place (the caller then uses a general strided copy). `perm` must be a
/// permutation of `0..shape.len()` and `src` hold `shape`'s element count.
///
/// ```
/// use adgraph::kernels::permute::permute;
/// let src: Vec<f32> = (0..12).map(|v| v as f32).collect();
/// // [2, 3, 2] -> [3, 2, 2]: swap the first two axes, keep the last.
/// let out = permute(&src, &[2, 3, 2], &[1, 0, 2]).unwrap();
/// assert_eq!(out, [0., 1., 6., 7., 2., 3., 8., 9., 4., 5., 10., 11.]);
/// assert!(permute(&src, &[2, 3, 2], &[0, 2, 1]).is_none());
/// ```
pub fn permute(src: &[f32], shape: &[usize], perm: &[usize]) -> Option<Vec<f32>> {
    let rank = shape.len();
    // The trailing axes that stay in place form one contiguous run.
    let kept = (0..rank).rev().take_while(|&a| perm[a] == a).count();
    if kept == 0 || kept == rank {
        return if kept == rank {
            Some(src.to_vec())
        } else {
            None
        };
    }
    let run: usize = shape[rank - kept..].iter().product();
    let outer = rank - kept;
    // Row-major strides of the input, in runs.
    let mut in_strides = vec![0usize; outer];
    let mut s = 1;
    for a in (0..outer).rev() {
        in_strides[a] = s;
        s *= shape[a];
    }
    // For each outer output axis: its size and the input stride it walks.
    let dims: Vec<usize> = perm[..outer].iter().map(|&p| shape[p]).collect();
    let strides: Vec<usize> = perm[..outer].iter().map(|&p| in_strides[p]).collect();
    let total = src.len();
    let mut out = vec![0.0f32; total];
    if total == 0 {
        return Some(out);
    }
    // Output rows of the first outer axis are independent blocks.
    let block = total / dims[0].max(1);
    let copy_block = |i0: usize, dst: &mut [f32]| {
        let mut index = vec![0usize; outer];
        index[0] = i0;
        let mut offset = i0 * strides[0];
        for chunk in dst.chunks_exact_mut(run) {
            let start = offset * run;
            chunk.copy_from_slice(&src[start..start + run]);
            // Advance the odometer over axes 1..outer (last fastest).
            for a in (1..outer).rev() {
                index[a] += 1;
                offset += strides[a];
                if index[a] < dims[a] {
                    break;
                }
                offset -= strides[a] * dims[a];
                index[a] = 0;
            }
        }
    };
    if total >= PAR_MIN_ELEMENTS && dims[0] > 1 {
        out.par_chunks_mut(block)
            .enumerate()
            .for_each(|(i0, dst)| copy_block(i0, dst));
    } else {
        for (i0, dst) in out.chunks_mut(block).enumerate() {
            copy_block(i0, dst);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    /// Every permutation of a 4-D array that keeps a trailing axis agrees
    /// with ndarray's strided copy.
    #[test]
    fn agrees_with_ndarray() {
        let shape = [3usize, 4, 2, 5];
        let src: Vec<f32> = (0..120).map(|v| v as f32).collect();
        let a = ArrayD::from_shape_vec(IxDyn(&shape), src.clone()).unwrap();
        let perms: [[usize; 4]; 5] = [
            [1, 0, 2, 3],
            [2, 1, 0, 3],
            [1, 2, 0, 3],
            [0, 2, 1, 3],
            [2, 0, 1, 3],
        ];
        for perm in perms {
            let expected: Vec<f32> = a
                .view()
                .permuted_axes(perm.to_vec())
                .as_standard_layout()
                .iter()
                .copied()
                .collect();
            assert_eq!(permute(&src, &shape, &perm).unwrap(), expected, "{perm:?}");
        }
        // Two trailing axes kept.
        let expected: Vec<f32> = a
            .view()
            .permuted_axes(vec![1, 0, 2, 3])
            .as_standard_layout()
            .iter()
            .copied()
            .collect();
        assert_eq!(permute(&src, &shape, &[1, 0, 2, 3]).unwrap(), expected);
        assert!(permute(&src, &shape, &[0, 1, 3, 2]).is_none());
        assert_eq!(permute(&src, &shape, &[0, 1, 2, 3]).unwrap(), src);
    }

    /// A large array (split over threads) agrees too.
    #[test]
    fn large_arrays_agree() {
        let shape = [32usize, 16, 3, 4, 16];
        let n: usize = shape.iter().product();
        let src: Vec<f32> = (0..n).map(|v| v as f32).collect();
        let a = ArrayD::from_shape_vec(IxDyn(&shape), src.clone()).unwrap();
        let perm = [2, 0, 3, 1, 4];
        let expected: Vec<f32> = a
            .view()
            .permuted_axes(perm.to_vec())
            .as_standard_layout()
            .iter()
            .copied()
            .collect();
        assert_eq!(permute(&src, &shape, &perm).unwrap(), expected);
    }
}
