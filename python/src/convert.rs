//! NumPy arrays in and out: `float32` values, converted once each way.

use adgraph::Tensor;
use numpy::{PyArrayDyn, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// A tensor from anything NumPy makes a `float32` array of (an array of
/// another dtype, a list, a number). A `float32` array is read where it
/// lies; other values go through `numpy.asarray(value, dtype=float32)`.
/// The tensor is in C order whatever the array's layout.
///
/// # Errors
/// What NumPy raises for a value it cannot convert; `ValueError` for an array
/// NumPy has borrowed mutably elsewhere.
pub fn to_tensor(value: &Bound<'_, PyAny>) -> PyResult<Tensor> {
    let array: Bound<'_, PyArrayDyn<f32>> = match value.cast::<PyArrayDyn<f32>>() {
        Ok(a) => a.clone(),
        Err(_) => {
            let py = value.py();
            let converted = py
                .import("numpy")?
                .call_method1("asarray", (value, "float32"))?;
            converted
                .cast_into::<PyArrayDyn<f32>>()
                .map_err(|e| PyValueError::new_err(format!("cannot make a float32 array: {e}")))?
        }
    };
    let readonly = array
        .try_readonly()
        .map_err(|e| PyValueError::new_err(format!("cannot read the array: {e}")))?;
    Ok(readonly.as_array().as_standard_layout().into_owned())
}

/// As [`to_tensor`], refusing NaN (fed values and constants, as the original).
///
/// # Errors
/// `ValueError` naming `what` when a value is NaN.
pub fn to_tensor_no_nan(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Tensor> {
    let t = to_tensor(value)?;
    let nan = t.iter().filter(|v| v.is_nan()).count();
    if nan > 0 {
        return Err(PyValueError::new_err(format!(
            "{what} holds {nan} NaN value(s) of {} (every value given to a graph must be a number)",
            t.len()
        )));
    }
    Ok(t)
}

/// The tensor as a NumPy array, without copying it (the array takes it over).
pub fn to_numpy(py: Python<'_>, t: Tensor) -> Bound<'_, PyArrayDyn<f32>> {
    PyArrayDyn::from_owned_array(py, t)
}
