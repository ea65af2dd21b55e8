//! Data sets and mini-batches.
//!
//! - [`idx`]: MNIST-style IDX files ([`read_idx_images`], [`read_idx_labels`],
//!   [`read_idx`], [`read_idx_bytes`] from memory, [`write_idx`]); [`Mnist`]
//!   loads the four standard files of a folder, [`Mnist::embedded`] the
//!   Fashion-MNIST slice shipped in [`default_data_dir`].
//! - [`spiral`](mod@spiral): the spiral toy data set of the original demo, and
//!   [`train_test_split`].
//! - [`batches`]: [`Batches`], a seedable, resumable shuffling mini-batch iterator.
//! - [`words`](mod@words): the English word list of Debian's `wamerican` (embedded),
//!   split, tokenised and cut into windows for character-level language models.
//! - [`one_hot`] and [`take_rows`].
//!
//! ```
//! use adgraph::data::{one_hot, Batches, Mnist};
//!
//! let data = Mnist::embedded().unwrap();
//! let x = data.train_images.flat();                  // [10000, 784]
//! let y = one_hot(&data.train_labels, 10).unwrap();  // [10000, 10]
//! let mut batches = Batches::new(x, y, 128, 42).unwrap();
//! let (xb, yb) = batches.next().unwrap();
//! assert_eq!((xb.shape(), yb.shape()), (&[128, 784][..], &[128, 10][..]));
//! ```

use ndarray::{Axis, IxDyn};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

pub mod batches;
pub mod idx;
pub mod mnist;
pub mod spiral;
pub mod words;

pub use batches::{Batches, Epoch, Position};
pub use idx::{
    read_idx, read_idx_bytes, read_idx_images, read_idx_labels, write_idx, IdxData, ImageSet,
    MAX_IDX_ELEMENTS,
};
pub use mnist::{default_data_dir, Mnist, FASHION_MNIST_CLASSES};
pub use spiral::{spiral, train_test_split, Spiral, Split};

/// One-hot encodes class labels: shape `[labels.len(), classes]`, row `i`
/// all zeros but a one at column `labels[i]`.
///
/// ```
/// let y = adgraph::data::one_hot(&[2u8, 0], 3).unwrap();
/// assert_eq!(y, adgraph::tensor([[0., 0., 1.], [1., 0., 0.]]));
/// assert!(adgraph::data::one_hot(&[3u8], 3).is_err());
/// ```
///
/// # Errors
/// [`Error::OutOfBounds`] when a label is `classes` or more.
pub fn one_hot<L: Copy + Into<usize>>(labels: &[L], classes: usize) -> Result<Tensor> {
    let mut out = Tensor::zeros(IxDyn(&[labels.len(), classes]));
    for (i, (mut row, &label)) in out.outer_iter_mut().zip(labels).enumerate() {
        let label: usize = label.into();
        match row.get_mut(label) {
            Some(v) if label < classes => *v = 1.0,
            _ => {
                return Err(Error::OutOfBounds(format!(
                    "label {label} at index {i} is not below the number of classes, {classes}"
                )))
            }
        }
    }
    Ok(out)
}

/// The rows `indices` of `x` along axis 0, in that order (repeats allowed):
/// shape `[indices.len(), x.shape()[1..]]`. Copies whole contiguous rows.
///
/// ```
/// let x = adgraph::tensor([[0., 1.], [2., 3.], [4., 5.]]);
/// let y = adgraph::data::take_rows(&x, &[2, 0]).unwrap();
/// assert_eq!(y, adgraph::tensor([[4., 5.], [0., 1.]]));
/// ```
///
/// # Errors
/// [`Error::Rank`] when `x` is a scalar; [`Error::OutOfBounds`] when an index
/// is not below `x.shape()[0]`.
pub fn take_rows(x: &Tensor, indices: &[usize]) -> Result<Tensor> {
    let n = match x.shape().first() {
        Some(&n) => n,
        None => {
            return Err(Error::Rank {
                what: "take_rows input".into(),
                expected: "1 or more".into(),
                got: crate::shape::TensorShape::from(x.shape()),
            })
        }
    };
    if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
        return Err(Error::OutOfBounds(format!(
            "row index {bad} for a tensor with {n} rows"
        )));
    }
    Ok(gather_rows(x, indices))
}

/// `take_rows` without the checks: `x` has rank >= 1 and every index is below
/// `x.shape()[0]`. Standard-layout inputs are copied row slice by row slice.
pub(crate) fn gather_rows(x: &Tensor, indices: &[usize]) -> Tensor {
    let mut shape = x.shape().to_vec();
    if let Some(d0) = shape.first_mut() {
        *d0 = indices.len();
    }
    let row: usize = shape.iter().skip(1).product();
    let mut out = Tensor::zeros(IxDyn(&shape));
    match (x.as_slice(), out.as_slice_mut()) {
        (Some(src), Some(dst)) if row > 0 => {
            for (d, &i) in dst.chunks_exact_mut(row).zip(indices) {
                d.copy_from_slice(&src[i * row..(i + 1) * row]);
            }
        }
        (Some(_), Some(_)) => {}
        _ => {
            for (mut d, &i) in out.outer_iter_mut().zip(indices) {
                d.assign(&x.index_axis(Axis(0), i));
            }
        }
    }
    out
}
