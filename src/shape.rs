//! Static shapes: [`TensorShape`], with unknown dimensions and NumPy broadcasting.

use std::fmt;

use crate::error::{Error, Result};

/// The static shape of a node: its rank is known, each dimension may be unknown (`None`).
///
/// An unknown dimension matches any size at run time, like `None` in
/// `tf.placeholder(shape=(None, 784))`.
///
/// ```
/// use adgraph::{shape, TensorShape};
/// let s: TensorShape = shape![None, 1, 2, 3];
/// assert_eq!(s.rank(), 4);
/// assert_eq!(s.to_string(), "(None, 1, 2, 3)");
/// assert!(s.is_compatible_with(&[5, 1, 2, 3]));
/// assert!(!s.is_compatible_with(&[5, 2, 2, 3]));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct TensorShape {
    dims: Vec<Option<usize>>,
}

/// Builds a [`TensorShape`] from dimensions; `None` is an unknown dimension.
///
/// ```
/// use adgraph::shape;
/// let s = shape![None, 28, 28, 1];
/// assert_eq!(s.dims(), &[None, Some(28), Some(28), Some(1)]);
/// assert_eq!(shape![].rank(), 0);
/// ```
#[macro_export]
macro_rules! shape {
    ($($d:expr),* $(,)?) => {
        $crate::TensorShape::new(vec![$($crate::shape::IntoDim::into_dim($d)),*])
    };
}

/// Something that can be one dimension of a [`TensorShape`]: a size or `None`.
pub trait IntoDim {
    /// The dimension: `Some(size)` or `None` for unknown.
    fn into_dim(self) -> Option<usize>;
}

impl IntoDim for usize {
    fn into_dim(self) -> Option<usize> {
        Some(self)
    }
}

impl IntoDim for i32 {
    /// A negative size means unknown, as `-1` does in TensorFlow shapes.
    fn into_dim(self) -> Option<usize> {
        usize::try_from(self).ok()
    }
}

impl IntoDim for Option<usize> {
    fn into_dim(self) -> Option<usize> {
        self
    }
}

impl TensorShape {
    /// A shape from its dimensions (`None` = unknown).
    pub fn new(dims: Vec<Option<usize>>) -> Self {
        TensorShape { dims }
    }

    /// A fully known shape.
    pub fn known(dims: &[usize]) -> Self {
        TensorShape {
            dims: dims.iter().map(|&d| Some(d)).collect(),
        }
    }

    /// The shape of a scalar, `()`.
    pub fn scalar() -> Self {
        TensorShape { dims: Vec::new() }
    }

    /// A shape of the given rank with every dimension unknown.
    pub fn unknown(rank: usize) -> Self {
        TensorShape {
            dims: vec![None; rank],
        }
    }

    /// The dimensions.
    pub fn dims(&self) -> &[Option<usize>] {
        &self.dims
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    /// Dimension `i`, `None` where unknown or where `i >= rank`.
    pub fn dim(&self, i: usize) -> Option<usize> {
        self.dims.get(i).copied().flatten()
    }

    /// Whether every dimension is known.
    pub fn is_fully_defined(&self) -> bool {
        self.dims.iter().all(Option::is_some)
    }

    /// The dimensions as sizes, if all are known.
    pub fn to_vec(&self) -> Option<Vec<usize>> {
        self.dims.iter().copied().collect()
    }

    /// The number of elements, if all dimensions are known.
    pub fn num_elements(&self) -> Option<usize> {
        self.dims
            .iter()
            .try_fold(1usize, |acc, d| d.map(|d| acc * d))
    }

    /// Whether a concrete (run-time) shape fits this static shape: same rank, and
    /// every known dimension equal.
    pub fn is_compatible_with(&self, concrete: &[usize]) -> bool {
        self.dims.len() == concrete.len()
            && self
                .dims
                .iter()
                .zip(concrete)
                .all(|(d, c)| d.is_none_or(|d| d == *c))
    }

    /// Whether two static shapes could describe the same tensor.
    pub fn is_compatible(&self, other: &TensorShape) -> bool {
        self.dims.len() == other.dims.len()
            && self.dims.iter().zip(&other.dims).all(|(a, b)| {
                matches!((a, b), (Some(x), Some(y)) if x == y) || a.is_none() || b.is_none()
            })
    }

    /// The most specific shape compatible with both, or `None` if they conflict.
    pub fn merge(&self, other: &TensorShape) -> Option<TensorShape> {
        if !self.is_compatible(other) {
            return None;
        }
        Some(TensorShape {
            dims: self
                .dims
                .iter()
                .zip(&other.dims)
                .map(|(a, b)| a.or(*b))
                .collect(),
        })
    }

    /// The NumPy broadcast of two static shapes.
    ///
    /// Unknown dimensions broadcast optimistically: `None` with `n > 1` gives `n`
    /// (the run time checks the actual value), `None` with `1` or `None` gives `None`.
    ///
    /// # Errors
    /// [`Error::Broadcast`] when two known dimensions differ and neither is 1.
    pub fn broadcast(&self, other: &TensorShape) -> Result<TensorShape> {
        let rank = self.rank().max(other.rank());
        let mut dims = Vec::with_capacity(rank);
        for i in 0..rank {
            let a = padded_dim(&self.dims, rank, i);
            let b = padded_dim(&other.dims, rank, i);
            let d = match (a, b) {
                (Some(1), x) | (x, Some(1)) => x,
                (Some(x), Some(y)) if x == y => Some(x),
                (Some(_), Some(_)) => {
                    return Err(Error::Broadcast {
                        lhs: self.clone(),
                        rhs: other.clone(),
                    })
                }
                (None, Some(x)) | (Some(x), None) => Some(x),
                (None, None) => None,
            };
            dims.push(d);
        }
        Ok(TensorShape { dims })
    }
}

/// Dimension `i` of `dims` right-aligned to `rank` (missing leading dims are 1).
fn padded_dim(dims: &[Option<usize>], rank: usize, i: usize) -> Option<usize> {
    let offset = rank - dims.len();
    if i < offset {
        Some(1)
    } else {
        dims[i - offset]
    }
}

/// The NumPy broadcast of two concrete shapes.
///
/// # Errors
/// [`Error::Broadcast`] when two dimensions differ and neither is 1.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let get = |s: &[usize], i: usize| {
        let off = rank - s.len();
        if i < off {
            1
        } else {
            s[i - off]
        }
    };
    (0..rank)
        .map(|i| match (get(a, i), get(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(Error::Broadcast {
                lhs: TensorShape::known(a),
                rhs: TensorShape::known(b),
            }),
        })
        .collect()
}

impl fmt::Display for TensorShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        for (i, d) in self.dims.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match d {
                Some(d) => write!(f, "{d}")?,
                None => f.write_str("None")?,
            }
        }
        if self.dims.len() == 1 {
            f.write_str(",")?;
        }
        f.write_str(")")
    }
}

impl fmt::Debug for TensorShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Shape{self}")
    }
}

impl From<&[usize]> for TensorShape {
    fn from(d: &[usize]) -> Self {
        TensorShape::known(d)
    }
}

impl From<Vec<usize>> for TensorShape {
    fn from(d: Vec<usize>) -> Self {
        TensorShape::known(&d)
    }
}

impl<const N: usize> From<[usize; N]> for TensorShape {
    fn from(d: [usize; N]) -> Self {
        TensorShape::known(&d)
    }
}

impl<const N: usize> From<&[usize; N]> for TensorShape {
    fn from(d: &[usize; N]) -> Self {
        TensorShape::known(d)
    }
}

impl From<&[Option<usize>]> for TensorShape {
    fn from(d: &[Option<usize>]) -> Self {
        TensorShape::new(d.to_vec())
    }
}

impl From<Vec<Option<usize>>> for TensorShape {
    fn from(d: Vec<Option<usize>>) -> Self {
        TensorShape::new(d)
    }
}

impl From<&TensorShape> for TensorShape {
    fn from(s: &TensorShape) -> Self {
        s.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_static_follows_numpy() {
        let a = shape![2, 1, 3];
        let b = shape![4, 1];
        assert_eq!(a.broadcast(&b).unwrap(), shape![2, 4, 3]);
        assert_eq!(shape![].broadcast(&shape![5]).unwrap(), shape![5]);
        assert_eq!(
            shape![None, 3].broadcast(&shape![3]).unwrap(),
            shape![None, 3]
        );
        assert_eq!(
            shape![None, 1].broadcast(&shape![1, 4]).unwrap(),
            shape![None, 4]
        );
        assert!(matches!(
            shape![2, 3].broadcast(&shape![4]),
            Err(Error::Broadcast { .. })
        ));
    }

    #[test]
    fn broadcast_concrete_follows_numpy() {
        assert_eq!(broadcast_shapes(&[3, 1], &[1, 4]).unwrap(), vec![3, 4]);
        assert_eq!(broadcast_shapes(&[], &[2, 2]).unwrap(), vec![2, 2]);
        assert!(broadcast_shapes(&[3], &[4]).is_err());
    }

    #[test]
    fn compatibility_and_merge() {
        let s = shape![None, 2];
        assert!(s.is_compatible(&shape![3, None]));
        assert_eq!(s.merge(&shape![3, None]).unwrap(), shape![3, 2]);
        assert!(s.merge(&shape![3, 3]).is_none());
        assert_eq!(shape![7].to_string(), "(7,)");
        assert_eq!(s.num_elements(), None);
        assert_eq!(shape![2, 3].num_elements(), Some(6));
    }
}
