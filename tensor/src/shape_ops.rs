//! Shape operations: reshape, permute/transpose, squeeze/unsqueeze,
//! broadcast_to, narrow/slice, index_select/gather/scatter_add, concat/stack,
//! split/chunk and pad. They work for every [`Scalar`] element type.

use rayon::prelude::*;

use crate::element::Scalar;
use crate::error::{fmt_shape, Error, Result};
use crate::parallel::PARALLEL_THRESHOLD;
use crate::shape::{check_broadcast_to, checked_numel, contiguous_strides, normalize_axis, Dim};
use crate::Tensor;

/// Copies the strided view (`offset`, `shape`, `strides` into `src`) into a
/// new contiguous buffer.
pub(crate) fn strided_copy<T: Scalar>(
    src: &[T],
    offset: usize,
    shape: &[usize],
    strides: &[usize],
) -> Vec<T> {
    let n: usize = shape.iter().product();
    strided_copy_into(Vec::with_capacity(n), src, offset, shape, strides)
}

/// [`strided_copy`] appending to `out` (empty, with room reserved).
fn strided_copy_into<T: Scalar>(
    mut out: Vec<T>,
    src: &[T],
    offset: usize,
    shape: &[usize],
    strides: &[usize],
) -> Vec<T> {
    let n: usize = shape.iter().product();
    if n == 0 {
        return out;
    }
    if shape.is_empty() {
        out.push(src[offset]);
        return out;
    }
    // Merge axes that step through memory as one (axis d spans exactly
    // one step of axis d − 1), so a broadcast or a contiguous block becomes
    // one long inner run instead of many short ones.
    let mut dims: Vec<(usize, usize)> = Vec::with_capacity(shape.len());
    for (&len, &stride) in shape.iter().zip(strides) {
        match dims.last_mut() {
            _ if len == 1 => {}
            Some((l, s)) if *s == stride * len => {
                *l *= len;
                *s = stride;
            }
            _ => dims.push((len, stride)),
        }
    }
    if dims.is_empty() {
        dims.push((1, 1));
    }
    let shape: Vec<usize> = dims.iter().map(|d| d.0).collect();
    let strides: Vec<usize> = dims.iter().map(|d| d.1).collect();
    let rank = shape.len();
    let inner = shape[rank - 1];
    let inner_stride = strides[rank - 1];
    let mut idx = vec![0usize; rank - 1];
    let mut base = offset;
    loop {
        if inner_stride == 1 {
            out.extend_from_slice(&src[base..base + inner]);
        } else if inner_stride == 0 {
            out.resize(out.len() + inner, src[base]);
        } else {
            out.extend((0..inner).map(|i| src[base + i * inner_stride]));
        }
        // Odometer over the outer axes.
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            base += strides[d];
            if idx[d] < shape[d] {
                break;
            }
            base -= strides[d] * shape[d];
            idx[d] = 0;
        }
    }
}

impl<T: Scalar> Tensor<T> {
    /// The same elements under a new shape with the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        let n = checked_numel("reshape", shape)?;
        if n != self.numel() {
            return Err(Error::shape(
                "reshape",
                &[self.shape(), shape],
                format!("{} elements cannot be viewed as {n}", self.numel()),
            ));
        }
        Ok(self.with_shape(shape.to_vec()))
    }

    /// Merges axes `start..=end` into one (`torch.flatten`).
    pub fn flatten<D: Dim>(&self, start: D, end: D) -> Result<Self> {
        if self.rank() == 0 {
            // A scalar flattens to [1]; only axes 0 and −1 name it.
            normalize_axis("flatten", start, 1)?;
            normalize_axis("flatten", end, 1)?;
            return Ok(self.with_shape(vec![1]));
        }
        let s = normalize_axis("flatten", start, self.rank())?;
        let e = normalize_axis("flatten", end, self.rank())?;
        if s > e {
            return Err(Error::invalid(
                "flatten",
                format!("start axis {s} comes after end axis {e}"),
            ));
        }
        let mut shape = self.shape()[..s].to_vec();
        shape.push(self.shape()[s..=e].iter().product());
        shape.extend_from_slice(&self.shape()[e + 1..]);
        Ok(self.with_shape(shape))
    }

    /// Reorders the axes: output axis `i` is input axis `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Self> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank
            || perm
                .iter()
                .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
        {
            return Err(Error::invalid(
                "permute",
                format!(
                    "{perm:?} is not a permutation of the axes of a rank-{rank} tensor {}",
                    fmt_shape(self.shape())
                ),
            ));
        }
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(self.clone());
        }
        let src_strides = self.strides();
        let shape: Vec<usize> = perm.iter().map(|&p| self.shape()[p]).collect();
        let strides: Vec<usize> = perm.iter().map(|&p| src_strides[p]).collect();
        // A 2-D transpose (possibly batched) goes through cache-friendly tiles.
        if rank >= 2 && perm[..rank - 2].iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(Tensor::from_parts(self.transpose_last_two(), shape));
        }
        let data = strided_copy(self.as_slice(), 0, &shape, &strides);
        Ok(Tensor::from_parts(data, shape))
    }

    fn transpose_last_two(&self) -> Vec<T> {
        let rank = self.rank();
        let (r, c) = (self.shape()[rank - 2], self.shape()[rank - 1]);
        let src = self.as_slice();
        let mut out = vec![T::default(); src.len()];
        const TILE: usize = 32;
        let plane = r * c;
        if plane == 0 {
            return out;
        }
        let work = |(o, s): (&mut [T], &[T])| {
            for i0 in (0..r).step_by(TILE) {
                for j0 in (0..c).step_by(TILE) {
                    for i in i0..(i0 + TILE).min(r) {
                        for j in j0..(j0 + TILE).min(c) {
                            o[j * r + i] = s[i * c + j];
                        }
                    }
                }
            }
        };
        if src.len() >= PARALLEL_THRESHOLD && src.len() / plane > 1 {
            out.par_chunks_mut(plane)
                .zip(src.par_chunks(plane))
                .for_each(work);
        } else {
            out.chunks_mut(plane).zip(src.chunks(plane)).for_each(work);
        }
        out
    }

    /// Swaps two axes.
    pub fn transpose<D: Dim>(&self, a: D, b: D) -> Result<Self> {
        let a = normalize_axis("transpose", a, self.rank())?;
        let b = normalize_axis("transpose", b, self.rank())?;
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Removes one axis of extent 1.
    pub fn squeeze<D: Dim>(&self, axis: D) -> Result<Self> {
        let a = normalize_axis("squeeze", axis, self.rank())?;
        if self.shape()[a] != 1 {
            return Err(Error::shape(
                "squeeze",
                &[self.shape()],
                format!("axis {a} has extent {}, not 1", self.shape()[a]),
            ));
        }
        let mut shape = self.shape().to_vec();
        shape.remove(a);
        Ok(self.with_shape(shape))
    }

    /// Removes every axis of extent 1.
    pub fn squeeze_all(&self) -> Self {
        let shape = self.shape().iter().copied().filter(|&d| d != 1).collect();
        self.with_shape(shape)
    }

    /// Inserts an axis of extent 1 at `axis` (`-1` appends).
    pub fn unsqueeze<D: Dim>(&self, axis: D) -> Result<Self> {
        let a = normalize_axis("unsqueeze", axis, self.rank() + 1)?;
        let mut shape = self.shape().to_vec();
        shape.insert(a, 1);
        Ok(self.with_shape(shape))
    }

    /// Repeats the tensor along broadcast axes to reach `shape` (NumPy's
    /// rule), materialising the result.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Self> {
        check_broadcast_to("broadcast_to", self.shape(), shape)?;
        let n = checked_numel("broadcast_to", shape)?;
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let out = crate::tensor::try_with_capacity("broadcast_to", shape, n)?;
        let strides = crate::shape::broadcast_strides(self.shape(), shape);
        let data = strided_copy_into(out, self.as_slice(), 0, shape, &strides);
        Ok(Tensor::from_parts(data, shape.to_vec()))
    }

    /// `len` consecutive entries of `axis` starting at `start` (`torch.narrow`).
    pub fn narrow<D: Dim>(&self, axis: D, start: usize, len: usize) -> Result<Self> {
        self.slice(axis, start, start.saturating_add(len), 1)
    }

    /// Entries `start..end` of `axis` taking every `step`-th (Python's
    /// `a[start:end:step]` with non-negative bounds; `end` past the extent is
    /// an error).
    pub fn slice<D: Dim>(&self, axis: D, start: usize, end: usize, step: usize) -> Result<Self> {
        let a = normalize_axis("slice", axis, self.rank())?;
        let extent = self.shape()[a];
        if step == 0 || start > end || end > extent {
            return Err(Error::invalid(
                "slice",
                format!(
                    "range {start}..{end} step {step} does not fit axis {a} of extent {extent} in {}",
                    fmt_shape(self.shape())
                ),
            ));
        }
        // A step past the range picks only `start`; clamping it keeps the
        // stride arithmetic below within the tensor's element count.
        let step = step.min((end - start).max(1));
        let mut shape = self.shape().to_vec();
        shape[a] = (end - start).div_ceil(step);
        let mut strides = self.strides();
        let offset = if shape[a] > 0 { start * strides[a] } else { 0 };
        strides[a] *= step;
        let data = strided_copy(self.as_slice(), offset, &shape, &strides);
        Ok(Tensor::from_parts(data, shape))
    }

    /// Picks entries of `axis` by index (`torch.index_select`).
    pub fn index_select<D: Dim>(&self, axis: D, indices: &[usize]) -> Result<Self> {
        let a = normalize_axis("index_select", axis, self.rank())?;
        let extent = self.shape()[a];
        if let Some(&bad) = indices.iter().find(|&&i| i >= extent) {
            return Err(Error::IndexOutOfRange {
                op: "index_select",
                index: bad,
                size: extent,
                axis: a,
            });
        }
        let outer: usize = self.shape()[..a].iter().product();
        let inner: usize = self.shape()[a + 1..].iter().product();
        let mut shape = self.shape().to_vec();
        shape[a] = indices.len();
        let n = checked_numel("index_select", &shape)?;
        let src = self.as_slice();
        let mut out = Vec::with_capacity(n);
        for o in 0..outer {
            for &i in indices {
                let s = (o * extent + i) * inner;
                out.extend_from_slice(&src[s..s + inner]);
            }
        }
        Ok(Tensor::from_parts(out, shape))
    }

    fn check_gather_index(&self, op: &'static str, a: usize, index: &Tensor<usize>) -> Result<()> {
        if index.rank() != self.rank() {
            return Err(Error::shape(
                op,
                &[self.shape(), index.shape()],
                format!(
                    "index has rank {}, input has rank {}",
                    index.rank(),
                    self.rank()
                ),
            ));
        }
        for d in 0..self.rank() {
            if d != a && index.shape()[d] > self.shape()[d] {
                return Err(Error::shape(
                    op,
                    &[self.shape(), index.shape()],
                    format!("index extent on axis {d} exceeds the input's"),
                ));
            }
        }
        if let Some(&bad) = index.as_slice().iter().find(|&&i| i >= self.shape()[a]) {
            return Err(Error::IndexOutOfRange {
                op,
                index: bad,
                size: self.shape()[a],
                axis: a,
            });
        }
        Ok(())
    }

    /// `out[…, i, …] = self[…, index[…, i, …], …]` along `axis`, with an
    /// index tensor of the same rank (`torch.gather`).
    pub fn gather<D: Dim>(&self, axis: D, index: &Tensor<usize>) -> Result<Self> {
        let a = normalize_axis("gather", axis, self.rank())?;
        self.check_gather_index("gather", a, index)?;
        let src_strides = self.strides();
        let src = self.as_slice();
        let data = for_each_index(index.shape(), |coords| {
            let mut off = 0;
            for d in 0..coords.len() {
                if d != a {
                    off += coords[d] * src_strides[d];
                }
            }
            off
        })
        .zip(index.as_slice())
        .map(|(off, &i)| src[off + i * src_strides[a]])
        .collect();
        Ok(Tensor::from_parts(data, index.shape().to_vec()))
    }

    /// Splits into pieces of the given extents along `axis`
    /// (`torch.split` with a list of sizes).
    pub fn split_sizes<D: Dim>(&self, axis: D, sizes: &[usize]) -> Result<Vec<Self>> {
        let a = normalize_axis("split", axis, self.rank())?;
        let total = sizes.iter().try_fold(0usize, |t, &s| t.checked_add(s));
        if total != Some(self.shape()[a]) {
            let total = total.map_or_else(|| "more than usize::MAX".into(), |t| t.to_string());
            return Err(Error::invalid(
                "split",
                format!(
                    "sizes {sizes:?} add up to {total}, but axis {a} of {} has extent {}",
                    fmt_shape(self.shape()),
                    self.shape()[a]
                ),
            ));
        }
        let mut start = 0;
        sizes
            .iter()
            .map(|&s| {
                let piece = self.narrow(a, start, s);
                start += s;
                piece
            })
            .collect()
    }

    /// Splits into pieces of `size` along `axis`; the last may be shorter
    /// (`torch.split` with an int).
    pub fn split<D: Dim>(&self, axis: D, size: usize) -> Result<Vec<Self>> {
        let a = normalize_axis("split", axis, self.rank())?;
        if size == 0 {
            return Err(Error::invalid("split", "piece size must be positive"));
        }
        let extent = self.shape()[a];
        let mut sizes = vec![size; extent / size];
        if !extent.is_multiple_of(size) {
            sizes.push(extent % size);
        }
        self.split_sizes(a, &sizes)
    }

    /// Splits into `chunks` nearly equal pieces along `axis` (`torch.chunk`).
    pub fn chunk<D: Dim>(&self, chunks: usize, axis: D) -> Result<Vec<Self>> {
        let a = normalize_axis("chunk", axis, self.rank())?;
        if chunks == 0 {
            return Err(Error::invalid("chunk", "number of chunks must be positive"));
        }
        let size = self.shape()[a].div_ceil(chunks).max(1);
        self.split(a, size)
    }

    /// Joins tensors along an existing axis (`torch.cat`).
    pub fn concat<D: Dim>(tensors: &[&Self], axis: D) -> Result<Self> {
        let first = tensors
            .first()
            .ok_or_else(|| Error::invalid("concat", "no tensors given"))?;
        let a = normalize_axis("concat", axis, first.rank())?;
        for t in tensors {
            let same = t.rank() == first.rank()
                && (0..first.rank()).all(|d| d == a || t.shape()[d] == first.shape()[d]);
            if !same {
                return Err(Error::shape(
                    "concat",
                    &[first.shape(), t.shape()],
                    format!("shapes must match except on axis {a}"),
                ));
            }
        }
        let mut shape = first.shape().to_vec();
        shape[a] = tensors.iter().map(|t| t.shape()[a]).sum();
        let n = checked_numel("concat", &shape)?;
        let outer: usize = shape[..a].iter().product();
        let inner: usize = shape[a + 1..].iter().product();
        let mut out = Vec::with_capacity(n);
        for o in 0..outer {
            for t in tensors {
                let block = t.shape()[a] * inner;
                out.extend_from_slice(&t.as_slice()[o * block..(o + 1) * block]);
            }
        }
        Ok(Tensor::from_parts(out, shape))
    }

    /// Joins equally shaped tensors along a new axis (`torch.stack`).
    pub fn stack<D: Dim>(tensors: &[&Self], axis: D) -> Result<Self> {
        let first = tensors
            .first()
            .ok_or_else(|| Error::invalid("stack", "no tensors given"))?;
        let a = normalize_axis("stack", axis, first.rank() + 1)?;
        let mut expanded = Vec::with_capacity(tensors.len());
        for t in tensors {
            if t.shape() != first.shape() {
                return Err(Error::shape(
                    "stack",
                    &[first.shape(), t.shape()],
                    "all tensors must have the same shape",
                ));
            }
            expanded.push(t.unsqueeze(a)?);
        }
        let refs: Vec<&Self> = expanded.iter().collect();
        Self::concat(&refs, a)
    }

    /// Pads every axis with `value`: `pads[d] = (before, after)` for axis `d`;
    /// one pair per axis.
    pub fn pad(&self, pads: &[(usize, usize)], value: T) -> Result<Self> {
        if pads.len() != self.rank() {
            return Err(Error::invalid(
                "pad",
                format!(
                    "{} (before, after) pairs given for a tensor of rank {} {}",
                    pads.len(),
                    self.rank(),
                    fmt_shape(self.shape())
                ),
            ));
        }
        let mut shape = Vec::with_capacity(self.rank());
        for (&d, &(b, e)) in self.shape().iter().zip(pads) {
            shape.push(
                d.checked_add(b)
                    .and_then(|x| x.checked_add(e))
                    .ok_or_else(|| Error::invalid("pad", "padded extent overflows"))?,
            );
        }
        let n = checked_numel("pad", &shape)?;
        let mut out = crate::tensor::try_filled("pad", &shape, n, value)?;
        if self.is_empty() {
            return Ok(Tensor::from_parts(out, shape));
        }
        let dst_strides = contiguous_strides(&shape);
        let offset: usize = pads.iter().zip(&dst_strides).map(|(p, s)| p.0 * s).sum();
        let rank = self.rank();
        if rank == 0 {
            out[0] = self.as_slice()[0];
            return Ok(Tensor::from_parts(out, shape));
        }
        let inner = self.shape()[rank - 1];
        for (row, src) in self.as_slice().chunks(inner).enumerate() {
            // Destination of the first element of this source row.
            let mut r = row;
            let mut dst = offset;
            for d in (0..rank - 1).rev() {
                dst += (r % self.shape()[d]) * dst_strides[d];
                r /= self.shape()[d];
            }
            out[dst..dst + inner].copy_from_slice(src);
        }
        Ok(Tensor::from_parts(out, shape))
    }
}

impl<T: Scalar + std::ops::AddAssign> Tensor<T> {
    /// Adds `src` into a copy of `self` at positions given by `index` along
    /// `axis` (`torch.scatter_add`); the adjoint of [`Tensor::gather`].
    pub fn scatter_add<D: Dim>(&self, axis: D, index: &Tensor<usize>, src: &Self) -> Result<Self> {
        let a = normalize_axis("scatter_add", axis, self.rank())?;
        self.check_gather_index("scatter_add", a, index)?;
        if src.shape() != index.shape() {
            return Err(Error::shape(
                "scatter_add",
                &[index.shape(), src.shape()],
                "src must have the shape of index",
            ));
        }
        let strides = self.strides();
        let mut out = self.clone();
        let dst = out.data_mut();
        let offsets = for_each_index(index.shape(), |coords| {
            let mut off = 0;
            for d in 0..coords.len() {
                if d != a {
                    off += coords[d] * strides[d];
                }
            }
            off
        });
        for ((off, &i), &v) in offsets.zip(index.as_slice()).zip(src.as_slice()) {
            dst[off + i * strides[a]] += v;
        }
        Ok(out)
    }

    /// Adds the slices of `src` into a copy of `self` at `indices` along
    /// `axis` (`torch.index_add`); the adjoint of [`Tensor::index_select`].
    pub fn index_add<D: Dim>(&self, axis: D, indices: &[usize], src: &Self) -> Result<Self> {
        let a = normalize_axis("index_add", axis, self.rank())?;
        let mut expect = self.shape().to_vec();
        expect[a] = indices.len();
        if src.shape() != expect.as_slice() {
            return Err(Error::shape(
                "index_add",
                &[self.shape(), src.shape()],
                format!("src must have shape {}", fmt_shape(&expect)),
            ));
        }
        let extent = self.shape()[a];
        if let Some(&bad) = indices.iter().find(|&&i| i >= extent) {
            return Err(Error::IndexOutOfRange {
                op: "index_add",
                index: bad,
                size: extent,
                axis: a,
            });
        }
        let outer: usize = self.shape()[..a].iter().product();
        let inner: usize = self.shape()[a + 1..].iter().product();
        let mut out = self.clone();
        let dst = out.data_mut();
        let s = src.as_slice();
        for o in 0..outer {
            for (k, &i) in indices.iter().enumerate() {
                let d0 = (o * extent + i) * inner;
                let s0 = (o * indices.len() + k) * inner;
                for j in 0..inner {
                    dst[d0 + j] += s[s0 + j];
                }
            }
        }
        Ok(out)
    }
}

/// Iterates over every multi-index of `shape` in row-major order, yielding
/// `f(coords)`.
fn for_each_index<'a, R: 'a>(
    shape: &'a [usize],
    mut f: impl FnMut(&[usize]) -> R + 'a,
) -> impl Iterator<Item = R> + 'a {
    let n: usize = shape.iter().product();
    let mut coords = vec![0usize; shape.len()];
    (0..n).map(move |k| {
        if k > 0 {
            for d in (0..shape.len()).rev() {
                coords[d] += 1;
                if coords[d] < shape[d] {
                    break;
                }
                coords[d] = 0;
            }
        }
        f(&coords)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(shape: &[usize]) -> Tensor<f32> {
        let n = shape.iter().product::<usize>();
        Tensor::from_vec((0..n).map(|i| i as f32).collect(), shape).unwrap()
    }

    #[test]
    fn permute_and_transpose() {
        let a = iota(&[2, 3]);
        assert_eq!(
            a.transpose(0, 1).unwrap().to_vec(),
            vec![0., 3., 1., 4., 2., 5.]
        );
        let b = iota(&[2, 3, 4]);
        let p = b.permute(&[2, 0, 1]).unwrap();
        assert_eq!(p.shape(), &[4, 2, 3]);
        assert_eq!(p.get(&[3, 1, 2]).unwrap(), b.get(&[1, 2, 3]).unwrap());
        assert!(b.permute(&[0, 0, 1]).is_err());
        assert!(b.permute(&[0, 1]).is_err());
    }

    #[test]
    fn slicing() {
        let a = iota(&[3, 4]);
        assert_eq!(
            a.narrow(1, 1, 2).unwrap().to_vec(),
            vec![1., 2., 5., 6., 9., 10.]
        );
        assert_eq!(
            a.slice(1, 0, 4, 2).unwrap().to_vec(),
            vec![0., 2., 4., 6., 8., 10.]
        );
        assert_eq!(a.slice(0, 1, 1, 1).unwrap().shape(), &[0, 4]);
        assert!(a.narrow(1, 3, 2).is_err());
        assert!(a.slice(1, 0, 4, 0).is_err());
        assert!(a.narrow(2, 0, 1).is_err());
    }

    #[test]
    fn gather_and_scatter() {
        // torch.gather(t, 1, [[0,0],[1,0]]) with t = [[1,2],[3,4]] → [[1,1],[4,3]].
        let t = Tensor::from_vec(vec![1.0f32, 2., 3., 4.], &[2, 2]).unwrap();
        let idx = Tensor::from_vec(vec![0usize, 0, 1, 0], &[2, 2]).unwrap();
        assert_eq!(t.gather(1, &idx).unwrap().to_vec(), vec![1., 1., 4., 3.]);
        let z = Tensor::<f32>::zeros(&[2, 2]).unwrap();
        let src = Tensor::from_vec(vec![1.0f32, 2., 3., 4.], &[2, 2]).unwrap();
        assert_eq!(
            z.scatter_add(1, &idx, &src).unwrap().to_vec(),
            vec![3., 0., 4., 3.]
        );
        let bad = Tensor::from_vec(vec![0usize, 2, 1, 0], &[2, 2]).unwrap();
        assert!(t.gather(1, &bad).is_err());
    }

    #[test]
    fn select_and_add() {
        let a = iota(&[3, 2]);
        let s = a.index_select(0, &[2, 0, 2]).unwrap();
        assert_eq!(s.to_vec(), vec![4., 5., 0., 1., 4., 5.]);
        assert!(a.index_select(0, &[3]).is_err());
        let z = Tensor::<f32>::zeros(&[3, 2]).unwrap();
        let back = z.index_add(0, &[2, 0, 2], &s).unwrap();
        assert_eq!(back.to_vec(), vec![0., 1., 0., 0., 8., 10.]);
    }

    #[test]
    fn concat_stack_split() {
        let a = iota(&[2, 2]);
        let b = iota(&[2, 1]);
        let c = Tensor::concat(&[&a, &b], 1).unwrap();
        assert_eq!(c.to_vec(), vec![0., 1., 0., 2., 3., 1.]);
        assert!(Tensor::concat(&[&a, &b], 0).is_err());
        assert!(Tensor::<f32>::concat(&[], 0).is_err());
        let s = Tensor::stack(&[&a, &a], 0).unwrap();
        assert_eq!(s.shape(), &[2, 2, 2]);
        let parts = c.split(1, 2).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].to_vec(), vec![0., 1.]);
        let ch = iota(&[5]).chunk(2, 0).unwrap();
        assert_eq!(ch.iter().map(|t| t.numel()).collect::<Vec<_>>(), vec![3, 2]);
        assert!(c.split_sizes(1, &[1, 1]).is_err());
    }

    #[test]
    fn pad_and_squeeze() {
        let a = iota(&[1, 2]);
        let p = a.pad(&[(0, 0), (1, 2)], -1.0).unwrap();
        assert_eq!(p.to_vec(), vec![-1., 0., 1., -1., -1.]);
        assert!(a.pad(&[(1, 1)], 0.0).is_err());
        assert_eq!(a.squeeze(0).unwrap().shape(), &[2]);
        assert!(a.squeeze(1).is_err());
        assert_eq!(a.unsqueeze(-1).unwrap().shape(), &[1, 2, 1]);
        assert_eq!(iota(&[2, 3, 4]).flatten(1, 2).unwrap().shape(), &[2, 12]);
    }

    #[test]
    fn broadcast_to_materialises() {
        let a = iota(&[2, 1]);
        assert_eq!(
            a.broadcast_to(&[2, 3]).unwrap().to_vec(),
            vec![0., 0., 0., 1., 1., 1.]
        );
        assert!(a.broadcast_to(&[3, 3]).is_err());
        assert!(a.broadcast_to(&[3]).is_err());
    }
}
