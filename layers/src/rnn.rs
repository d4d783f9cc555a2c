//! Recurrent layers: the Elman RNN (tanh or ReLU), LSTM and GRU
//! (`torch.nn.RNN`, `torch.nn.LSTM`, `torch.nn.GRU`), multi-layer and
//! bidirectional, batch-first, with PyTorch's parameter names, layouts, gate
//! orders and initialisation, so PyTorch weights load unchanged.
//!
//! Per layer and direction the input projection `x·W_ihᵀ + b_ih` of the
//! whole sequence is one GEMM; each time step is then one GEMM
//! `h·W_hhᵀ + b_hh` that yields every gate at once, split on the last axis.
//! An LSTM layer-direction runs as one graph node
//! ([`Tensor::lstm_sequence`]): the recurrence, non-linearities and cell
//! updates fused, with a hand-written backward pass through time.
//!
//! ```
//! use anneal_autograd::Var;
//! use anneal_layers::{LstmConfig, ModuleExt};
//! use anneal_tensor::Tensor;
//! use rand::SeedableRng;
//!
//! let mut rng = rand::rngs::StdRng::seed_from_u64(0);
//! let lstm = LstmConfig::new(10, 20)
//!     .with_num_layers(2)
//!     .with_bidirectional(true)
//!     .init::<f32>(&mut rng)?;
//! let x = Var::constant(Tensor::zeros(&[3, 5, 10])?); // [batch, time, feature]
//! let (y, state) = lstm.forward_seq(&x, None)?;
//! assert_eq!(y.shape(), &[3, 5, 40]); // [batch, time, dirs·hidden]
//! assert_eq!(state.h.shape(), &[4, 3, 20]); // [layers·dirs, batch, hidden]
//! assert_eq!(state.c.unwrap().shape(), &[4, 3, 20]);
//! assert_eq!(lstm.named_parameters()[4].0, "weight_ih_l0_reverse");
//! # Ok::<(), anneal_tensor::Error>(())
//! ```

use anneal_autograd::{is_grad_enabled, Param, Var};
use anneal_tensor::{Element, Error, Result, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::init;
use crate::module::{join, Entry, EntryMut, Module};

/// The non-linearity of an Elman [`Rnn`] (`nonlinearity='tanh'|'relu'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RnnNonlinearity {
    /// `h' = tanh(W_ih·x + b_ih + W_hh·h + b_hh)` (PyTorch's default).
    #[default]
    Tanh,
    /// `h' = relu(W_ih·x + b_ih + W_hh·h + b_hh)`.
    Relu,
}

/// Which recurrence a layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    Rnn(RnnNonlinearity),
    Lstm,
    Gru,
}

impl Cell {
    /// Gates stacked in `weight_ih`/`weight_hh`.
    fn gates(self) -> usize {
        match self {
            Cell::Rnn(_) => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }

    /// The layer's name in error messages.
    fn name(self) -> &'static str {
        match self {
            Cell::Rnn(_) => "RNN",
            Cell::Lstm => "LSTM",
            Cell::Gru => "GRU",
        }
    }
}

/// Everything about a recurrent layer except its weights.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spec {
    cell: Cell,
    input_size: usize,
    hidden_size: usize,
    num_layers: usize,
    bias: bool,
    dropout: f64,
    bidirectional: bool,
}

impl Spec {
    fn dirs(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// Input features of `layer`: `input_size`, then `dirs·hidden_size`.
    fn layer_input(&self, layer: usize) -> usize {
        if layer == 0 {
            self.input_size
        } else {
            self.hidden_size * self.dirs()
        }
    }

    /// PyTorch's name of parameter `kind` of layer-direction `k`.
    fn param_name(&self, kind: &str, k: usize) -> String {
        let suffix = if k % self.dirs() == 1 { "_reverse" } else { "" };
        format!("{kind}_l{}{suffix}", k / self.dirs())
    }

    /// Validates the configuration and draws every weight and bias from
    /// `U(−1/√H, 1/√H)` in PyTorch's parameter order.
    fn init<T: Element>(self, rng: &mut impl Rng) -> Result<Core<T>> {
        let name = self.cell.name();
        if self.hidden_size == 0 || self.num_layers == 0 {
            return Err(Error::invalid(
                name,
                format!(
                    "hidden_size {} and num_layers {} must be positive",
                    self.hidden_size, self.num_layers
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.dropout) {
            return Err(Error::invalid(
                name,
                format!("dropout {} is outside [0, 1]", self.dropout),
            ));
        }
        let bound = 1.0 / (self.hidden_size as f64).sqrt();
        let too_large = || {
            Error::invalid(
                name,
                format!(
                    "{} layers of hidden_size {} do not fit in memory",
                    self.num_layers, self.hidden_size
                ),
            )
        };
        // `layer_input` multiplies hidden_size by the directions.
        self.hidden_size
            .checked_mul(self.dirs())
            .ok_or_else(too_large)?;
        let gh = self
            .cell
            .gates()
            .checked_mul(self.hidden_size)
            .ok_or_else(too_large)?;
        let mut weights = Vec::new();
        self.num_layers
            .checked_mul(self.dirs())
            .and_then(|n| weights.try_reserve_exact(n).ok())
            .ok_or_else(too_large)?;
        for layer in 0..self.num_layers {
            for _ in 0..self.dirs() {
                let mut draw = |shape: &[usize]| -> Result<Param<T>> {
                    Ok(Param::new(init::uniform(shape, bound, rng)?))
                };
                let weight_ih = draw(&[gh, self.layer_input(layer)])?;
                let weight_hh = draw(&[gh, self.hidden_size])?;
                let (bias_ih, bias_hh) = if self.bias {
                    (Some(draw(&[gh])?), Some(draw(&[gh])?))
                } else {
                    (None, None)
                };
                weights.push(RnnWeights {
                    weight_ih,
                    weight_hh,
                    bias_ih,
                    bias_hh,
                });
            }
        }
        Ok(Core {
            spec: self,
            weights,
            rng: StdRng::seed_from_u64(0),
        })
    }
}

/// The parameters of one layer and direction, under PyTorch's names
/// (`_l{k}` for layer `k`, `_reverse` for the backward direction).
///
/// `W` is [`Param`] inside a layer and [`Var`] for
/// [`Lstm::forward_seq_with`] and its twins.
///
/// # Shapes
/// With `G` gates (RNN 1; LSTM 4, order i, f, g, o; GRU 3, order r, z, n),
/// hidden size `H` and `in` = `input_size` for layer 0, `dirs·H` above it:
/// `weight_ih` `[G·H, in]`, `weight_hh` `[G·H, H]`, biases `[G·H]`.
#[derive(Debug, Clone)]
pub struct RnnWeights<W> {
    /// `weight_ih_l{k}`: input-to-hidden weights `[G·H, in]`, gates stacked.
    pub weight_ih: W,
    /// `weight_hh_l{k}`: hidden-to-hidden weights `[G·H, H]`, gates stacked.
    pub weight_hh: W,
    /// `bias_ih_l{k}` `[G·H]` (absent when `bias = false`).
    pub bias_ih: Option<W>,
    /// `bias_hh_l{k}` `[G·H]` (absent when `bias = false`).
    pub bias_hh: Option<W>,
}

impl<T: Element> RnnWeights<Param<T>> {
    /// Graph leaves of the current values ([`Param::var`] of each).
    pub fn vars(&self) -> RnnWeights<Var<T>> {
        RnnWeights {
            weight_ih: self.weight_ih.var(),
            weight_hh: self.weight_hh.var(),
            bias_ih: self.bias_ih.as_ref().map(Param::var),
            bias_hh: self.bias_hh.as_ref().map(Param::var),
        }
    }
}

/// The recurrent state of a whole stack: PyTorch's `h_n` (and `c_n` for an
/// LSTM), or the initial `h_0` (`c_0`).
///
/// # Shapes
/// `h`, `c`: `[num_layers·dirs, batch, H]`, entry `layer·dirs + dir`
/// (`dir` 1 is the backward direction). Not batch-first, as in PyTorch even
/// with `batch_first=True`.
#[derive(Debug, Clone)]
pub struct RnnState<T: Element = f32> {
    /// Hidden state `[num_layers·dirs, batch, H]`.
    pub h: Var<T>,
    /// Cell state `[num_layers·dirs, batch, H]`: `Some` for an LSTM, `None`
    /// for RNN and GRU.
    pub c: Option<Var<T>>,
}

impl<T: Element> RnnState<T> {
    /// A state with a hidden state only (RNN, GRU).
    pub fn new(h: Var<T>) -> Self {
        RnnState { h, c: None }
    }

    /// An LSTM state `(h, c)`.
    pub fn with_cell(h: Var<T>, c: Var<T>) -> Self {
        RnnState { h, c: Some(c) }
    }
}

/// The configuration-independent part of the three layers.
#[derive(Debug, Clone)]
struct Core<T: Element> {
    spec: Spec,
    /// Entry `layer·dirs + dir`.
    weights: Vec<RnnWeights<Param<T>>>,
    /// Draws the inter-layer dropout masks in training.
    rng: StdRng,
}

impl<T: Element> Core<T> {
    fn with_seed(mut self, seed: u64) -> Self {
        self.rng = StdRng::seed_from_u64(seed);
        self
    }

    fn vars(&self) -> Vec<RnnWeights<Var<T>>> {
        self.weights.iter().map(RnnWeights::vars).collect()
    }

    fn forward_seq(
        &self,
        x: &Var<T>,
        state: Option<&RnnState<T>>,
    ) -> Result<(Var<T>, RnnState<T>)> {
        run(&self.spec, &self.vars(), x, state, None)
    }

    fn forward_seq_train(
        &mut self,
        x: &Var<T>,
        state: Option<&RnnState<T>>,
    ) -> Result<(Var<T>, RnnState<T>)> {
        let vars = self.vars();
        run(&self.spec, &vars, x, state, Some(&mut self.rng))
    }

    fn forward_seq_with(
        &self,
        weights: &[RnnWeights<Var<T>>],
        x: &Var<T>,
        state: Option<&RnnState<T>>,
    ) -> Result<(Var<T>, RnnState<T>)> {
        run(&self.spec, weights, x, state, None)
    }

    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
        for (k, w) in self.weights.iter().enumerate() {
            let name = |kind| join(prefix, &self.spec.param_name(kind, k));
            f(&name("weight_ih"), Entry::Param(&w.weight_ih));
            f(&name("weight_hh"), Entry::Param(&w.weight_hh));
            if let Some(b) = &w.bias_ih {
                f(&name("bias_ih"), Entry::Param(b));
            }
            if let Some(b) = &w.bias_hh {
                f(&name("bias_hh"), Entry::Param(b));
            }
        }
    }

    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
        let spec = self.spec;
        for (k, w) in self.weights.iter_mut().enumerate() {
            let name = |kind| join(prefix, &spec.param_name(kind, k));
            f(&name("weight_ih"), EntryMut::Param(&mut w.weight_ih));
            f(&name("weight_hh"), EntryMut::Param(&mut w.weight_hh));
            if let Some(b) = &mut w.bias_ih {
                f(&name("bias_ih"), EntryMut::Param(b));
            }
            if let Some(b) = &mut w.bias_hh {
                f(&name("bias_hh"), EntryMut::Param(b));
            }
        }
    }
}

/// Errors unless `weights` has one entry per layer and direction with
/// PyTorch's shapes.
fn check_weights<T: Element>(spec: &Spec, weights: &[RnnWeights<Var<T>>]) -> Result<()> {
    let name = spec.cell.name();
    let cells = spec.num_layers * spec.dirs();
    if weights.len() != cells {
        return Err(Error::invalid(
            name,
            format!(
                "{} sets of weights given for {} layers × {} directions",
                weights.len(),
                spec.num_layers,
                spec.dirs()
            ),
        ));
    }
    let gh = spec.cell.gates() * spec.hidden_size;
    for (k, w) in weights.iter().enumerate() {
        let in_f = spec.layer_input(k / spec.dirs());
        let expected = [
            ("weight_ih", Some(&w.weight_ih), vec![gh, in_f]),
            ("weight_hh", Some(&w.weight_hh), vec![gh, spec.hidden_size]),
            ("bias_ih", w.bias_ih.as_ref(), vec![gh]),
            ("bias_hh", w.bias_hh.as_ref(), vec![gh]),
        ];
        for (kind, v, shape) in expected {
            if let Some(v) = v {
                if v.shape() != shape.as_slice() {
                    return Err(Error::shape(
                        name,
                        &[v.shape(), &shape],
                        format!(
                            "{} has the wrong shape (expected the second)",
                            spec.param_name(kind, k)
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The entries of axis 0 of `v`, each without that axis.
///
/// A slice's backward rule pads its gradient back to the full extent, so
/// `n` flat slices would cost `O(n·numel)` in the backward pass; when a
/// gradient is recorded the slices are taken by recursive halving instead
/// (`O(numel·log n)`). Without a graph the flat slices are cheaper.
fn unbind0<T: Element>(v: &Var<T>) -> Result<Vec<Var<T>>> {
    fn halve<T: Element>(v: &Var<T>, out: &mut Vec<Var<T>>) -> Result<()> {
        let n = v.shape()[0];
        if n == 1 {
            out.push(v.squeeze(0)?);
            return Ok(());
        }
        let half = n / 2;
        halve(&v.narrow(0, 0, half)?, out)?;
        halve(&v.narrow(0, half, n - half)?, out)
    }
    let n = v.shape()[0];
    let mut out = Vec::with_capacity(n);
    if n == 1 || v.requires_grad() {
        if n > 0 {
            halve(v, &mut out)?;
        }
    } else {
        for i in 0..n {
            out.push(v.narrow(0, i, 1)?.squeeze(0)?);
        }
    }
    Ok(out)
}

/// `len` columns of the last axis from `start`.
fn cols<T: Element>(v: &Var<T>, start: usize, len: usize) -> Result<Var<T>> {
    v.narrow(v.rank() - 1, start, len)
}

/// `a + b`, or `a` when `b` is absent (a zero term).
fn add_opt<T: Element>(a: &Var<T>, b: Option<&Var<T>>) -> Result<Var<T>> {
    match b {
        Some(b) => a.add(b),
        None => Ok(a.clone()),
    }
}

/// One time step of one layer and direction of an RNN or GRU (the LSTM
/// runs fused, see [`lstm_direction`]).
///
/// `gi` `[B, G·H]` is this step's input projection `W_ih·x + b_ih`; `h` and
/// `c` `[B, H]` are the previous states, `None` standing for zeros (the
/// first step without an initial state, where `W_hh·h` is skipped). Returns
/// the new `h` and, for an LSTM, the new `c`.
fn step<T: Element>(
    cell: Cell,
    hidden: usize,
    w: &RnnWeights<Var<T>>,
    gi: &Var<T>,
    h: Option<&Var<T>>,
) -> Result<Var<T>> {
    // W_hh·h + b_hh, all gates at once: [B, G·H], or [G·H] at a zero state.
    let gh = match h {
        Some(h) => Some(h.linear(&w.weight_hh, w.bias_hh.as_ref())?),
        None => w.bias_hh.clone(),
    };
    let n = hidden;
    match cell {
        Cell::Rnn(nl) => {
            let pre = add_opt(gi, gh.as_ref())?;
            let h_new = match nl {
                RnnNonlinearity::Tanh => pre.tanh(),
                RnnNonlinearity::Relu => pre.relu(),
            };
            Ok(h_new)
        }
        Cell::Lstm => Err(Error::invalid(
            cell.name(),
            "internal: the LSTM runs as one fused node per layer and direction",
        )),
        Cell::Gru => {
            let gh_rz = gh.as_ref().map(|g| cols(g, 0, 2 * n)).transpose()?;
            let rz = add_opt(&cols(gi, 0, 2 * n)?, gh_rz.as_ref())?.sigmoid();
            let z = cols(&rz, n, n)?;
            let gi_n = cols(gi, 2 * n, n)?;
            let pre_n = match &gh {
                Some(gh) => gi_n.add(&cols(&rz, 0, n)?.mul(&cols(gh, 2 * n, n)?)?)?,
                None => gi_n,
            };
            let n_gate = pre_n.tanh();
            // (1 − z)⊙n + z⊙h = n + z⊙(h − n), as PyTorch computes it.
            let h_new = match h {
                Some(h) => n_gate.add(&z.mul(&h.sub(&n_gate)?)?)?,
                None => n_gate.sub(&z.mul(&n_gate)?)?,
            };
            Ok(h_new)
        }
    }
}

/// The whole stack: validates shapes, runs every layer and direction and
/// applies inter-layer dropout when `dropout_rng` is given.
fn run<T: Element>(
    spec: &Spec,
    weights: &[RnnWeights<Var<T>>],
    x: &Var<T>,
    state: Option<&RnnState<T>>,
    dropout_rng: Option<&mut StdRng>,
) -> Result<(Var<T>, RnnState<T>)> {
    let name = spec.cell.name();
    check_weights(spec, weights)?;
    if x.rank() != 3 || x.shape()[2] != spec.input_size {
        return Err(Error::shape(
            name,
            &[x.shape()],
            format!(
                "expected input [batch, time, {}] (batch-first)",
                spec.input_size
            ),
        ));
    }
    let (batch, steps) = (x.shape()[0], x.shape()[1]);
    if steps == 0 {
        return Err(Error::shape(
            name,
            &[x.shape()],
            "the input sequence has no time steps",
        ));
    }
    let (hidden, dirs, lstm) = (spec.hidden_size, spec.dirs(), spec.cell == Cell::Lstm);
    let cells = spec.num_layers * dirs;
    let state_shape = [cells, batch, hidden];
    let check_state = |v: &Var<T>, which: &str| -> Result<Vec<Option<Var<T>>>> {
        if v.shape() != state_shape {
            return Err(Error::shape(
                name,
                &[v.shape(), x.shape()],
                format!(
                    "expected initial {which} of shape [{cells}, {batch}, {hidden}] \
                     (layers·dirs, batch, hidden) for this input"
                ),
            ));
        }
        Ok(unbind0(v)?.into_iter().map(Some).collect())
    };
    let (h0, c0) = match state {
        None => (vec![None; cells], vec![None; cells]),
        Some(s) => {
            let h0 = check_state(&s.h, "h")?;
            let c0 = match (&s.c, lstm) {
                (Some(c), true) => check_state(c, "c")?,
                (None, true) => {
                    return Err(Error::invalid(
                        name,
                        "the initial state needs a cell state c besides h",
                    ))
                }
                (Some(_), false) => {
                    return Err(Error::invalid(
                        name,
                        format!("{name} has no cell state, but the initial state has one"),
                    ))
                }
                (None, false) => vec![None; cells],
            };
            (h0, c0)
        }
    };
    let mut dropout_rng = dropout_rng.filter(|_| spec.dropout > 0.0);
    if lstm {
        return run_lstm(spec, weights, x, &h0, &c0, dropout_rng);
    }
    let gates = spec.cell.gates() * hidden;
    let mut h_n = Vec::with_capacity(cells);
    // Time-major inside: [T, B, F], so that a time step is a contiguous block.
    let mut layer_in = x.permute(&[1, 0, 2])?;
    for layer in 0..spec.num_layers {
        let in_f = layer_in.shape()[2];
        let flat = layer_in.reshape(&[steps * batch, in_f])?;
        let mut outs = Vec::with_capacity(dirs);
        for dir in 0..dirs {
            let k = layer * dirs + dir;
            let w = &weights[k];
            // One GEMM for the input projection of every time step.
            let gi = flat
                .linear(&w.weight_ih, w.bias_ih.as_ref())?
                .reshape(&[steps, batch, gates])?;
            let gi = unbind0(&gi)?;
            let mut h = h0[k].clone();
            let mut hs = Vec::with_capacity(steps);
            let order: Box<dyn Iterator<Item = usize>> = if dir == 0 {
                Box::new(0..steps)
            } else {
                Box::new((0..steps).rev())
            };
            for t in order {
                let h_new = step(spec.cell, hidden, w, &gi[t], h.as_ref())?;
                hs.push(h_new.clone());
                h = Some(h_new);
            }
            if dir == 1 {
                hs.reverse();
            }
            let refs: Vec<&Var<T>> = hs.iter().collect();
            outs.push(Var::stack(&refs, 0)?); // [T, B, H]
            h_n.push(h.ok_or_else(|| Error::invalid(name, "internal: no time step ran"))?);
        }
        layer_in = if dirs == 1 {
            outs.swap_remove(0)
        } else {
            Var::concat(&[&outs[0], &outs[1]], 2)? // [T, B, fwd H | bwd H]
        };
        if layer + 1 < spec.num_layers {
            if let Some(rng) = dropout_rng.as_deref_mut() {
                layer_in = layer_in.dropout(spec.dropout, rng)?;
            }
        }
    }
    let out = layer_in.permute(&[1, 0, 2])?;
    let h_refs: Vec<&Var<T>> = h_n.iter().collect();
    Ok((out, RnnState::new(Var::stack(&h_refs, 0)?)))
}

/// An LSTM stack, batch-first throughout: each layer and direction is one
/// fused node ([`lstm_direction`]); dropout between layers when
/// `dropout_rng` is given.
fn run_lstm<T: Element>(
    spec: &Spec,
    weights: &[RnnWeights<Var<T>>],
    x: &Var<T>,
    h0: &[Option<Var<T>>],
    c0: &[Option<Var<T>>],
    mut dropout_rng: Option<&mut StdRng>,
) -> Result<(Var<T>, RnnState<T>)> {
    let dirs = spec.dirs();
    let cells = spec.num_layers * dirs;
    let (mut h_n, mut c_n) = (Vec::with_capacity(cells), Vec::with_capacity(cells));
    let mut layer_in = x.clone();
    for layer in 0..spec.num_layers {
        let mut outs = Vec::with_capacity(dirs);
        for dir in 0..dirs {
            let k = layer * dirs + dir;
            let (y, h, c) = lstm_direction(
                &weights[k],
                &layer_in,
                h0[k].as_ref(),
                c0[k].as_ref(),
                dir == 1,
            )?;
            outs.push(y);
            h_n.push(h);
            c_n.push(c);
        }
        layer_in = if dirs == 1 {
            outs.swap_remove(0)
        } else {
            Var::concat(&[&outs[0], &outs[1]], 2)? // [B, T, fwd H | bwd H]
        };
        if layer + 1 < spec.num_layers {
            if let Some(rng) = dropout_rng.as_deref_mut() {
                layer_in = layer_in.dropout(spec.dropout, rng)?;
            }
        }
    }
    let h_refs: Vec<&Var<T>> = h_n.iter().collect();
    let c_refs: Vec<&Var<T>> = c_n.iter().collect();
    Ok((
        layer_in,
        RnnState::with_cell(Var::stack(&h_refs, 0)?, Var::stack(&c_refs, 0)?),
    ))
}

/// One LSTM layer and direction over a batch-first sequence `x`
/// `[B, T, in]` → output `[B, T, H]`, `h_n` and `c_n` `[B, H]`.
///
/// The input projection is one `linear`; the recurrence is one graph node
/// whose value packs the output and `c_n` (flat, in that order) and whose
/// backward is [`LstmSequence::backward`](anneal_tensor::LstmSequence::backward);
/// the three results are slices of it. Without a graph the values are used
/// directly.
fn lstm_direction<T: Element>(
    w: &RnnWeights<Var<T>>,
    x: &Var<T>,
    h0: Option<&Var<T>>,
    c0: Option<&Var<T>>,
    reverse: bool,
) -> Result<(Var<T>, Var<T>, Var<T>)> {
    let gi = crate::attention::linear_rows(x, &w.weight_ih, w.bias_ih.as_ref())?;
    let seq = gi.value().lstm_sequence(
        w.weight_hh.value(),
        w.bias_hh.as_ref().map(Var::value),
        h0.map(Var::value),
        c0.map(Var::value),
        reverse,
    )?;
    let mut parents: Vec<&Var<T>> = vec![&gi, &w.weight_hh];
    let has_bias = w.bias_hh.is_some();
    parents.extend(w.bias_hh.as_ref());
    let (has_h0, has_c0) = (h0.is_some(), c0.is_some());
    parents.extend(h0);
    parents.extend(c0);
    if !is_grad_enabled() || !parents.iter().any(|p| p.requires_grad()) {
        return Ok((
            Var::constant(seq.output().clone()),
            Var::constant(seq.h_n().clone()),
            Var::constant(seq.c_n().clone()),
        ));
    }
    let (b, steps, h) = (
        seq.output().shape()[0],
        seq.output().shape()[1],
        seq.output().shape()[2],
    );
    let (n_out, n_state) = (b * steps * h, b * h);
    let packed = Tensor::concat(
        &[
            &seq.output().reshape(&[n_out])?,
            &seq.c_n().reshape(&[n_state])?,
        ],
        0,
    )?;
    let node = Var::custom("lstm", packed, &parents, move |g, needs| {
        let d_out = g.narrow(0, 0, n_out)?.reshape(&[b, steps, h])?;
        let d_cn = g.narrow(0, n_out, n_state)?.reshape(&[b, h])?;
        let d = seq.backward(&d_out, None, Some(&d_cn))?;
        let mut grads = vec![Some(d.gate_inputs), needs[1].then_some(d.w_hh)];
        let mut i = 2;
        for (present, grad) in [(has_bias, d.b_hh), (has_h0, d.h0), (has_c0, d.c0)] {
            if present {
                grads.push(needs[i].then_some(grad));
                i += 1;
            }
        }
        Ok(grads)
    });
    let y = node.narrow(0, 0, n_out)?.reshape(&[b, steps, h])?;
    let c_n = node.narrow(0, n_out, n_state)?.reshape(&[b, h])?;
    let last = if reverse { 0 } else { steps - 1 };
    let h_n = y.narrow(1, last, 1)?.reshape(&[b, h])?;
    Ok((y, h_n, c_n))
}

/// Builder methods shared by the three configurations.
macro_rules! config_builders {
    ($config:ident) => {
        impl $config {
            /// Sets the number of stacked layers (default 1).
            pub fn with_num_layers(mut self, num_layers: usize) -> Self {
                self.num_layers = num_layers;
                self
            }

            /// Sets whether `bias_ih`/`bias_hh` exist (default true).
            pub fn with_bias(mut self, bias: bool) -> Self {
                self.bias = bias;
                self
            }

            /// Sets the dropout probability applied in training to the
            /// output of every layer but the last, and the seed of its
            /// generator (default 0.0, seed 0).
            pub fn with_dropout(mut self, p: f64, seed: u64) -> Self {
                self.dropout = p;
                self.dropout_seed = seed;
                self
            }

            /// Sets whether a backward direction runs too (default false).
            pub fn with_bidirectional(mut self, bidirectional: bool) -> Self {
                self.bidirectional = bidirectional;
                self
            }
        }
    };
}

/// Configuration of an Elman [`Rnn`] (`torch.nn.RNN`, `batch_first=True`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RnnConfig {
    /// Input features.
    pub input_size: usize,
    /// Hidden features `H`.
    pub hidden_size: usize,
    /// Stacked layers (default 1).
    pub num_layers: usize,
    /// tanh (default) or ReLU.
    pub nonlinearity: RnnNonlinearity,
    /// Whether `bias_ih`/`bias_hh` exist (default true).
    pub bias: bool,
    /// Dropout on the outputs of every layer but the last, in training only
    /// (default 0.0).
    pub dropout: f64,
    /// Seed of the dropout generator (default 0).
    pub dropout_seed: u64,
    /// Whether a backward direction runs too (default false).
    pub bidirectional: bool,
}

impl RnnConfig {
    /// `input_size → hidden_size`, one layer, tanh, biases, no dropout,
    /// unidirectional (PyTorch's defaults).
    pub fn new(input_size: usize, hidden_size: usize) -> Self {
        RnnConfig {
            input_size,
            hidden_size,
            num_layers: 1,
            nonlinearity: RnnNonlinearity::Tanh,
            bias: true,
            dropout: 0.0,
            dropout_seed: 0,
            bidirectional: false,
        }
    }

    /// Sets the non-linearity (default tanh).
    pub fn with_nonlinearity(mut self, nonlinearity: RnnNonlinearity) -> Self {
        self.nonlinearity = nonlinearity;
        self
    }

    fn spec(&self) -> Spec {
        Spec {
            cell: Cell::Rnn(self.nonlinearity),
            input_size: self.input_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_layers,
            bias: self.bias,
            dropout: self.dropout,
            bidirectional: self.bidirectional,
        }
    }

    /// Builds the layer with PyTorch's initialisation: every weight and
    /// bias from `U(−1/√H, 1/√H)`. Errors when `hidden_size` or
    /// `num_layers` is 0 or `dropout` is outside `[0, 1]`.
    pub fn init<T: Element>(&self, rng: &mut impl Rng) -> Result<Rnn<T>> {
        Ok(Rnn {
            config: *self,
            core: self.spec().init(rng)?.with_seed(self.dropout_seed),
        })
    }
}
config_builders!(RnnConfig);

/// Configuration of an [`Lstm`] (`torch.nn.LSTM`, `batch_first=True`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LstmConfig {
    /// Input features.
    pub input_size: usize,
    /// Hidden features `H`.
    pub hidden_size: usize,
    /// Stacked layers (default 1).
    pub num_layers: usize,
    /// Whether `bias_ih`/`bias_hh` exist (default true).
    pub bias: bool,
    /// Dropout on the outputs of every layer but the last, in training only
    /// (default 0.0).
    pub dropout: f64,
    /// Seed of the dropout generator (default 0).
    pub dropout_seed: u64,
    /// Whether a backward direction runs too (default false).
    pub bidirectional: bool,
}

impl LstmConfig {
    /// `input_size → hidden_size`, one layer, biases, no dropout,
    /// unidirectional (PyTorch's defaults).
    pub fn new(input_size: usize, hidden_size: usize) -> Self {
        LstmConfig {
            input_size,
            hidden_size,
            num_layers: 1,
            bias: true,
            dropout: 0.0,
            dropout_seed: 0,
            bidirectional: false,
        }
    }

    fn spec(&self) -> Spec {
        Spec {
            cell: Cell::Lstm,
            input_size: self.input_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_layers,
            bias: self.bias,
            dropout: self.dropout,
            bidirectional: self.bidirectional,
        }
    }

    /// Builds the layer with PyTorch's initialisation: every weight and
    /// bias from `U(−1/√H, 1/√H)`. Errors when `hidden_size` or
    /// `num_layers` is 0 or `dropout` is outside `[0, 1]`.
    pub fn init<T: Element>(&self, rng: &mut impl Rng) -> Result<Lstm<T>> {
        Ok(Lstm {
            config: *self,
            core: self.spec().init(rng)?.with_seed(self.dropout_seed),
        })
    }
}
config_builders!(LstmConfig);

/// Configuration of a [`Gru`] (`torch.nn.GRU`, `batch_first=True`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GruConfig {
    /// Input features.
    pub input_size: usize,
    /// Hidden features `H`.
    pub hidden_size: usize,
    /// Stacked layers (default 1).
    pub num_layers: usize,
    /// Whether `bias_ih`/`bias_hh` exist (default true).
    pub bias: bool,
    /// Dropout on the outputs of every layer but the last, in training only
    /// (default 0.0).
    pub dropout: f64,
    /// Seed of the dropout generator (default 0).
    pub dropout_seed: u64,
    /// Whether a backward direction runs too (default false).
    pub bidirectional: bool,
}

impl GruConfig {
    /// `input_size → hidden_size`, one layer, biases, no dropout,
    /// unidirectional (PyTorch's defaults).
    pub fn new(input_size: usize, hidden_size: usize) -> Self {
        GruConfig {
            input_size,
            hidden_size,
            num_layers: 1,
            bias: true,
            dropout: 0.0,
            dropout_seed: 0,
            bidirectional: false,
        }
    }

    fn spec(&self) -> Spec {
        Spec {
            cell: Cell::Gru,
            input_size: self.input_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_layers,
            bias: self.bias,
            dropout: self.dropout,
            bidirectional: self.bidirectional,
        }
    }

    /// Builds the layer with PyTorch's initialisation: every weight and
    /// bias from `U(−1/√H, 1/√H)`. Errors when `hidden_size` or
    /// `num_layers` is 0 or `dropout` is outside `[0, 1]`.
    pub fn init<T: Element>(&self, rng: &mut impl Rng) -> Result<Gru<T>> {
        Ok(Gru {
            config: *self,
            core: self.spec().init(rng)?.with_seed(self.dropout_seed),
        })
    }
}
config_builders!(GruConfig);

/// The layer struct, its methods and its [`Module`] implementation.
macro_rules! rnn_layer {
    ($(#[$doc:meta])* $layer:ident, $config:ident, $name:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $layer<T: Element = f32> {
            config: $config,
            core: Core<T>,
        }

        impl<T: Element> $layer<T> {
            /// The configuration the layer was built from.
            pub fn config(&self) -> &$config {
                &self.config
            }

            /// The parameters, entry `layer·dirs + dir` (`dir` 1 is the
            /// backward direction).
            pub fn weights(&self) -> &[RnnWeights<Param<T>>] {
                &self.core.weights
            }

            /// Mutable parameters, entry `layer·dirs + dir`. Shapes are
            /// checked again at every forward pass.
            pub fn weights_mut(&mut self) -> &mut [RnnWeights<Param<T>>] {
                &mut self.core.weights
            }

            #[doc = concat!("Inference over a whole sequence, from `state` (zeros when `None`); returns the output sequence and the final state (PyTorch's `output, h_n`", " for ", $name, ").")]
            ///
            /// # Shapes
            /// `x` `[batch, time, input_size]`, state `[layers·dirs, batch, H]`
            /// → output `[batch, time, dirs·H]` (features `[forward H |
            /// backward H]`) and final state `[layers·dirs, batch, H]`.
            ///
            /// # Errors
            /// When `x` is not `[batch, time ≥ 1, input_size]` or the
            /// state's shape does not fit; the message names the layer and
            /// the shapes.
            pub fn forward_seq(
                &self,
                x: &Var<T>,
                state: Option<&RnnState<T>>,
            ) -> Result<(Var<T>, RnnState<T>)> {
                self.core.forward_seq(x, state)
            }

            /// Training twin of `forward_seq`: applies dropout with the
            /// layer's seeded generator to the output of every layer but
            /// the last. Shapes and errors as `forward_seq`.
            pub fn forward_seq_train(
                &mut self,
                x: &Var<T>,
                state: Option<&RnnState<T>>,
            ) -> Result<(Var<T>, RnnState<T>)> {
                self.core.forward_seq_train(x, state)
            }

            /// Inference with `weights` (entry `layer·dirs + dir`, PyTorch's
            /// shapes) in place of the layer's own parameters: the
            /// functional form (`torch.func.functional_call`), for gradient
            /// checks and weights that live outside the layer. Errors
            /// when the number or shapes of the weights do not fit the
            /// configuration.
            pub fn forward_seq_with(
                &self,
                weights: &[RnnWeights<Var<T>>],
                x: &Var<T>,
                state: Option<&RnnState<T>>,
            ) -> Result<(Var<T>, RnnState<T>)> {
                self.core.forward_seq_with(weights, x, state)
            }
        }

        impl<T: Element> Module<T> for $layer<T> {
            /// The output sequence of `forward_seq` from a zero state.
            fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
                Ok(self.forward_seq(x, None)?.0)
            }

            /// The output sequence of `forward_seq_train` from a zero state.
            fn forward_train(&mut self, x: &Var<T>) -> Result<Var<T>> {
                Ok(self.forward_seq_train(x, None)?.0)
            }

            fn reseed(&mut self, seed: u64) {
                self.core.rng = StdRng::seed_from_u64(seed);
            }

            fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
                self.core.visit(prefix, f)
            }

            fn visit_mut<'a>(
                &'a mut self,
                prefix: &str,
                f: &mut dyn FnMut(&str, EntryMut<'a, T>),
            ) {
                self.core.visit_mut(prefix, f)
            }
        }
    };
}

rnn_layer!(
    /// Elman recurrent network, multi-layer and optionally bidirectional
    /// (`torch.nn.RNN` with `batch_first=True`; Elman 1990):
    ///
    /// `h_t = tanh(W_ih·x_t + b_ih + W_hh·h_{t−1} + b_hh)` (or ReLU).
    ///
    /// Layer `k > 0` reads the output of layer `k − 1`; the backward
    /// direction runs from the last time step to the first.
    ///
    /// # Shapes
    /// Input `[batch, time, input_size]` → output `[batch, time, dirs·H]`;
    /// state `h` `[layers·dirs, batch, H]`. Parameters (visited per layer,
    /// forward then `_reverse`): `weight_ih_l{k}` `[H, in]`,
    /// `weight_hh_l{k}` `[H, H]`, `bias_ih_l{k}`, `bias_hh_l{k}` `[H]`.
    Rnn,
    RnnConfig,
    "RNN"
);

rnn_layer!(
    /// Long short-term memory, multi-layer and optionally bidirectional
    /// (`torch.nn.LSTM` with `batch_first=True`; Hochreiter & Schmidhuber
    /// 1997, forget gate of Gers et al. 2000):
    ///
    /// ```text
    /// i_t = σ(W_ii·x_t + b_ii + W_hi·h_{t−1} + b_hi)
    /// f_t = σ(W_if·x_t + b_if + W_hf·h_{t−1} + b_hf)
    /// g_t = tanh(W_ig·x_t + b_ig + W_hg·h_{t−1} + b_hg)
    /// o_t = σ(W_io·x_t + b_io + W_ho·h_{t−1} + b_ho)
    /// c_t = f_t ⊙ c_{t−1} + i_t ⊙ g_t
    /// h_t = o_t ⊙ tanh(c_t)
    /// ```
    ///
    /// Gates are stacked in the order i, f, g, o. Layer `k > 0` reads the
    /// output of layer `k − 1`; the backward direction runs from the last
    /// time step to the first.
    ///
    /// # Shapes
    /// Input `[batch, time, input_size]` → output `[batch, time, dirs·H]`;
    /// states `h`, `c` `[layers·dirs, batch, H]`. Parameters (visited per
    /// layer, forward then `_reverse`): `weight_ih_l{k}` `[4H, in]`,
    /// `weight_hh_l{k}` `[4H, H]`, `bias_ih_l{k}`, `bias_hh_l{k}` `[4H]`.
    Lstm,
    LstmConfig,
    "LSTM"
);

rnn_layer!(
    /// Gated recurrent unit, multi-layer and optionally bidirectional
    /// (`torch.nn.GRU` with `batch_first=True`; Cho et al. 2014):
    ///
    /// ```text
    /// r_t = σ(W_ir·x_t + b_ir + W_hr·h_{t−1} + b_hr)
    /// z_t = σ(W_iz·x_t + b_iz + W_hz·h_{t−1} + b_hz)
    /// n_t = tanh(W_in·x_t + b_in + r_t ⊙ (W_hn·h_{t−1} + b_hn))
    /// h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t−1}
    /// ```
    ///
    /// Gates are stacked in the order r, z, n. Layer `k > 0` reads the
    /// output of layer `k − 1`; the backward direction runs from the last
    /// time step to the first.
    ///
    /// # Shapes
    /// Input `[batch, time, input_size]` → output `[batch, time, dirs·H]`;
    /// state `h` `[layers·dirs, batch, H]`. Parameters (visited per layer,
    /// forward then `_reverse`): `weight_ih_l{k}` `[3H, in]`,
    /// `weight_hh_l{k}` `[3H, H]`, `bias_ih_l{k}`, `bias_hh_l{k}` `[3H]`.
    Gru,
    GruConfig,
    "GRU"
);

#[cfg(test)]
mod tests {
    use super::*;
    use anneal_tensor::Tensor;
    use rand::SeedableRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn unbind_matches_flat_slices_with_and_without_graph() {
        let t = Tensor::<f64>::randn_seeded(&[7, 2, 3], 1).unwrap();
        for v in [Var::constant(t.clone()), Var::leaf(t.clone())] {
            let parts = unbind0(&v).unwrap();
            assert_eq!(parts.len(), 7);
            for (i, p) in parts.iter().enumerate() {
                assert_eq!(p.shape(), &[2, 3]);
                assert_eq!(p.value().to_vec(), t.narrow(0, i, 1).unwrap().to_vec());
            }
        }
        // Gradient of the sum of (i+1)·part_i is i+1 on block i.
        let v = Var::leaf(t.clone());
        let parts = unbind0(&v).unwrap();
        let mut loss = parts[0].sum_all().unwrap();
        for (i, p) in parts.iter().enumerate().skip(1) {
            loss = loss
                .add(&p.mul_scalar((i + 1) as f64).sum_all().unwrap())
                .unwrap();
        }
        let g = loss.backward().unwrap();
        let g = g.wrt(&v).unwrap().to_vec();
        for (j, gv) in g.iter().enumerate() {
            assert_eq!(*gv, (j / 6 + 1) as f64);
        }
    }

    #[test]
    fn zero_state_shortcut_equals_explicit_zero_state() {
        let x = Var::constant(Tensor::<f64>::randn_seeded(&[2, 4, 3], 2).unwrap());
        for cell in [
            Cell::Rnn(RnnNonlinearity::Tanh),
            Cell::Rnn(RnnNonlinearity::Relu),
            Cell::Lstm,
            Cell::Gru,
        ] {
            for bias in [true, false] {
                let spec = Spec {
                    cell,
                    input_size: 3,
                    hidden_size: 5,
                    num_layers: 2,
                    bias,
                    dropout: 0.0,
                    bidirectional: true,
                };
                let core = spec.init::<f64>(&mut rng()).unwrap();
                let (y0, s0) = core.forward_seq(&x, None).unwrap();
                let z = Var::constant(Tensor::zeros(&[4, 2, 5]).unwrap());
                let state = RnnState {
                    h: z.clone(),
                    c: (cell == Cell::Lstm).then_some(z),
                };
                let (y1, s1) = core.forward_seq(&x, Some(&state)).unwrap();
                let close = |a: &Var<f64>, b: &Var<f64>| {
                    a.value()
                        .to_vec()
                        .iter()
                        .zip(b.value().to_vec())
                        .all(|(p, q)| (p - q).abs() < 1e-14)
                };
                assert!(close(&y0, &y1), "{cell:?} bias {bias}");
                assert!(close(&s0.h, &s1.h));
                assert_eq!(s0.c.is_some(), cell == Cell::Lstm);
            }
        }
    }

    #[test]
    fn names_follow_pytorch() {
        let spec = LstmConfig::new(3, 2)
            .with_num_layers(2)
            .with_bidirectional(true)
            .spec();
        assert_eq!(spec.param_name("weight_ih", 0), "weight_ih_l0");
        assert_eq!(spec.param_name("bias_hh", 1), "bias_hh_l0_reverse");
        assert_eq!(spec.param_name("weight_hh", 2), "weight_hh_l1");
        assert_eq!(spec.param_name("bias_ih", 3), "bias_ih_l1_reverse");
        assert_eq!(spec.layer_input(0), 3);
        assert_eq!(spec.layer_input(1), 4);
    }
}
