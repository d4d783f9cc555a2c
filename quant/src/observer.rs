//! Observers: collect statistics of calibration data and propose quantisation
//! parameters.
//!
//! An [`Observer`] sees calibration tensors one batch at a time
//! ([`Observer::observe`]), chooses a clipping range per tensor or per channel
//! ([`Observer::range`]) and turns it into scales and zero points
//! ([`Observer::qparams`], always through [`QScheme::qparams_from_range`],
//! PyTorch's `_calculate_qparams`).
//!
//! | observer | range chosen | PyTorch / literature |
//! |---|---|---|
//! | [`MinMaxObserver`] | running `[min, max]` of the whole tensor: **global** (per-tensor) min-max calibration | `MinMaxObserver` |
//! | [`MovingAverageMinMaxObserver`] | exponential moving average of each batch's min and max | `MovingAverageMinMaxObserver` |
//! | [`PerChannelMinMaxObserver`] | running `[min, max]` of each channel, any axis | `PerChannelMinMaxObserver` |
//! | [`PercentileObserver`] | the `(1 − p)` and `p` quantiles (e.g. 99.99 %) of a histogram | TensorRT / ONNX Runtime percentile calibration |
//! | [`MeanStdObserver`] | `mean ± k·σ`: **statistical** quantisation (Gaussian clipping) | — |
//! | [`HistogramObserver`] | histogram search that minimises the L2 (MSE) quantisation error | `HistogramObserver` (same algorithm) |
//! | [`EntropyObserver`] | histogram search that minimises the KL divergence | TensorRT entropy calibration |
//!
//! Every observer follows these rules:
//!
//! * Empty tensors are ignored (as PyTorch does).
//! * A non-finite value (NaN or ±∞) is an error that names the observer and
//!   the first bad value's flat and multi-dimensional index; the observer's
//!   state is left unchanged.
//! * [`Observer::range`] and [`Observer::qparams`] error if nothing was observed.
//! * A zero range (a constant tensor) is widened to contain 0; an all-zero one
//!   gets PyTorch's fallback `scale = QUANT_EPS` (`f32::EPSILON`). Scales are
//!   never zero, subnormal or NaN.
//! * A per-channel observer errors on a tensor whose rank is too small for its
//!   axis, or whose channel count differs from earlier batches.
//!
//! ```
//! use anneal_quant::{MinMaxObserver, Observer, QDType, QScheme};
//! use anneal_tensor::Tensor;
//! let mut obs = MinMaxObserver::new(QScheme::per_tensor_affine(QDType::U8))?;
//! obs.observe(&Tensor::from_vec(vec![-1.0f32, 0.5, 3.0], &[3])?)?;
//! let p = obs.qparams()?;
//! assert_eq!(p.zero_point(), 64);                  // 0 − round(−1 / (4/255))
//! assert!((p.scale() - 4.0 / 255.0).abs() < 1e-9);
//! # Ok::<(), anneal_tensor::Error>(())
//! ```

use anneal_tensor::{Error, Result, Tensor};

use crate::scheme::{channel_layout, unravel, QParams, QScheme};

/// Collects statistics of calibration data and proposes quantisation
/// parameters for a [`QScheme`].
pub trait Observer {
    /// The observer's name, used in error messages (e.g. `"MinMaxObserver"`).
    fn name(&self) -> &'static str;

    /// The scheme whose parameters this observer proposes.
    fn scheme(&self) -> &QScheme;

    /// Records the statistics of one calibration batch.
    ///
    /// Errors on a non-finite value (naming its index) and, for per-channel
    /// observers, on a mismatched channel axis; the state is then unchanged.
    fn observe(&mut self, x: &Tensor<f32>) -> Result<()>;

    /// The clipping range `(min, max)` chosen from the data seen so far: one
    /// entry per channel (one for per-tensor schemes), `min ≤ max`, both
    /// finite, not yet widened to contain 0. Errors if no data was observed.
    fn range(&self) -> Result<(Vec<f32>, Vec<f32>)>;

    /// Scales and zero points for [`Observer::scheme`]:
    /// [`QScheme::qparams_from_range`] of [`Observer::range`].
    fn qparams(&self) -> Result<QParams> {
        let (min, max) = self.range()?;
        self.scheme().qparams_from_range(&min, &max)
    }

    /// Forgets everything observed.
    fn reset(&mut self);
}

// ---------------------------------------------------------------------------------------------
// shared helpers

/// Errors on the first non-finite value of `x`, naming `name` and the index.
fn check_finite(name: &'static str, x: &Tensor<f32>) -> Result<()> {
    match x.as_slice().iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::invalid(
            name,
            format!(
                "non-finite calibration value {} at index {i} {:?} of a tensor of shape {:?}",
                x.as_slice()[i],
                unravel(i, x.shape()),
                x.shape()
            ),
        )),
    }
}

fn no_data(name: &'static str) -> Error {
    Error::invalid(
        name,
        "no data observed: call observe with a non-empty tensor before range or qparams",
    )
}

fn require_per_tensor(name: &'static str, scheme: &QScheme) -> Result<()> {
    match scheme.axis() {
        None => Ok(()),
        Some(axis) => Err(Error::invalid(
            name,
            format!(
                "needs a per-tensor scheme, got {scheme} (axis {axis}); use PerChannelMinMaxObserver"
            ),
        )),
    }
}

/// `(min, max)` of a non-empty slice.
fn min_max(xs: &[f32]) -> (f32, f32) {
    xs.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

// ---------------------------------------------------------------------------------------------
// MinMaxObserver

/// Global (per-tensor) min-max calibration: the running minimum and maximum
/// over every element of every batch (PyTorch's `MinMaxObserver`).
///
/// ```text
/// min = min(min, min(X)),  max = max(max, max(X))
/// ```
///
/// then [`QScheme::qparams_from_range`]. Per-tensor schemes only.
#[derive(Clone, Debug)]
pub struct MinMaxObserver {
    scheme: QScheme,
    min: f32,
    max: f32,
}

impl MinMaxObserver {
    const NAME: &'static str = "MinMaxObserver";

    /// A min-max observer for a per-tensor `scheme` (errors on per-channel).
    pub fn new(scheme: QScheme) -> Result<Self> {
        require_per_tensor(Self::NAME, &scheme)?;
        Ok(MinMaxObserver {
            scheme,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        })
    }
}

impl Observer for MinMaxObserver {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn scheme(&self) -> &QScheme {
        &self.scheme
    }

    fn observe(&mut self, x: &Tensor<f32>) -> Result<()> {
        check_finite(Self::NAME, x)?;
        if x.is_empty() {
            return Ok(());
        }
        let (lo, hi) = min_max(x.as_slice());
        self.min = self.min.min(lo);
        self.max = self.max.max(hi);
        Ok(())
    }

    fn range(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        if self.min > self.max {
            return Err(no_data(Self::NAME));
        }
        Ok((vec![self.min], vec![self.max]))
    }

    fn reset(&mut self) {
        self.min = f32::INFINITY;
        self.max = f32::NEG_INFINITY;
    }
}

// ---------------------------------------------------------------------------------------------
// MovingAverageMinMaxObserver

/// Exponential moving average of each batch's minimum and maximum (PyTorch's
/// `MovingAverageMinMaxObserver`), with averaging constant `c` (0.01 by
/// default):
///
/// ```text
/// first batch:  min = min(X),                     max = max(X)
/// later:        min = min + c · (min(X) − min),   max = max + c · (max(X) − max)
/// ```
///
/// computed in f32 as PyTorch does. Per-tensor schemes only.
#[derive(Clone, Debug)]
pub struct MovingAverageMinMaxObserver {
    scheme: QScheme,
    averaging_constant: f32,
    min: f32,
    max: f32,
}

impl MovingAverageMinMaxObserver {
    const NAME: &'static str = "MovingAverageMinMaxObserver";

    /// PyTorch's default averaging constant.
    pub const DEFAULT_AVERAGING_CONSTANT: f32 = 0.01;

    /// An observer with averaging constant 0.01 (errors on per-channel schemes).
    pub fn new(scheme: QScheme) -> Result<Self> {
        Self::with_averaging_constant(scheme, Self::DEFAULT_AVERAGING_CONSTANT)
    }

    /// An observer with averaging constant `c ∈ (0, 1]` (1 keeps only the last batch).
    pub fn with_averaging_constant(scheme: QScheme, c: f32) -> Result<Self> {
        require_per_tensor(Self::NAME, &scheme)?;
        if !(c > 0.0 && c <= 1.0) {
            return Err(Error::invalid(
                Self::NAME,
                format!("averaging constant {c} must lie in (0, 1]"),
            ));
        }
        Ok(MovingAverageMinMaxObserver {
            scheme,
            averaging_constant: c,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        })
    }

    /// The averaging constant `c`.
    pub fn averaging_constant(&self) -> f32 {
        self.averaging_constant
    }
}

impl Observer for MovingAverageMinMaxObserver {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn scheme(&self) -> &QScheme {
        &self.scheme
    }

    fn observe(&mut self, x: &Tensor<f32>) -> Result<()> {
        check_finite(Self::NAME, x)?;
        if x.is_empty() {
            return Ok(());
        }
        let (lo, hi) = min_max(x.as_slice());
        if self.min > self.max {
            self.min = lo;
            self.max = hi;
        } else {
            let c = self.averaging_constant;
            self.min += c * (lo - self.min);
            self.max += c * (hi - self.max);
        }
        Ok(())
    }

    fn range(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        if self.min > self.max {
            return Err(no_data(Self::NAME));
        }
        Ok((vec![self.min], vec![self.max]))
    }

    fn reset(&mut self) {
        self.min = f32::INFINITY;
        self.max = f32::NEG_INFINITY;
    }
}

// ---------------------------------------------------------------------------------------------
// PerChannelMinMaxObserver

/// Running minimum and maximum of each channel along the scheme's axis (any
/// axis), PyTorch's `PerChannelMinMaxObserver`: channel `c` covers every
/// element whose index along `axis` is `c`.
///
/// # Shapes
/// Every batch needs rank `> axis` and the same extent along `axis`.
#[derive(Clone, Debug)]
pub struct PerChannelMinMaxObserver {
    scheme: QScheme,
    axis: usize,
    min: Vec<f32>,
    max: Vec<f32>,
}

impl PerChannelMinMaxObserver {
    const NAME: &'static str = "PerChannelMinMaxObserver";

    /// An observer for a per-channel `scheme` (errors on per-tensor schemes).
    pub fn new(scheme: QScheme) -> Result<Self> {
        let Some(axis) = scheme.axis() else {
            return Err(Error::invalid(
                Self::NAME,
                format!("needs a per-channel scheme, got {scheme}; use MinMaxObserver"),
            ));
        };
        Ok(PerChannelMinMaxObserver {
            scheme,
            axis,
            min: Vec::new(),
            max: Vec::new(),
        })
    }

    /// The channel axis.
    pub fn axis(&self) -> usize {
        self.axis
    }
}

impl Observer for PerChannelMinMaxObserver {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn scheme(&self) -> &QScheme {
        &self.scheme
    }

    fn observe(&mut self, x: &Tensor<f32>) -> Result<()> {
        let axis = self.axis;
        if axis >= x.rank() {
            return Err(Error::AxisOutOfRange {
                op: Self::NAME,
                axis: axis as isize,
                rank: x.rank(),
            });
        }
        let (outer, channels, inner) = channel_layout(x.shape(), axis);
        if !self.min.is_empty() && channels != self.min.len() {
            return Err(Error::shape(
                Self::NAME,
                &[x.shape()],
                format!(
                    "{channels} channels along axis {axis}, but earlier batches had {}",
                    self.min.len()
                ),
            ));
        }
        check_finite(Self::NAME, x)?;
        if x.is_empty() {
            return Ok(());
        }
        let mut lo = vec![f32::INFINITY; channels];
        let mut hi = vec![f32::NEG_INFINITY; channels];
        let src = x.as_slice();
        for o in 0..outer {
            for c in 0..channels {
                let base = (o * channels + c) * inner;
                let (l, h) = min_max(&src[base..base + inner]);
                lo[c] = lo[c].min(l);
                hi[c] = hi[c].max(h);
            }
        }
        if self.min.is_empty() {
            self.min = lo;
            self.max = hi;
        } else {
            for c in 0..channels {
                self.min[c] = self.min[c].min(lo[c]);
                self.max[c] = self.max[c].max(hi[c]);
            }
        }
        Ok(())
    }

    fn range(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        if self.min.is_empty() {
            return Err(no_data(Self::NAME));
        }
        Ok((self.min.clone(), self.max.clone()))
    }

    fn reset(&mut self) {
        self.min.clear();
        self.max.clear();
    }
}

// ---------------------------------------------------------------------------------------------
// MeanStdObserver

/// Statistical quantisation: the clipping range is `mean ± k·σ` of all the
/// values seen (Gaussian "k-sigma" clipping), kept inside the observed
/// `[min, max]`:
///
/// ```text
/// lo = max(mean − k·σ, min),   hi = min(mean + k·σ, max)
/// ```
///
/// `σ` is the population standard deviation (divisor `n`). Mean and variance
/// are accumulated over batches in f64 with Chan et al.'s pairwise update, so
/// the result does not depend on how the data is split into batches (up to
/// rounding). `k = 3` by default. Per-tensor schemes only.
#[derive(Clone, Debug)]
pub struct MeanStdObserver {
    scheme: QScheme,
    k: f64,
    count: u64,
    mean: f64,
    m2: f64,
    min: f32,
    max: f32,
}

impl MeanStdObserver {
    const NAME: &'static str = "MeanStdObserver";

    /// The default number of standard deviations.
    pub const DEFAULT_K: f64 = 3.0;

    /// An observer clipping at `mean ± 3σ` (errors on per-channel schemes).
    pub fn new(scheme: QScheme) -> Result<Self> {
        Self::with_k(scheme, Self::DEFAULT_K)
    }

    /// An observer clipping at `mean ± k·σ`; `k` must be finite and positive.
    pub fn with_k(scheme: QScheme, k: f64) -> Result<Self> {
        require_per_tensor(Self::NAME, &scheme)?;
        if !(k.is_finite() && k > 0.0) {
            return Err(Error::invalid(
                Self::NAME,
                format!("k = {k} must be finite and positive"),
            ));
        }
        Ok(MeanStdObserver {
            scheme,
            k,
            count: 0,
            mean: 0.0,
            m2: 0.0,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        })
    }

    /// The mean of every value seen (`None` before any data).
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then_some(self.mean)
    }

    /// The population standard deviation of every value seen (`None` before any data).
    pub fn std(&self) -> Option<f64> {
        (self.count > 0).then(|| (self.m2 / self.count as f64).sqrt())
    }
}

impl Observer for MeanStdObserver {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn scheme(&self) -> &QScheme {
        &self.scheme
    }

    fn observe(&mut self, x: &Tensor<f32>) -> Result<()> {
        check_finite(Self::NAME, x)?;
        if x.is_empty() {
            return Ok(());
        }
        let src = x.as_slice();
        let n = src.len() as f64;
        let mean = src.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let m2: f64 = src
            .iter()
            .map(|&v| (f64::from(v) - mean) * (f64::from(v) - mean))
            .sum();
        let n0 = self.count as f64;
        let total = n0 + n;
        let delta = mean - self.mean;
        self.mean += delta * n / total;
        self.m2 += m2 + delta * delta * n0 * n / total;
        self.count += src.len() as u64;
        let (lo, hi) = min_max(src);
        self.min = self.min.min(lo);
        self.max = self.max.max(hi);
        Ok(())
    }

    fn range(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        if self.count == 0 {
            return Err(no_data(Self::NAME));
        }
        let sigma = (self.m2 / self.count as f64).sqrt();
        let lo = (self.mean - self.k * sigma).max(f64::from(self.min)) as f32;
        let hi = (self.mean + self.k * sigma).min(f64::from(self.max)) as f32;
        // Rounding to f32 cannot cross the observed bounds, but keep lo ≤ hi.
        Ok((vec![lo.min(hi)], vec![hi.max(lo)]))
    }

    fn reset(&mut self) {
        self.count = 0;
        self.mean = 0.0;
        self.m2 = 0.0;
        self.min = f32::INFINITY;
        self.max = f32::NEG_INFINITY;
    }
}

// ---------------------------------------------------------------------------------------------
// Histogram shared by the histogram observers

/// A histogram of `bins` equal-width bins over `[min, max]`, merged across
/// batches the way PyTorch's `HistogramObserver` does.
///
/// * The first batch is binned over its own `[lo, hi]`.
/// * A later batch inside the current range is binned over it and added.
/// * A later batch outside it widens the range to `[min(lo, min),
///   max(hi, max) + e]`, where `e ≥ 0` makes the new width an integer multiple
///   `d` of the old width / `upsample_rate` (PyTorch's `_adjust_min_max`; only
///   the max is relaxed, so one-sided data keeps min 0). The old histogram is
///   upsampled by `upsample_rate` (each count spread evenly), shifted to its
///   place and summed down in groups of `d` (`_combine_histograms`). This
///   is done in closed form from prefix sums, without PyTorch's
///   `bins · d`-long buffer.
///
/// Binning follows `torch.histc` in f32: bin `⌊(x − min) · bins / (max − min)⌋`,
/// with `x = max` in the last bin. Counts are f32, as in PyTorch.
///
/// Departures from PyTorch 1.13: the range is the true `[min, max]` (1.13
/// truncates it with `int()` before calling `histc`, dropping values outside
/// the truncated range — a bug fixed later); and after a constant first batch
/// (`min = max`) the old values are kept as a point mass where PyTorch starts
/// afresh.
#[derive(Clone, Debug)]
struct Histogram {
    counts: Vec<f32>,
    min: f32,
    max: f32,
    upsample_rate: usize,
    initialised: bool,
}

/// Largest downsampling factor merged exactly; beyond it the old histogram
/// is so narrow relative to the new range that it is merged as a point mass.
const MAX_DOWNSAMPLE: f32 = (1u64 << 40) as f32;

impl Histogram {
    fn new(bins: usize, upsample_rate: usize) -> Self {
        Histogram {
            counts: vec![0.0; bins],
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            upsample_rate,
            initialised: false,
        }
    }

    fn bins(&self) -> usize {
        self.counts.len()
    }

    fn reset(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0.0);
        self.min = f32::INFINITY;
        self.max = f32::NEG_INFINITY;
        self.initialised = false;
    }

    fn total(&self) -> f64 {
        self.counts.iter().map(|&c| f64::from(c)).sum()
    }

    /// The bin of `x ∈ [lo, hi]`, `lo < hi`, as `torch.histc` computes it.
    fn bin_of(x: f32, lo: f32, hi: f32, bins: usize) -> usize {
        let t = (x - lo) * bins as f32;
        let pos = if t.is_finite() {
            t / (hi - lo)
        } else {
            ((f64::from(x) - f64::from(lo)) * bins as f64 / (f64::from(hi) - f64::from(lo))) as f32
        };
        (pos as usize).min(bins - 1)
    }

    /// `torch.histc(xs, bins, lo, hi)`: counts of `xs ⊂ [lo, hi]`, `lo < hi`.
    fn histc(xs: &[f32], lo: f32, hi: f32, bins: usize) -> Vec<f32> {
        let mut counts = vec![0u64; bins];
        for &x in xs {
            counts[Self::bin_of(x, lo, hi, bins)] += 1;
        }
        counts.into_iter().map(|c| c as f32).collect()
    }

    /// Adds a batch whose values lie in `[lo, hi]` (finite, `hi − lo` finite).
    fn add(&mut self, xs: &[f32], lo: f32, hi: f32) {
        let bins = self.bins();
        if !self.initialised {
            self.initialised = true;
            self.min = lo;
            self.max = hi;
            self.counts = if lo == hi {
                let mut c = vec![0.0; bins];
                c[bins / 2] = xs.len() as f32;
                c
            } else {
                Self::histc(xs, lo, hi, bins)
            };
            return;
        }
        if self.min == self.max {
            // All earlier mass sits at one point: rebin it there.
            let (point, mass) = (self.min, self.total() as f32);
            let (nlo, nhi) = (lo.min(point), hi.max(point));
            if nlo == nhi {
                self.counts[bins / 2] += xs.len() as f32;
                return;
            }
            let mut counts = Self::histc(xs, nlo, nhi, bins);
            counts[Self::bin_of(point, nlo, nhi, bins)] += mass;
            self.counts = counts;
            self.min = nlo;
            self.max = nhi;
            return;
        }
        let cmin = lo.min(self.min);
        let cmax = hi.max(self.max);
        // PyTorch's _adjust_min_max, in f32.
        let ups = self.upsample_rate;
        let hbw = (self.max - self.min) / (bins * ups) as f32;
        let wide = bins as f32 * hbw;
        let ds = ((cmax - cmin) / wide).ceil();
        if hbw.is_nan() || hbw <= 0.0 || !ds.is_finite() || ds > MAX_DOWNSAMPLE {
            // The old range is negligible: merge it as a point mass at its centre.
            let point = self.min + (self.max - self.min) / 2.0;
            let mass = self.total() as f32;
            let mut counts = Self::histc(xs, cmin, cmax, bins);
            counts[Self::bin_of(point, cmin, cmax, bins)] += mass;
            self.counts = counts;
            self.min = cmin;
            self.max = cmax;
            return;
        }
        let e = ds * wide - (cmax - cmin);
        let cmax = cmax + e;
        let start = ((self.min - cmin) / hbw).round_ties_even();
        let mut counts = Self::histc(xs, cmin, cmax, bins);
        if cmin == self.min && cmax == self.max {
            for (c, &o) in counts.iter_mut().zip(&self.counts) {
                *c += o;
            }
        } else {
            self.combine_into(&mut counts, ds as i64, start as i64);
        }
        self.counts = counts;
        self.min = cmin;
        self.max = cmax;
    }

    /// PyTorch's `_combine_histograms`: upsample the current counts by
    /// `upsample_rate`, place them at `start` in a `bins · ds` grid, sum
    /// groups of `ds` (in f64, as PyTorch's double cumsum) and add to `counts`.
    fn combine_into(&self, counts: &mut [f32], ds: i64, start: i64) {
        let bins = self.bins() as i64;
        let ups = self.upsample_rate as i64;
        let len_up = bins * ups;
        let start = start.clamp(0, (bins * ds - len_up).max(0));
        let mut pre = Vec::with_capacity(self.counts.len() + 1);
        let mut acc = 0.0f64;
        pre.push(0.0);
        for &c in &self.counts {
            acc += f64::from(c);
            pre.push(acc);
        }
        // Sum of the first t upsampled entries (each count repeated ups times).
        let prefix = |t: i64| -> f64 {
            let t = t.clamp(0, len_up);
            let (j, r) = ((t / ups) as usize, t % ups);
            let partial = if (j as i64) < bins {
                f64::from(self.counts[j]) * r as f64
            } else {
                0.0
            };
            pre[j] * ups as f64 + partial
        };
        let mut prev = 0.0f64;
        for (k, c) in counts.iter_mut().enumerate() {
            let integral = prefix((k as i64 + 1) * ds - start);
            // PyTorch stores the shifted integral in an f32 buffer.
            let shifted = if k == 0 { 0.0 } else { f64::from(prev as f32) };
            *c += ((integral - shifted) / ups as f64) as f32;
            prev = integral;
        }
    }

    /// PyTorch's `HistogramObserver._non_linear_param_search`: an
    /// approximate L2-error minimisation over `[min, max]`, following
    /// caffe2's `NormMinimization::NonlinearQuantizationParamsSearch`.
    fn l2_search(&self, dst_nbins: usize) -> (f32, f32) {
        if self.min == self.max {
            return (self.min, self.max);
        }
        let bins = self.bins();
        let total = self.total() as f32 as f64;
        let mut csum = Vec::with_capacity(bins);
        let mut acc = 0.0f64;
        for &c in &self.counts {
            acc += f64::from(c);
            csum.push(acc as f32);
        }
        let stepsize = 1e-5f64;
        let (mut alpha, mut beta) = (0.0f64, 1.0f64);
        let (mut start_bin, mut end_bin) = (0usize, bins - 1);
        let mut norm_min = f64::INFINITY;
        while alpha < beta {
            let next_alpha = alpha + stepsize;
            let next_beta = beta - stepsize;
            let (ta, tb) = ((next_alpha * total) as f32, (next_beta * total) as f32);
            let mut l = start_bin;
            let mut r = end_bin;
            while l < end_bin && csum[l] < ta {
                l += 1;
            }
            while r > start_bin && csum[r] > tb {
                r -= 1;
            }
            let (mut next_start, mut next_end) = (start_bin, end_bin);
            if l - start_bin > end_bin - r {
                next_start = l;
                alpha = next_alpha;
            } else {
                next_end = r;
                beta = next_beta;
            }
            if next_start == start_bin && next_end == end_bin {
                continue;
            }
            let norm = self.l2_error(next_start, next_end, dst_nbins);
            if norm > norm_min {
                break;
            }
            norm_min = norm;
            start_bin = next_start;
            end_bin = next_end;
        }
        let bw = (self.max - self.min) / bins as f32;
        (
            self.min + bw * start_bin as f32,
            self.min + bw * (end_bin + 1) as f32,
        )
    }

    /// PyTorch's `_compute_quantization_error`: the L2 error of quantising
    /// the histogram with `dst_nbins` levels over bins `[start, end]`, each
    /// source bin treated as uniform density; values outside are clipped to
    /// the end levels. Element-wise in f32 as PyTorch, summed in f64.
    fn l2_error(&self, start: usize, end: usize, dst_nbins: usize) -> f64 {
        let bins = self.bins();
        let bin_width = (f64::from(self.max) - f64::from(self.min)) / bins as f64;
        let dst_bin_width = bin_width * (end - start + 1) as f64 / dst_nbins as f64;
        if dst_bin_width == 0.0 {
            return 0.0;
        }
        let bw = bin_width as f32;
        let dbw = dst_bin_width as f32;
        let half = (dst_bin_width / 2.0) as f32;
        let neg_half = (-dst_bin_width / 2.0) as f32;
        let last = (dst_nbins - 1) as f32;
        let get_norm =
            |db: f32, de: f32, density: f32| density * ((de * de * de - db * db * db) / 3.0);
        let mut sum = 0.0f64;
        for (i, &h) in self.counts.iter().enumerate() {
            let src_begin = (i as f32 - start as f32) * bw;
            let src_end = src_begin + bw;
            let dst_of_begin = div_floor(src_begin, dbw).clamp(0.0, last);
            let dst_of_begin_center = (dst_of_begin + 0.5) * dbw;
            let dst_of_end = div_floor(src_end, dbw).clamp(0.0, last);
            let density = h / bw;
            let mut norm = get_norm(src_begin - dst_of_begin_center, half, density);
            norm += (dst_of_end - dst_of_begin - 1.0) * get_norm(neg_half, half, density);
            let dst_of_end_center = dst_of_end * dbw + half;
            norm += get_norm(neg_half, src_end - dst_of_end_center, density);
            sum += f64::from(norm);
        }
        sum
    }

    /// The `q`-quantile (`q ∈ [0, 1]`) of the histogram, interpolating
    /// linearly inside the bin where the cumulative count reaches `q · total`.
    fn quantile(&self, q: f64) -> f32 {
        if self.min == self.max {
            return self.min;
        }
        let total = self.total();
        let target = q * total;
        let width = (f64::from(self.max) - f64::from(self.min)) / self.bins() as f64;
        let mut cum = 0.0f64;
        for (k, &c) in self.counts.iter().enumerate() {
            let c = f64::from(c);
            if c > 0.0 && cum + c >= target {
                let frac = ((target - cum) / c).clamp(0.0, 1.0);
                let v = f64::from(self.min) + (k as f64 + frac) * width;
                return (v as f32).clamp(self.min, self.max);
            }
            cum += c;
        }
        self.max
    }
}

/// Python-style floor division in f32, as PyTorch's `div(…, rounding_mode='floor')`.
fn div_floor(a: f32, b: f32) -> f32 {
    if b == 0.0 {
        return a / b;
    }
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        div -= 1.0;
    }
    if div != 0.0 {
        let mut floordiv = div.floor();
        if div - floordiv > 0.5 {
            floordiv += 1.0;
        }
        floordiv
    } else {
        0.0f32.copysign(a / b)
    }
}

/// TensorRT's entropy calibration on a histogram of `|x|`: the number of
/// leading bins `i ∈ [levels, bins]` whose KL divergence is smallest.
///
/// For each `i`: `P` is the first `i` bins with the mass of the rest added to
/// bin `i − 1`; `Q` merges the first `i` bins into `levels` groups (bin `k`
/// belongs to group `j` when `⌊j·i/levels⌋ ≤ k < ⌊(j+1)·i/levels⌋`) and
/// spreads each group's count evenly over its non-empty bins (empty bins stay
/// empty). Both are normalised and `KL(P‖Q) = Σ_{p>0} p·ln(p/q)` (infinite,
/// so never chosen, where `q = 0 < p`). Ties go to the smallest `i`.
fn entropy_search(counts: &[f32], levels: usize) -> usize {
    let bins = counts.len();
    if bins <= levels {
        return bins;
    }
    let h: Vec<f64> = counts.iter().map(|&c| f64::from(c)).collect();
    let mut suffix = vec![0.0f64; bins + 1];
    for k in (0..bins).rev() {
        suffix[k] = suffix[k + 1] + h[k];
    }
    let total = suffix[0];
    let (mut best, mut best_i) = (f64::INFINITY, bins);
    'candidates: for (i, &outliers) in suffix.iter().enumerate().skip(levels) {
        let q_total = total - outliers;
        if q_total <= 0.0 {
            continue;
        }
        let mut kl = 0.0f64;
        for j in 0..levels {
            let (a, b) = (j * i / levels, (j + 1) * i / levels);
            let group = &h[a..b];
            let nonzero = group.iter().filter(|&&c| c > 0.0).count();
            let group_sum: f64 = group.iter().sum();
            for (k, &c) in group.iter().enumerate() {
                let k = a + k;
                let p = if k == i - 1 { c + outliers } else { c };
                if p == 0.0 {
                    continue;
                }
                if c == 0.0 {
                    continue 'candidates; // q = 0 < p
                }
                let p = p / total;
                let q = group_sum / nonzero as f64 / q_total;
                kl += p * (p / q).ln();
            }
        }
        if kl < best {
            best = kl;
            best_i = i;
        }
    }
    best_i
}

/// Checks the finiteness and width of a batch for a histogram observer and
/// returns its `(min, max)`, or `None` for an empty batch.
fn histogram_batch(name: &'static str, x: &Tensor<f32>) -> Result<Option<(f32, f32)>> {
    check_finite(name, x)?;
    if x.is_empty() {
        return Ok(None);
    }
    let (lo, hi) = min_max(x.as_slice());
    if !(hi - lo).is_finite() {
        return Err(Error::invalid(
            name,
            format!("the range [{lo}, {hi}] is too wide to bin in f32"),
        ));
    }
    Ok(Some((lo, hi)))
}

fn check_bins(name: &'static str, bins: usize, upsample_rate: usize) -> Result<()> {
    if bins == 0 || upsample_rate == 0 || bins > (1 << 24) {
        return Err(Error::invalid(
            name,
            format!("bins ({bins}) and upsample rate ({upsample_rate}) must be positive, bins at most 2^24"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// HistogramObserver (L2 / MSE)

/// PyTorch's `HistogramObserver`: a running histogram of the values (2048
/// bins by default, merged across batches with upsample rate 128) and an
/// MSE-optimal range search, the same algorithm as PyTorch's
/// `_non_linear_param_search` (caffe2's norm minimisation):
///
/// * Start from the whole histogram, bins `[b, e] = [0, bins − 1]`, and step
///   quantile bounds `α ↑`, `β ↓` by `1e−5`. At each step find the bins `l`,
///   `r` where the cumulative count crosses `α·total` and `β·total`, and move
///   whichever end would drop more bins.
/// * For the candidate `[b, e]`, compute the L2 quantisation error with
///   `2^bits` levels (256 for 8-bit types, reduced range or not, as PyTorch)
///   spread over the bins: each source bin is a uniform density and
///   contributes `density · ∫ (x − x̂)² dx` over the levels it spans; values
///   outside `[b, e]` count as clipped to the end levels.
/// * Stop as soon as the error grows (a local minimum), and return
///   `[min + b·w, min + (e + 1)·w]`, `w = (max − min)/bins`.
///
/// The range then goes through [`QScheme::qparams_from_range`]. Arithmetic
/// follows PyTorch's f32 steps (binning, merging, the error terms, the final
/// range), so the search, scale and zero point match PyTorch 1.13, single
/// and multi batch (tested against fixtures). One difference: PyTorch 1.13
/// passes `int(min)` and `int(max)` to `torch.histc`, which drops values
/// outside the truncated range; anneal bins over the true range, so the two
/// agree whenever the extremes are integers or lie in (−1, 1). Per-tensor
/// schemes only.
#[derive(Clone, Debug)]
pub struct HistogramObserver {
    scheme: QScheme,
    hist: Histogram,
}

impl HistogramObserver {
    const NAME: &'static str = "HistogramObserver";

    /// The default number of bins (PyTorch's).
    pub const DEFAULT_BINS: usize = 2048;
    /// The default upsample rate used when merging histograms (PyTorch's).
    pub const DEFAULT_UPSAMPLE_RATE: usize = 128;

    /// An observer with 2048 bins and upsample rate 128 (errors on per-channel schemes).
    pub fn new(scheme: QScheme) -> Result<Self> {
        Self::with_bins(scheme, Self::DEFAULT_BINS, Self::DEFAULT_UPSAMPLE_RATE)
    }

    /// An observer with `bins` bins and the given upsample rate (both ≥ 1).
    pub fn with_bins(scheme: QScheme, bins: usize, upsample_rate: usize) -> Result<Self> {
        require_per_tensor(Self::NAME, &scheme)?;
        check_bins(Self::NAME, bins, upsample_rate)?;
        Ok(HistogramObserver {
            scheme,
            hist: Histogram::new(bins, upsample_rate),
        })
    }

    /// The histogram's counts (empty bins included) and its `[min, max]`;
    /// `None` before any data.
    pub fn histogram(&self) -> Option<(&[f32], f32, f32)> {
        self.hist
            .initialised
            .then_some((self.hist.counts.as_slice(), self.hist.min, self.hist.max))
    }
}

impl Observer for HistogramObserver {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn scheme(&self) -> &QScheme {
        &self.scheme
    }

    fn observe(&mut self, x: &Tensor<f32>) -> Result<()> {
        if let Some((lo, hi)) = histogram_batch(Self::NAME, x)? {
            self.hist.add(x.as_slice(), lo, hi);
        }
        Ok(())
    }

    fn range(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        if !self.hist.initialised {
            return Err(no_data(Self::NAME));
        }
        let dst_nbins = 1usize << self.scheme.dtype().bits();
        let (lo, hi) = self.hist.l2_search(dst_nbins);
        Ok((vec![lo], vec![hi.max(lo)]))
    }

    fn reset(&mut self) {
        self.hist.reset();
    }
}

// ---------------------------------------------------------------------------------------------
// EntropyObserver (KL divergence)

/// TensorRT's entropy (KL-divergence) calibration ("8-bit Inference with
/// TensorRT", Migacz, GTC 2017), on a running histogram of `|x|` over
/// `[0, max|x|]` (2048 bins by default, merged across batches as
/// [`HistogramObserver`] does):
///
/// * For every `i` from `L` to `bins`, compare the distribution `P` of the
///   first `i` bins (outliers folded into bin `i − 1`) with its quantised
///   version `Q` (the `i` bins merged into `L` levels and expanded back,
///   empty bins kept empty) by `KL(P‖Q)`; take the `i` with the smallest
///   divergence (the first on ties).
/// * The threshold is `T = i · w`, `w = max|x| / bins` (the right edge of the
///   kept bins; TensorRT's slides say `(i + 0.5)·w`, NVIDIA's
///   pytorch-quantization and MXNet use the edge as here).
/// * The clipping range is `[max(min, −T), min(max, T)]`, then
///   [`QScheme::qparams_from_range`].
///
/// `L`, the number of levels that cover `[0, T]`, is `(qmax − qmin + 1)/2`
/// (128 for 8 bits) for symmetric schemes and for affine schemes on data with
/// negative values, and `qmax − qmin + 1` (256) for affine schemes on
/// non-negative data. Per-tensor schemes only.
///
/// As published, the search never clips below `L/bins · max|x|` (1/16 of the
/// maximum for 8 bits and 2048 bins) and never ends inside an empty stretch
/// of the histogram (an empty last bin with outliers beyond it has infinite
/// divergence). A lone outlier far beyond the bulk therefore disables
/// clipping; [`PercentileObserver`] handles that case.
#[derive(Clone, Debug)]
pub struct EntropyObserver {
    scheme: QScheme,
    hist: Histogram,
    min: f32,
    max: f32,
}

impl EntropyObserver {
    const NAME: &'static str = "EntropyObserver";

    /// The default number of bins (TensorRT's).
    pub const DEFAULT_BINS: usize = 2048;

    /// An observer with 2048 bins (errors on per-channel schemes).
    pub fn new(scheme: QScheme) -> Result<Self> {
        Self::with_bins(scheme, Self::DEFAULT_BINS)
    }

    /// An observer with `bins ≥ 1` bins.
    pub fn with_bins(scheme: QScheme, bins: usize) -> Result<Self> {
        require_per_tensor(Self::NAME, &scheme)?;
        check_bins(Self::NAME, bins, HistogramObserver::DEFAULT_UPSAMPLE_RATE)?;
        Ok(EntropyObserver {
            scheme,
            hist: Histogram::new(bins, HistogramObserver::DEFAULT_UPSAMPLE_RATE),
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        })
    }

    /// The threshold `T` on `|x|` chosen by the KL search (`None` before any data).
    pub fn threshold(&self) -> Option<f32> {
        if !self.hist.initialised {
            return None;
        }
        let bins = self.hist.bins();
        if self.hist.max == 0.0 {
            return Some(0.0);
        }
        let levels = self.levels();
        let i = entropy_search(&self.hist.counts, levels);
        Some(if i == bins {
            self.hist.max
        } else {
            i as f32 * (self.hist.max / bins as f32)
        })
    }

    /// The number of levels `L` that cover `[0, T]` (see the type's docs).
    fn levels(&self) -> usize {
        let levels = self.scheme.levels() as usize;
        if self.scheme.is_symmetric() || self.min < 0.0 {
            levels / 2
        } else {
            levels
        }
    }
}

impl Observer for EntropyObserver {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn scheme(&self) -> &QScheme {
        &self.scheme
    }

    fn observe(&mut self, x: &Tensor<f32>) -> Result<()> {
        if let Some((lo, hi)) = histogram_batch(Self::NAME, x)? {
            let abs: Vec<f32> = x.as_slice().iter().map(|v| v.abs()).collect();
            let amax = (-lo).max(hi);
            self.hist.add(&abs, 0.0, amax);
            self.min = self.min.min(lo);
            self.max = self.max.max(hi);
        }
        Ok(())
    }

    fn range(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let t = self.threshold().ok_or_else(|| no_data(Self::NAME))?;
        let lo = self.min.max(-t);
        let hi = self.max.min(t);
        Ok((vec![lo.min(hi)], vec![hi.max(lo)]))
    }

    fn reset(&mut self) {
        self.hist.reset();
        self.min = f32::INFINITY;
        self.max = f32::NEG_INFINITY;
    }
}

// ---------------------------------------------------------------------------------------------
// PercentileObserver

/// Percentile calibration: clip to the `(100 − p)`-th and `p`-th percentiles
/// of the values (e.g. `p = 99.99`), read from a running histogram over
/// `[min, max]` (2048 bins by default, merged across batches as
/// [`HistogramObserver`] does), not from exact order statistics: memory stays
/// fixed however much data is seen.
///
/// The `q`-quantile is found by walking the cumulative counts to the bin
/// where they reach `q · n` and interpolating linearly inside that bin
/// (values in a bin are taken as uniform), so it lies within one bin width
/// `(max − min)/bins` of the exact quantile. `p = 100` gives `[min, max]`.
/// Per-tensor schemes only.
#[derive(Clone, Debug)]
pub struct PercentileObserver {
    scheme: QScheme,
    percentile: f64,
    hist: Histogram,
}

impl PercentileObserver {
    const NAME: &'static str = "PercentileObserver";

    /// An observer clipping at the `(100 − percentile)`-th and `percentile`-th
    /// percentiles, `percentile ∈ (50, 100]`, with 2048 bins.
    pub fn new(scheme: QScheme, percentile: f64) -> Result<Self> {
        Self::with_bins(scheme, percentile, HistogramObserver::DEFAULT_BINS)
    }

    /// As [`PercentileObserver::new`] with `bins ≥ 1` bins.
    pub fn with_bins(scheme: QScheme, percentile: f64, bins: usize) -> Result<Self> {
        require_per_tensor(Self::NAME, &scheme)?;
        check_bins(Self::NAME, bins, HistogramObserver::DEFAULT_UPSAMPLE_RATE)?;
        if !(percentile > 50.0 && percentile <= 100.0) {
            return Err(Error::invalid(
                Self::NAME,
                format!("percentile {percentile} must lie in (50, 100]"),
            ));
        }
        Ok(PercentileObserver {
            scheme,
            percentile,
            hist: Histogram::new(bins, HistogramObserver::DEFAULT_UPSAMPLE_RATE),
        })
    }

    /// The percentile `p` (in percent).
    pub fn percentile(&self) -> f64 {
        self.percentile
    }
}

impl Observer for PercentileObserver {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn scheme(&self) -> &QScheme {
        &self.scheme
    }

    fn observe(&mut self, x: &Tensor<f32>) -> Result<()> {
        if let Some((lo, hi)) = histogram_batch(Self::NAME, x)? {
            self.hist.add(x.as_slice(), lo, hi);
        }
        Ok(())
    }

    fn range(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        if !self.hist.initialised {
            return Err(no_data(Self::NAME));
        }
        let p = self.percentile / 100.0;
        let lo = self.hist.quantile(1.0 - p);
        let hi = self.hist.quantile(p);
        Ok((vec![lo.min(hi)], vec![hi.max(lo)]))
    }

    fn reset(&mut self) {
        self.hist.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QDType;

    #[test]
    fn div_floor_matches_python() {
        assert_eq!(div_floor(7.0, 2.0), 3.0);
        assert_eq!(div_floor(-7.0, 2.0), -4.0);
        // 1 / 0.1f rounds to 10 in f32, but Python's 1 // 0.1 is 9.
        assert_eq!(div_floor(1.0, 0.1), 9.0);
    }

    #[test]
    fn histc_bins_like_torch() {
        let c = Histogram::histc(&[0.0, 0.5, 1.0, 0.99], 0.0, 1.0, 4);
        assert_eq!(c, vec![1.0, 0.0, 1.0, 2.0]);
    }

    #[test]
    fn merged_histogram_keeps_mass() {
        let mut h = Histogram::new(64, 8);
        let a: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        h.add(&a, 0.0, 0.99);
        let b: Vec<f32> = (0..50).map(|i| 3.0 - i as f32 / 50.0).collect();
        h.add(&b, 2.02, 3.0);
        assert!((h.total() - 150.0).abs() < 1e-3);
        assert_eq!(h.min, 0.0);
        assert!(h.max >= 3.0);
    }

    #[test]
    fn entropy_keeps_everything_for_flat_data() {
        let counts = vec![10.0f32; 512];
        assert_eq!(entropy_search(&counts, 128), 512);
    }

    #[test]
    fn observers_need_per_tensor_schemes() {
        let s = QScheme::per_channel_symmetric(QDType::I8, 0);
        assert!(MinMaxObserver::new(s).is_err());
        assert!(HistogramObserver::new(s).is_err());
        assert!(PerChannelMinMaxObserver::new(QScheme::default()).is_err());
    }
}
