//! Whole-model flows: post-training static quantisation (insert observers →
//! calibrate → convert), dynamic quantisation, weight-only int4, and
//! quantisation-aware training (fake quantisation with a straight-through
//! estimator, then conversion), with a per-layer report.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anneal_autograd::{no_grad, Var};
use anneal_layers::{Entry, FakeQuantHook, HookableLayer, InferenceKernel, InputObserver, Module};
use anneal_tensor::{Error, Result, Tensor};

use crate::fake_quant::fake_quantize_ste;
use crate::kernels::AffineU8;
use crate::qmodules::{ActivationQuant, BlockKernel, QConv2dKernel, QLinearKernel};
use crate::{
    sqnr_db, EntropyObserver, HistogramObserver, MeanStdObserver, MinMaxObserver,
    MovingAverageMinMaxObserver, Observer, PercentileObserver, QDType, QScheme,
};

/// How activation ranges are calibrated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Calibration {
    /// Global min/max of everything seen ("global" quantisation).
    MinMax,
    /// Exponential moving average of per-batch min/max.
    MovingAverage,
    /// A percentile of |x| from a histogram (e.g. 99.99).
    Percentile(f64),
    /// Histogram search minimising the quantisation MSE (PyTorch's HistogramObserver).
    Mse,
    /// Histogram search minimising the KL divergence (TensorRT's entropy calibration).
    Entropy,
    /// mean ± k·σ ("statistical" quantisation).
    MeanStd(f64),
}

impl Calibration {
    fn observer(self) -> Result<Box<dyn Observer + Send>> {
        let s = QScheme::per_tensor_affine(QDType::U8);
        Ok(match self {
            Calibration::MinMax => Box::new(MinMaxObserver::new(s)?),
            Calibration::MovingAverage => Box::new(MovingAverageMinMaxObserver::new(s)?),
            Calibration::Percentile(p) => Box::new(PercentileObserver::new(s, p)?),
            Calibration::Mse => Box::new(HistogramObserver::new(s)?),
            Calibration::Entropy => Box::new(EntropyObserver::new(s)?),
            Calibration::MeanStd(k) => Box::new(MeanStdObserver::with_k(s, k)?),
        })
    }
}

/// What one layer becomes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LayerScheme {
    /// Stays in floating point.
    Float,
    /// Int8 weights and calibrated (static) u8 activations.
    Int8 {
        /// One weight scale per output channel instead of one per tensor.
        per_channel: bool,
        /// How the activation range is found.
        calibration: Calibration,
    },
    /// Int8 weights, activations quantised per batch.
    DynamicInt8 {
        /// One weight scale per output channel.
        per_channel: bool,
    },
    /// 4-bit weights in blocks of 32 (Q4_0), f32 activations.
    Int4WeightOnly,
    /// 8-bit weights in blocks of 32 (Q8_0), f32 activations.
    Int8WeightOnly,
}

/// A per-layer plan: a default plus overrides by exact layer name.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantConfig {
    /// The scheme of layers without an override.
    pub default: LayerScheme,
    /// `(layer name, scheme)` overrides, e.g. keep `classifier.2` in float.
    pub overrides: BTreeMap<String, LayerScheme>,
}

impl QuantConfig {
    /// Every layer gets `scheme`.
    pub fn uniform(scheme: LayerScheme) -> Self {
        QuantConfig {
            default: scheme,
            overrides: BTreeMap::new(),
        }
    }

    /// Overrides one layer (builder style).
    pub fn with_layer(mut self, name: &str, scheme: LayerScheme) -> Self {
        self.overrides.insert(name.to_string(), scheme);
        self
    }

    /// The scheme of layer `name`.
    pub fn scheme_for(&self, name: &str) -> LayerScheme {
        self.overrides.get(name).copied().unwrap_or(self.default)
    }
}

/// Calibration state of one layer: its activation observer (static only)
/// and the first batch it saw (for the SQNR report).
struct Tap {
    observer: Option<Mutex<Box<dyn Observer + Send>>>,
    sample: Mutex<Option<Tensor<f32>>>,
}

impl InputObserver<f32> for Tap {
    fn observe(&self, x: &Tensor<f32>) -> Result<()> {
        if let Some(o) = &self.observer {
            o.lock()
                .map_err(|_| Error::invalid("observer", "poisoned lock"))?
                .observe(x)?;
        }
        let mut s = self
            .sample
            .lock()
            .map_err(|_| Error::invalid("observer", "poisoned lock"))?;
        if s.is_none() {
            *s = Some(x.clone());
        }
        Ok(())
    }
}

/// Observers installed by [`prepare`]; hand them to [`convert`].
pub struct Prepared {
    taps: BTreeMap<String, Arc<Tap>>,
}

/// One layer of a [`QuantReport`].
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// Dotted layer name.
    pub name: String,
    /// What it became.
    pub scheme: String,
    /// Bytes of its f32 weight and bias.
    pub float_bytes: usize,
    /// Bytes after quantisation (equal to `float_bytes` for float layers).
    pub quant_bytes: usize,
    /// SQNR (dB) of the quantised layer's output against the float layer's,
    /// on the first calibration batch it saw (`None` without calibration data).
    pub sqnr_db: Option<f64>,
}

/// Size and per-layer error of a quantised model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QuantReport {
    /// Every Linear and Conv2d layer.
    pub layers: Vec<LayerReport>,
    /// Bytes of all parameters and buffers in f32.
    pub float_model_bytes: usize,
    /// Bytes after quantisation.
    pub quant_model_bytes: usize,
}

impl QuantReport {
    /// The report as a Markdown table.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| layer | scheme | f32 bytes | quantised bytes | SQNR (dB) |\n|---|---|---|---|---|\n",
        );
        for l in &self.layers {
            let q = l.sqnr_db.map_or("–".to_string(), |d| {
                if d.is_finite() {
                    format!("{d:.1}")
                } else {
                    "∞".into()
                }
            });
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                l.name, l.scheme, l.float_bytes, l.quant_bytes, q
            ));
        }
        s.push_str(&format!(
            "| **model** | | {} | {} | |\n",
            self.float_model_bytes, self.quant_model_bytes
        ));
        s
    }
}

/// Bytes of a module's parameters and buffers in f32 (counters as 8).
pub fn float_model_bytes(model: &dyn Module<f32>) -> usize {
    let mut n = 0;
    model.visit("", &mut |_, e| {
        n += match e {
            Entry::Param(p) => 4 * p.value().numel(),
            Entry::Buffer(b) => 4 * b.numel(),
            Entry::Counter(_) => 8,
        }
    });
    n
}

/// Installs a calibration observer on every layer the plan quantises
/// (activation observers only where it is static). Run calibration batches
/// through `model.forward` afterwards, then call [`convert`].
pub fn prepare(model: &mut dyn Module<f32>, config: &QuantConfig) -> Result<Prepared> {
    let mut taps = BTreeMap::new();
    let mut failure = None;
    model.visit_layers_mut("", &mut |name, mut layer| {
        let scheme = config.scheme_for(name);
        if scheme == LayerScheme::Float {
            return;
        }
        let observer = match scheme {
            LayerScheme::Int8 { calibration, .. } => match calibration.observer() {
                Ok(o) => Some(Mutex::new(o)),
                Err(e) => {
                    failure.get_or_insert(e);
                    None
                }
            },
            _ => None,
        };
        let tap = Arc::new(Tap {
            observer,
            sample: Mutex::new(None),
        });
        layer.hooks().observer = Some(tap.clone());
        taps.insert(name.to_string(), tap);
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(Prepared { taps }),
    }
}

fn build_kernel(
    layer: &mut HookableLayer<'_, f32>,
    scheme: LayerScheme,
    act_range: Option<AffineU8>,
) -> Result<Option<Arc<dyn InferenceKernel<f32>>>> {
    let k: Arc<dyn InferenceKernel<f32>> = match (scheme, &*layer) {
        (LayerScheme::Float, _) => return Ok(None),
        (LayerScheme::Int8 { per_channel, .. }, l) => {
            let p = act_range
                .ok_or_else(|| Error::invalid("convert", "static layer has no calibrated range"))?;
            match l {
                HookableLayer::Linear(l) => Arc::new(QLinearKernel::new(
                    l,
                    per_channel,
                    ActivationQuant::Static(p),
                )?),
                HookableLayer::Conv2d(c) => Arc::new(QConv2dKernel::new(
                    c,
                    per_channel,
                    ActivationQuant::Static(p),
                )?),
            }
        }
        (LayerScheme::DynamicInt8 { per_channel }, l) => match l {
            HookableLayer::Linear(l) => Arc::new(QLinearKernel::new(
                l,
                per_channel,
                ActivationQuant::Dynamic,
            )?),
            HookableLayer::Conv2d(c) => Arc::new(QConv2dKernel::new(
                c,
                per_channel,
                ActivationQuant::Dynamic,
            )?),
        },
        (LayerScheme::Int4WeightOnly, l) => match l {
            HookableLayer::Linear(l) => Arc::new(BlockKernel::linear_bits(l, 4)?),
            HookableLayer::Conv2d(c) => Arc::new(BlockKernel::conv2d_bits(c, 4)?),
        },
        (LayerScheme::Int8WeightOnly, l) => match l {
            HookableLayer::Linear(l) => Arc::new(BlockKernel::linear_bits(l, 8)?),
            HookableLayer::Conv2d(c) => Arc::new(BlockKernel::conv2d_bits(c, 8)?),
        },
    };
    Ok(Some(k))
}

fn layer_float_bytes(layer: &HookableLayer<'_, f32>) -> usize {
    let (w, b) = match layer {
        HookableLayer::Linear(l) => (
            l.weight.value().numel(),
            l.bias.as_ref().map_or(0, |b| b.value().numel()),
        ),
        HookableLayer::Conv2d(c) => (
            c.weight.value().numel(),
            c.bias.as_ref().map_or(0, |b| b.value().numel()),
        ),
    };
    4 * (w + b)
}

fn float_output(layer: &HookableLayer<'_, f32>, x: &Tensor<f32>) -> Result<Tensor<f32>> {
    no_grad(|| {
        let v = Var::constant(x.clone());
        Ok(match layer {
            HookableLayer::Linear(l) => l.forward(&v)?.value().clone(),
            HookableLayer::Conv2d(c) => c.forward(&v)?.value().clone(),
        })
    })
}

/// Replaces every planned layer by its quantised kernel, using the ranges
/// the observers saw; removes the observers; reports sizes and SQNR.
/// Static layers that saw no calibration data are an error naming them.
pub fn convert(
    model: &mut dyn Module<f32>,
    config: &QuantConfig,
    prepared: Prepared,
) -> Result<QuantReport> {
    convert_with(model, config, &prepared.taps, &BTreeMap::new())
}

fn convert_with(
    model: &mut dyn Module<f32>,
    config: &QuantConfig,
    taps: &BTreeMap<String, Arc<Tap>>,
    qat_ranges: &BTreeMap<String, AffineU8>,
) -> Result<QuantReport> {
    let float_bytes = float_model_bytes(model);
    let mut report = QuantReport {
        float_model_bytes: float_bytes,
        ..Default::default()
    };
    let mut failure: Option<Error> = None;
    let mut saved = 0isize;
    model.visit_layers_mut("", &mut |name, mut layer| {
        if failure.is_some() {
            return;
        }
        let scheme = config.scheme_for(name);
        let tap = taps.get(name);
        let result = (|| -> Result<LayerReport> {
            layer.hooks().observer = None;
            layer.hooks().fake_quant = None;
            let range = match qat_ranges.get(name) {
                Some(p) => Some(*p),
                None => match tap.and_then(|t| t.observer.as_ref()) {
                    Some(o) => {
                        let o = o
                            .lock()
                            .map_err(|_| Error::invalid("convert", "poisoned lock"))?;
                        let qp = o
                            .qparams()
                            .map_err(|e| Error::invalid("convert", format!("layer {name}: {e}")))?;
                        Some(AffineU8 {
                            scale: qp.scale(),
                            zero_point: qp.zero_point().clamp(0, 255) as u8,
                        })
                    }
                    None => None,
                },
            };
            let fb = layer_float_bytes(&layer);
            let sample = tap.and_then(|t| t.sample.lock().ok().and_then(|s| s.clone()));
            let reference = match &sample {
                Some(x) if scheme != LayerScheme::Float => Some(float_output(&layer, x)?),
                _ => None,
            };
            let kernel = build_kernel(&mut layer, scheme, range)?;
            let (desc, qb, sqnr) = match &kernel {
                None => ("float".to_string(), fb, None),
                Some(k) => {
                    let sq = match (&sample, &reference) {
                        (Some(x), Some(r)) => {
                            Some(sqnr_db(r.as_slice(), k.forward(x)?.as_slice())?)
                        }
                        _ => None,
                    };
                    (k.describe(), k.weight_bytes(), sq)
                }
            };
            layer.hooks().kernel = kernel;
            Ok(LayerReport {
                name: name.to_string(),
                scheme: desc,
                float_bytes: fb,
                quant_bytes: qb,
                sqnr_db: sqnr,
            })
        })();
        match result {
            Ok(r) => {
                saved += r.float_bytes as isize - r.quant_bytes as isize;
                report.layers.push(r);
            }
            Err(e) => failure = Some(e),
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    report.quant_model_bytes = (float_bytes as isize - saved).max(0) as usize;
    Ok(report)
}

/// Post-training static quantisation in one call: [`prepare`], run
/// `calibration` batches through the model (inference mode), [`convert`].
pub fn quantize_static(
    model: &mut dyn Module<f32>,
    config: &QuantConfig,
    calibration: &[Tensor<f32>],
) -> Result<QuantReport> {
    if calibration.is_empty() {
        return Err(Error::invalid(
            "quantize_static",
            "no calibration batches given",
        ));
    }
    let prepared = prepare(model, config)?;
    no_grad(|| -> Result<()> {
        for b in calibration {
            model.forward(&Var::constant(b.clone()))?;
        }
        Ok(())
    })?;
    convert(model, config, prepared)
}

/// Dynamic or weight-only quantisation (no activation ranges needed); the
/// optional batches only feed the SQNR report.
pub fn quantize_weights(
    model: &mut dyn Module<f32>,
    config: &QuantConfig,
    report_batches: &[Tensor<f32>],
) -> Result<QuantReport> {
    if let LayerScheme::Int8 { .. } = config.default {
        return Err(Error::invalid(
            "quantize_weights",
            "static int8 needs calibration: use quantize_static",
        ));
    }
    let prepared = prepare(model, config)?;
    no_grad(|| -> Result<()> {
        for b in report_batches {
            model.forward(&Var::constant(b.clone()))?;
        }
        Ok(())
    })?;
    convert(model, config, prepared)
}

/// Removes every quantisation hook: the model runs in floating point again.
pub fn dequantize(model: &mut dyn Module<f32>) {
    model.visit_layers_mut("", &mut |_, mut layer| layer.hooks().clear());
}

/// Fake quantisation of one layer during QAT: per-tensor u8 activations from
/// a moving-average observer and symmetric int8 weights (per tensor or per
/// channel) from the current weights.
struct QatHook {
    act: Mutex<MovingAverageMinMaxObserver>,
    per_channel: bool,
}

impl QatHook {
    fn act_params(&self) -> Result<Option<AffineU8>> {
        let o = self
            .act
            .lock()
            .map_err(|_| Error::invalid("qat", "poisoned lock"))?;
        match o.qparams() {
            Ok(p) => Ok(Some(AffineU8 {
                scale: p.scale(),
                zero_point: p.zero_point().clamp(0, 255) as u8,
            })),
            Err(_) => Ok(None),
        }
    }
}

impl FakeQuantHook<f32> for QatHook {
    fn input(&self, x: &Var<f32>) -> Result<Var<f32>> {
        if anneal_autograd::is_grad_enabled() {
            self.act
                .lock()
                .map_err(|_| Error::invalid("qat", "poisoned lock"))?
                .observe(x.value())?;
        }
        match self.act_params()? {
            Some(p) => fake_quantize_ste(x, &[p.scale], &[p.zero_point as i32], 0, 255),
            None => Ok(x.clone()),
        }
    }

    fn weight(&self, w: &Var<f32>) -> Result<Var<f32>> {
        let rows = w.shape().first().copied().unwrap_or(1);
        let per = w.value().numel() / rows.max(1);
        let v = w.value().as_slice();
        let scale = |s: &[f32]| {
            let m = s.iter().fold(0f32, |a, &x| a.max(x.abs()));
            if m > 0.0 {
                (m / 127.0).max(f32::EPSILON)
            } else {
                1.0
            }
        };
        let scales: Vec<f32> = if self.per_channel {
            v.chunks(per.max(1)).map(scale).collect()
        } else {
            vec![scale(v)]
        };
        let zps = vec![0; scales.len()];
        fake_quantize_ste(w, &scales, &zps, -127, 127)
    }
}

/// Hooks installed by [`prepare_qat`]; hand them to [`convert_qat`].
pub struct QatPrepared {
    hooks: BTreeMap<String, Arc<QatHook>>,
}

/// Installs fake quantisation (straight-through estimator) on every layer
/// the plan makes static int8, so that training sees the quantisation
/// error; activation ranges are observed during training.
pub fn prepare_qat(model: &mut dyn Module<f32>, config: &QuantConfig) -> Result<QatPrepared> {
    let mut hooks = BTreeMap::new();
    let mut failure = None;
    model.visit_layers_mut("", &mut |name, mut layer| {
        if let LayerScheme::Int8 { per_channel, .. } = config.scheme_for(name) {
            match MovingAverageMinMaxObserver::new(QScheme::per_tensor_affine(QDType::U8)) {
                Ok(o) => {
                    let h = Arc::new(QatHook {
                        act: Mutex::new(o),
                        per_channel,
                    });
                    layer.hooks().fake_quant = Some(h.clone());
                    hooks.insert(name.to_string(), h);
                }
                Err(e) => failure = Some(e),
            }
        }
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(QatPrepared { hooks }),
    }
}

/// Converts a QAT-trained model: static int8 kernels with the activation
/// ranges observed in training.
pub fn convert_qat(
    model: &mut dyn Module<f32>,
    config: &QuantConfig,
    prepared: QatPrepared,
) -> Result<QuantReport> {
    let mut ranges = BTreeMap::new();
    for (name, h) in &prepared.hooks {
        let p = h.act_params()?.ok_or_else(|| {
            Error::invalid("convert_qat", format!("layer {name} saw no training data"))
        })?;
        ranges.insert(name.clone(), p);
    }
    convert_with(model, config, &BTreeMap::new(), &ranges)
}
