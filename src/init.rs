//! Initializers: how a variable's first value is drawn.
//!
//! An initializer without a seed of its own draws from its graph's generator
//! (see [`Graph::with_seed`](crate::Graph::with_seed)), so a graph built the same
//! way with the same seed gets the same values.

use rand::RngCore;

use crate::error::Result;
use crate::tensor::{full, Tensor};

/// Makes a variable's value for a shape.
pub trait Initializer {
    /// A tensor of exactly `shape`. `rng` is the graph's generator; an
    /// initializer with its own seed ignores it.
    ///
    /// # Errors
    /// When the initializer's parameters do not suit `shape`.
    fn initialize(&self, shape: &[usize], rng: &mut dyn RngCore) -> Result<Tensor>;
}

/// All zeros.
#[derive(Debug, Clone, Copy, Default)]
pub struct Zeros;

impl Initializer for Zeros {
    fn initialize(&self, shape: &[usize], _rng: &mut dyn RngCore) -> Result<Tensor> {
        Ok(full(shape, 0.0))
    }
}

/// All ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ones;

impl Initializer for Ones {
    fn initialize(&self, shape: &[usize], _rng: &mut dyn RngCore) -> Result<Tensor> {
        Ok(full(shape, 1.0))
    }
}

/// Every element set to one value.
#[derive(Debug, Clone, Copy)]
pub struct ConstantInit(pub f32);

impl Initializer for ConstantInit {
    fn initialize(&self, shape: &[usize], _rng: &mut dyn RngCore) -> Result<Tensor> {
        Ok(full(shape, self.0))
    }
}

/// A given tensor; its shape must be the variable's.
#[derive(Debug, Clone)]
pub struct FromTensor(pub Tensor);

impl Initializer for FromTensor {
    fn initialize(&self, _shape: &[usize], _rng: &mut dyn RngCore) -> Result<Tensor> {
        // The graph checks that the shape fits the variable.
        Ok(self.0.clone())
    }
}
