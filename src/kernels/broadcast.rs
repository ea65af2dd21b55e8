//! Broadcasting helpers: reducing a gradient back to the shape of a broadcast input.

use ndarray::Axis;

use crate::tensor::Tensor;

/// Sums `grad` (shaped like a broadcast result) down to `shape`, the shape of an
/// input that was broadcast to it: leading axes are summed away, and axes where
/// `shape` has 1 are summed with the dimension kept.
///
/// ```
/// use adgraph::kernels::broadcast::sum_to_shape;
/// let g = ndarray::ArrayD::<f32>::ones(ndarray::IxDyn(&[2, 3, 4]));
/// assert_eq!(sum_to_shape(&g, &[3, 1]).shape(), &[3, 1]);
/// assert_eq!(sum_to_shape(&g, &[3, 1])[[0, 0]], 8.0);
/// assert_eq!(sum_to_shape(&g, &[]).into_raw_vec_and_offset().0, vec![24.0]);
/// ```
pub fn sum_to_shape(grad: &Tensor, shape: &[usize]) -> Tensor {
    if grad.shape() == shape {
        return grad.clone();
    }
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
