//! Inverted dropout, as TensorFlow's `tf.nn.dropout` in training and the
//! identity in inference.
//!
//! The mask is drawn once per forward. One `u64` is taken from the run time's
//! generator ([`ForwardContext::rng`]) and seeds a ChaCha8 stream; element `k`
//! is kept when word `k` of that stream is at least `rate * 2^32`. Blocks of the
//! array jump to their own position in the stream, so they are drawn in
//! parallel and the mask does not depend on the number of threads.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::graph::Node;
use crate::op::{BackwardContext, ForwardContext, Op};
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

/// The mask of one forward: `true` = kept.
struct Mask(Vec<bool>);

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
        // P(word >= threshold) = 1 - threshold / 2^32 = 1 - rate.
        let threshold = (f64::from(self.rate) * 4_294_967_296.0).round() as u64;
        let scale = self.keep_scale();
        let xs = x.as_standard_layout();
        let xs = xs
            .as_slice()
            .ok_or_else(|| Error::invalid("dropout: array is not contiguous"))?;
        let mut out = vec![0.0f32; xs.len()];
        let mut keep = vec![false; xs.len()];
        let block = |b: usize, out: &mut [f32], keep: &mut [bool], x: &[f32]| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_word_pos((b * BLOCK) as u128);
            for ((o, k), &x) in out.iter_mut().zip(keep.iter_mut()).zip(x) {
                *k = u64::from(rng.next_u32()) >= threshold;
                *o = if *k { x * scale } else { 0.0 };
            }
        };
        if xs.len() < PAR_MIN_ELEMENTS {
            for (b, ((o, k), x)) in out
                .chunks_mut(BLOCK)
                .zip(keep.chunks_mut(BLOCK))
                .zip(xs.chunks(BLOCK))
                .enumerate()
            {
                block(b, o, k, x);
            }
        } else {
            out.par_chunks_mut(BLOCK)
                .zip(keep.par_chunks_mut(BLOCK))
                .zip(xs.par_chunks(BLOCK))
                .enumerate()
                .for_each(|(b, ((o, k), x))| block(b, o, k, x));
        }
        ctx.save(Mask(keep));
        Ok(Tensor::from_shape_vec(x.shape().to_vec(), out)?)
    }

    // Training: dx = g * mask / (1 - rate), the forward's mask; inference: dx = g.
    fn backward(&self, grad: &Tensor, ctx: &BackwardContext) -> Result<Vec<Option<Tensor>>> {
        if !ctx.needs_grad(0) {
            return Ok(vec![None]);
        }
        if !self.is_training {
            return Ok(vec![Some(grad.clone())]);
        }
        let Mask(keep) = ctx.saved()?;
        let gs = grad.as_standard_layout();
        let gs = gs
            .as_slice()
            .ok_or_else(|| Error::invalid("dropout: array is not contiguous"))?;
        if gs.len() != keep.len() {
            return Err(Error::invalid(format!(
                "dropout: upstream gradient has {} elements, the mask {}",
                gs.len(),
                keep.len()
            )));
        }
        let scale = self.keep_scale();
        let mut dx = vec![0.0f32; gs.len()];
        let apply = |dx: &mut [f32], keep: &[bool], g: &[f32]| {
            for ((d, &k), &g) in dx.iter_mut().zip(keep).zip(g) {
                *d = if k { g * scale } else { 0.0 };
            }
        };
        if gs.len() < PAR_MIN_ELEMENTS {
            apply(&mut dx, keep, gs);
        } else {
            dx.par_chunks_mut(BLOCK)
                .zip(keep.par_chunks(BLOCK))
                .zip(gs.par_chunks(BLOCK))
                .for_each(|((d, k), g)| apply(d, k, g));
        }
        Ok(vec![Some(Tensor::from_shape_vec(
            grad.shape().to_vec(),
            dx,
        )?)])
    }
}

/// Inverted dropout: in training (`is_training`), each element of `x` is zeroed
/// with probability `rate` and the kept ones are scaled by `1 / (1 - rate)`;
/// the gradient is masked and scaled the same way. In inference, the identity
/// (forward and backward, as TensorFlow).
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
