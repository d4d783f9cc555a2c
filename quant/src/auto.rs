//! Accuracy-driven quantisation tuning (in the manner of Intel Neural
//! Compressor's accuracy-aware tuning), plus the JSON form of a
//! [`QuantConfig`] so a tuned plan can be saved and applied again.
//!
//! Strategy of [`auto_quantize`]:
//! 1. try the most aggressive plan for the objective: for the size
//!    objective every layer in the scheme where it takes the fewest bytes
//!    (int4 weight-only, except for short rows that int4 blocks pad), for
//!    the speed objective static int8 per tensor;
//! 2. if it misses the criterion, measure each layer's sensitivity: the
//!    accuracy lost when only that layer is quantised (ties broken by the
//!    layer's SQNR, lowest first, then by a permutation drawn from the seed);
//! 3. fall layers back to float one at a time, most sensitive first, until
//!    the criterion holds;
//! 4. try to re-quantise each fallen-back layer (least sensitive first) with
//!    the other schemes of the ladder: every calibration method, per tensor
//!    and per channel; keep the first that still meets the criterion.
//!
//! Every trial quantises a fresh copy of the float model, which itself is
//! never changed. Identical plans are evaluated once. The search stops when
//! the aggressive plan meets the criterion, when the steps above are done,
//! or when the trial budget is spent; the answer is the plan with the best
//! objective among all that met the criterion (the float model itself when
//! none did).

use std::path::Path;
use std::time::Instant;

use anneal_autograd::{no_grad, Var};
use anneal_layers::{Entry, EntryMut, Module};
use anneal_tensor::{Error, Result, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Map, Value};

use crate::{
    quantize_static, quantize_weights, Calibration, LayerScheme, QuantConfig, QuantReport,
};

/// How much accuracy the quantised model may lose against the float one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Criterion {
    /// At most this fraction of the float accuracy (`0.01`: 1 % of it).
    RelativeDrop(f64),
    /// At most this much, in the evaluation's own units (`0.005`: half a
    /// point for accuracies in `[0, 1]`).
    AbsoluteDrop(f64),
}

impl Default for Criterion {
    /// A relative drop of at most 1 %.
    fn default() -> Self {
        Criterion::RelativeDrop(0.01)
    }
}

impl Criterion {
    /// Parses `rel:0.01` or `abs:0.005`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "Criterion::parse",
                format!("criterion {s:?} must be rel:FRACTION or abs:FRACTION, e.g. rel:0.01"),
            )
        };
        let (kind, v) = s.split_once(':').ok_or_else(bad)?;
        let v: f64 = v.trim().parse().map_err(|_| bad())?;
        let c = match kind.trim() {
            "rel" => Criterion::RelativeDrop(v),
            "abs" => Criterion::AbsoluteDrop(v),
            _ => return Err(bad()),
        };
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<()> {
        let ok = match *self {
            Criterion::RelativeDrop(v) => v.is_finite() && (0.0..1.0).contains(&v),
            Criterion::AbsoluteDrop(v) => v.is_finite() && v >= 0.0,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(
                "Criterion",
                format!("{self:?}: the allowed drop must be finite and ≥ 0 (relative: < 1)"),
            ))
        }
    }

    /// The lowest accuracy that still meets the criterion.
    pub fn threshold(&self, float_accuracy: f64) -> f64 {
        match *self {
            Criterion::RelativeDrop(r) => float_accuracy * (1.0 - r),
            Criterion::AbsoluteDrop(a) => float_accuracy - a,
        }
    }

    /// Whether `accuracy` meets the criterion against `float_accuracy`
    /// (with 1e-9 of slack for rounding in the evaluation).
    pub fn is_met(&self, float_accuracy: f64, accuracy: f64) -> bool {
        accuracy >= self.threshold(float_accuracy) - 1e-9
    }
}

impl std::fmt::Display for Criterion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Criterion::RelativeDrop(r) => write!(f, "relative drop ≤ {}%", r * 100.0),
            Criterion::AbsoluteDrop(a) => write!(f, "absolute drop ≤ {a}"),
        }
    }
}

/// What the tuner optimises among the plans that meet the criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Objective {
    /// The fewest bytes of weights and quantisation parameters.
    #[default]
    Size,
    /// The highest measured inference throughput (samples/s) on one batch.
    Speed,
}

/// Settings of [`auto_quantize`].
#[derive(Debug, Clone)]
pub struct AutoQuantOptions {
    /// Accuracy the result must keep.
    pub criterion: Criterion,
    /// What to optimise among plans meeting the criterion.
    pub objective: Objective,
    /// Most quantised trials to run (≥ 1); identical plans count once.
    pub budget: usize,
    /// Breaks exact ties in the sensitivity ranking.
    pub seed: u64,
    /// Calibration methods to try for static int8 layers, in order; the
    /// first is used by the aggressive and sensitivity trials.
    pub calibrations: Vec<Calibration>,
    /// Batch timed for [`Objective::Speed`] (default: the first calibration batch).
    pub speed_batch: Option<Tensor<f32>>,
    /// Timed forward passes per measurement (the fastest counts).
    pub speed_repeats: usize,
}

impl Default for AutoQuantOptions {
    fn default() -> Self {
        AutoQuantOptions {
            criterion: Criterion::default(),
            objective: Objective::Size,
            budget: 100,
            seed: 0,
            calibrations: vec![
                Calibration::MinMax,
                Calibration::Percentile(99.99),
                Calibration::Mse,
                Calibration::Entropy,
                Calibration::MeanStd(3.0),
            ],
            speed_batch: None,
            speed_repeats: 5,
        }
    }
}

/// Which step of the search a trial belongs to.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// Every layer at its most aggressive scheme.
    Aggressive,
    /// Only this layer quantised (sensitivity analysis).
    Sensitivity(String),
    /// The aggressive plan with this many of the most sensitive layers in float.
    Fallback(usize),
    /// A fallen-back layer quantised again with another scheme.
    Requantize(String),
}

/// One evaluated plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// 1-based order of evaluation.
    pub index: usize,
    /// The search step.
    pub phase: Phase,
    /// The plan (every layer listed).
    pub config: QuantConfig,
    /// Accuracy returned by the evaluation.
    pub accuracy: f64,
    /// Model bytes after quantisation.
    pub bytes: usize,
    /// Measured samples/s ([`Objective::Speed`] only).
    pub throughput: Option<f64>,
    /// Whether the accuracy meets the criterion.
    pub meets_criterion: bool,
    /// The per-layer report of the quantised model.
    pub report: QuantReport,
}

/// How much one layer costs when it alone is quantised.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSensitivity {
    /// Dotted layer name.
    pub name: String,
    /// The scheme it was quantised with.
    pub scheme: LayerScheme,
    /// Float accuracy minus the accuracy with only this layer quantised.
    pub accuracy_drop: f64,
    /// SQNR of the layer's output on the first calibration batch.
    pub sqnr_db: Option<f64>,
}

/// The outcome of [`auto_quantize`].
#[derive(Debug, Clone, PartialEq)]
pub struct AutoQuantResult {
    /// The chosen plan, every layer listed; meets the criterion.
    pub config: QuantConfig,
    /// Per-layer report of the chosen plan.
    pub report: QuantReport,
    /// The criterion searched under.
    pub criterion: Criterion,
    /// The objective searched for.
    pub objective: Objective,
    /// Accuracy of the float model.
    pub float_accuracy: f64,
    /// Accuracy of the chosen plan.
    pub accuracy: f64,
    /// Bytes of the float model.
    pub float_bytes: usize,
    /// Bytes of the chosen plan.
    pub bytes: usize,
    /// Measured samples/s of the float model ([`Objective::Speed`] only).
    pub float_throughput: Option<f64>,
    /// Measured samples/s of the chosen plan ([`Objective::Speed`] only).
    pub throughput: Option<f64>,
    /// Layers, most sensitive first (empty when the aggressive plan met the
    /// criterion or the budget ran out before the ranking).
    pub sensitivity: Vec<LayerSensitivity>,
    /// Every evaluated plan, in order.
    pub trials: Vec<Trial>,
    /// Trial number of the chosen plan (0: the float model).
    pub chosen_trial: usize,
    /// True when the search stopped because the budget was spent.
    pub budget_exhausted: bool,
}

/// Short name of a scheme for tables (`int8 per-channel`).
pub fn scheme_name(s: &LayerScheme) -> String {
    match s {
        LayerScheme::Float => "float".into(),
        LayerScheme::Int8 { per_channel, .. } => {
            format!(
                "int8 per-{}",
                if *per_channel { "channel" } else { "tensor" }
            )
        }
        LayerScheme::DynamicInt8 { per_channel } => format!(
            "dynamic int8 per-{}",
            if *per_channel { "channel" } else { "tensor" }
        ),
        LayerScheme::Int4WeightOnly => "int4 weight-only".into(),
        LayerScheme::Int8WeightOnly => "int8 weight-only".into(),
    }
}

/// Calibration as written in tables and JSON: `minmax`, `moving_average`,
/// `percentile:99.99`, `mse`, `entropy`, `meanstd:3`.
pub fn calibration_name(c: &Calibration) -> String {
    match c {
        Calibration::MinMax => "minmax".into(),
        Calibration::MovingAverage => "moving_average".into(),
        Calibration::Percentile(p) => format!("percentile:{p}"),
        Calibration::Mse => "mse".into(),
        Calibration::Entropy => "entropy".into(),
        Calibration::MeanStd(k) => format!("meanstd:{k}"),
    }
}

fn fmt_sqnr(d: Option<f64>) -> String {
    match d {
        None => "–".into(),
        Some(d) if d.is_finite() => format!("{d:.1}"),
        Some(_) => "∞".into(),
    }
}

/// A plan and its report as a Markdown table: layer, scheme, calibration,
/// f32 bytes, quantised bytes and SQNR, then the model totals.
pub fn plan_table(config: &QuantConfig, report: &QuantReport) -> String {
    let mut s = String::from(
        "| layer | scheme | calibration | f32 bytes | bytes | SQNR (dB) |\n|---|---|---|---|---|---|\n",
    );
    for l in &report.layers {
        let scheme = config.scheme_for(&l.name);
        let cal = match scheme {
            LayerScheme::Int8 { calibration, .. } => calibration_name(&calibration),
            _ => "–".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            l.name,
            scheme_name(&scheme),
            cal,
            l.float_bytes,
            l.quant_bytes,
            fmt_sqnr(l.sqnr_db)
        ));
    }
    s.push_str(&format!(
        "| **model** | | | {} | {} | |\n",
        report.float_model_bytes, report.quant_model_bytes
    ));
    s
}

impl AutoQuantResult {
    /// The chosen plan as a Markdown table (see [`plan_table`]).
    pub fn table(&self) -> String {
        plan_table(&self.config, &self.report)
    }

    /// One line per trial: number, phase, accuracy, bytes, throughput, met.
    pub fn history(&self) -> String {
        let mut s = String::from(
            "| trial | phase | accuracy | bytes | samples/s | meets |\n|---|---|---|---|---|---|\n",
        );
        for t in &self.trials {
            let phase = match &t.phase {
                Phase::Aggressive => "aggressive".to_string(),
                Phase::Sensitivity(l) => format!("sensitivity {l}"),
                Phase::Fallback(k) => format!("fallback {k}"),
                Phase::Requantize(l) => format!("requantize {l}"),
            };
            s.push_str(&format!(
                "| {}{} | {} | {:.4} | {} | {} | {} |\n",
                t.index,
                if t.index == self.chosen_trial {
                    " ←"
                } else {
                    ""
                },
                phase,
                t.accuracy,
                t.bytes,
                t.throughput.map_or("–".into(), |v| format!("{v:.0}")),
                if t.meets_criterion { "yes" } else { "no" }
            ));
        }
        s
    }
}

/// Names of the Linear and Conv2d layers quantisation can reach, in order.
pub fn layer_names(model: &mut dyn Module<f32>) -> Vec<String> {
    let mut names = Vec::new();
    model.visit_layers_mut("", &mut |name, _| names.push(name.to_string()));
    names
}

enum Value32 {
    Tensor(Tensor<f32>),
    Counter(i64),
}

/// Copies every parameter, buffer and counter of `src` into `dst` by name
/// (a state-dict copy); the two must have the same entries and shapes.
pub fn copy_state(src: &dyn Module<f32>, dst: &mut dyn Module<f32>) -> Result<()> {
    let mut values = std::collections::BTreeMap::new();
    src.visit("", &mut |name, e| {
        let v = match e {
            Entry::Param(p) => Value32::Tensor(p.value().clone()),
            Entry::Buffer(b) => Value32::Tensor(b.clone()),
            Entry::Counter(c) => Value32::Counter(*c),
        };
        values.insert(name.to_string(), v);
    });
    let mut failure: Option<Error> = None;
    let mut copied = 0;
    dst.visit_mut("", &mut |name, e| {
        if failure.is_some() {
            return;
        }
        let r = match (e, values.get(name)) {
            (EntryMut::Param(p), Some(Value32::Tensor(t))) => p.set_value(t.clone()),
            (EntryMut::Buffer(b), Some(Value32::Tensor(t))) if b.shape() == t.shape() => {
                *b = t.clone();
                Ok(())
            }
            (EntryMut::Counter(c), Some(Value32::Counter(v))) => {
                *c = *v;
                Ok(())
            }
            (_, None) => Err(Error::invalid(
                "copy_state",
                format!("the source model has no entry {name:?}"),
            )),
            _ => Err(Error::invalid(
                "copy_state",
                format!("entry {name:?} differs in kind or shape between the models"),
            )),
        };
        match r {
            Ok(()) => copied += 1,
            Err(e) => failure = Some(e),
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    if copied != values.len() {
        return Err(Error::invalid(
            "copy_state",
            format!(
                "the source model has {} entries, the destination {copied}",
                values.len()
            ),
        ));
    }
    Ok(())
}

/// Quantises `model` with `config`: static (calibrated on `calibration`)
/// when the batches are given, weight-only or dynamic otherwise; a static
/// int8 layer without calibration batches is an error naming it.
pub fn apply_config(
    model: &mut dyn Module<f32>,
    config: &QuantConfig,
    calibration: &[Tensor<f32>],
) -> Result<QuantReport> {
    if calibration.is_empty() {
        if let Some(n) = layer_names(model)
            .into_iter()
            .find(|n| matches!(config.scheme_for(n), LayerScheme::Int8 { .. }))
        {
            return Err(Error::invalid(
                "apply_config",
                format!("layer {n} is static int8 and needs calibration batches"),
            ));
        }
        let mut c = config.clone();
        if matches!(c.default, LayerScheme::Int8 { .. }) {
            // No layer uses the default (checked above); keep quantize_weights happy.
            c.default = LayerScheme::Float;
        }
        quantize_weights(model, &c, &[])
    } else {
        quantize_static(model, config, calibration)
    }
}

/// Inference throughput (rows of `batch` per second): one warm-up pass,
/// then the fastest of `repeats` timed passes.
pub fn measure_throughput(
    model: &dyn Module<f32>,
    batch: &Tensor<f32>,
    repeats: usize,
) -> Result<f64> {
    if batch.rank() == 0 || batch.shape()[0] == 0 {
        return Err(Error::invalid(
            "measure_throughput",
            format!("batch of shape {:?} has no rows", batch.shape()),
        ));
    }
    let x = Var::constant(batch.clone());
    no_grad(|| -> Result<f64> {
        model.forward(&x)?;
        let mut best = f64::INFINITY;
        for _ in 0..repeats.max(1) {
            let t = Instant::now();
            model.forward(&x)?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok(batch.shape()[0] as f64 / best.max(1e-12))
    })
}

/// The schemes a layer may take, most aggressive for the objective first.
fn ladder(objective: Objective, calibrations: &[Calibration]) -> Vec<LayerScheme> {
    let int8 = |per_channel: bool| {
        calibrations
            .iter()
            .map(move |&calibration| LayerScheme::Int8 {
                per_channel,
                calibration,
            })
    };
    match objective {
        Objective::Size => std::iter::once(LayerScheme::Int4WeightOnly)
            .chain(int8(false))
            .chain(int8(true))
            .collect(),
        Objective::Speed => int8(false)
            .chain(int8(true))
            .chain(std::iter::once(LayerScheme::Int4WeightOnly))
            .collect(),
    }
}

/// An evaluation callback: accuracy of a (quantised) model.
pub type EvalFn<'a> = dyn FnMut(&dyn Module<f32>) -> Result<f64> + 'a;

/// Builds a model with the float model's architecture (any weights).
pub type BuildFn<'a> = dyn Fn() -> Result<Box<dyn Module<f32>>> + 'a;

struct Search<'a, 'b> {
    float: &'a dyn Module<f32>,
    build: &'a BuildFn<'b>,
    calibration: &'a [Tensor<f32>],
    eval: &'a mut EvalFn<'b>,
    opts: &'a AutoQuantOptions,
    speed_batch: Option<Tensor<f32>>,
    names: Vec<String>,
    float_accuracy: f64,
    trials: Vec<Trial>,
    exhausted: bool,
}

impl Search<'_, '_> {
    fn fresh_copy(&self) -> Result<Box<dyn Module<f32>>> {
        let mut m = (self.build)()?;
        copy_state(self.float, m.as_mut())?;
        Ok(m)
    }

    fn config(&self, schemes: &[LayerScheme]) -> QuantConfig {
        let mut c = QuantConfig::uniform(LayerScheme::Float);
        for (n, s) in self.names.iter().zip(schemes) {
            c.overrides.insert(n.clone(), *s);
        }
        c
    }

    /// Evaluates a plan (or finds it among the trials run); `None` once the
    /// budget is spent.
    fn trial(&mut self, schemes: &[LayerScheme], phase: Phase) -> Result<Option<usize>> {
        let config = self.config(schemes);
        if let Some(i) = self.trials.iter().position(|t| t.config == config) {
            return Ok(Some(i));
        }
        if self.trials.len() >= self.opts.budget {
            self.exhausted = true;
            return Ok(None);
        }
        let mut m = self.fresh_copy()?;
        let report = apply_config(m.as_mut(), &config, self.calibration)?;
        let accuracy = (self.eval)(m.as_ref())?;
        if !accuracy.is_finite() {
            return Err(Error::invalid(
                "auto_quantize",
                format!(
                    "the evaluation returned {accuracy} for trial {}",
                    self.trials.len() + 1
                ),
            ));
        }
        let throughput = match &self.speed_batch {
            Some(b) => Some(measure_throughput(m.as_ref(), b, self.opts.speed_repeats)?),
            None => None,
        };
        self.trials.push(Trial {
            index: self.trials.len() + 1,
            phase,
            meets_criterion: self.opts.criterion.is_met(self.float_accuracy, accuracy),
            bytes: report.quant_model_bytes,
            config,
            accuracy,
            throughput,
            report,
        });
        Ok(Some(self.trials.len() - 1))
    }

    /// Each layer's schemes, most aggressive first: for the size objective
    /// ordered by the bytes the layer really takes in each (int4 blocks pad
    /// short rows, so int4 is not always smaller than int8), measured by
    /// quantising a copy once per scheme kind (no evaluation, no trial).
    fn ladders(&self) -> Result<Vec<Vec<LayerScheme>>> {
        let base = ladder(self.opts.objective, &self.opts.calibrations);
        let n = self.names.len();
        if self.opts.objective == Objective::Speed {
            return Ok(vec![base; n]);
        }
        let mut bytes: Vec<(LayerScheme, Vec<usize>)> = Vec::new();
        for kind in [
            LayerScheme::Int4WeightOnly,
            LayerScheme::Int8 {
                per_channel: false,
                calibration: Calibration::MinMax,
            },
            LayerScheme::Int8 {
                per_channel: true,
                calibration: Calibration::MinMax,
            },
        ] {
            let mut m = self.fresh_copy()?;
            let report = apply_config(m.as_mut(), &QuantConfig::uniform(kind), self.calibration)?;
            let per_layer = self
                .names
                .iter()
                .map(|name| {
                    report
                        .layers
                        .iter()
                        .find(|l| &l.name == name)
                        .map_or(usize::MAX, |l| l.quant_bytes)
                })
                .collect();
            bytes.push((kind, per_layer));
        }
        let kind_of = |s: &LayerScheme| match s {
            LayerScheme::Int4WeightOnly => 0,
            LayerScheme::Int8 {
                per_channel: false, ..
            } => 1,
            _ => 2,
        };
        Ok((0..n)
            .map(|i| {
                let mut l = base.clone();
                l.sort_by_key(|s| bytes[kind_of(s)].1[i]);
                l
            })
            .collect())
    }

    fn met(&self, i: usize) -> bool {
        self.trials[i].meets_criterion
    }

    /// Runs the four steps; returns the sensitivity ranking found.
    fn run(&mut self) -> Result<Vec<LayerSensitivity>> {
        let n = self.names.len();
        let ladders = self.ladders()?;
        let aggressive: Vec<LayerScheme> = ladders.iter().map(|l| l[0]).collect();
        match self.trial(&aggressive, Phase::Aggressive)? {
            Some(i) if self.met(i) => return Ok(Vec::new()),
            Some(_) => {}
            None => return Ok(Vec::new()),
        }

        // Sensitivity: only layer i quantised.
        let mut sens = Vec::with_capacity(n);
        for i in 0..n {
            let mut s = vec![LayerScheme::Float; n];
            s[i] = aggressive[i];
            let Some(t) = self.trial(&s, Phase::Sensitivity(self.names[i].clone()))? else {
                return Ok(Vec::new());
            };
            let t = &self.trials[t];
            sens.push(LayerSensitivity {
                name: self.names[i].clone(),
                scheme: aggressive[i],
                accuracy_drop: self.float_accuracy - t.accuracy,
                sqnr_db: t
                    .report
                    .layers
                    .iter()
                    .find(|l| l.name == self.names[i])
                    .and_then(|l| l.sqnr_db),
            });
        }
        let mut tiebreak: Vec<usize> = (0..n).collect();
        tiebreak.shuffle(&mut StdRng::seed_from_u64(self.opts.seed));
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            let (sa, sb) = (&sens[a], &sens[b]);
            sb.accuracy_drop
                .total_cmp(&sa.accuracy_drop)
                .then_with(|| {
                    let q = |s: &LayerSensitivity| s.sqnr_db.unwrap_or(f64::INFINITY);
                    q(sa).total_cmp(&q(sb))
                })
                .then(tiebreak[a].cmp(&tiebreak[b]))
        });
        let ranking: Vec<LayerSensitivity> = order.iter().map(|&i| sens[i].clone()).collect();

        // Fall back, most sensitive first, until the criterion holds.
        let mut current = aggressive;
        let mut fallen = Vec::new();
        for (k, &i) in order.iter().enumerate() {
            current[i] = LayerScheme::Float;
            fallen.push(i);
            if k + 1 == n {
                break; // the float model meets the criterion by definition
            }
            match self.trial(&current, Phase::Fallback(k + 1))? {
                Some(t) if self.met(t) => break,
                Some(_) => {}
                None => return Ok(ranking),
            }
        }

        // Re-quantise the fallen-back layers, least sensitive first.
        for &i in fallen.iter().rev() {
            for &cand in &ladders[i] {
                let mut s = current.clone();
                s[i] = cand;
                match self.trial(&s, Phase::Requantize(self.names[i].clone()))? {
                    Some(t) if self.met(t) => {
                        current = s;
                        break;
                    }
                    Some(_) => {}
                    None => return Ok(ranking),
                }
            }
        }
        Ok(ranking)
    }
}

/// Accuracy-driven quantisation: searches a per-layer plan (float, int8
/// per-tensor, int8 per-channel or int4 weight-only; calibration method per
/// static layer) that keeps `eval`'s accuracy within `options.criterion` of
/// the float model's, with the best `options.objective`.
///
/// * `float` is the trained model; it is only read. Each trial builds a
///   model with `build` (same architecture), copies `float`'s state into it
///   and quantises that copy. `float` must not carry quantisation hooks.
/// * `calibration` batches calibrate static layers (at least one).
/// * `eval` returns the accuracy of a model (higher is better).
///
/// Deterministic for a seed with [`Objective::Size`] and a deterministic
/// `eval`; [`Objective::Speed`] depends on the measured timings.
pub fn auto_quantize(
    float: &dyn Module<f32>,
    build: &BuildFn<'_>,
    calibration: &[Tensor<f32>],
    eval: &mut EvalFn<'_>,
    options: &AutoQuantOptions,
) -> Result<AutoQuantResult> {
    options.criterion.validate()?;
    if options.budget == 0 {
        return Err(Error::invalid("auto_quantize", "budget must be ≥ 1 trial"));
    }
    if options.calibrations.is_empty() {
        return Err(Error::invalid(
            "auto_quantize",
            "at least one calibration method is needed",
        ));
    }
    if calibration.is_empty() {
        return Err(Error::invalid(
            "auto_quantize",
            "no calibration batches given",
        ));
    }
    let float_accuracy = eval(float)?;
    if !float_accuracy.is_finite() {
        return Err(Error::invalid(
            "auto_quantize",
            format!("the evaluation returned {float_accuracy} for the float model"),
        ));
    }
    let speed_batch = match options.objective {
        Objective::Speed => Some(
            options
                .speed_batch
                .clone()
                .unwrap_or_else(|| calibration[0].clone()),
        ),
        Objective::Size => None,
    };
    let float_throughput = match &speed_batch {
        Some(b) => Some(measure_throughput(float, b, options.speed_repeats)?),
        None => None,
    };
    let names = {
        let mut probe = build()?;
        copy_state(float, probe.as_mut())?;
        layer_names(probe.as_mut())
    };
    if names.is_empty() {
        return Err(Error::invalid(
            "auto_quantize",
            "the model has no Linear or Conv2d layer to quantise",
        ));
    }
    let mut search = Search {
        float,
        build,
        calibration,
        eval,
        opts: options,
        speed_batch,
        names,
        float_accuracy,
        trials: Vec::new(),
        exhausted: false,
    };
    let sensitivity = search.run()?;

    // The best plan meeting the criterion; the float model always does.
    let better = |a: &Trial, b: &Trial| -> bool {
        let by_objective = match options.objective {
            Objective::Size => b.bytes.cmp(&a.bytes),
            Objective::Speed => a
                .throughput
                .unwrap_or(0.0)
                .total_cmp(&b.throughput.unwrap_or(0.0)),
        };
        by_objective
            .then(a.accuracy.total_cmp(&b.accuracy))
            .then(b.index.cmp(&a.index))
            .is_gt()
    };
    let float_config = search.config(&vec![LayerScheme::Float; search.names.len()]);
    let float_report = {
        let mut m = search.fresh_copy()?;
        apply_config(m.as_mut(), &float_config, calibration)?
    };
    let mut best = Trial {
        index: 0,
        phase: Phase::Aggressive,
        config: float_config,
        accuracy: float_accuracy,
        bytes: float_report.float_model_bytes,
        throughput: float_throughput,
        meets_criterion: true,
        report: float_report,
    };
    for t in search.trials.iter().filter(|t| t.meets_criterion) {
        if better(t, &best) {
            best = t.clone();
        }
    }
    Ok(AutoQuantResult {
        criterion: options.criterion,
        objective: options.objective,
        float_accuracy,
        accuracy: best.accuracy,
        float_bytes: best.report.float_model_bytes,
        bytes: best.bytes,
        float_throughput,
        throughput: best.throughput,
        chosen_trial: best.index,
        config: best.config,
        report: best.report,
        sensitivity,
        budget_exhausted: search.exhausted,
        trials: search.trials,
    })
}

// ---------------------------------------------------------------- JSON

const FORMAT: &str = "anneal-quant-config";
const SCHEMES: &str = "float, int8, dynamic_int8, int4_weight_only or int8_weight_only";

fn scheme_json(s: &LayerScheme) -> Value {
    match s {
        LayerScheme::Float => json!({"scheme": "float"}),
        LayerScheme::Int8 {
            per_channel,
            calibration,
        } => json!({
            "scheme": "int8",
            "per_channel": per_channel,
            "calibration": calibration_name(calibration),
        }),
        LayerScheme::DynamicInt8 { per_channel } => {
            json!({"scheme": "dynamic_int8", "per_channel": per_channel})
        }
        LayerScheme::Int4WeightOnly => json!({"scheme": "int4_weight_only"}),
        LayerScheme::Int8WeightOnly => json!({"scheme": "int8_weight_only"}),
    }
}

fn bad(source: &str, field: &str, msg: impl std::fmt::Display) -> Error {
    Error::invalid(
        "QuantConfig::from_json",
        format!("{source}: {field}: {msg}"),
    )
}

fn parse_calibration(s: &str, source: &str, field: &str) -> Result<Calibration> {
    let num = |v: &str| -> Result<f64> {
        v.parse::<f64>()
            .map_err(|_| bad(source, field, format!("{v:?} is not a number")))
    };
    Ok(match s.split_once(':') {
        None if s == "minmax" => Calibration::MinMax,
        None if s == "moving_average" => Calibration::MovingAverage,
        None if s == "mse" => Calibration::Mse,
        None if s == "entropy" => Calibration::Entropy,
        None if s == "percentile" => Calibration::Percentile(99.99),
        None if s == "meanstd" => Calibration::MeanStd(3.0),
        Some(("percentile", v)) => {
            let p = num(v)?;
            if !(p > 50.0 && p <= 100.0) {
                return Err(bad(source, field, format!("percentile {p} must lie in (50, 100]")));
            }
            Calibration::Percentile(p)
        }
        Some(("meanstd", v)) => {
            let k = num(v)?;
            if !(k.is_finite() && k > 0.0) {
                return Err(bad(source, field, format!("k = {k} must be finite and positive")));
            }
            Calibration::MeanStd(k)
        }
        _ => {
            return Err(bad(
                source,
                field,
                format!(
                    "unknown calibration {s:?}; expected minmax, moving_average, percentile:P, mse, entropy or meanstd:K"
                ),
            ))
        }
    })
}

fn parse_scheme(v: &Value, source: &str, field: &str) -> Result<LayerScheme> {
    let obj = v.as_object().ok_or_else(|| {
        bad(
            source,
            field,
            format!("expected an object like {{\"scheme\": \"int8\"}}, found {v}"),
        )
    })?;
    let name = match obj.get("scheme") {
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(bad(
                source,
                &format!("{field}.scheme"),
                format!("expected a string, found {other}"),
            ))
        }
        None => return Err(bad(source, field, "missing \"scheme\"")),
    };
    let allowed: &[&str] = match name {
        "float" | "int4_weight_only" | "int8_weight_only" => &["scheme"],
        "int8" => &["scheme", "per_channel", "calibration"],
        "dynamic_int8" => &["scheme", "per_channel"],
        other => {
            return Err(bad(
                source,
                &format!("{field}.scheme"),
                format!("unknown scheme {other:?}; expected {SCHEMES}"),
            ))
        }
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(
            source,
            &format!("{field}.{k}"),
            format!(
                "unknown field for scheme {name:?} (allowed: {})",
                allowed.join(", ")
            ),
        ));
    }
    let per_channel = match obj.get("per_channel") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(bad(
                source,
                &format!("{field}.per_channel"),
                format!("expected true or false, found {other}"),
            ))
        }
    };
    Ok(match name {
        "float" => LayerScheme::Float,
        "int4_weight_only" => LayerScheme::Int4WeightOnly,
        "int8_weight_only" => LayerScheme::Int8WeightOnly,
        "dynamic_int8" => LayerScheme::DynamicInt8 { per_channel },
        _ => {
            let cfield = format!("{field}.calibration");
            let calibration = match obj.get("calibration") {
                None => Calibration::MinMax,
                Some(Value::String(s)) => parse_calibration(s, source, &cfield)?,
                Some(other) => {
                    return Err(bad(
                        source,
                        &cfield,
                        format!("expected a string, found {other}"),
                    ))
                }
            };
            LayerScheme::Int8 {
                per_channel,
                calibration,
            }
        }
    })
}

impl QuantConfig {
    /// The plan as pretty JSON:
    /// `{"format": "anneal-quant-config", "version": 1, "default": {…},
    /// "layers": {"name": {"scheme": "int8", "per_channel": true,
    /// "calibration": "percentile:99.99"}, …}}`.
    pub fn to_json(&self) -> String {
        let layers: Map<String, Value> = self
            .overrides
            .iter()
            .map(|(k, v)| (k.clone(), scheme_json(v)))
            .collect();
        let v = json!({
            "format": FORMAT,
            "version": 1,
            "default": scheme_json(&self.default),
            "layers": layers,
        });
        serde_json::to_string_pretty(&v).expect("JSON values always serialise")
    }

    /// Parses [`QuantConfig::to_json`]'s format; `source` (e.g. the file
    /// name) starts every error message, which also names the field at fault.
    pub fn from_json(text: &str, source: &str) -> Result<QuantConfig> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| bad(source, "document", format!("not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad(source, "document", "expected a JSON object"))?;
        if let Some(k) = obj
            .keys()
            .find(|k| !["format", "version", "default", "layers"].contains(&k.as_str()))
        {
            return Err(bad(
                source,
                k,
                "unknown field (allowed: format, version, default, layers)",
            ));
        }
        match obj.get("format") {
            Some(Value::String(s)) if s == FORMAT => {}
            other => {
                return Err(bad(
                    source,
                    "format",
                    format!(
                        "expected \"{FORMAT}\", found {}",
                        other.map_or("nothing".into(), |v| v.to_string())
                    ),
                ))
            }
        }
        match obj.get("version") {
            Some(v) if v.as_u64() == Some(1) => {}
            other => {
                return Err(bad(
                    source,
                    "version",
                    format!(
                        "expected 1, found {}",
                        other.map_or("nothing".into(), |v| v.to_string())
                    ),
                ))
            }
        }
        let default = match obj.get("default") {
            None => LayerScheme::Float,
            Some(v) => parse_scheme(v, source, "default")?,
        };
        let mut config = QuantConfig::uniform(default);
        match obj.get("layers") {
            None => {}
            Some(Value::Object(m)) => {
                for (name, v) in m {
                    let s = parse_scheme(v, source, &format!("layers.{name}"))?;
                    config.overrides.insert(name.clone(), s);
                }
            }
            Some(other) => {
                return Err(bad(
                    source,
                    "layers",
                    format!("expected an object of layer name → scheme, found {other}"),
                ))
            }
        }
        Ok(config)
    }

    /// Errors (naming `source` and the field) when an override names a
    /// layer the model does not have.
    pub fn check_layers(&self, names: &[String], source: &str) -> Result<()> {
        match self.overrides.keys().find(|k| !names.contains(k)) {
            None => Ok(()),
            Some(k) => Err(Error::invalid(
                "QuantConfig::check_layers",
                format!(
                    "{source}: layers.{k}: unknown layer {k:?}; the model's layers are {}",
                    names.join(", ")
                ),
            )),
        }
    }

    /// Writes [`QuantConfig::to_json`] to `path` atomically (a temporary
    /// file renamed over it), so an interrupted save keeps the previous plan.
    pub fn save_json(&self, path: &Path) -> Result<()> {
        anneal_layers::write_atomically(path, (self.to_json() + "\n").as_bytes()).map_err(|e| {
            Error::invalid("QuantConfig::save_json", format!("{}: {e}", path.display()))
        })
    }

    /// Reads a plan from `path` and checks it against the model's
    /// `layer_names` (see [`layer_names`]).
    pub fn load_json(path: &Path, layer_names: &[String]) -> Result<QuantConfig> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid("QuantConfig::load_json", format!("{source}: {e}")))?;
        let c = QuantConfig::from_json(&text, &source)?;
        c.check_layers(layer_names, &source)?;
        Ok(c)
    }
}
