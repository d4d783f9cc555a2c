//! The [`Tensor`] type: a shape plus row-major contiguous storage behind an
//! `Arc`, with copy-on-write mutation.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal, Uniform};

use crate::element::{Element, Scalar};
use crate::error::{Error, Result};
use crate::shape::{checked_numel, contiguous_strides};

/// An empty vector with room for `n` elements, or [`Error::TooLarge`]
/// naming `op` and `shape` when the allocator refuses the memory (instead of
/// Rust's default abort on allocation failure).
pub(crate) fn try_with_capacity<T: Copy>(
    op: &'static str,
    shape: &[usize],
    n: usize,
) -> Result<Vec<T>> {
    if let Some(v) = crate::buffers::take(n) {
        return Ok(v);
    }
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::TooLarge {
        op,
        shape: shape.to_vec(),
    })?;
    Ok(v)
}

/// `n` copies of `value`, allocated as [`try_with_capacity`].
pub(crate) fn try_filled<T: Copy>(
    op: &'static str,
    shape: &[usize],
    n: usize,
    value: T,
) -> Result<Vec<T>> {
    let mut v = try_with_capacity(op, shape, n)?;
    v.resize(n, value);
    Ok(v)
}

/// An n-dimensional array stored row-major and contiguously.
///
/// Cloning is cheap (the storage is shared through an `Arc`); mutation goes
/// through [`Tensor::data_mut`], which copies the storage only if it is shared.
/// Shape operations work for every [`Scalar`]; arithmetic needs an
/// [`Element`] (`f32`, the default, or `f64`).
#[derive(Clone)]
pub struct Tensor<T: Scalar = f32> {
    shape: Vec<usize>,
    data: Arc<Vec<T>>,
}

impl<T: Scalar> Drop for Tensor<T> {
    /// Storage that dies unshared goes to the buffer cache (see `buffers`),
    /// so the next kernel's output reuses its memory without page faults.
    fn drop(&mut self) {
        if let Some(v) = Arc::get_mut(&mut self.data) {
            crate::buffers::recycle(std::mem::take(v));
        }
    }
}

impl<T: Scalar> Tensor<T> {
    /// Builds a tensor of `shape` from row-major `data`.
    ///
    /// Errors if `data.len()` is not the product of `shape`.
    pub fn from_vec(data: Vec<T>, shape: &[usize]) -> Result<Self> {
        let n = checked_numel("from_vec", shape)?;
        if n != data.len() {
            return Err(Error::DataLength {
                op: "from_vec",
                shape: shape.to_vec(),
                expected: n,
                got: data.len(),
            });
        }
        Ok(Self::from_parts(data, shape.to_vec()))
    }

    /// Builds a tensor of `shape` by copying `data`.
    pub fn from_slice(data: &[T], shape: &[usize]) -> Result<Self> {
        Self::from_vec(data.to_vec(), shape)
    }

    /// A rank-0 tensor holding `value`.
    pub fn scalar(value: T) -> Self {
        Self::from_parts(vec![value], Vec::new())
    }

    /// A tensor of `shape` with every element equal to `value`.
    ///
    /// Errors with [`Error::TooLarge`] when the element count overflows or
    /// the allocator cannot provide the memory (no abort).
    pub fn full(shape: &[usize], value: T) -> Result<Self> {
        let n = checked_numel("full", shape)?;
        Ok(Self::from_parts(
            try_filled("full", shape, n, value)?,
            shape.to_vec(),
        ))
    }

    /// Internal constructor; the caller guarantees `data.len() == numel(shape)`.
    pub(crate) fn from_parts(data: Vec<T>, shape: Vec<usize>) -> Self {
        debug_assert_eq!(data.len(), shape.iter().product::<usize>());
        Tensor {
            shape,
            data: Arc::new(data),
        }
    }

    /// Shares `self`'s storage under a new shape of the same element count.
    pub(crate) fn with_shape(&self, shape: Vec<usize>) -> Self {
        debug_assert_eq!(self.data.len(), shape.iter().product::<usize>());
        Tensor {
            shape,
            data: Arc::clone(&self.data),
        }
    }

    /// The extent of every axis.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of axes.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor has no elements (some axis has extent 0).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The extent of one axis (negative counts from the back).
    pub fn dim<D: crate::Dim>(&self, axis: D) -> Result<usize> {
        let a = crate::shape::normalize_axis("dim", axis, self.rank())?;
        Ok(self.shape[a])
    }

    /// Row-major strides in elements.
    pub fn strides(&self) -> Vec<usize> {
        contiguous_strides(&self.shape)
    }

    /// The elements in row-major order.
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }

    /// The elements in row-major order, copied into a `Vec`.
    pub fn to_vec(&self) -> Vec<T> {
        self.data.as_ref().clone()
    }

    /// The elements in row-major order; copies only if the storage is shared.
    pub fn into_vec(mut self) -> Vec<T> {
        match Arc::get_mut(&mut self.data) {
            Some(v) => std::mem::take(v),
            None => self.data.as_ref().clone(),
        }
    }

    /// Mutable access to the elements; copies the storage first if another
    /// tensor shares it (copy-on-write).
    pub fn data_mut(&mut self) -> &mut [T] {
        Arc::make_mut(&mut self.data).as_mut_slice()
    }

    /// True when no other tensor shares this one's storage, so
    /// [`Tensor::data_mut`] will not copy.
    pub fn is_unique(&self) -> bool {
        Arc::strong_count(&self.data) == 1
    }

    /// True when both tensors share one storage buffer.
    pub fn shares_storage(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.data, &other.data)
    }

    fn flat_index(&self, op: &'static str, index: &[usize]) -> Result<usize> {
        if index.len() != self.rank() {
            return Err(Error::invalid(
                op,
                format!(
                    "index has {} coordinates but the tensor {} has rank {}",
                    index.len(),
                    crate::shape::shape_to_string(&self.shape),
                    self.rank()
                ),
            ));
        }
        let mut flat = 0;
        for (axis, (&i, &d)) in index.iter().zip(&self.shape).enumerate() {
            if i >= d {
                return Err(Error::IndexOutOfRange {
                    op,
                    index: i,
                    size: d,
                    axis,
                });
            }
            flat = flat * d + i;
        }
        Ok(flat)
    }

    /// The element at a multi-index.
    pub fn get(&self, index: &[usize]) -> Result<T> {
        let i = self.flat_index("get", index)?;
        Ok(self.data[i])
    }

    /// Overwrites the element at a multi-index (copy-on-write).
    pub fn set(&mut self, index: &[usize], value: T) -> Result<()> {
        let i = self.flat_index("set", index)?;
        self.data_mut()[i] = value;
        Ok(())
    }

    /// The single element of a one-element tensor (any rank).
    pub fn item(&self) -> Result<T> {
        if self.numel() != 1 {
            return Err(Error::invalid(
                "item",
                format!(
                    "tensor of shape {} has {} elements, not 1",
                    crate::shape::shape_to_string(&self.shape),
                    self.numel()
                ),
            ));
        }
        Ok(self.data[0])
    }

    /// Applies `f` to every element, producing a tensor of the same shape.
    pub fn map<U: Scalar>(&self, f: impl Fn(T) -> U + Sync + Send) -> Tensor<U> {
        Tensor::from_parts(
            crate::parallel::map_slice(&self.data, f),
            self.shape.clone(),
        )
    }
}

impl<T: Element> Tensor<T> {
    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Result<Self> {
        Self::full(shape, T::zero())
    }

    /// A tensor of ones.
    pub fn ones(shape: &[usize]) -> Result<Self> {
        Self::full(shape, T::one())
    }

    /// A tensor of zeros with the shape of `other`.
    pub fn zeros_like(other: &Self) -> Self {
        Self::from_parts(vec![T::zero(); other.numel()], other.shape.clone())
    }

    /// A tensor of ones with the shape of `other`.
    pub fn ones_like(other: &Self) -> Self {
        Self::from_parts(vec![T::one(); other.numel()], other.shape.clone())
    }

    /// `[start, start + step, …]` up to but excluding `end`, as `numpy.arange`.
    pub fn arange(start: T, end: T, step: T) -> Result<Self> {
        if !(start.is_finite() && end.is_finite() && step.is_finite()) || step == T::zero() {
            return Err(Error::invalid(
                "arange",
                format!(
                    "start {start}, end {end} and step {step} must be finite and step non-zero"
                ),
            ));
        }
        let span = ((end - start) / step).ceil();
        let n = if span > T::zero() {
            span.to_usize().ok_or_else(|| {
                Error::invalid("arange", format!("{span} elements do not fit in memory"))
            })?
        } else {
            0
        };
        checked_numel("arange", &[n])?;
        let mut data = try_with_capacity("arange", &[n], n)?;
        data.extend((0..n).map(|i| start + T::from_usize(i).unwrap_or_else(T::zero) * step));
        Ok(Self::from_parts(data, vec![n]))
    }

    /// `n` evenly spaced values from `start` to `end` inclusive, as `torch.linspace`.
    pub fn linspace(start: T, end: T, n: usize) -> Result<Self> {
        checked_numel("linspace", &[n])?;
        let mut data = try_with_capacity("linspace", &[n], n)?;
        match n {
            0 => {}
            1 => data.push(start),
            _ => {
                let step = (end - start) / T::from_usize(n - 1).unwrap_or_else(T::one);
                data.extend(
                    (0..n).map(|i| start + T::from_usize(i).unwrap_or_else(T::zero) * step),
                );
            }
        }
        Ok(Self::from_parts(data, vec![n]))
    }

    /// The `n × n` identity matrix.
    pub fn eye(n: usize) -> Result<Self> {
        let numel = checked_numel("eye", &[n, n])?;
        let mut data = try_filled("eye", &[n, n], numel, T::zero())?;
        for i in 0..n {
            data[i * n + i] = T::one();
        }
        Ok(Self::from_parts(data, vec![n, n]))
    }

    /// Samples from the standard normal distribution using `rng`.
    pub fn randn(shape: &[usize], rng: &mut impl Rng) -> Result<Self> {
        let n = checked_numel("randn", shape)?;
        let mut data = try_with_capacity("randn", shape, n)?;
        data.extend((0..n).map(|_| {
            let x: f64 = StandardNormal.sample(rng);
            T::from_f64_lossy(x)
        }));
        Ok(Self::from_parts(data, shape.to_vec()))
    }

    /// Samples from the standard normal distribution with a seeded generator.
    pub fn randn_seeded(shape: &[usize], seed: u64) -> Result<Self> {
        Self::randn(shape, &mut rand::rngs::StdRng::seed_from_u64(seed))
    }

    /// Samples uniformly from `[low, high)` using `rng`.
    pub fn rand_uniform(shape: &[usize], low: T, high: T, rng: &mut impl Rng) -> Result<Self> {
        let (lo, hi) = (low.to_f64_exact(), high.to_f64_exact());
        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
            return Err(Error::invalid(
                "rand_uniform",
                format!("bounds {low} and {high} must be finite with low ≤ high"),
            ));
        }
        let n = checked_numel("rand_uniform", shape)?;
        let data = if lo == hi {
            try_filled("rand_uniform", shape, n, low)?
        } else {
            let dist =
                Uniform::new(lo, hi).map_err(|e| Error::invalid("rand_uniform", e.to_string()))?;
            let mut data = try_with_capacity("rand_uniform", shape, n)?;
            // Rounding to f32 can land on `high`; fold it back into the interval.
            data.extend((0..n).map(|_| {
                let v = T::from_f64_lossy(dist.sample(rng));
                if v >= high {
                    low
                } else {
                    v
                }
            }));
            data
        };
        Ok(Self::from_parts(data, shape.to_vec()))
    }

    /// Samples uniformly from `[low, high)` with a seeded generator.
    pub fn rand_uniform_seeded(shape: &[usize], low: T, high: T, seed: u64) -> Result<Self> {
        Self::rand_uniform(
            shape,
            low,
            high,
            &mut rand::rngs::StdRng::seed_from_u64(seed),
        )
    }

    /// Converts every element to another float type.
    pub fn cast<U: Element>(&self) -> Tensor<U> {
        self.map(|x| U::from_f64_lossy(x.to_f64_exact()))
    }

    /// True when every element is finite (no NaN or ±∞).
    pub fn all_finite(&self) -> bool {
        self.as_slice().iter().all(|x| x.is_finite())
    }
}

impl<T: Scalar> PartialEq for Tensor<T> {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.data == other.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_vec_checks_length() {
        let e = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[2, 2]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "from_vec: shape [2, 2] needs 4 elements but 3 were given"
        );
        assert!(Tensor::<f32>::from_vec(vec![], &[0, 5]).is_ok());
        assert!(Tensor::<f32>::zeros(&[usize::MAX, 4]).is_err());
    }

    #[test]
    fn copy_on_write() {
        let a = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
        let mut b = a.clone();
        assert!(a.shares_storage(&b));
        b.data_mut()[0] = 5.0;
        assert_eq!(a.to_vec(), vec![1.0, 2.0]);
        assert_eq!(b.to_vec(), vec![5.0, 2.0]);
    }

    #[test]
    fn get_set_item() {
        let mut t = Tensor::<f64>::zeros(&[2, 3]).unwrap();
        t.set(&[1, 2], 7.0).unwrap();
        assert_eq!(t.get(&[1, 2]).unwrap(), 7.0);
        assert!(t.get(&[2, 0]).is_err());
        assert!(t.get(&[0]).is_err());
        assert!(t.item().is_err());
        assert_eq!(Tensor::scalar(3.0f32).item().unwrap(), 3.0);
    }

    #[test]
    fn creation() {
        assert_eq!(
            Tensor::arange(0.0f32, 1.0, 0.25).unwrap().to_vec(),
            vec![0.0, 0.25, 0.5, 0.75]
        );
        assert_eq!(
            Tensor::arange(3.0f32, 0.0, -1.0).unwrap().to_vec(),
            vec![3.0, 2.0, 1.0]
        );
        assert!(Tensor::arange(0.0f32, 1.0, 0.0).is_err());
        assert!(Tensor::arange(0.0f32, f32::INFINITY, 1.0).is_err());
        assert_eq!(Tensor::arange(1.0f32, 0.0, 1.0).unwrap().numel(), 0);
        assert_eq!(
            Tensor::<f64>::eye(2).unwrap().to_vec(),
            vec![1.0, 0.0, 0.0, 1.0]
        );
        assert_eq!(
            Tensor::linspace(0.0f64, 1.0, 5).unwrap().to_vec(),
            vec![0.0, 0.25, 0.5, 0.75, 1.0]
        );
        let a = Tensor::<f32>::randn_seeded(&[100], 7).unwrap();
        let b = Tensor::<f32>::randn_seeded(&[100], 7).unwrap();
        assert_eq!(a, b);
        let u = Tensor::<f32>::rand_uniform_seeded(&[1000], -1.0, 1.0, 3).unwrap();
        assert!(u.as_slice().iter().all(|&x| (-1.0..1.0).contains(&x)));
        assert!(Tensor::<f32>::rand_uniform_seeded(&[2], 1.0, -1.0, 3).is_err());
    }
}
