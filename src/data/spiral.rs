//! The spiral toy data set of the original demo (after the cs231n notes), and a
//! seeded train/test split.
//!
//! Class `k` of `K` has `N` points at radii `linspace(0, 1, N)` and angles
//! `linspace(4k, 4(k+1), N) + noise * z`, `z` standard normal (noise 0.2 by
//! default); point `(r sin t, r cos t)`. Classes are stored one after the
//! other: rows `k*N .. (k+1)*N` are class `k`.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::data::{gather_rows, one_hot};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A spiral data set's parameters; [`Spiral::generate`] makes it.
///
/// ```
/// use adgraph::data::Spiral;
/// let (x, y) = Spiral::new(100, 3).with_seed(7).generate().unwrap();
/// assert_eq!((x.shape(), y.shape()), (&[300, 2][..], &[300, 3][..]));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spiral {
    /// Points per class (`N`).
    pub points_per_class: usize,
    /// Number of classes, i.e. of arms (`K`).
    pub classes: usize,
    /// Standard deviation of the Gaussian noise added to each angle (0.2 in the demo).
    pub noise: f32,
    /// Seed of the noise.
    pub seed: u64,
}

impl Spiral {
    /// `classes` arms of `points_per_class` points, noise 0.2, seed 0.
    pub fn new(points_per_class: usize, classes: usize) -> Self {
        Spiral {
            points_per_class,
            classes,
            noise: 0.2,
            seed: 0,
        }
    }

    /// The same with another noise level.
    pub fn with_noise(self, noise: f32) -> Self {
        Spiral { noise, ..self }
    }

    /// The same with another seed.
    pub fn with_seed(self, seed: u64) -> Self {
        Spiral { seed, ..self }
    }

    /// The points, shape `[N*K, 2]`, and their one-hot labels, shape `[N*K, K]`.
    /// The same parameters always give the same data.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when there are no classes or no points per
    /// class, or the noise is negative or not finite.
    pub fn generate(&self) -> Result<(Tensor, Tensor)> {
        let (n, k) = (self.points_per_class, self.classes);
        if n == 0 || k == 0 {
            return Err(Error::invalid(format!(
                "a spiral needs at least one class and one point per class, got {k} classes of {n} points"
            )));
        }
        if !(self.noise.is_finite() && self.noise >= 0.0) {
            return Err(Error::invalid(format!(
                "spiral noise must be finite and >= 0, got {}",
                self.noise
            )));
        }
        let total = n
            .checked_mul(k)
            .ok_or_else(|| Error::invalid(format!("{k} classes of {n} points overflow")))?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut points = Vec::with_capacity(total * 2);
        let mut labels = Vec::with_capacity(total);
        let step = |i: usize| {
            if n > 1 {
                i as f64 / (n - 1) as f64
            } else {
                0.0
            }
        };
        for class in 0..k {
            let t0 = 4.0 * class as f64;
            for i in 0..n {
                let r = step(i);
                let z: f64 = rng.sample(StandardNormal);
                let t = t0 + 4.0 * step(i) + f64::from(self.noise) * z;
                points.push((r * t.sin()) as f32);
                points.push((r * t.cos()) as f32);
                labels.push(class);
            }
        }
        let x = Tensor::from_shape_vec(ndarray::IxDyn(&[total, 2]), points)?;
        Ok((x, one_hot(&labels, k)?))
    }
}

/// The spiral data set of the demo: `classes` arms of `points_per_class`
/// points, angle noise 0.2, seeded. Returns `(x [N*K, 2], one-hot y [N*K, K])`.
///
/// ```
/// let (x, y) = adgraph::data::spiral(50, 4, 1).unwrap();
/// assert_eq!((x.shape(), y.shape()), (&[200, 2][..], &[200, 4][..]));
/// ```
///
/// # Errors
/// As [`Spiral::generate`].
pub fn spiral(points_per_class: usize, classes: usize, seed: u64) -> Result<(Tensor, Tensor)> {
    Spiral::new(points_per_class, classes)
        .with_seed(seed)
        .generate()
}

/// A data set split in two by [`train_test_split`].
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Training inputs.
    pub x_train: Tensor,
    /// Training targets.
    pub y_train: Tensor,
    /// Test inputs.
    pub x_test: Tensor,
    /// Test targets.
    pub y_test: Tensor,
}

/// Splits `(x, y)` along axis 0 into a shuffled training part and a test part
/// holding `round(n * test_fraction)` examples; the seed fixes the shuffle.
/// Each example lands in exactly one part, rows of `x` staying with their row
/// of `y`.
///
/// ```
/// let (x, y) = adgraph::data::spiral(100, 3, 0).unwrap();
/// let s = adgraph::data::train_test_split(&x, &y, 0.2, 0).unwrap();
/// assert_eq!((s.x_train.shape()[0], s.x_test.shape()[0]), (240, 60));
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] when `test_fraction` is not in `[0, 1]`;
/// [`Error::Rank`] when `x` or `y` is a scalar; [`Error::ShapeMismatch`] when
/// they differ in length along axis 0.
pub fn train_test_split(x: &Tensor, y: &Tensor, test_fraction: f64, seed: u64) -> Result<Split> {
    if !(0.0..=1.0).contains(&test_fraction) {
        return Err(Error::invalid(format!(
            "test_fraction must be in [0, 1], got {test_fraction}"
        )));
    }
    let n = crate::data::batches::check_pair(x, y, "train_test_split")?;
    let n_test = ((n as f64) * test_fraction).round() as usize;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let (test, train) = order.split_at(n_test.min(n));
    Ok(Split {
        x_train: gather_rows(x, train),
        y_train: gather_rows(y, train),
        x_test: gather_rows(x, test),
        y_test: gather_rows(y, test),
    })
}
