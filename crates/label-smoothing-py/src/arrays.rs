//! Slices of numpy arrays, by element type: `float32`, `float16`, and `bfloat16` (which numpy has no type for:
//! it arrives as its `int16` bit pattern, e.g. `tensor.view(torch.int16).numpy()`).

use label_smoothing::{bf16, f16};
use numpy::{PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyReadwriteArrayDyn};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// A read-only array of logits (or other floats) in one of the kernel's element types.
pub enum FloatArray<'py> {
    /// `float32`.
    F32(PyReadonlyArrayDyn<'py, f32>),
    /// `float16`.
    F16(PyReadonlyArrayDyn<'py, f16>),
    /// `bfloat16`, as `int16` bits.
    Bf16(PyReadonlyArrayDyn<'py, i16>),
}

/// A writable array in one of the kernel's element types.
pub enum FloatArrayMut<'py> {
    /// `float32`.
    F32(PyReadwriteArrayDyn<'py, f32>),
    /// `float16`.
    F16(PyReadwriteArrayDyn<'py, f16>),
    /// `bfloat16`, as `int16` bits.
    Bf16(PyReadwriteArrayDyn<'py, i16>),
}

/// The slices of a [`FloatArray`].
#[derive(Clone, Copy)]
pub enum Floats<'a> {
    /// `float32`.
    F32(&'a [f32]),
    /// `float16`.
    F16(&'a [f16]),
    /// `bfloat16`.
    Bf16(&'a [bf16]),
}

/// The slices of a [`FloatArrayMut`].
pub enum FloatsMut<'a> {
    /// `float32`.
    F32(&'a mut [f32]),
    /// `float16`.
    F16(&'a mut [f16]),
    /// `bfloat16`.
    Bf16(&'a mut [bf16]),
}

fn wrong_type(what: &str, obj: &Bound<'_, PyAny>, dtype: &str) -> PyErr {
    let found = obj
        .getattr("dtype")
        .map(|d| d.to_string())
        .unwrap_or_else(|_| obj.get_type().to_string());
    PyTypeError::new_err(format!("{what}: expected a numpy array of {dtype}, got {found}"))
}

fn not_contiguous(what: &str) -> PyErr {
    PyValueError::new_err(format!("{what}: the array must be C-contiguous"))
}

/// The contiguous slice of a read-only array.
pub fn slice<'a, T: numpy::Element>(a: &'a PyReadonlyArrayDyn<'_, T>, what: &str) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| not_contiguous(what))
}

/// The contiguous slice of a writable array.
pub fn slice_mut<'a, T: numpy::Element>(a: &'a mut PyReadwriteArrayDyn<'_, T>, what: &str) -> PyResult<&'a mut [T]> {
    a.as_slice_mut().map_err(|_| not_contiguous(what))
}

/// A read-only array of `T`, or a `TypeError` naming `what` and the dtype found.
pub fn readonly<'py, T: numpy::Element>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    dtype: &str,
) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    obj.cast::<PyArrayDyn<T>>()
        .map_err(|_| wrong_type(what, obj, dtype))?
        .try_readonly()
        .map_err(|e| PyValueError::new_err(format!("{what}: {e}")))
}

/// A writable array of `T`, or a `TypeError` naming `what` and the dtype found.
pub fn readwrite<'py, T: numpy::Element>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    dtype: &str,
) -> PyResult<PyReadwriteArrayDyn<'py, T>> {
    obj.cast::<PyArrayDyn<T>>()
        .map_err(|_| wrong_type(what, obj, dtype))?
        .try_readwrite()
        .map_err(|e| PyValueError::new_err(format!("{what}: {e}")))
}

impl<'py> FloatArray<'py> {
    /// The array `obj` of element type `dtype` (`float32`, `float16` or `bfloat16`).
    pub fn extract(obj: &Bound<'py, PyAny>, dtype: &str, what: &str) -> PyResult<Self> {
        Ok(match dtype {
            "float32" => FloatArray::F32(readonly(obj, what, "float32")?),
            "float16" => FloatArray::F16(readonly(obj, what, "float16")?),
            "bfloat16" => FloatArray::Bf16(readonly(obj, what, "int16 (the bits of bfloat16)")?),
            other => return Err(unsupported(what, other)),
        })
    }

    /// Its contiguous slice.
    pub fn floats(&self, what: &str) -> PyResult<Floats<'_>> {
        Ok(match self {
            FloatArray::F32(a) => Floats::F32(slice(a, what)?),
            FloatArray::F16(a) => Floats::F16(slice(a, what)?),
            FloatArray::Bf16(a) => Floats::Bf16(bf16_slice(slice(a, what)?)),
        })
    }
}

impl<'py> FloatArrayMut<'py> {
    /// The writable array `obj` of element type `dtype`.
    pub fn extract(obj: &Bound<'py, PyAny>, dtype: &str, what: &str) -> PyResult<Self> {
        Ok(match dtype {
            "float32" => FloatArrayMut::F32(readwrite(obj, what, "float32")?),
            "float16" => FloatArrayMut::F16(readwrite(obj, what, "float16")?),
            "bfloat16" => FloatArrayMut::Bf16(readwrite(obj, what, "int16 (the bits of bfloat16)")?),
            other => return Err(unsupported(what, other)),
        })
    }

    /// Its contiguous slice.
    pub fn floats_mut(&mut self, what: &str) -> PyResult<FloatsMut<'_>> {
        Ok(match self {
            FloatArrayMut::F32(a) => FloatsMut::F32(slice_mut(a, what)?),
            FloatArrayMut::F16(a) => FloatsMut::F16(slice_mut(a, what)?),
            FloatArrayMut::Bf16(a) => FloatsMut::Bf16(bf16_slice_mut(slice_mut(a, what)?)),
        })
    }
}

impl Floats<'_> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Floats::F32(s) => s.len(),
            Floats::F16(s) => s.len(),
            Floats::Bf16(s) => s.len(),
        }
    }
}

fn unsupported(what: &str, dtype: &str) -> PyErr {
    PyTypeError::new_err(format!(
        "{what}: dtype {dtype} is not supported by the kernel (float32, float16 or bfloat16)"
    ))
}

fn bf16_slice(s: &[i16]) -> &[bf16] {
    // SAFETY: `bf16` is `repr(transparent)` over `u16`, which has the size and alignment of `i16`, and every
    // bit pattern is a valid `bf16`; the length and lifetime are those of `s`.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<bf16>(), s.len()) }
}

fn bf16_slice_mut(s: &mut [i16]) -> &mut [bf16] {
    // SAFETY: as in `bf16_slice`; the exclusive borrow of `s` is moved into the result.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<bf16>(), s.len()) }
}
