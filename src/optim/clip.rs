//! Gradient clipping by global norm.

use crate::graph::Node;
use crate::tensor::Tensor;

/// The L2 norm of all gradients taken together.
pub fn global_norm(grads_and_vars: &[(Node, Tensor)]) -> f32 {
    grads_and_vars
        .iter()
        .map(|(_, g)| g.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>())
        .sum::<f64>()
        .sqrt() as f32
}

/// Scales all gradients by `max_norm / max(global_norm, max_norm)`, so their
/// global norm is at most `max_norm` (TensorFlow's `clip_by_global_norm`).
/// Returns the global norm before clipping.
///
/// ```
/// use adgraph::optim::clip_by_global_norm;
/// let g = adgraph::Graph::new();
/// let v = g.variable(&[2], adgraph::init::Zeros, true).unwrap();
/// let mut grads = vec![(v, adgraph::tensor([3.0, 4.0]))];
/// assert_eq!(clip_by_global_norm(&mut grads, 1.0), 5.0);
/// assert!((grads[0].1[0] - 0.6).abs() < 1e-6);
/// ```
pub fn clip_by_global_norm(grads_and_vars: &mut [(Node, Tensor)], max_norm: f32) -> f32 {
    let norm = global_norm(grads_and_vars);
    if norm > max_norm && norm.is_finite() {
        let scale = max_norm / norm;
        for (_, g) in grads_and_vars.iter_mut() {
            g.mapv_inplace(|x| x * scale);
        }
    }
    norm
}
