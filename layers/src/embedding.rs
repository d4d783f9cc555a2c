//! Embedding lookup table.

use anneal_autograd::{Param, Var};
use anneal_tensor::{Element, Error, Result, Tensor};
use rand::Rng;

use crate::init;
use crate::module::{join, param_dims, Entry, EntryMut, Module};

/// A lookup table `[num_embeddings, dim]` (`torch.nn.Embedding`), initialised
/// `N(0, 1)`; the `padding_idx` row starts at zero and receives no gradient.
#[derive(Debug, Clone)]
pub struct Embedding<T: Element = f32> {
    /// The table `[num_embeddings, embedding_dim]`.
    pub weight: Param<T>,
    /// The index whose row is padding.
    pub padding_idx: Option<usize>,
}

impl<T: Element> Embedding<T> {
    /// A table of `num` rows of width `dim`.
    pub fn new(
        num: usize,
        dim: usize,
        padding_idx: Option<usize>,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        if padding_idx.is_some_and(|p| p >= num) {
            return Err(Error::invalid(
                "Embedding",
                format!("padding_idx {padding_idx:?} is not below num_embeddings {num}"),
            ));
        }
        let mut w = init::normal::<T>(&[num, dim], 1.0, rng)?;
        if let Some(p) = padding_idx {
            w.data_mut()[p * dim..(p + 1) * dim].fill(T::zero());
        }
        Ok(Embedding {
            weight: Param::new(w),
            padding_idx,
        })
    }

    /// Looks up rows: indices of any shape → `[..indices.shape, dim]`.
    pub fn lookup(&self, indices: &Tensor<usize>) -> Result<Var<T>> {
        let [n, dim] = param_dims("Embedding", "weight", self.weight.shape())?;
        if let Some(&bad) = indices.as_slice().iter().find(|&&i| i >= n) {
            return Err(Error::IndexOutOfRange {
                op: "Embedding",
                index: bad,
                size: n,
                axis: 0,
            });
        }
        let rows = self.weight.var().index_select(0, indices.as_slice())?;
        let rows = match self.padding_idx {
            Some(p) if indices.as_slice().contains(&p) => {
                // Same values, but no gradient flows to the padding row.
                let mask = indices
                    .map(move |i| i == p)
                    .reshape(&[indices.numel(), 1])?;
                Var::where_cond(&mask, &rows.detach(), &rows)?
            }
            _ => rows,
        };
        let mut shape = indices.shape().to_vec();
        shape.push(dim);
        rows.reshape(&shape)
    }
}

impl<T: Element> Module<T> for Embedding<T> {
    /// Reads the input's values as indices (they must be whole numbers).
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let vals = x.value();
        if let Some(bad) = vals
            .as_slice()
            .iter()
            .find(|v| !(v.fract() == T::zero() && **v >= T::zero()))
        {
            return Err(Error::invalid(
                "Embedding",
                format!("index {bad} is not a non-negative whole number"),
            ));
        }
        let idx = vals.map(|v| v.to_usize().unwrap_or(usize::MAX));
        self.lookup(&idx)
    }

    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
        f(&join(prefix, "weight"), Entry::Param(&self.weight));
    }

    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
        f(&join(prefix, "weight"), EntryMut::Param(&mut self.weight));
    }
}
