//! Positional encodings added to a sequence of embeddings: the fixed
//! sinusoids of Vaswani et al. (2017, §3.5) and a learned table
//! (Gehring et al. 2017; BERT, GPT).

use anneal_autograd::{Param, Var};
use anneal_tensor::{Element, Error, Result, Tensor};
use rand::Rng;

use crate::init;
use crate::module::{join, param_dims, Entry, EntryMut, Module};

/// Checks `x` is `[.., T, d]` with `offset + T ≤ max_len`; returns `T`.
fn check_input<T: Element>(
    layer: &'static str,
    x: &Var<T>,
    d: usize,
    max_len: usize,
    offset: usize,
) -> Result<usize> {
    let r = x.rank();
    if r < 2 || x.shape()[r - 1] != d {
        return Err(Error::shape(
            layer,
            &[x.shape()],
            format!("expected input [B, T, {d}] (or [T, {d}])"),
        ));
    }
    let t = x.shape()[r - 2];
    if offset.checked_add(t).is_none_or(|end| end > max_len) {
        return Err(Error::shape(
            layer,
            &[x.shape()],
            format!("positions {offset}..{offset}+{t} exceed max_len {max_len}"),
        ));
    }
    Ok(t)
}

/// Fixed sinusoidal positional encoding (Vaswani et al. 2017, §3.5):
/// `PE[pos, 2i] = sin(pos / 10000^(2i/d))`,
/// `PE[pos, 2i+1] = cos(pos / 10000^(2i/d))`, added to the input.
///
/// The table is computed once in `f64` and has no parameters; it is not part
/// of the state dict (it is a pure function of `max_len` and `d`; PyTorch's
/// tutorial keeps it as a buffer `pe` in a sequence-first layout). An odd
/// `d` is allowed: the last column is a sine. No dropout is applied (compose
/// a [`Dropout`](crate::Dropout) after it, as the PyTorch tutorial does), and
/// no `√d` scaling of the embeddings (that is the embedding's job).
///
/// # Shapes
/// `[B, T, d]` or `[T, d]` with `T ≤ max_len` → same shape:
/// `y[b, t, :] = x[b, t, :] + PE[t, :]`.
#[derive(Debug, Clone)]
pub struct SinusoidalPositionalEncoding<T: Element = f32> {
    table: Tensor<T>,
}

impl<T: Element> SinusoidalPositionalEncoding<T> {
    /// The table for positions `0..max_len` and width `d_model`.
    pub fn new(d_model: usize, max_len: usize) -> Result<Self> {
        if d_model == 0 {
            return Err(Error::invalid(
                "SinusoidalPositionalEncoding",
                "d_model must be positive",
            ));
        }
        // Allocated fallibly first: a table the allocator cannot hold is an
        // error, not an abort.
        let mut table = Tensor::<T>::zeros(&[max_len, d_model]).map_err(|e| match e {
            Error::TooLarge { shape, .. } => Error::TooLarge {
                op: "SinusoidalPositionalEncoding",
                shape,
            },
            e => e,
        })?;
        for (k, v) in table.data_mut().iter_mut().enumerate() {
            let (pos, j) = (k / d_model, k % d_model);
            let two_i = (j - j % 2) as f64;
            let angle = pos as f64 / 10000f64.powf(two_i / d_model as f64);
            *v = T::from_f64_lossy(if j % 2 == 0 { angle.sin() } else { angle.cos() });
        }
        Ok(SinusoidalPositionalEncoding { table })
    }

    /// The table `PE` `[max_len, d]`.
    pub fn table(&self) -> &Tensor<T> {
        &self.table
    }

    /// The longest sequence it encodes.
    pub fn max_len(&self) -> usize {
        self.table.shape()[0]
    }

    /// Adds the encodings of positions `offset..offset + T` (for decoding a
    /// continuation one step at a time).
    ///
    /// # Shapes
    /// `[B, T, d]` or `[T, d]` with `offset + T ≤ max_len` → same shape:
    /// `y[b, t, :] = x[b, t, :] + PE[offset + t, :]`.
    pub fn forward_at(&self, x: &Var<T>, offset: usize) -> Result<Var<T>> {
        let (max_len, d) = (self.table.shape()[0], self.table.shape()[1]);
        let t = check_input("SinusoidalPositionalEncoding", x, d, max_len, offset)?;
        x.add(&Var::constant(self.table.narrow(0, offset, t)?))
    }
}

impl<T: Element> Module<T> for SinusoidalPositionalEncoding<T> {
    /// `x + PE[0..T]`.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        self.forward_at(x, 0)
    }

    fn visit<'a>(&'a self, _: &str, _: &mut dyn FnMut(&str, Entry<'a, T>)) {}
    fn visit_mut<'a>(&'a mut self, _: &str, _: &mut dyn FnMut(&str, EntryMut<'a, T>)) {}
}

/// Learned absolute positional encoding: a trainable table `weight`
/// `[max_len, d]` whose first `T` rows are added to the input (as
/// `x + nn.Embedding(max_len, d)(arange(T))`, so the state-dict name is
/// `weight`). Initialised `N(0, 1)` like `nn.Embedding`; pass a smaller
/// `std` to [`LearnedPositionalEncoding::with_std`] for GPT/BERT-style
/// `N(0, 0.02²)`.
///
/// # Shapes
/// `[B, T, d]` or `[T, d]` with `T ≤ max_len` → same shape:
/// `y[b, t, :] = x[b, t, :] + weight[t, :]`.
#[derive(Debug, Clone)]
pub struct LearnedPositionalEncoding<T: Element = f32> {
    /// The table `[max_len, d]`.
    pub weight: Param<T>,
}

impl<T: Element> LearnedPositionalEncoding<T> {
    /// A table initialised `N(0, 1)`.
    pub fn new(max_len: usize, d_model: usize, rng: &mut impl Rng) -> Result<Self> {
        Self::with_std(max_len, d_model, 1.0, rng)
    }

    /// A table initialised `N(0, std²)`.
    pub fn with_std(max_len: usize, d_model: usize, std: f64, rng: &mut impl Rng) -> Result<Self> {
        if d_model == 0 || std.is_nan() || std < 0.0 {
            return Err(Error::invalid(
                "LearnedPositionalEncoding",
                format!("d_model {d_model} must be positive and std {std} ≥ 0"),
            ));
        }
        Ok(LearnedPositionalEncoding {
            weight: Param::new(init::normal(&[max_len, d_model], std, rng)?),
        })
    }

    /// Adds the rows of positions `offset..offset + T`.
    ///
    /// # Shapes
    /// `[B, T, d]` or `[T, d]` with `offset + T ≤ max_len` → same shape:
    /// `y[b, t, :] = x[b, t, :] + weight[offset + t, :]`.
    pub fn forward_at(&self, x: &Var<T>, offset: usize) -> Result<Var<T>> {
        let [max_len, d] = param_dims("LearnedPositionalEncoding", "weight", self.weight.shape())?;
        let t = check_input("LearnedPositionalEncoding", x, d, max_len, offset)?;
        x.add(&self.weight.var().narrow(0, offset, t)?)
    }
}

impl<T: Element> Module<T> for LearnedPositionalEncoding<T> {
    /// `x + weight[0..T]`.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        self.forward_at(x, 0)
    }

    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
        f(&join(prefix, "weight"), Entry::Param(&self.weight));
    }

    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
        f(&join(prefix, "weight"), EntryMut::Param(&mut self.weight));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sinusoid_values_follow_the_paper() {
        let pe = SinusoidalPositionalEncoding::<f64>::new(6, 10).unwrap();
        let t = pe.table();
        for pos in [0usize, 1, 7] {
            for i in 0..3 {
                let w = 1.0 / 10000f64.powf(2.0 * i as f64 / 6.0);
                let p = pos as f64;
                assert!((t.get(&[pos, 2 * i]).unwrap() - (p * w).sin()).abs() < 1e-15);
                assert!((t.get(&[pos, 2 * i + 1]).unwrap() - (p * w).cos()).abs() < 1e-15);
            }
        }
        // Odd width: the last column is a sine of the next frequency.
        let odd = SinusoidalPositionalEncoding::<f64>::new(5, 4).unwrap();
        let w = 1.0 / 10000f64.powf(4.0 / 5.0);
        assert!((odd.table().get(&[3, 4]).unwrap() - (3.0 * w).sin()).abs() < 1e-15);
    }

    #[test]
    fn adds_to_each_batch_element_and_checks_length() {
        let pe = SinusoidalPositionalEncoding::<f64>::new(4, 3).unwrap();
        let x = Var::constant(Tensor::<f64>::zeros(&[2, 3, 4]).unwrap());
        let y = pe.forward(&x).unwrap();
        let row = pe.table().to_vec();
        assert_eq!(&y.value().to_vec()[..12], &row[..]);
        assert_eq!(&y.value().to_vec()[12..], &row[..]);
        let long = Var::constant(Tensor::<f64>::zeros(&[1, 4, 4]).unwrap());
        let e = pe.forward(&long).unwrap_err().to_string();
        assert!(
            e.contains("SinusoidalPositionalEncoding") && e.contains("max_len 3"),
            "{e}"
        );
        assert!(pe
            .forward_at(&x.value().narrow(1, 0, 1).unwrap().into(), 2)
            .is_ok());
        assert!(pe
            .forward_at(&x.value().narrow(1, 0, 2).unwrap().into(), 2)
            .is_err());
        let wide = Var::constant(Tensor::<f64>::zeros(&[1, 2, 5]).unwrap());
        assert!(pe.forward(&wide).is_err());
    }

    #[test]
    fn learned_table_gets_gradient_only_on_used_rows() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let pe = LearnedPositionalEncoding::<f64>::new(5, 3, &mut rng).unwrap();
        let x = Var::constant(Tensor::<f64>::ones(&[2, 2, 3]).unwrap());
        let y = pe.forward(&x).unwrap();
        let w = pe.weight.value().to_vec();
        assert_eq!(
            y.value().to_vec()[..6],
            w[..6].iter().map(|v| v + 1.0).collect::<Vec<_>>()[..]
        );
        let g = y.sum_all().unwrap().backward().unwrap();
        let gw = g.get(&pe.weight).unwrap().to_vec();
        assert_eq!(
            gw,
            vec![2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
        assert!(pe
            .forward(&Var::constant(Tensor::<f64>::zeros(&[1, 6, 3]).unwrap()))
            .is_err());
    }
}
