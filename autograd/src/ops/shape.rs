//! Shape ops (reshape, permute, squeeze, broadcast, narrow/slice,
//! index_select, gather, concat/stack/split, pad), forward and backward.
//! Each backward is the adjoint of the forward's index map.

use anneal_tensor::{normalize_axis, Dim, Element, Error, Result, Tensor};

use crate::Var;

impl<T: Element> Var<T> {
    /// Same elements, new shape; `∂ = g` reshaped back.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        let y = self.value().reshape(shape)?;
        let s = self.shape().to_vec();
        Ok(Var::from_op("reshape", y, &[self], move |g, _| {
            Ok(vec![Some(g.reshape(&s)?)])
        }))
    }

    /// Merges axes `start..=end` (`torch.flatten`).
    pub fn flatten<D: Dim>(&self, start: D, end: D) -> Result<Self> {
        let y = self.value().flatten(start, end)?;
        let shape = y.shape().to_vec();
        self.reshape(&shape)
    }

    /// Reorders axes; `∂ = g` permuted by the inverse permutation.
    pub fn permute(&self, perm: &[usize]) -> Result<Self> {
        let y = self.value().permute(perm)?;
        let mut inv = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        Ok(Var::from_op("permute", y, &[self], move |g, _| {
            Ok(vec![Some(g.permute(&inv)?)])
        }))
    }

    /// Swaps two axes.
    pub fn transpose<D: Dim>(&self, a: D, b: D) -> Result<Self> {
        let a = normalize_axis("transpose", a, self.rank())?;
        let b = normalize_axis("transpose", b, self.rank())?;
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Removes an axis of extent 1.
    pub fn squeeze<D: Dim>(&self, axis: D) -> Result<Self> {
        let y = self.value().squeeze(axis)?;
        let shape = y.shape().to_vec();
        self.reshape(&shape)
    }

    /// Inserts an axis of extent 1.
    pub fn unsqueeze<D: Dim>(&self, axis: D) -> Result<Self> {
        let y = self.value().unsqueeze(axis)?;
        let shape = y.shape().to_vec();
        self.reshape(&shape)
    }

    /// Repeats along broadcast axes; `∂ = g` summed back to the input shape.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Self> {
        let y = self.value().broadcast_to(shape)?;
        let s = self.shape().to_vec();
        Ok(Var::from_op("broadcast_to", y, &[self], move |g, _| {
            Ok(vec![Some(g.sum_to_shape(&s)?)])
        }))
    }

    /// `len` entries of `axis` from `start`.
    pub fn narrow<D: Dim>(&self, axis: D, start: usize, len: usize) -> Result<Self> {
        self.slice(axis, start, start.saturating_add(len), 1)
    }

    /// Entries `start..end` step `step` of `axis`; `∂` scatters `g` back
    /// into zeros.
    pub fn slice<D: Dim>(&self, axis: D, start: usize, end: usize, step: usize) -> Result<Self> {
        let a = normalize_axis("slice", axis, self.rank())?;
        let y = self.value().slice(a, start, end, step)?;
        let s = self.shape().to_vec();
        let idx: Vec<usize> = (start..end).step_by(step.max(1)).collect();
        Ok(Var::from_op("slice", y, &[self], move |g, _| {
            if step == 1 {
                let mut pads = vec![(0, 0); s.len()];
                pads[a] = (start, s[a] - end);
                return Ok(vec![Some(g.pad(&pads, T::zero())?)]);
            }
            Ok(vec![Some(Tensor::zeros(&s)?.index_add(a, &idx, g)?)])
        }))
    }

    /// Picks entries of `axis`; `∂` adds `g` back at the picked indices.
    pub fn index_select<D: Dim>(&self, axis: D, indices: &[usize]) -> Result<Self> {
        let a = normalize_axis("index_select", axis, self.rank())?;
        let y = self.value().index_select(a, indices)?;
        let (s, idx) = (self.shape().to_vec(), indices.to_vec());
        Ok(Var::from_op("index_select", y, &[self], move |g, _| {
            Ok(vec![Some(Tensor::zeros(&s)?.index_add(a, &idx, g)?)])
        }))
    }

    /// `torch.gather`; `∂` is `scatter_add` of `g` into zeros.
    pub fn gather<D: Dim>(&self, axis: D, index: &Tensor<usize>) -> Result<Self> {
        let a = normalize_axis("gather", axis, self.rank())?;
        let y = self.value().gather(a, index)?;
        let (s, idx) = (self.shape().to_vec(), index.clone());
        Ok(Var::from_op("gather", y, &[self], move |g, _| {
            Ok(vec![Some(Tensor::zeros(&s)?.scatter_add(a, &idx, g)?)])
        }))
    }

    /// Joins along an existing axis; `∂` splits `g` back.
    pub fn concat<D: Dim>(vars: &[&Self], axis: D) -> Result<Self> {
        let values: Vec<&Tensor<T>> = vars.iter().map(|v| v.value()).collect();
        let y = Tensor::concat(&values, axis)?;
        let a = normalize_axis("concat", axis, vars[0].rank())?;
        let sizes: Vec<usize> = vars.iter().map(|v| v.shape()[a]).collect();
        Ok(Var::from_op("concat", y, vars, move |g, _| {
            Ok(g.split_sizes(a, &sizes)?.into_iter().map(Some).collect())
        }))
    }

    /// Joins equal shapes along a new axis; `∂` splits and squeezes `g`.
    pub fn stack<D: Dim>(vars: &[&Self], axis: D) -> Result<Self> {
        let first = vars
            .first()
            .ok_or_else(|| Error::invalid("stack", "no tensors given"))?;
        let a = normalize_axis("stack", axis, first.rank() + 1)?;
        let expanded: Vec<Self> = vars.iter().map(|v| v.unsqueeze(a)).collect::<Result<_>>()?;
        let refs: Vec<&Self> = expanded.iter().collect();
        Self::concat(&refs, a)
    }

    /// Splits into pieces of the given extents (`torch.split`).
    pub fn split_sizes<D: Dim>(&self, axis: D, sizes: &[usize]) -> Result<Vec<Self>> {
        let a = normalize_axis("split", axis, self.rank())?;
        self.value().split_sizes(a, sizes)?; // validates
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

    /// Splits into `chunks` nearly equal pieces (`torch.chunk`).
    pub fn chunk<D: Dim>(&self, chunks: usize, axis: D) -> Result<Vec<Self>> {
        let a = normalize_axis("chunk", axis, self.rank())?;
        let sizes: Vec<usize> = self
            .value()
            .chunk(chunks, a)?
            .iter()
            .map(|t| t.shape()[a])
            .collect();
        self.split_sizes(a, &sizes)
    }

    /// Constant padding, one `(before, after)` pair per axis; `∂` is the
    /// interior of `g`.
    pub fn pad(&self, pads: &[(usize, usize)], value: T) -> Result<Self> {
        let y = self.value().pad(pads, value)?;
        let (s, p) = (self.shape().to_vec(), pads.to_vec());
        Ok(Var::from_op("pad", y, &[self], move |g, _| {
            let mut inner = g.clone();
            for (axis, (&(before, _), &len)) in p.iter().zip(&s).enumerate() {
                inner = inner.narrow(axis, before, len)?;
            }
            Ok(vec![Some(inner)])
        }))
    }
}
