//! Values: [`Tensor`] (an `f32` n-d array) and [`IntoTensor`], the conversions a feed accepts.

use ndarray::{ArrayD, IxDyn};

use crate::error::{Error, Result};

/// A value flowing through a graph: an `f32` n-dimensional array in row-major order.
pub type Tensor = ArrayD<f32>;

/// Conversion into a [`Tensor`]: arrays, scalars, vectors with a shape, nested fixed-size arrays.
///
/// ```
/// use adgraph::IntoTensor;
/// let t = [[0.0f32, 1.0, 2.0], [3.0, 4.0, 5.0]].into_tensor().unwrap();
/// assert_eq!(t.shape(), &[2, 3]);
/// let s = 2.5f32.into_tensor().unwrap();
/// assert_eq!(s.ndim(), 0);
/// let v = (vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]).into_tensor().unwrap();
/// assert_eq!(v[[1, 0]], 3.0);
/// assert!((vec![1.0f32, 2.0, 3.0], [2, 2]).into_tensor().is_err());
/// ```
pub trait IntoTensor {
    /// Makes the tensor.
    ///
    /// # Errors
    /// [`Error::Tensor`] when the data does not fit the given shape.
    fn into_tensor(self) -> Result<Tensor>;
}

impl IntoTensor for &Tensor {
    fn into_tensor(self) -> Result<Tensor> {
        Ok(self.clone())
    }
}

impl IntoTensor for f32 {
    fn into_tensor(self) -> Result<Tensor> {
        Ok(self.to_tensor())
    }
}

impl IntoTensor for Vec<f32> {
    /// A 1-D tensor.
    fn into_tensor(self) -> Result<Tensor> {
        let n = self.len();
        Ok(ArrayD::from_shape_vec(IxDyn(&[n]), self)?)
    }
}

impl IntoTensor for &[f32] {
    /// A 1-D tensor.
    fn into_tensor(self) -> Result<Tensor> {
        self.to_vec().into_tensor()
    }
}

impl<S: AsRef<[usize]>> IntoTensor for (Vec<f32>, S) {
    /// Flat row-major data with a shape.
    fn into_tensor(self) -> Result<Tensor> {
        let (data, shape) = self;
        let shape = shape.as_ref();
        let want: usize = shape.iter().product();
        if want != data.len() {
            return Err(Error::Tensor(format!(
                "{} values cannot fill shape {:?} ({} elements)",
                data.len(),
                shape,
                want
            )));
        }
        Ok(ArrayD::from_shape_vec(IxDyn(shape), data)?)
    }
}

impl<D: ndarray::Dimension> IntoTensor for ndarray::Array<f32, D> {
    fn into_tensor(self) -> Result<Tensor> {
        Ok(self.into_dyn())
    }
}

impl<D: ndarray::Dimension> IntoTensor for ndarray::ArrayView<'_, f32, D> {
    fn into_tensor(self) -> Result<Tensor> {
        Ok(self.to_owned().into_dyn())
    }
}

/// Plain literals that always make a tensor: `f32` and nested fixed-size arrays up to rank 4.
pub trait TensorLiteral {
    /// The tensor.
    fn to_tensor(&self) -> Tensor;
}

impl TensorLiteral for f32 {
    fn to_tensor(&self) -> Tensor {
        ndarray::arr0(*self).into_dyn()
    }
}

impl<const N: usize> TensorLiteral for [f32; N] {
    fn to_tensor(&self) -> Tensor {
        ndarray::arr1(self).into_dyn()
    }
}

impl<const N: usize, const M: usize> TensorLiteral for [[f32; N]; M] {
    fn to_tensor(&self) -> Tensor {
        ndarray::arr2(self).into_dyn()
    }
}

impl<const N: usize, const M: usize, const K: usize> TensorLiteral for [[[f32; N]; M]; K] {
    fn to_tensor(&self) -> Tensor {
        ndarray::arr3(self).into_dyn()
    }
}

impl<const N: usize, const M: usize, const K: usize, const L: usize> TensorLiteral
    for [[[[f32; N]; M]; K]; L]
{
    fn to_tensor(&self) -> Tensor {
        ndarray::Array4::from_shape_fn((L, K, M, N), |(l, k, m, n)| self[l][k][m][n]).into_dyn()
    }
}

macro_rules! literal_into_tensor {
    ($($t:ty => [$($c:ident),*]),*) => {$(
        impl<$(const $c: usize),*> IntoTensor for $t {
            fn into_tensor(self) -> Result<Tensor> {
                Ok(self.to_tensor())
            }
        }
    )*};
}

literal_into_tensor!(
    [f32; N] => [N],
    [[f32; N]; M] => [N, M],
    [[[f32; N]; M]; K] => [N, M, K],
    [[[[f32; N]; M]; K]; L] => [N, M, K, L]
);

/// A tensor from a literal: a number or nested arrays.
///
/// ```
/// let t = adgraph::tensor([[1.0, 2.0], [3.0, 4.0]]);
/// assert_eq!(t.shape(), &[2, 2]);
/// assert_eq!(adgraph::tensor(5.0).ndim(), 0);
/// ```
pub fn tensor(literal: impl TensorLiteral) -> Tensor {
    literal.to_tensor()
}

/// A tensor filled with `value` of the given shape.
pub fn full(shape: &[usize], value: f32) -> Tensor {
    ArrayD::from_elem(IxDyn(shape), value)
}
