//! Initializers: how a variable's first value is drawn.
//!
//! An initializer without a seed of its own draws from its graph's generator
//! (see [`Graph::with_seed`](crate::Graph::with_seed)), so a graph built the same
//! way with the same seed gets the same values. One with its own seed
//! (`.with_seed(s)`) draws from a fresh generator seeded with `s` each time, so it
//! gives the same values in any graph, and again on
//! [`initialize_variables`](crate::Graph::initialize_variables).
//!
//! Random initializers: [`TruncatedNormal`], [`RandomNormal`], [`RandomUniform`], and the
//! variance-scaling [`GlorotUniform`], [`GlorotNormal`], [`HeUniform`],
//! [`HeNormal`], whose fans follow TensorFlow ([`compute_fans`]). Invalid
//! parameters are reported as [`Error::InvalidArgument`] when the variable is made.

use ndarray::{ArrayD, IxDyn};
use rand::distributions::{Distribution, Uniform};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::error::{Error, Result};
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

/// A shared initializer is one too (layers keep theirs as `Rc<dyn Initializer>`).
impl<I: Initializer + ?Sized> Initializer for std::rc::Rc<I> {
    fn initialize(&self, shape: &[usize], rng: &mut dyn RngCore) -> Result<Tensor> {
        (**self).initialize(shape, rng)
    }
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

/// TensorFlow's correction for a normal truncated at two standard deviations:
/// the standard deviation of a unit normal truncated to `[-2, 2]`. Dividing the
/// wanted standard deviation by it makes the *truncated* draws have it.
pub const TRUNCATED_STDDEV_CORRECTION: f64 = 0.879_625_661_034_239_8;

/// `(fan_in, fan_out)` of a weight of this shape, by TensorFlow's rule:
/// rank 0: `(1, 1)`; rank 1 `[n]`: `(n, n)`; rank 2 `[in, out]`: `(in, out)`;
/// rank ≥ 3 (convolution kernels `[kh, kw, in, out]`, or `[k, in, out]`, ...):
/// the product of the leading (receptive-field) dims `r` gives `(r * in, r * out)`.
///
/// ```
/// use adgraph::init::compute_fans;
/// assert_eq!(compute_fans(&[784, 100]), (784.0, 100.0));
/// assert_eq!(compute_fans(&[3, 3, 16, 32]), (144.0, 288.0));
/// assert_eq!(compute_fans(&[7]), (7.0, 7.0));
/// assert_eq!(compute_fans(&[]), (1.0, 1.0));
/// ```
pub fn compute_fans(shape: &[usize]) -> (f64, f64) {
    match shape {
        [] => (1.0, 1.0),
        [n] => (*n as f64, *n as f64),
        [fan_in, fan_out] => (*fan_in as f64, *fan_out as f64),
        [receptive @ .., fan_in, fan_out] => {
            let r: f64 = receptive.iter().map(|&d| d as f64).product();
            (r * *fan_in as f64, r * *fan_out as f64)
        }
    }
}

/// The generator to draw from: a fresh one from the initializer's own seed, or the graph's.
fn draw_with<T>(
    seed: Option<u64>,
    rng: &mut dyn RngCore,
    f: impl FnOnce(&mut dyn RngCore) -> T,
) -> T {
    match seed {
        Some(s) => f(&mut ChaCha8Rng::seed_from_u64(s)),
        None => f(rng),
    }
}

fn check_finite(what: &str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} must be finite, got {value}"
        )))
    }
}

/// `shape`'s element count, or an error when it overflows.
fn element_count(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Error::invalid(format!("shape {shape:?} has too many elements")))
}

/// An empty buffer for `n` values, or an error when they cannot be allocated.
fn buffer(n: usize) -> Result<Vec<f32>> {
    let mut data = Vec::new();
    data.try_reserve_exact(n)
        .map_err(|e| Error::invalid(format!("cannot allocate {n} values: {e}")))?;
    Ok(data)
}

/// Truncated normal draws: `mean + stddev * z`, `z` a unit normal redrawn until `|z| <= 2`.
fn truncated_normal(
    shape: &[usize],
    mean: f64,
    stddev: f64,
    rng: &mut dyn RngCore,
) -> Result<Tensor> {
    let n = element_count(shape)?;
    let mut data = buffer(n)?;
    for _ in 0..n {
        // P(|z| > 2) is about 4.6%, so this loop ends after ~1.05 draws on average.
        let z = loop {
            let z: f64 = StandardNormal.sample(rng);
            if z.abs() <= 2.0 {
                break z;
            }
        };
        data.push((mean + stddev * z) as f32);
    }
    Ok(ArrayD::from_shape_vec(IxDyn(shape), data)?)
}

/// Uniform draws in `[low, high)`; `low < high`, both finite, checked by the caller.
fn uniform(shape: &[usize], low: f32, high: f32, rng: &mut dyn RngCore) -> Result<Tensor> {
    let n = element_count(shape)?;
    let valid = low < high && (high - low).is_finite();
    if !valid {
        // Uniform::new would panic on these.
        return Err(Error::invalid(format!(
            "uniform range [{low}, {high}) must be non-empty and finite"
        )));
    }
    let dist = Uniform::new(low, high);
    let mut data = buffer(n)?;
    data.extend((0..n).map(|_| dist.sample(rng)));
    Ok(ArrayD::from_shape_vec(IxDyn(shape), data)?)
}

macro_rules! seed_builder {
    ($t:ident) => {
        impl $t {
            /// Draws from its own generator seeded with `seed` instead of the
            /// graph's: the same values every time, whatever the graph.
            #[must_use]
            pub fn with_seed(mut self, seed: u64) -> Self {
                self.seed = Some(seed);
                self
            }
        }
    };
}

/// Normal draws with `mean` and `stddev`, redrawing any value further than two
/// standard deviations from the mean (TensorFlow's `truncated_normal`). The
/// standard deviation of the result is about `0.88 * stddev`.
///
/// The original framework truncated around 0 rather than the mean; this follows
/// TensorFlow. Errors (at initialisation) when `stddev <= 0` or a parameter is not finite.
///
/// ```
/// use adgraph::init::TruncatedNormal;
/// let g = adgraph::Graph::new();
/// let w = g.variable(&[100, 10], TruncatedNormal::new(0.0, 0.01).with_seed(3), true).unwrap();
/// assert!(g.variable_value(&w).unwrap().iter().all(|x| x.abs() <= 0.02));
/// assert!(g.variable(&[2], TruncatedNormal::new(0.0, -1.0), true).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TruncatedNormal {
    /// Mean of the normal.
    pub mean: f32,
    /// Standard deviation of the normal before truncation; must be positive.
    pub stddev: f32,
    /// Own seed; `None` draws from the graph's generator.
    pub seed: Option<u64>,
}

impl TruncatedNormal {
    /// A truncated normal with this mean and standard deviation, drawing from the graph's generator.
    pub fn new(mean: f32, stddev: f32) -> Self {
        TruncatedNormal {
            mean,
            stddev,
            seed: None,
        }
    }
}

seed_builder!(TruncatedNormal);

impl Initializer for TruncatedNormal {
    fn initialize(&self, shape: &[usize], rng: &mut dyn RngCore) -> Result<Tensor> {
        check_finite("TruncatedNormal mean", f64::from(self.mean))?;
        check_finite("TruncatedNormal stddev", f64::from(self.stddev))?;
        if self.stddev <= 0.0 {
            return Err(Error::invalid(format!(
                "TruncatedNormal stddev must be positive, got {}",
                self.stddev
            )));
        }
        let (mean, stddev) = (f64::from(self.mean), f64::from(self.stddev));
        draw_with(self.seed, rng, |rng| {
            truncated_normal(shape, mean, stddev, rng)
        })
    }
}

/// Uniform draws in `[minval, maxval)`. Errors (at initialisation) unless
/// `minval < maxval`, both finite.
///
/// ```
/// use adgraph::init::RandomUniform;
/// let g = adgraph::Graph::new();
/// let w = g.variable(&[50], RandomUniform::new(-0.1, 0.1), true).unwrap();
/// assert!(g.variable_value(&w).unwrap().iter().all(|&x| (-0.1..0.1).contains(&x)));
/// assert!(g.variable(&[2], RandomUniform::new(1.0, 1.0), true).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomUniform {
    /// Lower bound (included).
    pub minval: f32,
    /// Upper bound (excluded).
    pub maxval: f32,
    /// Own seed; `None` draws from the graph's generator.
    pub seed: Option<u64>,
}

impl RandomUniform {
    /// Uniform in `[minval, maxval)`, drawing from the graph's generator.
    pub fn new(minval: f32, maxval: f32) -> Self {
        RandomUniform {
            minval,
            maxval,
            seed: None,
        }
    }
}

seed_builder!(RandomUniform);

impl Initializer for RandomUniform {
    fn initialize(&self, shape: &[usize], rng: &mut dyn RngCore) -> Result<Tensor> {
        check_finite("RandomUniform minval", f64::from(self.minval))?;
        check_finite("RandomUniform maxval", f64::from(self.maxval))?;
        if self.minval >= self.maxval {
            return Err(Error::invalid(format!(
                "RandomUniform needs minval < maxval, got minval {} and maxval {}",
                self.minval, self.maxval
            )));
        }
        draw_with(self.seed, rng, |rng| {
            uniform(shape, self.minval, self.maxval, rng)
        })
    }
}

/// Plain (untruncated) normal draws with `mean` and `stddev`: TensorFlow's
/// `random_normal_initializer`, torch's `nn.init.normal_` (GPT-style weights
/// `N(0, 0.02)`, embeddings `N(0, 1)`). Errors (at initialisation) when
/// `stddev < 0` or a parameter is not finite.
///
/// ```
/// use adgraph::init::RandomNormal;
/// let g = adgraph::Graph::new();
/// let w = g.variable(&[100, 100], RandomNormal::new(0.0, 0.02).with_seed(1), true).unwrap();
/// let v = g.variable_value(&w).unwrap();
/// let std = (v.mapv(|x| x * x).mean().unwrap()).sqrt();
/// assert!((std - 0.02).abs() < 0.001);
/// assert!(g.variable(&[2], RandomNormal::new(0.0, -1.0), true).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomNormal {
    /// Mean of the normal.
    pub mean: f32,
    /// Standard deviation; must be `>= 0`.
    pub stddev: f32,
    /// Own seed; `None` draws from the graph's generator.
    pub seed: Option<u64>,
}

impl RandomNormal {
    /// A normal with this mean and standard deviation, drawing from the graph's generator.
    pub fn new(mean: f32, stddev: f32) -> Self {
        RandomNormal {
            mean,
            stddev,
            seed: None,
        }
    }
}

seed_builder!(RandomNormal);

impl Initializer for RandomNormal {
    fn initialize(&self, shape: &[usize], rng: &mut dyn RngCore) -> Result<Tensor> {
        check_finite("RandomNormal mean", f64::from(self.mean))?;
        check_finite("RandomNormal stddev", f64::from(self.stddev))?;
        if self.stddev < 0.0 {
            return Err(Error::invalid(format!(
                "RandomNormal stddev must be >= 0, got {}",
                self.stddev
            )));
        }
        let (mean, stddev) = (f64::from(self.mean), f64::from(self.stddev));
        let n = element_count(shape)?;
        let mut data = buffer(n)?;
        draw_with(self.seed, rng, |rng| {
            data.extend((0..n).map(|_| {
                let z: f64 = StandardNormal.sample(rng);
                (mean + stddev * z) as f32
            }));
        });
        Ok(ArrayD::from_shape_vec(IxDyn(shape), data)?)
    }
}

/// The variance-scaling rules behind Glorot and He.
#[derive(Debug, Clone, Copy)]
enum Scaling {
    /// `scale / fan_in`.
    FanIn,
    /// `scale / ((fan_in + fan_out) / 2)`.
    FanAvg,
}

/// Draws with variance `2 / fan` (He: fan = fan_in; Glorot: fan = (fan_in + fan_out) / 2),
/// uniform or truncated normal, as TensorFlow's `VarianceScaling(scale=2 or 1)`.
fn variance_scaling(
    shape: &[usize],
    rng: &mut dyn RngCore,
    seed: Option<u64>,
    scaling: Scaling,
    normal: bool,
) -> Result<Tensor> {
    if element_count(shape)? == 0 {
        // No values to draw; the fans may be 0.
        return Ok(ArrayD::zeros(IxDyn(shape)));
    }
    let (fan_in, fan_out) = compute_fans(shape);
    // Glorot: variance 2 / (fan_in + fan_out); He: variance 2 / fan_in.
    let variance = match scaling {
        Scaling::FanIn => 2.0 / fan_in,
        Scaling::FanAvg => 2.0 / (fan_in + fan_out),
    };
    draw_with(seed, rng, |rng| {
        if normal {
            let stddev = variance.sqrt() / TRUNCATED_STDDEV_CORRECTION;
            truncated_normal(shape, 0.0, stddev, rng)
        } else {
            // Uniform on [-l, l) has variance l^2 / 3.
            let limit = (3.0 * variance).sqrt() as f32;
            uniform(shape, -limit, limit, rng)
        }
    })
}

macro_rules! variance_initializer {
    ($(#[$doc:meta])* $t:ident, $scaling:expr, $normal:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $t {
            /// Own seed; `None` draws from the graph's generator.
            pub seed: Option<u64>,
        }

        impl $t {
            /// The initializer, drawing from the graph's generator.
            pub fn new() -> Self {
                $t { seed: None }
            }
        }

        seed_builder!($t);

        impl Initializer for $t {
            fn initialize(&self, shape: &[usize], rng: &mut dyn RngCore) -> Result<Tensor> {
                variance_scaling(shape, rng, self.seed, $scaling, $normal)
            }
        }
    };
}

variance_initializer!(
    /// Glorot (Xavier) uniform: uniform in `[-l, l)` with `l = sqrt(6 / (fan_in + fan_out))`
    /// (fans by [`compute_fans`]).
    ///
    /// ```
    /// use adgraph::init::GlorotUniform;
    /// let g = adgraph::Graph::new();
    /// let w = g.variable(&[30, 20], GlorotUniform::new(), true).unwrap();
    /// let limit = (6.0f32 / 50.0).sqrt();
    /// assert!(g.variable_value(&w).unwrap().iter().all(|x| x.abs() <= limit));
    /// ```
    GlorotUniform,
    Scaling::FanAvg,
    false
);

variance_initializer!(
    /// Glorot (Xavier) normal: truncated normal (at 2 standard deviations) whose
    /// *truncated* standard deviation is `sqrt(2 / (fan_in + fan_out))`, i.e. a
    /// normal of `sqrt(2 / (fan_in + fan_out)) / 0.8796...` truncated, as TensorFlow's
    /// `glorot_normal`. (The original framework drew an untruncated normal.)
    ///
    /// ```
    /// use adgraph::init::GlorotNormal;
    /// let g = adgraph::Graph::new();
    /// let w = g.variable(&[3, 3, 8, 16], GlorotNormal::new().with_seed(1), true).unwrap();
    /// assert_eq!(g.variable_value(&w).unwrap().shape(), &[3, 3, 8, 16]);
    /// ```
    GlorotNormal,
    Scaling::FanAvg,
    true
);

variance_initializer!(
    /// He (Kaiming) uniform: uniform in `[-l, l)` with `l = sqrt(6 / fan_in)`
    /// (fans by [`compute_fans`]).
    ///
    /// ```
    /// use adgraph::init::HeUniform;
    /// let g = adgraph::Graph::new();
    /// let w = g.variable(&[24, 10], HeUniform::new(), true).unwrap();
    /// assert!(g.variable_value(&w).unwrap().iter().all(|x| x.abs() <= 0.5));
    /// ```
    HeUniform,
    Scaling::FanIn,
    false
);

variance_initializer!(
    /// He (Kaiming) normal: truncated normal (at 2 standard deviations) whose
    /// *truncated* standard deviation is `sqrt(2 / fan_in)`, i.e. a normal of
    /// `sqrt(2 / fan_in) / 0.8796...` truncated, as TensorFlow's `he_normal`.
    /// (The original framework drew an untruncated normal.)
    ///
    /// ```
    /// use adgraph::init::HeNormal;
    /// let g = adgraph::Graph::new();
    /// let w = g.variable(&[3, 3, 8, 16], HeNormal::new(), true).unwrap();
    /// assert_eq!(g.variable_value(&w).unwrap().shape(), &[3, 3, 8, 16]);
    /// ```
    HeNormal,
    Scaling::FanIn,
    true
);
