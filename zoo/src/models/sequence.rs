//! Sequence models: an LSTM/GRU classifier, a Transformer encoder
//! classifier and a small decoder-only language model.

use anneal_autograd::{no_grad, Var};
use anneal_layers::{
    causal_mask, join, mix_seed, Embedding, Entry, EntryMut, Gru, GruConfig, HookableLayer,
    LayerNorm, LearnedPositionalEncoding, Linear, LinearConfig, Lstm, LstmConfig, Module,
    TransformerActivation, TransformerEncoder, TransformerEncoderLayer, TransformerLayerConfig,
};
use anneal_tensor::{Element, Error, Result, Tensor};
use rand::{Rng, SeedableRng};

/// Which recurrent cell a [`SequenceClassifier`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecurrentKind {
    /// Long short-term memory.
    Lstm,
    /// Gated recurrent unit.
    Gru,
}

/// Configuration of a [`SequenceClassifier`].
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceClassifierConfig {
    /// LSTM or GRU.
    pub kind: RecurrentKind,
    /// Features per time step (8 for digits read row by row).
    pub input_size: usize,
    /// Hidden units per direction.
    pub hidden_size: usize,
    /// Stacked layers.
    pub num_layers: usize,
    /// Read the sequence both ways.
    pub bidirectional: bool,
    /// Output classes.
    pub classes: usize,
    /// Seed of the initialisation.
    pub seed: u64,
}

impl Default for SequenceClassifierConfig {
    fn default() -> Self {
        SequenceClassifierConfig {
            kind: RecurrentKind::Lstm,
            input_size: 8,
            hidden_size: 64,
            num_layers: 1,
            bidirectional: false,
            classes: 10,
            seed: 0,
        }
    }
}

enum Recurrent<T: Element> {
    Lstm(Lstm<T>),
    Gru(Gru<T>),
}

/// An LSTM or GRU over a sequence `[N, T, F]` (an image `[N, 1, H, W]` is
/// read row by row as `T = H`, `F = W`), the last time step's output, then a
/// dense layer to class logits. State-dict names `rnn.weight_ih_l0`, …,
/// `head.weight`.
pub struct SequenceClassifier<T: Element = f32> {
    rnn: Recurrent<T>,
    head: Linear<T>,
    /// The configuration.
    pub config: SequenceClassifierConfig,
}

impl SequenceClassifierConfig {
    /// Builds the model.
    pub fn init<T: Element>(&self) -> Result<SequenceClassifier<T>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let rnn = match self.kind {
            RecurrentKind::Lstm => Recurrent::Lstm(
                LstmConfig::new(self.input_size, self.hidden_size)
                    .with_num_layers(self.num_layers)
                    .with_bidirectional(self.bidirectional)
                    .init(&mut rng)?,
            ),
            RecurrentKind::Gru => Recurrent::Gru(
                GruConfig::new(self.input_size, self.hidden_size)
                    .with_num_layers(self.num_layers)
                    .with_bidirectional(self.bidirectional)
                    .init(&mut rng)?,
            ),
        };
        let dirs = if self.bidirectional { 2 } else { 1 };
        let head = LinearConfig::new(self.hidden_size * dirs, self.classes).init(&mut rng)?;
        Ok(SequenceClassifier {
            rnn,
            head,
            config: self.clone(),
        })
    }
}

/// `[N, 1, H, W]` images become `[N, H, W]` sequences; `[N, T, F]` passes.
fn as_sequence<T: Element>(layer: &'static str, x: &Var<T>, features: usize) -> Result<Var<T>> {
    let s = x.shape().to_vec();
    let seq = match s.len() {
        4 if s[1] == 1 => x.reshape(&[s[0], s[2], s[3]])?,
        3 => x.clone(),
        _ => {
            return Err(Error::shape(
                layer,
                &[&s],
                "expected [N, T, F] or [N, 1, H, W]",
            ))
        }
    };
    if seq.shape()[2] != features {
        return Err(Error::shape(
            layer,
            &[&s],
            format!("expected {features} features per step"),
        ));
    }
    Ok(seq)
}

impl<T: Element> SequenceClassifier<T> {
    fn run(&self, seq: &Var<T>, out: Var<T>) -> Result<Var<T>> {
        let t = seq.shape()[1];
        let n = seq.shape()[0];
        let width = out.shape()[2];
        let last = out.narrow(1, t - 1, 1)?.reshape(&[n, width])?;
        self.head.forward(&last)
    }
}

impl<T: Element> Module<T> for SequenceClassifier<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let seq = as_sequence("SequenceClassifier", x, self.config.input_size)?;
        let out = match &self.rnn {
            Recurrent::Lstm(l) => l.forward(&seq)?,
            Recurrent::Gru(g) => g.forward(&seq)?,
        };
        self.run(&seq, out)
    }

    fn forward_train(&mut self, x: &Var<T>) -> Result<Var<T>> {
        let seq = as_sequence("SequenceClassifier", x, self.config.input_size)?;
        let out = match &mut self.rnn {
            Recurrent::Lstm(l) => l.forward_train(&seq)?,
            Recurrent::Gru(g) => g.forward_train(&seq)?,
        };
        self.run(&seq, out)
    }

    fn reseed(&mut self, seed: u64) {
        match &mut self.rnn {
            Recurrent::Lstm(l) => l.reseed(seed),
            Recurrent::Gru(g) => g.reseed(seed),
        }
    }

    fn visit_layers_mut<'a>(
        &'a mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, HookableLayer<'a, T>),
    ) {
        self.head.visit_layers_mut(&join(prefix, "head"), f);
    }

    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
        match &self.rnn {
            Recurrent::Lstm(l) => l.visit(&join(prefix, "rnn"), f),
            Recurrent::Gru(g) => g.visit(&join(prefix, "rnn"), f),
        }
        self.head.visit(&join(prefix, "head"), f);
    }

    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
        match &mut self.rnn {
            Recurrent::Lstm(l) => l.visit_mut(&join(prefix, "rnn"), f),
            Recurrent::Gru(g) => g.visit_mut(&join(prefix, "rnn"), f),
        }
        self.head.visit_mut(&join(prefix, "head"), f);
    }
}

/// Configuration of a [`TransformerClassifier`].
#[derive(Debug, Clone, PartialEq)]
pub struct TransformerClassifierConfig {
    /// Features per step (row embedding input).
    pub input_size: usize,
    /// Longest sequence (positions learned).
    pub max_len: usize,
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Feed-forward width.
    pub ffn: usize,
    /// Dropout inside the encoder layers.
    pub dropout: f64,
    /// Output classes.
    pub classes: usize,
    /// Seed of the initialisation and dropout.
    pub seed: u64,
}

impl Default for TransformerClassifierConfig {
    fn default() -> Self {
        TransformerClassifierConfig {
            input_size: 8,
            max_len: 8,
            d_model: 64,
            heads: 4,
            layers: 2,
            ffn: 128,
            dropout: 0.1,
            classes: 10,
            seed: 0,
        }
    }
}

/// Row embedding + learned positions + pre-norm encoder layers + mean
/// pooling + a dense head. Names: `embed.*`, `pos.weight`,
/// `encoder.layers.{i}.*`, `encoder.norm.*`, `head.*`.
pub struct TransformerClassifier<T: Element = f32> {
    embed: Linear<T>,
    pos: LearnedPositionalEncoding<T>,
    encoder: TransformerEncoder<T>,
    head: Linear<T>,
    /// The configuration.
    pub config: TransformerClassifierConfig,
}

fn encoder_stack<T: Element>(
    d: usize,
    heads: usize,
    ffn: usize,
    dropout: f64,
    layers: usize,
    seed: u64,
    rng: &mut impl Rng,
) -> Result<TransformerEncoder<T>> {
    let cfg = TransformerLayerConfig::new(d, heads)
        .with_dim_feedforward(ffn)
        .with_dropout(dropout)
        .with_activation(TransformerActivation::Gelu)
        .with_norm_first(true);
    let stack: Vec<TransformerEncoderLayer<T>> = (0..layers)
        .map(|i| cfg.with_seed(mix_seed(seed, i as u64)).init_encoder(rng))
        .collect::<Result<_>>()?;
    TransformerEncoder::from_layers(stack, Some(LayerNorm::new(&[d])?))
}

impl TransformerClassifierConfig {
    /// Builds the model.
    pub fn init<T: Element>(&self) -> Result<TransformerClassifier<T>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let embed = LinearConfig::new(self.input_size, self.d_model).init(&mut rng)?;
        let pos = LearnedPositionalEncoding::with_std(self.max_len, self.d_model, 0.02, &mut rng)?;
        let encoder = encoder_stack(
            self.d_model,
            self.heads,
            self.ffn,
            self.dropout,
            self.layers,
            self.seed,
            &mut rng,
        )?;
        let head = LinearConfig::new(self.d_model, self.classes).init(&mut rng)?;
        Ok(TransformerClassifier {
            embed,
            pos,
            encoder,
            head,
            config: self.clone(),
        })
    }
}

impl<T: Element> Module<T> for TransformerClassifier<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let seq = as_sequence("TransformerClassifier", x, self.config.input_size)?;
        let h = self
            .encoder
            .forward(&self.pos.forward(&self.embed.forward(&seq)?)?)?;
        self.head.forward(&h.mean_axes(&[1], false)?)
    }

    fn forward_train(&mut self, x: &Var<T>) -> Result<Var<T>> {
        let seq = as_sequence("TransformerClassifier", x, self.config.input_size)?;
        let h = self
            .encoder
            .forward_train(&self.pos.forward(&self.embed.forward(&seq)?)?)?;
        self.head.forward(&h.mean_axes(&[1], false)?)
    }

    fn reseed(&mut self, seed: u64) {
        self.encoder.reseed(seed);
    }

    fn visit_layers_mut<'a>(
        &'a mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, HookableLayer<'a, T>),
    ) {
        self.embed.visit_layers_mut(&join(prefix, "embed"), f);
        self.head.visit_layers_mut(&join(prefix, "head"), f);
    }

    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
        self.embed.visit(&join(prefix, "embed"), f);
        self.pos.visit(&join(prefix, "pos"), f);
        self.encoder.visit(&join(prefix, "encoder"), f);
        self.head.visit(&join(prefix, "head"), f);
    }

    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
        self.embed.visit_mut(&join(prefix, "embed"), f);
        self.pos.visit_mut(&join(prefix, "pos"), f);
        self.encoder.visit_mut(&join(prefix, "encoder"), f);
        self.head.visit_mut(&join(prefix, "head"), f);
    }
}

/// Configuration of a [`TinyLm`].
#[derive(Debug, Clone, PartialEq)]
pub struct TinyLmConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Longest context.
    pub max_len: usize,
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Decoder blocks.
    pub layers: usize,
    /// Feed-forward width.
    pub ffn: usize,
    /// Dropout inside the blocks.
    pub dropout: f64,
    /// Seed of the initialisation and dropout.
    pub seed: u64,
}

impl Default for TinyLmConfig {
    fn default() -> Self {
        TinyLmConfig {
            vocab: 12,
            max_len: 32,
            d_model: 64,
            heads: 4,
            layers: 2,
            ffn: 128,
            dropout: 0.0,
            seed: 0,
        }
    }
}

/// A decoder-only Transformer language model (GPT-style): token embedding +
/// learned positions + causally masked pre-norm blocks + final norm + a
/// dense head to next-token logits. Input `[N, T]` token ids (as numbers),
/// output `[N, T, vocab]`.
pub struct TinyLm<T: Element = f32> {
    tok: Embedding<T>,
    pos: LearnedPositionalEncoding<T>,
    blocks: TransformerEncoder<T>,
    head: Linear<T>,
    /// The configuration.
    pub config: TinyLmConfig,
}

impl TinyLmConfig {
    /// Builds the model.
    pub fn init<T: Element>(&self) -> Result<TinyLm<T>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let tok = Embedding::new(self.vocab, self.d_model, None, &mut rng)?;
        let pos = LearnedPositionalEncoding::with_std(self.max_len, self.d_model, 0.02, &mut rng)?;
        let blocks = encoder_stack(
            self.d_model,
            self.heads,
            self.ffn,
            self.dropout,
            self.layers,
            self.seed,
            &mut rng,
        )?;
        let head = LinearConfig::new(self.d_model, self.vocab).init(&mut rng)?;
        Ok(TinyLm {
            tok,
            pos,
            blocks,
            head,
            config: self.clone(),
        })
    }
}

impl<T: Element> TinyLm<T> {
    fn run(&mut self, tokens: &Var<T>, train: bool) -> Result<Var<T>> {
        if tokens.rank() != 2 {
            return Err(Error::shape(
                "TinyLm",
                &[tokens.shape()],
                "expected token ids [N, T]",
            ));
        }
        let t = tokens.shape()[1];
        let mask = causal_mask(t)?;
        let h = self.pos.forward(&self.tok.forward(tokens)?)?;
        let h = if train {
            self.blocks.forward_masked_train(&h, Some(&mask), None)?
        } else {
            self.blocks.forward_masked(&h, Some(&mask), None)?
        };
        self.head.forward(&h)
    }

    /// Logits for every position of `tokens` (`[N, T]` ids) in inference mode.
    pub fn logits(&self, tokens: &Tensor<usize>) -> Result<Var<T>> {
        let t = tokens.shape().get(1).copied().unwrap_or(0);
        let x = Var::constant(tokens.map(|v| T::from_usize(v).unwrap_or_else(T::zero)));
        let mask = causal_mask(t)?;
        let h = self.pos.forward(&self.tok.forward(&x)?)?;
        self.head
            .forward(&self.blocks.forward_masked(&h, Some(&mask), None)?)
    }

    /// Extends `prompt` by `steps` tokens: greedy (`temperature = 0`) or
    /// sampled from `softmax(logits / temperature)` with `rng`.
    pub fn generate(
        &self,
        prompt: &[usize],
        steps: usize,
        temperature: f64,
        rng: &mut impl Rng,
    ) -> Result<Vec<usize>> {
        if prompt.is_empty() || temperature.is_nan() || temperature < 0.0 {
            return Err(Error::invalid(
                "TinyLm::generate",
                format!("prompt must be non-empty and temperature {temperature} ≥ 0"),
            ));
        }
        let mut seq = prompt.to_vec();
        no_grad(|| -> Result<()> {
            for _ in 0..steps {
                let start = seq.len().saturating_sub(self.config.max_len);
                let ctx = &seq[start..];
                let logits = self.logits(&Tensor::from_vec(ctx.to_vec(), &[1, ctx.len()])?)?;
                let v = self.config.vocab;
                let last: Vec<f64> = logits.value().as_slice()[(ctx.len() - 1) * v..]
                    .iter()
                    .map(|x| x.to_f64_exact())
                    .collect();
                let next = if temperature == 0.0 {
                    last.iter()
                        .enumerate()
                        .fold(
                            (0, f64::NEG_INFINITY),
                            |b, (i, &x)| if x > b.1 { (i, x) } else { b },
                        )
                        .0
                } else {
                    let m = last.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let w: Vec<f64> = last
                        .iter()
                        .map(|&x| ((x - m) / temperature).exp())
                        .collect();
                    let mut r = rng.random::<f64>() * w.iter().sum::<f64>();
                    let mut pick = v - 1;
                    for (i, &wi) in w.iter().enumerate() {
                        if r < wi {
                            pick = i;
                            break;
                        }
                        r -= wi;
                    }
                    pick
                };
                seq.push(next);
            }
            Ok(())
        })?;
        Ok(seq)
    }
}

impl<T: Element> Module<T> for TinyLm<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let t = x.shape().get(1).copied().unwrap_or(0);
        if x.rank() != 2 {
            return Err(Error::shape(
                "TinyLm",
                &[x.shape()],
                "expected token ids [N, T]",
            ));
        }
        let mask = causal_mask(t)?;
        let h = self.pos.forward(&self.tok.forward(x)?)?;
        self.head
            .forward(&self.blocks.forward_masked(&h, Some(&mask), None)?)
    }

    fn forward_train(&mut self, x: &Var<T>) -> Result<Var<T>> {
        self.run(x, true)
    }

    fn reseed(&mut self, seed: u64) {
        self.blocks.reseed(seed);
    }

    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
        self.tok.visit(&join(prefix, "tok"), f);
        self.pos.visit(&join(prefix, "pos"), f);
        self.blocks.visit(&join(prefix, "blocks"), f);
        self.head.visit(&join(prefix, "head"), f);
    }

    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
        self.tok.visit_mut(&join(prefix, "tok"), f);
        self.pos.visit_mut(&join(prefix, "pos"), f);
        self.blocks.visit_mut(&join(prefix, "blocks"), f);
        self.head.visit_mut(&join(prefix, "head"), f);
    }
}
