//! Transformer blocks (Vaswani et al. 2017), as PyTorch's
//! `nn.TransformerEncoderLayer`, `nn.TransformerDecoderLayer` and
//! `nn.TransformerEncoder` with `batch_first=True`, in post-norm (the
//! original) or pre-norm (`norm_first=True`; Xiong et al. 2020) form.
//!
//! The sub-layers are PyTorch's, with its parameter names: `self_attn`
//! ([`MultiHeadAttention`]), `multihead_attn` (decoder cross-attention),
//! `linear1`, `linear2`, `norm1`, `norm2` (`norm3`). Dropout (training only)
//! sits where PyTorch puts it: on the attention weights, after the
//! feed-forward activation, and on every residual branch.
//!
//! The computation follows PyTorch's reference ("slow") path. PyTorch's
//! inference fast path (`torch._transformer_encoder_layer_fwd`, nested
//! tensors) computes the same function, except that it returns 0 instead of
//! NaN at query positions whose keys are all masked.

use anneal_autograd::Var;
use anneal_tensor::{Element, Error, Result, Tensor};
use rand::Rng;

use crate::attention::{
    attention, derive_seed, linear_rows, maybe_dropout, param_vars, AttentionMask, AttnCtx,
    AttnVars, MultiHeadAttention, MultiHeadAttentionConfig, ParamCursor,
};
use crate::dropout::Dropout;
use crate::linear::{Linear, LinearConfig};
use crate::module::{join, Entry, EntryMut, Module};
use crate::norm::LayerNorm;

const ENC: &str = "TransformerEncoderLayer";
const DEC: &str = "TransformerDecoderLayer";
const STACK: &str = "TransformerEncoder";

/// The activation between the two feed-forward linears (PyTorch's
/// `activation="relu"` / `"gelu"`; GELU is the exact `x·Φ(x)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransformerActivation {
    /// `max(x, 0)` (PyTorch's default).
    #[default]
    Relu,
    /// Exact GELU `x·Φ(x)`.
    Gelu,
}

/// Configuration shared by [`TransformerEncoderLayer`] and
/// [`TransformerDecoderLayer`]; defaults are PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransformerLayerConfig {
    /// Model width `d_model`.
    pub d_model: usize,
    /// Attention heads; must divide `d_model`.
    pub nhead: usize,
    /// Hidden width of the feed-forward network (default 2048).
    pub dim_feedforward: usize,
    /// Dropout probability everywhere in the block (default 0.1).
    pub dropout: f64,
    /// Feed-forward activation (default ReLU).
    pub activation: TransformerActivation,
    /// LayerNorm ε (default 1e-5).
    pub layer_norm_eps: f64,
    /// Pre-norm (`true`) or post-norm (`false`, the default).
    pub norm_first: bool,
    /// Seed from which every dropout generator of the block is derived.
    pub seed: u64,
}

impl TransformerLayerConfig {
    /// `d_model` features in `nhead` heads with PyTorch's defaults:
    /// `dim_feedforward` 2048, dropout 0.1, ReLU, ε 1e-5, post-norm.
    pub fn new(d_model: usize, nhead: usize) -> Self {
        TransformerLayerConfig {
            d_model,
            nhead,
            dim_feedforward: 2048,
            dropout: 0.1,
            activation: TransformerActivation::Relu,
            layer_norm_eps: 1e-5,
            norm_first: false,
            seed: 0,
        }
    }

    /// Sets the feed-forward hidden width.
    pub fn with_dim_feedforward(mut self, dim: usize) -> Self {
        self.dim_feedforward = dim;
        self
    }

    /// Sets the dropout probability.
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    /// Sets the feed-forward activation.
    pub fn with_activation(mut self, activation: TransformerActivation) -> Self {
        self.activation = activation;
        self
    }

    /// Sets the LayerNorm ε.
    pub fn with_layer_norm_eps(mut self, eps: f64) -> Self {
        self.layer_norm_eps = eps;
        self
    }

    /// Chooses pre-norm (`true`) or post-norm (`false`).
    pub fn with_norm_first(mut self, norm_first: bool) -> Self {
        self.norm_first = norm_first;
        self
    }

    /// Sets the dropout seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    fn validate(&self, layer: &'static str) -> Result<()> {
        let (d, h, ff) = (self.d_model, self.nhead, self.dim_feedforward);
        if d == 0 || d.checked_rem(h) != Some(0) || ff == 0 {
            return Err(Error::invalid(
                layer,
                format!(
                    "d_model {d} must be positive and divisible by nhead {h}, \
                     and dim_feedforward {ff} positive"
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.dropout)
            || self.layer_norm_eps.is_nan()
            || self.layer_norm_eps < 0.0
        {
            return Err(Error::invalid(
                layer,
                format!(
                    "dropout {} must lie in [0, 1] and layer_norm_eps {} be ≥ 0",
                    self.dropout, self.layer_norm_eps
                ),
            ));
        }
        Ok(())
    }

    fn attn<T: Element>(&self, stream: u64, rng: &mut impl Rng) -> Result<MultiHeadAttention<T>> {
        MultiHeadAttentionConfig::new(self.d_model, self.nhead)
            .with_dropout(self.dropout)
            .with_seed(derive_seed(self.seed, stream))
            .init(rng)
    }

    fn dropout(&self, stream: u64) -> Result<Dropout> {
        Dropout::new(self.dropout, derive_seed(self.seed, stream))
    }

    fn norm<T: Element>(&self) -> Result<LayerNorm<T>> {
        LayerNorm::with_options(&[self.d_model], self.layer_norm_eps, true)
    }

    /// Builds an encoder layer with PyTorch's initialisation (each
    /// sub-layer's own default: see [`MultiHeadAttentionConfig::init`],
    /// [`LinearConfig::init`]; LayerNorm γ = 1, β = 0).
    pub fn init_encoder<T: Element>(
        &self,
        rng: &mut impl Rng,
    ) -> Result<TransformerEncoderLayer<T>> {
        self.validate(ENC)?;
        let (d, ff) = (self.d_model, self.dim_feedforward);
        Ok(TransformerEncoderLayer {
            self_attn: self.attn(0, rng)?,
            linear1: LinearConfig::new(d, ff).init(rng)?,
            linear2: LinearConfig::new(ff, d).init(rng)?,
            norm1: self.norm()?,
            norm2: self.norm()?,
            norm_first: self.norm_first,
            activation: self.activation,
            dropout: self.dropout(1)?,
            dropout1: self.dropout(2)?,
            dropout2: self.dropout(3)?,
        })
    }

    /// Builds a decoder layer with PyTorch's initialisation.
    pub fn init_decoder<T: Element>(
        &self,
        rng: &mut impl Rng,
    ) -> Result<TransformerDecoderLayer<T>> {
        self.validate(DEC)?;
        let (d, ff) = (self.d_model, self.dim_feedforward);
        Ok(TransformerDecoderLayer {
            self_attn: self.attn(0, rng)?,
            multihead_attn: self.attn(4, rng)?,
            linear1: LinearConfig::new(d, ff).init(rng)?,
            linear2: LinearConfig::new(ff, d).init(rng)?,
            norm1: self.norm()?,
            norm2: self.norm()?,
            norm3: self.norm()?,
            norm_first: self.norm_first,
            activation: self.activation,
            dropout: self.dropout(1)?,
            dropout1: self.dropout(2)?,
            dropout2: self.dropout(3)?,
            dropout3: self.dropout(5)?,
        })
    }
}

/// A LayerNorm's parameters as graph nodes, with its settings.
struct BoundNorm<T: Element> {
    weight: Option<Var<T>>,
    bias: Option<Var<T>>,
    shape: Vec<usize>,
    eps: f64,
}

impl<T: Element> BoundNorm<T> {
    fn bind(n: &LayerNorm<T>, c: &mut ParamCursor<'_, T>, prefix: &str) -> Result<Self> {
        let weight = match &n.weight {
            Some(w) => Some(c.take(&join(prefix, "weight"), w.shape())?),
            None => None,
        };
        let bias = match &n.bias {
            Some(b) => Some(c.take(&join(prefix, "bias"), b.shape())?),
            None => None,
        };
        Ok(BoundNorm {
            weight,
            bias,
            shape: n.normalized_shape.clone(),
            eps: n.eps,
        })
    }

    /// `(x − mean)/√(var + ε)·γ + β` over the trailing axes, biased variance
    /// (the same formula as [`LayerNorm`]'s forward, on explicit `Var`s).
    fn apply(&self, layer: &'static str, x: &Var<T>) -> Result<Var<T>> {
        crate::norm::layer_norm(
            layer,
            x,
            &self.shape,
            self.weight.as_ref(),
            self.bias.as_ref(),
            self.eps,
        )
    }
}

type BoundLinear<T> = (Var<T>, Option<Var<T>>);

/// `FF(x) = W₂·drop(act(W₁·x + b₁)) + b₂`.
fn feed_forward<T: Element>(
    act: TransformerActivation,
    l1: &BoundLinear<T>,
    l2: &BoundLinear<T>,
    x: &Var<T>,
    drop: Option<&mut Dropout>,
) -> Result<Var<T>> {
    let h = linear_rows(x, &l1.0, l1.1.as_ref())?;
    let h = match act {
        TransformerActivation::Relu => h.relu(),
        TransformerActivation::Gelu => h.gelu(),
    };
    linear_rows(&maybe_dropout(drop, h)?, &l2.0, l2.1.as_ref())
}

/// `Some([d₁, …])` → `[Some(d₁), …]`, `None` → all `None`.
fn split_drops<const N: usize>(d: Option<[&mut Dropout; N]>) -> [Option<&mut Dropout>; N] {
    match d {
        Some(a) => a.map(Some),
        None => std::array::from_fn(|_| None),
    }
}

/// Errors unless `x` is `[B, L, d]` or `[L, d]`.
fn check_seq<T: Element>(layer: &'static str, what: &str, x: &Var<T>, d: usize) -> Result<()> {
    if !(x.rank() == 2 || x.rank() == 3) || x.shape()[x.rank() - 1] != d {
        return Err(Error::shape(
            layer,
            &[x.shape()],
            format!("expected {what} [B, L, {d}] (or unbatched [L, {d}])"),
        ));
    }
    Ok(())
}

/// The attention options the blocks use: the caller's masks, no weights.
fn no_weights(opts: &AttentionMask) -> AttentionMask {
    AttentionMask {
        need_weights: false,
        ..opts.clone()
    }
}

// ───────────────────────────── encoder layer ─────────────────────────────

/// One Transformer encoder block (`torch.nn.TransformerEncoderLayer`,
/// `batch_first=True`):
///
/// * post-norm: `x ← LN₁(x + drop(SA(x)))`, `x ← LN₂(x + drop(FF(x)))`;
/// * pre-norm: `x ← x + drop(SA(LN₁(x)))`, `x ← x + drop(FF(LN₂(x)))`;
///
/// with `SA` multi-head self-attention and
/// `FF(x) = W₂·drop(act(W₁x + b₁)) + b₂`. Dropout acts in training only.
///
/// Parameters: `self_attn.{in_proj_weight [3d, d], in_proj_bias [3d],
/// out_proj.weight [d, d], out_proj.bias [d]}`, `linear1.{weight [ff, d],
/// bias [ff]}`, `linear2.{weight [d, ff], bias [d]}`, `norm1.{weight, bias}
/// [d]`, `norm2.{weight, bias} [d]`.
///
/// # Shapes
/// `src [B, L, d]` (or `[L, d]`), `src_mask [L, L]` or `[B·H, L, L]`,
/// `src_key_padding_mask [B, L]` → `[B, L, d]`.
#[derive(Debug, Clone)]
pub struct TransformerEncoderLayer<T: Element = f32> {
    /// Self-attention.
    pub self_attn: MultiHeadAttention<T>,
    /// First feed-forward linear `d → ff`.
    pub linear1: Linear<T>,
    /// Second feed-forward linear `ff → d`.
    pub linear2: Linear<T>,
    /// LayerNorm of the attention sub-block.
    pub norm1: LayerNorm<T>,
    /// LayerNorm of the feed-forward sub-block.
    pub norm2: LayerNorm<T>,
    /// Pre-norm (`true`) or post-norm.
    pub norm_first: bool,
    /// Feed-forward activation.
    pub activation: TransformerActivation,
    dropout: Dropout,
    dropout1: Dropout,
    dropout2: Dropout,
}

/// An encoder layer's parameters as graph nodes plus its settings.
struct BoundEncoder<T: Element> {
    ctx: AttnCtx,
    attn: AttnVars<T>,
    l1: BoundLinear<T>,
    l2: BoundLinear<T>,
    n1: BoundNorm<T>,
    n2: BoundNorm<T>,
    norm_first: bool,
    activation: TransformerActivation,
    d_model: usize,
}

impl<T: Element> BoundEncoder<T> {
    /// Dropouts in order: attention weights, feed-forward, residual 1, residual 2.
    fn run(
        &self,
        src: &Var<T>,
        opts: &AttentionMask,
        drops: Option<[&mut Dropout; 4]>,
    ) -> Result<Var<T>> {
        let layer = self.ctx.layer;
        check_seq(layer, "src", src, self.d_model)?;
        let opts = no_weights(opts);
        let [da, dff, d1, d2] = split_drops(drops);
        let sa = |x: &Var<T>, d| attention(&self.ctx, &self.attn, x, x, x, &opts, d);
        let x = src.clone();
        if self.norm_first {
            let h = self.n1.apply(layer, &x)?;
            let x = x.add(&maybe_dropout(d1, sa(&h, da)?.0)?)?;
            let h = self.n2.apply(layer, &x)?;
            let f = feed_forward(self.activation, &self.l1, &self.l2, &h, dff)?;
            x.add(&maybe_dropout(d2, f)?)
        } else {
            let s = maybe_dropout(d1, sa(&x, da)?.0)?;
            let x = self.n1.apply(layer, &x.add(&s)?)?;
            let f = feed_forward(self.activation, &self.l1, &self.l2, &x, dff)?;
            self.n2.apply(layer, &x.add(&maybe_dropout(d2, f)?)?)
        }
    }
}

impl<T: Element> TransformerEncoderLayer<T> {
    /// Model width `d_model`.
    pub fn d_model(&self) -> usize {
        self.self_attn.embed_dim()
    }

    /// The dropout probability of the block.
    pub fn dropout_p(&self) -> f64 {
        self.dropout.p()
    }

    /// Restarts every dropout generator of the block from `seed` (as
    /// [`TransformerLayerConfig::seed`] does at construction).
    pub fn reseed(&mut self, seed: u64) {
        self.self_attn.reseed(derive_seed(seed, 0));
        for (k, d) in [&mut self.dropout, &mut self.dropout1, &mut self.dropout2]
            .into_iter()
            .enumerate()
        {
            Module::<T>::reseed(d, derive_seed(seed, k as u64 + 1));
        }
    }

    fn bind(
        &self,
        c: &mut ParamCursor<'_, T>,
        prefix: &str,
        layer: &'static str,
    ) -> Result<BoundEncoder<T>> {
        Ok(BoundEncoder {
            ctx: AttnCtx {
                layer,
                attn_name: "src_mask",
                kpm_name: "src_key_padding_mask",
                heads: self.self_attn.num_heads(),
            },
            attn: self.self_attn.bind(c, &join(prefix, "self_attn"))?,
            l1: c.linear(&self.linear1, &join(prefix, "linear1"))?,
            l2: c.linear(&self.linear2, &join(prefix, "linear2"))?,
            n1: BoundNorm::bind(&self.norm1, c, &join(prefix, "norm1"))?,
            n2: BoundNorm::bind(&self.norm2, c, &join(prefix, "norm2"))?,
            norm_first: self.norm_first,
            activation: self.activation,
            d_model: self.d_model(),
        })
    }

    fn bind_all(&self, params: &[Var<T>]) -> Result<BoundEncoder<T>> {
        let mut c = ParamCursor::new(ENC, params);
        let b = self.bind(&mut c, "", ENC)?;
        c.finish()?;
        Ok(b)
    }

    /// Inference forward pass (no dropout) with optional masks
    /// (`layer(src, src_mask, src_key_padding_mask)` in `eval()` mode).
    ///
    /// # Shapes
    /// `src [B, L, d]`, `src_mask [L, L]` or `[B·H, L, L]` (True =
    /// forbidden), `src_key_padding_mask [B, L]` (True = padding) →
    /// `[B, L, d]`.
    pub fn forward_masked(
        &self,
        src: &Var<T>,
        src_mask: Option<&Tensor<bool>>,
        src_key_padding_mask: Option<&Tensor<bool>>,
    ) -> Result<Var<T>> {
        let opts = AttentionMask::from_parts(src_mask, src_key_padding_mask);
        self.bind_all(&param_vars(self))?.run(src, &opts, None)
    }

    /// [`TransformerEncoderLayer::forward_masked`] in training mode: dropout
    /// on the attention weights, after the activation and on both residual
    /// branches, from the layer's seeded generators.
    ///
    /// # Shapes
    /// As [`TransformerEncoderLayer::forward_masked`].
    pub fn forward_masked_train(
        &mut self,
        src: &Var<T>,
        src_mask: Option<&Tensor<bool>>,
        src_key_padding_mask: Option<&Tensor<bool>>,
    ) -> Result<Var<T>> {
        let opts = AttentionMask::from_parts(src_mask, src_key_padding_mask);
        let bound = self.bind_all(&param_vars(self))?;
        let drops = [
            &mut self.self_attn.dropout,
            &mut self.dropout,
            &mut self.dropout1,
            &mut self.dropout2,
        ];
        bound.run(src, &opts, Some(drops))
    }

    /// Inference forward pass with the parameters given as graph nodes, in
    /// `named_parameters()` order (`torch.func.functional_call`), so that
    /// gradients flow to those `Var`s. The masks (and `is_causal`) come from
    /// `mask`; its weight options are ignored.
    ///
    /// # Shapes
    /// `params` shaped as the layer's parameters; `src [B, L, d]` → `[B, L, d]`.
    pub fn forward_with_params(
        &self,
        params: &[Var<T>],
        src: &Var<T>,
        mask: &AttentionMask,
    ) -> Result<Var<T>> {
        self.bind_all(params)?.run(src, mask, None)
    }
}

impl<T: Element> Module<T> for TransformerEncoderLayer<T> {
    /// `forward_masked(x, None, None)`.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        self.forward_masked(x, None, None)
    }

    fn forward_train(&mut self, x: &Var<T>) -> Result<Var<T>> {
        self.forward_masked_train(x, None, None)
    }

    fn reseed(&mut self, seed: u64) {
        TransformerEncoderLayer::reseed(self, seed);
    }

    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
        self.self_attn.visit(&join(prefix, "self_attn"), f);
        self.linear1.visit(&join(prefix, "linear1"), f);
        self.linear2.visit(&join(prefix, "linear2"), f);
        self.norm1.visit(&join(prefix, "norm1"), f);
        self.norm2.visit(&join(prefix, "norm2"), f);
    }

    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
        self.self_attn.visit_mut(&join(prefix, "self_attn"), f);
        self.linear1.visit_mut(&join(prefix, "linear1"), f);
        self.linear2.visit_mut(&join(prefix, "linear2"), f);
        self.norm1.visit_mut(&join(prefix, "norm1"), f);
        self.norm2.visit_mut(&join(prefix, "norm2"), f);
    }
}

// ───────────────────────────── decoder layer ─────────────────────────────

/// One Transformer decoder block (`torch.nn.TransformerDecoderLayer`,
/// `batch_first=True`), with self-attention `SA`, cross-attention `CA` on the
/// encoder output `m` and the feed-forward `FF` of
/// [`TransformerEncoderLayer`]:
///
/// * post-norm: `x ← LN₁(x + drop(SA(x)))`, `x ← LN₂(x + drop(CA(x, m)))`,
///   `x ← LN₃(x + drop(FF(x)))`;
/// * pre-norm: `x ← x + drop(SA(LN₁(x)))`, `x ← x + drop(CA(LN₂(x), m))`,
///   `x ← x + drop(FF(LN₃(x)))`.
///
/// Parameters: those of the encoder layer plus `multihead_attn.*` and
/// `norm3.{weight, bias}`, in PyTorch's order `self_attn`, `multihead_attn`,
/// `linear1`, `linear2`, `norm1`, `norm2`, `norm3`.
///
/// # Shapes
/// `tgt [B, T, d]`, `memory [B, S, d]`, `tgt_mask [T, T]` or `[B·H, T, T]`,
/// `memory_mask [T, S]` or `[B·H, T, S]`, `tgt_key_padding_mask [B, T]`,
/// `memory_key_padding_mask [B, S]` → `[B, T, d]`.
#[derive(Debug, Clone)]
pub struct TransformerDecoderLayer<T: Element = f32> {
    /// Self-attention over the target.
    pub self_attn: MultiHeadAttention<T>,
    /// Cross-attention from the target to the memory.
    pub multihead_attn: MultiHeadAttention<T>,
    /// First feed-forward linear `d → ff`.
    pub linear1: Linear<T>,
    /// Second feed-forward linear `ff → d`.
    pub linear2: Linear<T>,
    /// LayerNorm of the self-attention sub-block.
    pub norm1: LayerNorm<T>,
    /// LayerNorm of the cross-attention sub-block.
    pub norm2: LayerNorm<T>,
    /// LayerNorm of the feed-forward sub-block.
    pub norm3: LayerNorm<T>,
    /// Pre-norm (`true`) or post-norm.
    pub norm_first: bool,
    /// Feed-forward activation.
    pub activation: TransformerActivation,
    dropout: Dropout,
    dropout1: Dropout,
    dropout2: Dropout,
    dropout3: Dropout,
}

/// A decoder layer's parameters as graph nodes plus its settings.
struct BoundDecoder<T: Element> {
    self_ctx: AttnCtx,
    cross_ctx: AttnCtx,
    self_attn: AttnVars<T>,
    cross_attn: AttnVars<T>,
    l1: BoundLinear<T>,
    l2: BoundLinear<T>,
    n1: BoundNorm<T>,
    n2: BoundNorm<T>,
    n3: BoundNorm<T>,
    norm_first: bool,
    activation: TransformerActivation,
    d_model: usize,
}

impl<T: Element> BoundDecoder<T> {
    /// Dropouts in order: self-attention weights, cross-attention weights,
    /// feed-forward, residuals 1, 2, 3.
    fn run(
        &self,
        tgt: &Var<T>,
        memory: &Var<T>,
        tgt_opts: &AttentionMask,
        memory_opts: &AttentionMask,
        drops: Option<[&mut Dropout; 6]>,
    ) -> Result<Var<T>> {
        let layer = DEC;
        check_seq(layer, "tgt", tgt, self.d_model)?;
        check_seq(layer, "memory", memory, self.d_model)?;
        if tgt.rank() != memory.rank() || (tgt.rank() == 3 && tgt.shape()[0] != memory.shape()[0]) {
            return Err(Error::shape(
                layer,
                &[tgt.shape(), memory.shape()],
                "tgt and memory must both be batched [B, ·, d] with the same B, or both unbatched",
            ));
        }
        let (t_opts, m_opts) = (no_weights(tgt_opts), no_weights(memory_opts));
        let [dsa, dca, dff, d1, d2, d3] = split_drops(drops);
        let sa = |x: &Var<T>, d| attention(&self.self_ctx, &self.self_attn, x, x, x, &t_opts, d);
        let ca = |x: &Var<T>, d| {
            attention(
                &self.cross_ctx,
                &self.cross_attn,
                x,
                memory,
                memory,
                &m_opts,
                d,
            )
        };
        let ff = |x: &Var<T>, d| feed_forward(self.activation, &self.l1, &self.l2, x, d);
        let x = tgt.clone();
        if self.norm_first {
            let h = self.n1.apply(layer, &x)?;
            let x = x.add(&maybe_dropout(d1, sa(&h, dsa)?.0)?)?;
            let h = self.n2.apply(layer, &x)?;
            let x = x.add(&maybe_dropout(d2, ca(&h, dca)?.0)?)?;
            let h = self.n3.apply(layer, &x)?;
            x.add(&maybe_dropout(d3, ff(&h, dff)?)?)
        } else {
            let s = maybe_dropout(d1, sa(&x, dsa)?.0)?;
            let x = self.n1.apply(layer, &x.add(&s)?)?;
            let c = maybe_dropout(d2, ca(&x, dca)?.0)?;
            let x = self.n2.apply(layer, &x.add(&c)?)?;
            let f = maybe_dropout(d3, ff(&x, dff)?)?;
            self.n3.apply(layer, &x.add(&f)?)
        }
    }
}

impl<T: Element> TransformerDecoderLayer<T> {
    /// Model width `d_model`.
    pub fn d_model(&self) -> usize {
        self.self_attn.embed_dim()
    }

    /// The dropout probability of the block.
    pub fn dropout_p(&self) -> f64 {
        self.dropout.p()
    }

    /// Restarts every dropout generator of the block from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.self_attn.reseed(derive_seed(seed, 0));
        self.multihead_attn.reseed(derive_seed(seed, 4));
        for (k, d) in [
            (1, &mut self.dropout),
            (2, &mut self.dropout1),
            (3, &mut self.dropout2),
            (5, &mut self.dropout3),
        ] {
            Module::<T>::reseed(d, derive_seed(seed, k));
        }
    }

    fn bind_all(&self, params: &[Var<T>]) -> Result<BoundDecoder<T>> {
        let mut c = ParamCursor::new(DEC, params);
        let ctx = |attn_name, kpm_name| AttnCtx {
            layer: DEC,
            attn_name,
            kpm_name,
            heads: self.self_attn.num_heads(),
        };
        let b = BoundDecoder {
            self_ctx: ctx("tgt_mask", "tgt_key_padding_mask"),
            cross_ctx: AttnCtx {
                heads: self.multihead_attn.num_heads(),
                ..ctx("memory_mask", "memory_key_padding_mask")
            },
            self_attn: self.self_attn.bind(&mut c, "self_attn")?,
            cross_attn: self.multihead_attn.bind(&mut c, "multihead_attn")?,
            l1: c.linear(&self.linear1, "linear1")?,
            l2: c.linear(&self.linear2, "linear2")?,
            n1: BoundNorm::bind(&self.norm1, &mut c, "norm1")?,
            n2: BoundNorm::bind(&self.norm2, &mut c, "norm2")?,
            n3: BoundNorm::bind(&self.norm3, &mut c, "norm3")?,
            norm_first: self.norm_first,
            activation: self.activation,
            d_model: self.d_model(),
        };
        c.finish()?;
        Ok(b)
    }

    /// Inference forward pass (no dropout) with optional masks
    /// (`layer(tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
    /// memory_key_padding_mask)` in `eval()` mode).
    ///
    /// # Shapes
    /// `tgt [B, T, d]`, `memory [B, S, d]`, `tgt_mask [T, T]`/`[B·H, T, T]`,
    /// `memory_mask [T, S]`/`[B·H, T, S]`, `tgt_key_padding_mask [B, T]`,
    /// `memory_key_padding_mask [B, S]` → `[B, T, d]`.
    pub fn forward_decoder(
        &self,
        tgt: &Var<T>,
        memory: &Var<T>,
        tgt_mask: Option<&Tensor<bool>>,
        memory_mask: Option<&Tensor<bool>>,
        tgt_key_padding_mask: Option<&Tensor<bool>>,
        memory_key_padding_mask: Option<&Tensor<bool>>,
    ) -> Result<Var<T>> {
        let t = AttentionMask::from_parts(tgt_mask, tgt_key_padding_mask);
        let m = AttentionMask::from_parts(memory_mask, memory_key_padding_mask);
        self.bind_all(&param_vars(self))?
            .run(tgt, memory, &t, &m, None)
    }

    /// [`TransformerDecoderLayer::forward_decoder`] in training mode
    /// (dropout from the layer's seeded generators).
    ///
    /// # Shapes
    /// As [`TransformerDecoderLayer::forward_decoder`].
    pub fn forward_decoder_train(
        &mut self,
        tgt: &Var<T>,
        memory: &Var<T>,
        tgt_mask: Option<&Tensor<bool>>,
        memory_mask: Option<&Tensor<bool>>,
        tgt_key_padding_mask: Option<&Tensor<bool>>,
        memory_key_padding_mask: Option<&Tensor<bool>>,
    ) -> Result<Var<T>> {
        let t = AttentionMask::from_parts(tgt_mask, tgt_key_padding_mask);
        let m = AttentionMask::from_parts(memory_mask, memory_key_padding_mask);
        let bound = self.bind_all(&param_vars(self))?;
        let drops = [
            &mut self.self_attn.dropout,
            &mut self.multihead_attn.dropout,
            &mut self.dropout,
            &mut self.dropout1,
            &mut self.dropout2,
            &mut self.dropout3,
        ];
        bound.run(tgt, memory, &t, &m, Some(drops))
    }

    /// Inference forward pass with the parameters given as graph nodes in
    /// `named_parameters()` order (`torch.func.functional_call`); masks for
    /// the self-attention in `tgt_mask` and for the cross-attention in
    /// `memory_mask` (each may set `is_causal`).
    ///
    /// # Shapes
    /// `params` shaped as the layer's parameters; `tgt [B, T, d]`,
    /// `memory [B, S, d]` → `[B, T, d]`.
    pub fn forward_decoder_with_params(
        &self,
        params: &[Var<T>],
        tgt: &Var<T>,
        memory: &Var<T>,
        tgt_mask: &AttentionMask,
        memory_mask: &AttentionMask,
    ) -> Result<Var<T>> {
        self.bind_all(params)?
            .run(tgt, memory, tgt_mask, memory_mask, None)
    }
}

impl<T: Element> Module<T> for TransformerDecoderLayer<T> {
    /// A decoder layer needs the encoder's memory: this always errors; call
    /// [`TransformerDecoderLayer::forward_decoder`].
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        Err(Error::invalid(
            DEC,
            format!(
                "a decoder layer needs memory as well as the target {:?}; call forward_decoder",
                x.shape()
            ),
        ))
    }

    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
        self.self_attn.visit(&join(prefix, "self_attn"), f);
        self.multihead_attn
            .visit(&join(prefix, "multihead_attn"), f);
        self.linear1.visit(&join(prefix, "linear1"), f);
        self.linear2.visit(&join(prefix, "linear2"), f);
        self.norm1.visit(&join(prefix, "norm1"), f);
        self.norm2.visit(&join(prefix, "norm2"), f);
        self.norm3.visit(&join(prefix, "norm3"), f);
    }

    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
        self.self_attn.visit_mut(&join(prefix, "self_attn"), f);
        self.multihead_attn
            .visit_mut(&join(prefix, "multihead_attn"), f);
        self.linear1.visit_mut(&join(prefix, "linear1"), f);
        self.linear2.visit_mut(&join(prefix, "linear2"), f);
        self.norm1.visit_mut(&join(prefix, "norm1"), f);
        self.norm2.visit_mut(&join(prefix, "norm2"), f);
        self.norm3.visit_mut(&join(prefix, "norm3"), f);
    }
}

// ───────────────────────────── encoder stack ─────────────────────────────

/// A stack of encoder layers with an optional final LayerNorm
/// (`torch.nn.TransformerEncoder`): `y = LN(Lₙ(… L₁(x)))`, every layer given
/// the same masks. Parameters are named `layers.{i}.…` and `norm.{weight,
/// bias}`.
///
/// # Shapes
/// `src [B, L, d]`, masks as [`TransformerEncoderLayer`] → `[B, L, d]`.
#[derive(Debug, Clone)]
pub struct TransformerEncoder<T: Element = f32> {
    /// The layers, applied in order.
    pub layers: Vec<TransformerEncoderLayer<T>>,
    /// Optional final normalisation over `[d]`.
    pub norm: Option<LayerNorm<T>>,
}

impl<T: Element> TransformerEncoder<T> {
    /// `num_layers` copies of `layer` (PyTorch deep-copies the layer, so all
    /// copies start with the same weights; each copy here gets fresh
    /// parameter ids). Copy `i`'s dropout generators are reseeded from
    /// `(seed, i)` so that the layers draw independent masks.
    pub fn new(
        layer: &TransformerEncoderLayer<T>,
        num_layers: usize,
        seed: u64,
        norm: Option<LayerNorm<T>>,
    ) -> Result<Self> {
        let layers = (0..num_layers)
            .map(|i| {
                let mut l = layer.clone();
                l.reseed(derive_seed(seed, i as u64));
                l
            })
            .collect();
        Self::from_layers(layers, norm)
    }

    /// A stack of given (e.g. independently initialised) layers; they and
    /// the final norm must share `d_model`.
    pub fn from_layers(
        layers: Vec<TransformerEncoderLayer<T>>,
        norm: Option<LayerNorm<T>>,
    ) -> Result<Self> {
        let d = layers.first().map(|l| l.d_model());
        let widths: Vec<usize> = layers.iter().map(|l| l.d_model()).collect();
        if widths.iter().any(|&w| Some(w) != d) {
            return Err(Error::invalid(
                STACK,
                format!("layers have different d_model: {widths:?}"),
            ));
        }
        if let (Some(d), Some(n)) = (d, &norm) {
            if n.normalized_shape != [d] {
                return Err(Error::shape(
                    STACK,
                    &[&n.normalized_shape, &[d]],
                    "the final norm must normalise over [d_model]",
                ));
            }
        }
        Ok(TransformerEncoder { layers, norm })
    }

    /// Inference forward pass through every layer, then the final norm.
    ///
    /// # Shapes
    /// As [`TransformerEncoderLayer::forward_masked`].
    pub fn forward_masked(
        &self,
        src: &Var<T>,
        mask: Option<&Tensor<bool>>,
        src_key_padding_mask: Option<&Tensor<bool>>,
    ) -> Result<Var<T>> {
        let mut x = src.clone();
        for l in &self.layers {
            x = l.forward_masked(&x, mask, src_key_padding_mask)?;
        }
        match &self.norm {
            Some(n) => n.forward(&x),
            None => Ok(x),
        }
    }

    /// Training forward pass (dropout in every layer).
    ///
    /// # Shapes
    /// As [`TransformerEncoderLayer::forward_masked`].
    pub fn forward_masked_train(
        &mut self,
        src: &Var<T>,
        mask: Option<&Tensor<bool>>,
        src_key_padding_mask: Option<&Tensor<bool>>,
    ) -> Result<Var<T>> {
        let mut x = src.clone();
        for l in &mut self.layers {
            x = l.forward_masked_train(&x, mask, src_key_padding_mask)?;
        }
        match &mut self.norm {
            Some(n) => n.forward_train(&x),
            None => Ok(x),
        }
    }

    /// Inference forward pass with every parameter given as a graph node in
    /// `named_parameters()` order (`layers.0.…`, …, `norm.weight`,
    /// `norm.bias`).
    ///
    /// # Shapes
    /// `params` shaped as the stack's parameters; `src [B, L, d]` → `[B, L, d]`.
    pub fn forward_with_params(
        &self,
        params: &[Var<T>],
        src: &Var<T>,
        mask: &AttentionMask,
    ) -> Result<Var<T>> {
        let mut c = ParamCursor::new(STACK, params);
        let mut bound = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            bound.push(l.bind(&mut c, &format!("layers.{i}"), STACK)?);
        }
        let norm = match &self.norm {
            Some(n) => Some(BoundNorm::bind(n, &mut c, "norm")?),
            None => None,
        };
        c.finish()?;
        let mut x = src.clone();
        for b in &bound {
            x = b.run(&x, mask, None)?;
        }
        match norm {
            Some(n) => n.apply(STACK, &x),
            None => Ok(x),
        }
    }
}

impl<T: Element> Module<T> for TransformerEncoder<T> {
    /// `forward_masked(x, None, None)`.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        self.forward_masked(x, None, None)
    }

    fn forward_train(&mut self, x: &Var<T>) -> Result<Var<T>> {
        self.forward_masked_train(x, None, None)
    }

    fn reseed(&mut self, seed: u64) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            TransformerEncoderLayer::reseed(l, derive_seed(seed, i as u64));
        }
    }

    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
        for (i, l) in self.layers.iter().enumerate() {
            l.visit(&join(prefix, &format!("layers.{i}")), f);
        }
        if let Some(n) = &self.norm {
            n.visit(&join(prefix, "norm"), f);
        }
    }

    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.visit_mut(&join(prefix, &format!("layers.{i}")), f);
        }
        if let Some(n) = &mut self.norm {
            n.visit_mut(&join(prefix, "norm"), f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::ModuleExt;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(11)
    }

    #[test]
    fn decoder_names_follow_pytorch() {
        let dec = TransformerLayerConfig::new(8, 2)
            .with_dim_feedforward(16)
            .init_decoder::<f32>(&mut rng())
            .unwrap();
        let got: Vec<(String, Vec<usize>)> = dec
            .named_parameters()
            .into_iter()
            .map(|(n, p)| (n, p.shape().to_vec()))
            .collect();
        let mut want: Vec<(String, Vec<usize>)> = Vec::new();
        for a in ["self_attn", "multihead_attn"] {
            want.push((format!("{a}.in_proj_weight"), vec![24, 8]));
            want.push((format!("{a}.in_proj_bias"), vec![24]));
            want.push((format!("{a}.out_proj.weight"), vec![8, 8]));
            want.push((format!("{a}.out_proj.bias"), vec![8]));
        }
        want.push(("linear1.weight".into(), vec![16, 8]));
        want.push(("linear1.bias".into(), vec![16]));
        want.push(("linear2.weight".into(), vec![8, 16]));
        want.push(("linear2.bias".into(), vec![8]));
        for n in ["norm1", "norm2", "norm3"] {
            want.push((format!("{n}.weight"), vec![8]));
            want.push((format!("{n}.bias"), vec![8]));
        }
        assert_eq!(got, want);
        assert!(dec
            .forward(&Var::constant(Tensor::zeros(&[1, 2, 8]).unwrap()))
            .is_err());
    }

    #[test]
    fn stack_names_and_reseeding() {
        let layer = TransformerLayerConfig::new(4, 2)
            .with_dim_feedforward(6)
            .with_dropout(0.5)
            .init_encoder::<f64>(&mut rng())
            .unwrap();
        let norm = LayerNorm::new(&[4]).unwrap();
        let mut enc = TransformerEncoder::new(&layer, 2, 3, Some(norm)).unwrap();
        let names: Vec<String> = enc.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 2 * 12 + 2);
        assert_eq!(names[0], "layers.0.self_attn.in_proj_weight");
        assert_eq!(names[12], "layers.1.self_attn.in_proj_weight");
        assert_eq!(names[25], "norm.bias");
        // Copies start equal but draw different dropout masks.
        let x = Var::constant(Tensor::<f64>::randn_seeded(&[1, 3, 4], 2).unwrap());
        let a = enc.layers[0].forward_masked_train(&x, None, None).unwrap();
        let b = enc.layers[1].forward_masked_train(&x, None, None).unwrap();
        assert_ne!(a.value().to_vec(), b.value().to_vec());
        assert!(
            TransformerEncoder::new(&layer, 1, 0, Some(LayerNorm::new(&[5]).unwrap())).is_err()
        );
    }

    #[test]
    fn config_errors_name_the_layer() {
        let e = TransformerLayerConfig::new(6, 4)
            .init_encoder::<f32>(&mut rng())
            .unwrap_err();
        assert!(e.to_string().starts_with("TransformerEncoderLayer:"), "{e}");
        let e = TransformerLayerConfig::new(6, 4)
            .init_decoder::<f32>(&mut rng())
            .unwrap_err();
        assert!(e.to_string().starts_with("TransformerDecoderLayer:"), "{e}");
        assert!(TransformerLayerConfig::new(4, 2)
            .with_dropout(1.5)
            .init_encoder::<f32>(&mut rng())
            .is_err());
    }
}
