//! Multi-head scaled dot-product attention (Vaswani et al. 2017, §3.2), as
//! `torch.nn.MultiheadAttention(batch_first=True)`.
//!
//! The computation follows PyTorch 1.13's reference path
//! (`F.multi_head_attention_forward`) step by step:
//!
//! 1. packed input projection `[q | k | v] = x·W_inᵀ + b_in` — one GEMM when
//!    query, key and value are the same [`Var`] (self-attention), two when
//!    only key and value are (cross-attention), three otherwise;
//! 2. split into `H` heads; head `h` owns features `[h·d, (h+1)·d)`, `d = E/H`;
//! 3. `q ← q/√d`, scores `S = q·kᵀ` by batched GEMM (`[B, H, Lq, Lk]`);
//! 4. forbidden positions (boolean masks, True = forbidden) set to `−∞`;
//! 5. `A = softmax(S)` over keys, dropout on `A` in training only;
//! 6. `O = A·v`, heads merged back to `[B, Lq, E]`, `y = O·W_outᵀ + b_out`.
//!
//! A query row whose keys are all masked gives NaN in that row of the output,
//! exactly as PyTorch 1.13 does (its softmax of an all-`−∞` row is NaN); it is
//! the caller's job not to mask every key of a query it keeps.

use anneal_autograd::{Param, Var};
use anneal_tensor::{Element, Error, Result, Tensor};
use rand::Rng;

use crate::dropout::Dropout;
use crate::init;
use crate::linear::Linear;
use crate::module::{join, param_dims, Entry, EntryMut, Module};

const LAYER: &str = "MultiHeadAttention";

/// The causal ("subsequent") mask of a sequence of length `len`: `True` where
/// key `j` lies after query `i` (`j > i`), i.e. where attention is forbidden
/// (`torch.nn.Transformer.generate_square_subsequent_mask`, as a boolean mask).
///
/// # Shapes
/// → `[len, len]`, `mask[i, j] = j > i`.
pub fn causal_mask(len: usize) -> Result<Tensor<bool>> {
    causal_mask_rect(len, len)
}

/// `mask[i, j] = j > i` for `lq` queries and `lk` keys (top-left aligned, as
/// `torch.nn.functional.scaled_dot_product_attention(is_causal=True)`).
fn causal_mask_rect(lq: usize, lk: usize) -> Result<Tensor<bool>> {
    let n = anneal_tensor::checked_numel("causal_mask", &[lq, lk])?;
    let mut data = Vec::new();
    data.try_reserve_exact(n).map_err(|_| Error::TooLarge {
        op: "causal_mask",
        shape: vec![lq, lk],
    })?;
    data.extend((0..n).map(|idx| idx % lk.max(1) > idx / lk.max(1)));
    Tensor::from_vec(data, &[lq, lk])
}

/// A seed derived from `seed` and a stream number `k` (SplitMix64), so that
/// the dropout layers inside one block draw independent masks.
pub(crate) fn derive_seed(seed: u64, k: u64) -> u64 {
    let mut z = seed
        .wrapping_add(k.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The masks and options of one attention call (the keyword arguments of
/// `torch.nn.MultiheadAttention.forward`).
///
/// # Shapes
/// `attn_mask` `[Lq, Lk]` (shared by every batch element and head) or
/// `[B·H, Lq, Lk]` (index `b·H + h`), True = forbidden;
/// `key_padding_mask` `[B, Lk]`, True = padding. For unbatched inputs
/// (`[L, E]`) they are `[Lq, Lk]` or `[H, Lq, Lk]`, and `[Lk]`.
/// The masks are combined by logical or: a score is dropped when any of
/// `attn_mask[i, j]`, `is_causal && j > i` and `key_padding_mask[b, j]` holds.
#[derive(Debug, Clone)]
pub struct AttentionMask {
    /// Boolean attention mask, True where query `i` may not attend to key `j`.
    pub attn_mask: Option<Tensor<bool>>,
    /// Boolean key padding mask, True where key `j` of batch element `b` is padding.
    pub key_padding_mask: Option<Tensor<bool>>,
    /// Also forbid every key after the query (`j > i`); combined with
    /// `attn_mask` when both are given. (PyTorch 2's `is_causal` is only a
    /// hint that `attn_mask` is causal; here it builds the mask itself.)
    pub is_causal: bool,
    /// Return the attention weights (PyTorch's default: true).
    pub need_weights: bool,
    /// Average the returned weights over heads (`[B, Lq, Lk]`) rather than
    /// returning them per head (`[B, H, Lq, Lk]`); PyTorch's default: true.
    pub average_attn_weights: bool,
}

impl Default for AttentionMask {
    /// No masks; weights returned, averaged over heads (PyTorch's defaults).
    fn default() -> Self {
        AttentionMask {
            attn_mask: None,
            key_padding_mask: None,
            is_causal: false,
            need_weights: true,
            average_attn_weights: true,
        }
    }
}

impl AttentionMask {
    /// No masks, weights averaged over heads (same as `default()`).
    pub fn none() -> Self {
        Self::default()
    }

    /// Causal masking only: query `i` sees keys `j ≤ i`.
    pub fn causal() -> Self {
        Self::default().with_causal(true)
    }

    /// Sets the boolean attention mask `[Lq, Lk]` or `[B·H, Lq, Lk]`.
    pub fn with_attn_mask(mut self, mask: Tensor<bool>) -> Self {
        self.attn_mask = Some(mask);
        self
    }

    /// Sets the key padding mask `[B, Lk]` (True = padding).
    pub fn with_key_padding_mask(mut self, mask: Tensor<bool>) -> Self {
        self.key_padding_mask = Some(mask);
        self
    }

    /// Sets whether keys after the query are masked.
    pub fn with_causal(mut self, is_causal: bool) -> Self {
        self.is_causal = is_causal;
        self
    }

    /// Sets whether the attention weights are returned.
    pub fn with_need_weights(mut self, need_weights: bool) -> Self {
        self.need_weights = need_weights;
        self
    }

    /// Sets whether returned weights are averaged over heads.
    pub fn with_average_attn_weights(mut self, average: bool) -> Self {
        self.average_attn_weights = average;
        self
    }

    /// Masks from optional borrowed tensors, no weights (as the Transformer
    /// layers call their attention).
    pub(crate) fn from_parts(attn: Option<&Tensor<bool>>, kpm: Option<&Tensor<bool>>) -> Self {
        AttentionMask {
            attn_mask: attn.cloned(),
            key_padding_mask: kpm.cloned(),
            is_causal: false,
            need_weights: false,
            average_attn_weights: true,
        }
    }
}

/// Configuration of a [`MultiHeadAttention`] layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MultiHeadAttentionConfig {
    /// Model width `E` (query, key and value features).
    pub embed_dim: usize,
    /// Number of heads `H`; must divide `E`.
    pub num_heads: usize,
    /// Dropout probability on the attention weights (training only).
    pub dropout: f64,
    /// Whether the input and output projections have biases.
    pub bias: bool,
    /// Seed of the dropout generator.
    pub seed: u64,
}

impl MultiHeadAttentionConfig {
    /// `E` features in `H` heads, no dropout, with biases (PyTorch's defaults).
    pub fn new(embed_dim: usize, num_heads: usize) -> Self {
        MultiHeadAttentionConfig {
            embed_dim,
            num_heads,
            dropout: 0.0,
            bias: true,
            seed: 0,
        }
    }

    /// Sets the attention-weight dropout probability.
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    /// Sets whether the projections have biases.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Sets the dropout seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Builds the layer with PyTorch's initialisation: `in_proj_weight`
    /// Xavier-uniform `U(−a, a)`, `a = √(6/(E + 3E))`; `in_proj_bias` and
    /// `out_proj.bias` zero; `out_proj.weight` Linear's default
    /// `U(−1/√E, 1/√E)`.
    pub fn init<T: Element>(&self, rng: &mut impl Rng) -> Result<MultiHeadAttention<T>> {
        let (e, h) = (self.embed_dim, self.num_heads);
        if e == 0 || e.checked_rem(h) != Some(0) {
            return Err(Error::invalid(
                LAYER,
                format!("embed_dim {e} must be positive and divisible by num_heads {h}"),
            ));
        }
        if !(0.0..=1.0).contains(&self.dropout) {
            return Err(Error::invalid(
                LAYER,
                format!("dropout probability {} is outside [0, 1]", self.dropout),
            ));
        }
        // Same order as PyTorch's constructor: out_proj is built (and drawn)
        // first, then `_reset_parameters` draws in_proj_weight.
        let out_w = init::default_weight(&[e, e], rng)?;
        let in_w = init::xavier_uniform(&[3 * e, e], 1.0, rng)?;
        let zeros = |n| Tensor::zeros(&[n]).map(Param::new);
        Ok(MultiHeadAttention {
            in_proj_weight: Param::new(in_w),
            in_proj_bias: if self.bias { Some(zeros(3 * e)?) } else { None },
            out_proj: Linear::from_params(
                Param::new(out_w),
                if self.bias { Some(zeros(e)?) } else { None },
            ),
            num_heads: h,
            dropout: Dropout::new(self.dropout, self.seed)?,
        })
    }
}

/// Multi-head attention (`torch.nn.MultiheadAttention`, `batch_first=True`):
/// `MultiHead(Q, K, V) = Concat(head₁, …, head_H)·W_outᵀ + b_out` with
/// `head_h = softmax(Q_h·K_hᵀ/√d + M)·V_h`, where `Q_h = (Q·W_qᵀ + b_q)` restricted
/// to features `[h·d, (h+1)·d)`, `d = E/H`, `M` is `−∞` where masked and 0
/// elsewhere, and `W_q; W_k; W_v` are the three `[E, E]` row blocks of
/// `in_proj_weight`.
///
/// Parameters (PyTorch's state-dict names): `in_proj_weight [3E, E]`,
/// `in_proj_bias [3E]`, `out_proj.weight [E, E]`, `out_proj.bias [E]`.
/// `kdim`/`vdim` different from `E`, `add_bias_kv` and `add_zero_attn` are not
/// supported.
///
/// # Shapes
/// query `[B, Lq, E]`, key and value `[B, Lk, E]` → output `[B, Lq, E]` and
/// weights `[B, Lq, Lk]` (averaged over heads) or `[B, H, Lq, Lk]`.
/// Unbatched `[Lq, E]`, `[Lk, E]` → `[Lq, E]`.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention<T: Element = f32> {
    /// Packed input projection `[3E, E]`: rows `[0, E)` query, `[E, 2E)` key,
    /// `[2E, 3E)` value.
    pub in_proj_weight: Param<T>,
    /// Packed input bias `[3E]`.
    pub in_proj_bias: Option<Param<T>>,
    /// Output projection `E → E` (`out_proj.weight`, `out_proj.bias`).
    pub out_proj: Linear<T>,
    num_heads: usize,
    pub(crate) dropout: Dropout,
}

/// The parameters of one attention block as graph nodes.
#[derive(Clone)]
pub(crate) struct AttnVars<T: Element> {
    pub(crate) in_w: Var<T>,
    pub(crate) in_b: Option<Var<T>>,
    pub(crate) out_w: Var<T>,
    pub(crate) out_b: Option<Var<T>>,
}

/// Reads parameter `Var`s in `named_parameters()` order, checking each shape.
pub(crate) struct ParamCursor<'a, T: Element> {
    layer: &'static str,
    vars: &'a [Var<T>],
    pos: usize,
}

impl<'a, T: Element> ParamCursor<'a, T> {
    pub(crate) fn new(layer: &'static str, vars: &'a [Var<T>]) -> Self {
        ParamCursor {
            layer,
            vars,
            pos: 0,
        }
    }

    /// The next parameter, which must be called `name` and shaped `shape`.
    pub(crate) fn take(&mut self, name: &str, shape: &[usize]) -> Result<Var<T>> {
        let v = self.vars.get(self.pos).ok_or_else(|| {
            Error::invalid(
                self.layer,
                format!(
                    "{} parameters given, but {name} is parameter number {}",
                    self.vars.len(),
                    self.pos + 1
                ),
            )
        })?;
        if v.shape() != shape {
            return Err(Error::shape(
                self.layer,
                &[v.shape(), shape],
                format!("parameter {} ({name}) has the wrong shape", self.pos),
            ));
        }
        self.pos += 1;
        Ok(v.clone())
    }

    /// Errors unless every parameter was used.
    pub(crate) fn finish(self) -> Result<()> {
        if self.pos != self.vars.len() {
            return Err(Error::invalid(
                self.layer,
                format!(
                    "{} parameters given, but the layer has {}",
                    self.vars.len(),
                    self.pos
                ),
            ));
        }
        Ok(())
    }

    /// `weight` and optional `bias` of a Linear layer named `prefix`.
    pub(crate) fn linear(
        &mut self,
        l: &Linear<T>,
        prefix: &str,
    ) -> Result<(Var<T>, Option<Var<T>>)> {
        let w = self.take(&join(prefix, "weight"), l.weight.shape())?;
        let b = match &l.bias {
            Some(b) => Some(self.take(&join(prefix, "bias"), b.shape())?),
            None => None,
        };
        Ok((w, b))
    }
}

/// The current parameters of `m` as graph leaves, in `named_parameters()` order.
pub(crate) fn param_vars<T: Element, M: Module<T> + ?Sized>(m: &M) -> Vec<Var<T>> {
    let mut out = Vec::new();
    m.visit("", &mut |_, e| {
        if let Entry::Param(p) = e {
            out.push(p.var());
        }
    });
    out
}

/// Who is calling the attention core, for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttnCtx {
    /// The layer named in errors.
    pub(crate) layer: &'static str,
    /// What the caller calls `attn_mask`.
    pub(crate) attn_name: &'static str,
    /// What the caller calls `key_padding_mask`.
    pub(crate) kpm_name: &'static str,
    /// Number of heads.
    pub(crate) heads: usize,
}

/// Applies a dropout layer in training (`Some`), the identity otherwise.
pub(crate) fn maybe_dropout<T: Element>(d: Option<&mut Dropout>, x: Var<T>) -> Result<Var<T>> {
    match d {
        Some(d) if d.p() > 0.0 => Module::<T>::forward_train(d, &x),
        _ => Ok(x),
    }
}

/// `[B, L, n·H·d]` → `n` tensors `[B, H, L, d]` (the packed chunks, split
/// into heads).
fn split_heads<T: Element>(x: &Var<T>, n: usize, heads: usize) -> Result<Vec<Var<T>>> {
    let (b, l, f) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let d = f / (n * heads);
    if n == 1 {
        return Ok(vec![x
            .reshape(&[b, l, heads, d])?
            .permute(&[0, 2, 1, 3])?]);
    }
    let y = x.reshape(&[b, l, n, heads, d])?.permute(&[2, 0, 3, 1, 4])?;
    (0..n)
        .map(|i| y.narrow(0, i, 1)?.reshape(&[b, heads, l, d]))
        .collect()
}

/// `x·Wᵀ + b` for `x` `[.., in]` with its leading axes flattened into the
/// rows of one GEMM (and its backward's), then restored: a 3-D input would
/// otherwise be multiplied one batch entry at a time in the backward pass.
pub(crate) fn linear_rows<T: Element>(
    x: &Var<T>,
    w: &Var<T>,
    b: Option<&Var<T>>,
) -> Result<Var<T>> {
    if x.rank() <= 2 {
        return x.linear(w, b);
    }
    let s = x.shape();
    let rows = s[..s.len() - 1].iter().product();
    let y = x.reshape(&[rows, s[s.len() - 1]])?.linear(w, b)?;
    let mut out = s.to_vec();
    *out.last_mut().expect("rank ≥ 3") = y.shape()[1];
    y.reshape(&out)
}

/// The input projection of chunks `first..first + n` (0 = q, 1 = k, 2 = v).
fn project<T: Element>(
    x: &Var<T>,
    vars: &AttnVars<T>,
    first: usize,
    n: usize,
    heads: usize,
) -> Result<Vec<Var<T>>> {
    let e = vars.in_w.shape()[1];
    let y = if n == 3 {
        linear_rows(x, &vars.in_w, vars.in_b.as_ref())?
    } else {
        let w = vars.in_w.narrow(0, first * e, n * e)?;
        let b = match &vars.in_b {
            Some(b) => Some(b.narrow(0, first * e, n * e)?),
            None => None,
        };
        linear_rows(x, &w, b.as_ref())?
    };
    split_heads(&y, n, heads)
}

/// The combined boolean mask, broadcastable to `[B, H, Lq, Lk]`.
fn combined_mask(
    ctx: &AttnCtx,
    dims: [usize; 4],
    opts: &AttentionMask,
    inputs: [&[usize]; 2],
) -> Result<Option<Tensor<bool>>> {
    let [b, h, lq, lk] = dims;
    let mut mask: Option<Tensor<bool>> = None;
    let mut add = |m: Tensor<bool>| -> Result<()> {
        mask = Some(match mask.take() {
            None => m,
            Some(old) => old.or(&m)?,
        });
        Ok(())
    };
    if let Some(m) = &opts.attn_mask {
        let m4 = match *m.shape() {
            [a, c] if a == lq && c == lk => m.reshape(&[1, 1, lq, lk])?,
            [n, a, c] if n == b * h && a == lq && c == lk => m.reshape(&[b, h, lq, lk])?,
            _ => {
                return Err(Error::shape(
                    ctx.layer,
                    &[m.shape(), inputs[0], inputs[1]],
                    format!(
                        "{} must be [Lq, Lk] = [{lq}, {lk}] or [B·H, Lq, Lk] = [{}, {lq}, {lk}] \
                         for query × key",
                        ctx.attn_name,
                        b * h
                    ),
                ))
            }
        };
        add(m4)?;
    }
    if opts.is_causal {
        add(causal_mask_rect(lq, lk)?.reshape(&[1, 1, lq, lk])?)?;
    }
    if let Some(m) = &opts.key_padding_mask {
        if m.shape() != [b, lk] {
            return Err(Error::shape(
                ctx.layer,
                &[m.shape(), inputs[0], inputs[1]],
                format!(
                    "{} must be [B, Lk] = [{b}, {lk}] for query × key",
                    ctx.kpm_name
                ),
            ));
        }
        add(m.reshape(&[b, 1, 1, lk])?)?;
    }
    Ok(mask)
}

/// The attention core on explicit parameter `Var`s: query `[B, Lq, E]` (or
/// `[Lq, E]`), key/value `[B, Lk, E]` → `([B, Lq, E], weights)`. Dropout on
/// the weights when `dropout` is given.
pub(crate) fn attention<T: Element>(
    ctx: &AttnCtx,
    vars: &AttnVars<T>,
    query: &Var<T>,
    key: &Var<T>,
    value: &Var<T>,
    opts: &AttentionMask,
    dropout: Option<&mut Dropout>,
) -> Result<(Var<T>, Option<Tensor<T>>)> {
    let [_, e] = param_dims(ctx.layer, "in_proj_weight", vars.in_w.shape())?;
    let (qs, ks, vs) = (query.shape(), key.shape(), value.shape());
    let rank = query.rank();
    let shapes_ok = (rank == 2 || rank == 3)
        && key.rank() == rank
        && ks == vs
        && qs[rank - 1] == e
        && ks[rank - 1] == e
        && (rank == 2 || qs[0] == ks[0]);
    if !shapes_ok {
        return Err(Error::shape(
            ctx.layer,
            &[qs, ks, vs],
            format!(
                "expected query [B, Lq, {e}], key and value [B, Lk, {e}] (or unbatched \
                 [Lq, {e}], [Lk, {e}])"
            ),
        ));
    }
    if rank == 2 {
        return attention_unbatched(ctx, vars, query, key, value, opts, dropout);
    }
    let (b, lq, lk, h) = (qs[0], qs[1], ks[1], ctx.heads);
    let d = e / h;
    let mask = combined_mask(ctx, [b, h, lq, lk], opts, [qs, ks])?;

    let need_weights = |attn: &Tensor<T>| -> Result<Option<Tensor<T>>> {
        Ok(if !opts.need_weights {
            None
        } else if opts.average_attn_weights {
            Some(attn.mean_axes(&[1], false)?)
        } else {
            Some(attn.clone())
        })
    };
    let self_attention = query.id() == key.id() && key.id() == value.id();
    if self_attention && !dropout.as_ref().is_some_and(|d| d.p() > 0.0) {
        // One projection, then steps 3–6 as one node that reads the heads in
        // place and writes them merged (no head copies, no permutes).
        let qkv = linear_rows(query, &vars.in_w, vars.in_b.as_ref())?;
        let att = qkv.value().self_attention(h, mask.as_ref())?;
        let weights = need_weights(att.probs())?;
        let merged = Var::custom(
            "self_attention",
            att.output().clone(),
            &[&qkv],
            move |g, _| Ok(vec![Some(att.backward(g)?)]),
        );
        let out = linear_rows(&merged, &vars.out_w, vars.out_b.as_ref())?;
        return Ok((out, weights));
    }

    // 1–2. Input projection, fused where the inputs coincide.
    let (q, k, v) = if self_attention {
        let mut qkv = project(query, vars, 0, 3, h)?.into_iter();
        (qkv.next(), qkv.next(), qkv.next())
    } else if key.id() == value.id() {
        let q = project(query, vars, 0, 1, h)?.pop();
        let mut kv = project(key, vars, 1, 2, h)?.into_iter();
        (q, kv.next(), kv.next())
    } else {
        (
            project(query, vars, 0, 1, h)?.pop(),
            project(key, vars, 1, 1, h)?.pop(),
            project(value, vars, 2, 1, h)?.pop(),
        )
    };
    let (q, k, v) = match (q, k, v) {
        (Some(q), Some(k), Some(v)) => (q, k, v),
        _ => {
            return Err(Error::invalid(
                ctx.layer,
                "internal: projection split failed",
            ))
        }
    };

    // 3–5. Scaled scores, masking, softmax, dropout.
    let q = q.mul_scalar(T::from_f64_lossy(1.0 / (d as f64).sqrt()));
    let mut scores = q.matmul_t(&k, false, true)?;
    if let Some(m) = &mask {
        scores = scores.masked_fill(m, T::neg_infinity())?;
    }
    let attn = maybe_dropout(dropout, scores.softmax(-1)?)?;

    // 6. Weighted values, heads merged, output projection.
    let merged = attn
        .matmul(&v)?
        .permute(&[0, 2, 1, 3])?
        .reshape(&[b, lq, e])?;
    let out = linear_rows(&merged, &vars.out_w, vars.out_b.as_ref())?;
    Ok((out, need_weights(attn.value())?))
}

/// Unbatched inputs `[L, E]`: run as a batch of one and drop the batch axis.
fn attention_unbatched<T: Element>(
    ctx: &AttnCtx,
    vars: &AttnVars<T>,
    query: &Var<T>,
    key: &Var<T>,
    value: &Var<T>,
    opts: &AttentionMask,
    dropout: Option<&mut Dropout>,
) -> Result<(Var<T>, Option<Tensor<T>>)> {
    let q = query.unsqueeze(0)?;
    let k = if key.id() == query.id() {
        q.clone()
    } else {
        key.unsqueeze(0)?
    };
    let v = if value.id() == key.id() {
        k.clone()
    } else {
        value.unsqueeze(0)?
    };
    let mut batched = opts.clone();
    if let Some(m) = &opts.key_padding_mask {
        if m.rank() != 1 {
            return Err(Error::shape(
                ctx.layer,
                &[m.shape(), query.shape(), key.shape()],
                format!(
                    "{} must be [Lk] = [{}] for unbatched query × key",
                    ctx.kpm_name,
                    key.shape()[0]
                ),
            ));
        }
        batched.key_padding_mask = Some(m.unsqueeze(0)?);
    }
    let (out, w) = attention(ctx, vars, &q, &k, &v, &batched, dropout)?;
    let w = match w {
        Some(w) => Some(w.squeeze(0)?),
        None => None,
    };
    Ok((out.squeeze(0)?, w))
}

impl<T: Element> MultiHeadAttention<T> {
    fn ctx(&self) -> AttnCtx {
        AttnCtx {
            layer: LAYER,
            attn_name: "attn_mask",
            kpm_name: "key_padding_mask",
            heads: self.num_heads,
        }
    }

    /// Model width `E` (0 if `in_proj_weight` was replaced by a tensor that
    /// is not a matrix).
    pub fn embed_dim(&self) -> usize {
        self.in_proj_weight.shape().get(1).copied().unwrap_or(0)
    }

    /// Number of heads `H`.
    pub fn num_heads(&self) -> usize {
        self.num_heads
    }

    /// Width of one head, `d = E/H`.
    pub fn head_dim(&self) -> usize {
        self.embed_dim() / self.num_heads
    }

    /// The attention-weight dropout probability.
    pub fn dropout_p(&self) -> f64 {
        self.dropout.p()
    }

    /// Restarts the dropout generator from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        Module::<T>::reseed(&mut self.dropout, seed);
    }

    /// Binds this layer's parameters (in `named_parameters()` order) from a cursor.
    pub(crate) fn bind(&self, c: &mut ParamCursor<'_, T>, prefix: &str) -> Result<AttnVars<T>> {
        let in_w = c.take(&join(prefix, "in_proj_weight"), self.in_proj_weight.shape())?;
        let in_b = match &self.in_proj_bias {
            Some(b) => Some(c.take(&join(prefix, "in_proj_bias"), b.shape())?),
            None => None,
        };
        let (out_w, out_b) = c.linear(&self.out_proj, &join(prefix, "out_proj"))?;
        Ok(AttnVars {
            in_w,
            in_b,
            out_w,
            out_b,
        })
    }

    fn own_vars(&self) -> Result<AttnVars<T>> {
        let vars = param_vars(self);
        let mut c = ParamCursor::new(LAYER, &vars);
        let out = self.bind(&mut c, "")?;
        c.finish()?;
        Ok(out)
    }

    /// Attention in inference mode (no dropout):
    /// `softmax(Q_h·K_hᵀ/√d + M)·V_h` per head, merged and projected
    /// (see [`MultiHeadAttention`]). Query, key and value that are the same
    /// `Var` share one projection GEMM.
    ///
    /// # Shapes
    /// query `[B, Lq, E]`, key/value `[B, Lk, E]`, masks as in
    /// [`AttentionMask`] → (`[B, Lq, E]`, weights `[B, Lq, Lk]` averaged over
    /// heads or `[B, H, Lq, Lk]`, `None` unless `opts.need_weights`).
    pub fn attend(
        &self,
        query: &Var<T>,
        key: &Var<T>,
        value: &Var<T>,
        opts: &AttentionMask,
    ) -> Result<(Var<T>, Option<Tensor<T>>)> {
        attention(
            &self.ctx(),
            &self.own_vars()?,
            query,
            key,
            value,
            opts,
            None,
        )
    }

    /// [`MultiHeadAttention::attend`] in training mode: dropout with
    /// probability `p` on the attention weights `A` (the returned weights are
    /// the dropped ones, as PyTorch returns them).
    ///
    /// # Shapes
    /// As [`MultiHeadAttention::attend`].
    pub fn attend_train(
        &mut self,
        query: &Var<T>,
        key: &Var<T>,
        value: &Var<T>,
        opts: &AttentionMask,
    ) -> Result<(Var<T>, Option<Tensor<T>>)> {
        let (ctx, vars) = (self.ctx(), self.own_vars()?);
        attention(
            &ctx,
            &vars,
            query,
            key,
            value,
            opts,
            Some(&mut self.dropout),
        )
    }

    /// [`MultiHeadAttention::attend`] (inference) with the parameters given
    /// as graph nodes instead of taken from the layer, in
    /// `named_parameters()` order (`in_proj_weight`, `in_proj_bias`,
    /// `out_proj.weight`, `out_proj.bias`) — PyTorch's
    /// `torch.func.functional_call`. Gradients then flow to those `Var`s,
    /// which is what a gradient check of the parameters needs.
    ///
    /// # Shapes
    /// `params` shaped as the layer's parameters; otherwise as
    /// [`MultiHeadAttention::attend`].
    pub fn attend_with_params(
        &self,
        params: &[Var<T>],
        query: &Var<T>,
        key: &Var<T>,
        value: &Var<T>,
        opts: &AttentionMask,
    ) -> Result<(Var<T>, Option<Tensor<T>>)> {
        let mut c = ParamCursor::new(LAYER, params);
        let vars = self.bind(&mut c, "")?;
        c.finish()?;
        attention(&self.ctx(), &vars, query, key, value, opts, None)
    }
}

impl<T: Element> Module<T> for MultiHeadAttention<T> {
    /// Self-attention without masks: `attend(x, x, x)`.
    ///
    /// # Shapes
    /// `[B, L, E]` → `[B, L, E]`.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let opts = AttentionMask::none().with_need_weights(false);
        Ok(self.attend(x, x, x, &opts)?.0)
    }

    fn forward_train(&mut self, x: &Var<T>) -> Result<Var<T>> {
        let opts = AttentionMask::none().with_need_weights(false);
        Ok(self.attend_train(x, x, x, &opts)?.0)
    }

    fn reseed(&mut self, seed: u64) {
        MultiHeadAttention::reseed(self, seed);
    }

    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
        f(
            &join(prefix, "in_proj_weight"),
            Entry::Param(&self.in_proj_weight),
        );
        if let Some(b) = &self.in_proj_bias {
            f(&join(prefix, "in_proj_bias"), Entry::Param(b));
        }
        self.out_proj.visit(&join(prefix, "out_proj"), f);
    }

    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
        f(
            &join(prefix, "in_proj_weight"),
            EntryMut::Param(&mut self.in_proj_weight),
        );
        if let Some(b) = &mut self.in_proj_bias {
            f(&join(prefix, "in_proj_bias"), EntryMut::Param(b));
        }
        self.out_proj.visit_mut(&join(prefix, "out_proj"), f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::ModuleExt;
    use rand::SeedableRng;

    #[test]
    fn causal_mask_forbids_the_future() {
        let m = causal_mask(3).unwrap();
        assert_eq!(
            m.to_vec(),
            vec![false, true, true, false, false, true, false, false, false]
        );
        let r = causal_mask_rect(2, 3).unwrap();
        assert_eq!(r.to_vec(), vec![false, true, true, false, false, true]);
        assert_eq!(causal_mask(0).unwrap().numel(), 0);
    }

    #[test]
    fn derived_seeds_differ() {
        let s: Vec<u64> = (0..4).map(|k| derive_seed(7, k)).collect();
        for i in 0..4 {
            for j in i + 1..4 {
                assert_ne!(s[i], s[j]);
            }
        }
        assert_ne!(derive_seed(0, 0), derive_seed(1, 0));
    }

    #[test]
    fn init_matches_pytorch_defaults() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let m = MultiHeadAttentionConfig::new(16, 4)
            .init::<f64>(&mut rng)
            .unwrap();
        let a = (6.0f64 / (16.0 + 48.0)).sqrt();
        let w = m.in_proj_weight.value();
        assert!(w.abs().max_all().unwrap() <= a && w.abs().max_all().unwrap() > 0.9 * a);
        assert!(m.in_proj_bias.as_ref().unwrap().value().to_vec() == vec![0.0; 48]);
        let ow = m.out_proj.weight.value().abs().max_all().unwrap();
        assert!(ow <= 0.25 && ow > 0.2, "{ow}");
        assert_eq!(
            m.out_proj.bias.as_ref().unwrap().value().to_vec(),
            vec![0.0; 16]
        );
        let nobias = MultiHeadAttentionConfig::new(4, 2)
            .with_bias(false)
            .init::<f32>(&mut rng)
            .unwrap();
        let names: Vec<String> = nobias
            .named_parameters()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["in_proj_weight", "out_proj.weight"]);
    }

    #[test]
    fn fused_and_separate_projections_agree() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let m = MultiHeadAttentionConfig::new(6, 3)
            .init::<f64>(&mut rng)
            .unwrap();
        let x = Tensor::<f64>::randn_seeded(&[2, 4, 6], 9).unwrap();
        let xv = Var::constant(x.clone());
        let opts = AttentionMask::causal();
        let (fused, wf) = m.attend(&xv, &xv, &xv, &opts).unwrap();
        let (a, b, c) = (
            Var::constant(x.clone()),
            Var::constant(x.clone()),
            Var::constant(x),
        );
        let (sep, ws) = m.attend(&a, &b, &c, &opts).unwrap();
        let (kv, _) = m.attend(&a, &b, &b, &opts).unwrap();
        for (y, z) in [(&fused, &sep), (&fused, &kv)] {
            for (p, q) in y.value().as_slice().iter().zip(z.value().as_slice()) {
                assert!((p - q).abs() < 1e-12);
            }
        }
        for (p, q) in wf.unwrap().as_slice().iter().zip(ws.unwrap().as_slice()) {
            assert!((p - q).abs() < 1e-12);
        }
    }

    #[test]
    fn unbatched_equals_batch_of_one() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let m = MultiHeadAttentionConfig::new(4, 2)
            .init::<f64>(&mut rng)
            .unwrap();
        let x = Tensor::<f64>::randn_seeded(&[3, 4], 1).unwrap();
        let kpm = Tensor::from_vec(vec![false, false, true], &[3]).unwrap();
        let opts = AttentionMask::none().with_key_padding_mask(kpm.clone());
        let xv = Var::constant(x.clone());
        let (y, w) = m.attend(&xv, &xv, &xv, &opts).unwrap();
        assert_eq!(y.shape(), &[3, 4]);
        assert_eq!(w.as_ref().unwrap().shape(), &[3, 3]);
        let xb = Var::constant(x.reshape(&[1, 3, 4]).unwrap());
        let opts_b = AttentionMask::none().with_key_padding_mask(kpm.reshape(&[1, 3]).unwrap());
        let (yb, _) = m.attend(&xb, &xb, &xb, &opts_b).unwrap();
        assert_eq!(y.value().to_vec(), yb.value().to_vec());
        assert!(m
            .attend(
                &xv,
                &xv,
                &xv,
                &AttentionMask::none().with_key_padding_mask(kpm.reshape(&[1, 3]).unwrap())
            )
            .is_err());
    }
}
