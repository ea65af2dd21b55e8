//! Inverted dropout, as TensorFlow's `tf.nn.dropout` in training and the
//! identity in inference.
//!
//! The mask is drawn once per forward. One `u64` is taken from the run time's
//! generator ([`ForwardContext::rng`]) as the seed; element `k` is kept when a
//! 32-bit hash of `k` keyed by the seed (counter-based: `word`) is at least
//! `rate * 2^32`. Any element's word is computed from its index alone, so
//! blocks are drawn in parallel, the mask does not depend on the number of
//! threads, and the gradient ([`DropoutGrad`]) recomputes the mask from the
//! seed its forward node kept instead of keeping the mask. The hash is four 32-bit multiplies, which vectorise (AVX2 where the CPU
//! has it): several times cheaper than the ChaCha8 stream used before.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::op::{ForwardContext, GradientContext, Op};
use crate::ops::build;
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// Arrays with fewer elements than this are processed on the calling thread.
const PAR_MIN_ELEMENTS: usize = 1 << 16;
/// Elements per parallel block.
const BLOCK: usize = 1 << 14;

/// Inverted dropout: in training, each element is zeroed with probability
/// `rate` and the others are scaled by `1 / (1 - rate)`; in inference, the identity.
pub struct Dropout {
    /// Probability of dropping an element, in `[0, 1)`.
    pub rate: f32,
    /// Training (mask drawn) or inference (identity).
    pub is_training: bool,
}

/// What the gradient needs to redraw the mask of one forward: its seed and
/// the number of elements. Always kept (inference passes too): the mask
/// cannot be recomputed without it.
struct MaskSeed {
    seed: u64,
    len: usize,
}

/// The 32-bit word of element `k`: two rounds of the `lowbias32` integer hash
/// (Wellons), keyed by the two halves of the seed. 32-bit multiplies and
/// shifts only, so the loop below vectorises.
#[inline(always)]
fn word(k: u32, s1: u32, s2: u32) -> u32 {
    #[inline(always)]
    fn lowbias32(mut x: u32) -> u32 {
        x ^= x >> 16;
        x = x.wrapping_mul(0x7feb_352d);
        x ^= x >> 15;
        x = x.wrapping_mul(0x846c_a68b);
        x ^ (x >> 16)
    }
    lowbias32(lowbias32(k.wrapping_mul(0x9E37_79B9) ^ s1) ^ s2)
}

/// `dst[i] = src[i] * scale` where element `start + i` is kept (its word is at
/// least `threshold`), 0 where it is dropped.
#[inline(always)]
fn mask_loop(dst: &mut [f32], src: &[f32], start: u64, seed: u64, threshold: u64, scale: f32) {
    let Ok(threshold) = u32::try_from(threshold) else {
        dst.fill(0.0); // rate rounds to 1: nothing is kept
        return;
    };
    // Indices past 2^32 fold their high half into the key; callers never let
    // one call cross a multiple of 2^32 (blocks are aligned, 2^32 / BLOCK whole).
    let s1 = (seed as u32) ^ ((start >> 32) as u32).wrapping_mul(0x85EB_CA6B);
    let s2 = (seed >> 32) as u32;
    let k0 = start as u32;
    for (i, (d, &x)) in dst.iter_mut().zip(src).enumerate() {
        let keep = word(k0.wrapping_add(i as u32), s1, s2) >= threshold;
        *d = if keep { x * scale } else { 0.0 };
    }
}

/// [`mask_loop`] compiled for AVX2 (8 lanes).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn mask_loop_avx2(
    dst: &mut [f32],
    src: &[f32],
    start: u64,
    seed: u64,
    threshold: u64,
    scale: f32,
) {
    mask_loop(dst, src, start, seed, threshold, scale);
}

/// [`mask_loop`] with the widest SIMD the CPU offers (same results on any).
fn apply_mask(dst: &mut [f32], src: &[f32], start: usize, seed: u64, threshold: u64, scale: f32) {
    debug_assert_eq!(dst.len(), src.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available, checked just above.
        unsafe { mask_loop_avx2(dst, src, start as u64, seed, threshold, scale) };
        return;
    }
    mask_loop(dst, src, start as u64, seed, threshold, scale);
}

/// `out = src` masked and scaled as the mask of `seed` says, in parallel
/// blocks for large arrays.
fn masked(src: &[f32], seed: u64, threshold: u64, scale: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; src.len()];
    if src.len() < PAR_MIN_ELEMENTS {
        apply_mask(&mut out, src, 0, seed, threshold, scale);
    } else {
        out.par_chunks_mut(BLOCK)
            .zip(src.par_chunks(BLOCK))
            .enumerate()
            .for_each(|(b, (o, x))| apply_mask(o, x, b * BLOCK, seed, threshold, scale));
    }
    out
}

impl Dropout {
    fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.rate) {
            return Err(Error::invalid(format!(
                "dropout rate must be in [0, 1), got {}",
                self.rate
            )));
        }
        Ok(())
    }

    fn keep_scale(&self) -> f32 {
        1.0 / (1.0 - self.rate)
    }

    /// Elements whose 32-bit word is below this are dropped:
    /// `P(word >= threshold) = 1 - threshold / 2^32 = 1 - rate`.
    fn threshold(&self) -> u64 {
        (f64::from(self.rate) * 4_294_967_296.0).round() as u64
    }
}

impl Op for Dropout {
    fn type_name(&self) -> &'static str {
        "Dropout"
    }

    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        self.validate()?;
        match inputs {
            [x] => Ok((*x).clone()),
            _ => Err(Error::invalid(format!(
                "dropout takes 1 input, got {}",
                inputs.len()
            ))),
        }
    }

    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        self.validate()?;
        let x = match inputs {
            [x] => *x,
            _ => return Err(Error::invalid("dropout takes 1 input")),
        };
        if !self.is_training {
            return Ok(x.clone());
        }
        let seed = ctx.rng().next_u64();
        let xs = x.as_standard_layout();
        let xs = xs
            .as_slice()
            .ok_or_else(|| Error::invalid("dropout: array is not contiguous"))?;
        let out = masked(xs, seed, self.threshold(), self.keep_scale());
        // Not an optional cache: kept even in an inference pass.
        ctx.save(MaskSeed {
            seed,
            len: xs.len(),
        });
        Ok(Tensor::from_shape_vec(x.shape().to_vec(), out)?)
    }

    // Training: dx = dy * mask / (1 - rate) with the forward's mask (DropoutGrad);
    // inference: dx = dy.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        if !ctx.needs_grad(0) {
            return Ok(vec![None]);
        }
        if !self.is_training {
            return Ok(vec![Some(ctx.grad().clone())]);
        }
        let dx = ctx.add_op(DropoutGrad { rate: self.rate }, &[ctx.grad(), ctx.output()])?;
        Ok(vec![Some(dx)])
    }
}

/// The gradient of a training-mode [`Dropout`] node: `dy` masked and scaled
/// by the same mask as the forward's, `dy * mask / (1 - rate)`. Inputs: `dy`
/// and the dropout node, whose kept mask seed is read (the mask is redrawn
/// from it, as the forward drew it).
pub struct DropoutGrad {
    /// The dropout node's rate.
    pub rate: f32,
}

impl Op for DropoutGrad {
    fn type_name(&self) -> &'static str {
        "DropoutGrad"
    }

    fn infer_shape(&self, inputs: &[&TensorShape]) -> Result<TensorShape> {
        self.dropout().validate()?;
        let [dy, y] = inputs else {
            return Err(Error::invalid(format!(
                "DropoutGrad takes 2 inputs (dy, the dropout node), got {}",
                inputs.len()
            )));
        };
        dy.merge(y).ok_or_else(|| Error::ShapeMismatch {
            what: "dropout upstream gradient".into(),
            expected: (*y).clone(),
            got: (*dy).clone(),
        })
    }

    fn forward(&self, inputs: &[&Tensor], ctx: &mut ForwardContext) -> Result<Tensor> {
        let dropout = self.dropout();
        dropout.validate()?;
        let dy = inputs[0];
        let mask: &MaskSeed = ctx.input_saved(1).ok_or_else(|| {
            Error::invalid(
                "DropoutGrad: the dropout node's mask seed is not held (it is kept \
                 within the cycle of the forward that drew it)",
            )
        })?;
        let gs = dy.as_standard_layout();
        let gs = gs
            .as_slice()
            .ok_or_else(|| Error::invalid("dropout: array is not contiguous"))?;
        if gs.len() != mask.len {
            return Err(Error::invalid(format!(
                "dropout: upstream gradient has {} elements, the mask {}",
                gs.len(),
                mask.len
            )));
        }
        // The forward's mask, redrawn from its seed.
        let dx = masked(gs, mask.seed, dropout.threshold(), dropout.keep_scale());
        Ok(Tensor::from_shape_vec(dy.shape().to_vec(), dx)?)
    }

    // Linear in dy: d/d(dy) = the same mask again; the dropout node takes none.
    fn gradient(&self, ctx: &GradientContext) -> Result<Vec<Option<Node>>> {
        let ddy = ctx
            .needs_grad(0)
            .then(|| ctx.add_op(DropoutGrad { rate: self.rate }, &[ctx.grad(), ctx.input(1)]))
            .transpose()?;
        Ok(vec![ddy, None])
    }
}

impl DropoutGrad {
    fn dropout(&self) -> Dropout {
        Dropout {
            rate: self.rate,
            is_training: true,
        }
    }
}

/// Inverted dropout: in training (`is_training`), each element of `x` is zeroed
/// with probability `rate` and the kept ones are scaled by `1 / (1 - rate)`;
/// the gradient is masked and scaled the same way (a [`DropoutGrad`] node,
/// with the forward's mask). In inference, the identity (forward and
/// gradient, as TensorFlow).
///
/// The mask is drawn once per forward from the run time's generator, so it is
/// the same for the same [`RunTime::with_seed`](crate::RunTime::with_seed) seed.
///
/// ```
/// use adgraph as ad;
/// let g = ad::Graph::new();
/// let x = g.placeholder([1000]);
/// let y = ad::dropout(&x, 0.25, true).unwrap();
/// let feed = ad::feed! { x => ad::tensor::full(&[1000], 1.0) }.unwrap();
/// let out = ad::RunTime::with_seed(7).forward(&y, &feed).unwrap().clone();
/// // Every element is 0 or 1 / 0.75.
/// assert!(out.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
/// assert!(ad::dropout(&x, 1.0, true).is_err());
/// ```
///
/// # Errors
/// [`Error::Node`] wrapping [`Error::InvalidArgument`] when `rate` is not in
/// `[0, 1)`; [`Error::GraphMismatch`].
pub fn dropout(x: &Node, rate: f32, is_training: bool) -> Result<Node> {
    build(Dropout { rate, is_training }, &[x])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each element's draw depends on its index alone: masking in blocks
    /// gives the same result as one pass, with or without AVX2.
    #[test]
    fn mask_is_independent_of_blocking() {
        let src: Vec<f32> = (0..1001).map(|i| i as f32 + 1.0).collect();
        let (seed, threshold) = (99, 1u64 << 31);
        let mut whole = vec![0.0; src.len()];
        apply_mask(&mut whole, &src, 0, seed, threshold, 2.0);
        let mut parts = vec![0.0; src.len()];
        let (a, b) = parts.split_at_mut(400);
        apply_mask(a, &src[..400], 0, seed, threshold, 2.0);
        apply_mask(b, &src[400..], 400, seed, threshold, 2.0);
        assert_eq!(whole, parts);
        assert_eq!(masked(&src, seed, threshold, 2.0), whole);
        let mut scalar = vec![0.0; src.len()];
        mask_loop(&mut scalar, &src, 0, seed, threshold, 2.0);
        assert_eq!(scalar, whole);
        // Roughly half kept, each kept element doubled.
        let kept = whole
            .iter()
            .zip(&src)
            .filter(|(w, s)| **w == 2.0 * **s)
            .count();
        assert!((400..600).contains(&kept), "{kept} kept");
        assert!(whole
            .iter()
            .zip(&src)
            .all(|(w, s)| *w == 0.0 || *w == 2.0 * s));
    }

    /// Neighbouring elements' draws are not correlated: pairs agree about
    /// half the time at rate 0.5.
    #[test]
    fn pairs_are_not_correlated() {
        let n = 200_000;
        let src = vec![1.0f32; n];
        let out = masked(&src, 7, 1u64 << 31, 1.0);
        let same = out.chunks_exact(2).filter(|p| p[0] == p[1]).count() as f64;
        let frac = same / (n / 2) as f64;
        assert!((frac - 0.5).abs() < 0.01, "pairs agree {frac}");
    }
}
