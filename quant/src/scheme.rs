//! Quantisation schemes, quantisation parameters and quantised tensors.
//!
//! A real value `x` is stored as an integer `q` with a scale `s > 0` and a
//! zero point `zp`, exactly as PyTorch (`torch.quantize_per_tensor`,
//! `torch.quantize_per_channel`) and ONNX (`QuantizeLinear`,
//! `DequantizeLinear`) define them:
//!
//! ```text
//! q  = clamp(round_half_even(x / s) + zp, qmin, qmax)      quantize
//! x̂ = (q − zp) · s                                         dequantize
//! ```
//!
//! * Rounding is half to even (`2.5 → 2`, `3.5 → 4`, `−2.5 → −2`), as
//!   `std::nearbyint` under the default rounding mode, which PyTorch uses, and
//!   as ONNX specifies. `x / s` is an f32 division (PyTorch multiplies by the
//!   f32 reciprocal `1/s`; the two differ only when `x / s` lies within one
//!   ulp of a tie).
//! * Values outside `[(qmin − zp)·s, (qmax − zp)·s]` saturate to `qmin` or
//!   `qmax`; `±∞` saturates too. NaN is rejected with an error.
//! * Inside the range, `|x − x̂| ≤ s/2`.
//!
//! A [`QScheme`] says how values map to integers: the storage type
//! ([`QDType`]: u8, i8, u4, i4), the integer range `[qmin, qmax]` (the full
//! range of the type, PyTorch's `reduce_range`, or a restricted range such as
//! `[−127, 127]`), affine or symmetric ([`QMapping`]) and per-tensor or
//! per-channel along any axis ([`Granularity`]). [`QParams`] holds the numbers
//! (scales, zero points, axis), [`QTensor`] the integers plus both.
//!
//! [`QScheme::qparams_from_range`] turns an observed range into parameters the
//! way PyTorch's observers do (`_calculate_qparams`); see its docs for the
//! formulas.
//!
//! Errors are [`anneal_tensor::Error`] values naming the operation.

use std::fmt;

use anneal_tensor::{Error, Result, Tensor};

/// The smallest scale an observer proposes: `f32::EPSILON` (2⁻²³), PyTorch's
/// `torch.finfo(torch.float32).eps`. Scales below it (a zero range, a
/// constant tensor, a subnormal quotient) are raised to it.
pub const QUANT_EPS: f32 = f32::EPSILON;

/// The integer type that stores quantised values.
///
/// | variant | PyTorch | full range |
/// |---|---|---|
/// | `U8` | `torch.quint8` | `[0, 255]` |
/// | `I8` | `torch.qint8` | `[−128, 127]` |
/// | `U4` | `torch.quint4x2` (one value) | `[0, 15]` |
/// | `I4` | — (GGML's Q4) | `[−8, 7]` |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QDType {
    /// Unsigned 8-bit, `[0, 255]`.
    U8,
    /// Signed 8-bit, `[−128, 127]`.
    I8,
    /// Unsigned 4-bit, `[0, 15]`.
    U4,
    /// Signed 4-bit, `[−8, 7]`.
    I4,
}

impl QDType {
    /// The number of bits of one value.
    pub const fn bits(self) -> u32 {
        match self {
            QDType::U8 | QDType::I8 => 8,
            QDType::U4 | QDType::I4 => 4,
        }
    }

    /// True for the signed types.
    pub const fn is_signed(self) -> bool {
        matches!(self, QDType::I8 | QDType::I4)
    }

    /// The smallest value of the type: `0` unsigned, `−2^(bits−1)` signed.
    pub const fn min_value(self) -> i32 {
        if self.is_signed() {
            -(1 << (self.bits() - 1))
        } else {
            0
        }
    }

    /// The largest value of the type: `2^bits − 1` unsigned, `2^(bits−1) − 1` signed.
    pub const fn max_value(self) -> i32 {
        if self.is_signed() {
            (1 << (self.bits() - 1)) - 1
        } else {
            (1 << self.bits()) - 1
        }
    }

    /// The PyTorch-style name: `quint8`, `qint8`, `quint4`, `qint4`.
    pub const fn name(self) -> &'static str {
        match self {
            QDType::U8 => "quint8",
            QDType::I8 => "qint8",
            QDType::U4 => "quint4",
            QDType::I4 => "qint4",
        }
    }
}

impl fmt::Display for QDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the real range maps onto the integer range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QMapping {
    /// `[min, max]` (widened to contain 0) maps onto `[qmin, qmax]`; the zero
    /// point is whatever integer 0.0 lands on (PyTorch `per_*_affine`).
    Affine,
    /// `[−max|x|, max|x|]` maps onto the integer range with a fixed zero point:
    /// 0 for signed types, the middle of the range for unsigned ones (128 for
    /// u8). PyTorch `per_*_symmetric`.
    Symmetric,
}

/// Which elements share one `(scale, zero_point)` pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One pair for the whole tensor ("global" or per-tensor quantisation).
    PerTensor,
    /// One pair per index along `axis` (per-channel quantisation; axis 0 is
    /// the output channel of Linear and Conv2d weights).
    PerChannel {
        /// The channel axis (non-negative).
        axis: usize,
    },
}

/// How a tensor is quantised: storage type, integer range, mapping and
/// granularity.
///
/// Build one with [`QScheme::per_tensor_affine`],
/// [`QScheme::per_tensor_symmetric`], [`QScheme::per_channel_affine`] or
/// [`QScheme::per_channel_symmetric`], then narrow the range with
/// [`QScheme::with_reduce_range`] or [`QScheme::with_range`]. The range always
/// contains 0 and `qmin < qmax`.
///
/// ```
/// use anneal_quant::{QDType, QScheme};
/// let act = QScheme::per_tensor_affine(QDType::U8);                 // PyTorch's default activation
/// let w = QScheme::per_channel_symmetric(QDType::I8, 0).with_range(-127, 127)?;
/// assert_eq!((w.qmin(), w.qmax()), (-127, 127));
/// let x86 = act.with_reduce_range()?;                               // 7-bit activations
/// assert_eq!((x86.qmin(), x86.qmax()), (0, 127));
/// # Ok::<(), anneal_tensor::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QScheme {
    dtype: QDType,
    mapping: QMapping,
    granularity: Granularity,
    qmin: i32,
    qmax: i32,
    custom_range: bool,
}

impl Default for QScheme {
    /// Per-tensor affine u8 over `[0, 255]`: PyTorch's default activation scheme.
    fn default() -> Self {
        QScheme::per_tensor_affine(QDType::U8)
    }
}

impl QScheme {
    /// A scheme over the full range of `dtype`.
    pub fn new(dtype: QDType, mapping: QMapping, granularity: Granularity) -> Self {
        QScheme {
            dtype,
            mapping,
            granularity,
            qmin: dtype.min_value(),
            qmax: dtype.max_value(),
            custom_range: false,
        }
    }

    /// Per-tensor affine (PyTorch `torch.per_tensor_affine`).
    pub fn per_tensor_affine(dtype: QDType) -> Self {
        Self::new(dtype, QMapping::Affine, Granularity::PerTensor)
    }

    /// Per-tensor symmetric (PyTorch `torch.per_tensor_symmetric`).
    pub fn per_tensor_symmetric(dtype: QDType) -> Self {
        Self::new(dtype, QMapping::Symmetric, Granularity::PerTensor)
    }

    /// Per-channel affine along `axis` (PyTorch `torch.per_channel_affine`).
    pub fn per_channel_affine(dtype: QDType, axis: usize) -> Self {
        Self::new(dtype, QMapping::Affine, Granularity::PerChannel { axis })
    }

    /// Per-channel symmetric along `axis` (PyTorch `torch.per_channel_symmetric`).
    pub fn per_channel_symmetric(dtype: QDType, axis: usize) -> Self {
        Self::new(dtype, QMapping::Symmetric, Granularity::PerChannel { axis })
    }

    /// The same scheme with another granularity.
    pub fn with_granularity(mut self, granularity: Granularity) -> Self {
        self.granularity = granularity;
        self
    }

    /// The same scheme over the integer range `[qmin, qmax]` (PyTorch's
    /// `quant_min`/`quant_max`), e.g. `[−127, 127]` for "restricted" int8.
    ///
    /// Errors unless `qmin ≤ 0 ≤ qmax`, `qmin < qmax` and both fit the type.
    /// As in PyTorch, a custom range changes the symmetric zero point of an
    /// unsigned type to `⌊(qmin + qmax)/2⌋`.
    pub fn with_range(mut self, qmin: i32, qmax: i32) -> Result<Self> {
        let (lo, hi) = (self.dtype.min_value(), self.dtype.max_value());
        if !(qmin <= 0 && 0 <= qmax) {
            return Err(Error::invalid(
                "QScheme::with_range",
                format!("the range [{qmin}, {qmax}] must contain 0"),
            ));
        }
        if qmin >= qmax {
            return Err(Error::invalid(
                "QScheme::with_range",
                format!("qmin {qmin} must be less than qmax {qmax}"),
            ));
        }
        if qmin < lo || qmax > hi {
            return Err(Error::invalid(
                "QScheme::with_range",
                format!(
                    "the range [{qmin}, {qmax}] does not fit {} [{lo}, {hi}]",
                    self.dtype
                ),
            ));
        }
        self.qmin = qmin;
        self.qmax = qmax;
        self.custom_range = true;
        Ok(self)
    }

    /// The same scheme with the range halved, as PyTorch's `reduce_range=True`:
    /// `[⌊qmin/2⌋, ⌊qmax/2⌋]`, so u8 `[0, 255] → [0, 127]` and i8
    /// `[−128, 127] → [−64, 63]`. x86 int8 kernels use it so that `vpmaddubsw`
    /// cannot saturate; PyTorch's onednn engine honours it, qnnpack does not.
    ///
    /// Errors for symmetric unsigned schemes (PyTorch refuses them too: the
    /// zero point 128 would leave the range) and if nothing would be left.
    pub fn with_reduce_range(mut self) -> Result<Self> {
        if self.mapping == QMapping::Symmetric && !self.dtype.is_signed() {
            return Err(Error::invalid(
                "QScheme::with_reduce_range",
                format!(
                    "cannot reduce the range of a symmetric {} scheme",
                    self.dtype
                ),
            ));
        }
        let (qmin, qmax) = (self.qmin.div_euclid(2), self.qmax.div_euclid(2));
        if qmin >= qmax {
            return Err(Error::invalid(
                "QScheme::with_reduce_range",
                format!(
                    "halving [{}, {}] leaves [{qmin}, {qmax}]",
                    self.qmin, self.qmax
                ),
            ));
        }
        self.qmin = qmin;
        self.qmax = qmax;
        Ok(self)
    }

    /// The storage type.
    pub fn dtype(&self) -> QDType {
        self.dtype
    }

    /// Affine or symmetric.
    pub fn mapping(&self) -> QMapping {
        self.mapping
    }

    /// Per-tensor or per-channel.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// The channel axis of a per-channel scheme, `None` for per-tensor.
    pub fn axis(&self) -> Option<usize> {
        match self.granularity {
            Granularity::PerTensor => None,
            Granularity::PerChannel { axis } => Some(axis),
        }
    }

    /// True for symmetric schemes.
    pub fn is_symmetric(&self) -> bool {
        self.mapping == QMapping::Symmetric
    }

    /// True for per-channel schemes.
    pub fn is_per_channel(&self) -> bool {
        self.axis().is_some()
    }

    /// The smallest integer value.
    pub fn qmin(&self) -> i32 {
        self.qmin
    }

    /// The largest integer value.
    pub fn qmax(&self) -> i32 {
        self.qmax
    }

    /// True when the range was set with [`QScheme::with_range`].
    pub fn has_custom_range(&self) -> bool {
        self.custom_range
    }

    /// The number of integer levels, `qmax − qmin + 1`.
    pub fn levels(&self) -> u32 {
        (self.qmax - self.qmin + 1) as u32
    }

    /// The zero point of a symmetric scheme: 0 for signed types; for unsigned
    /// ones `2^(bits−1)` over the full range (128 for u8, PyTorch's value; 8
    /// for u4, where PyTorch's quint4x2 would give 0) and `⌊(qmin + qmax)/2⌋`
    /// over a custom range (PyTorch's rule).
    pub fn symmetric_zero_point(&self) -> i32 {
        if self.dtype.is_signed() {
            0
        } else if self.custom_range {
            (self.qmin + self.qmax).div_euclid(2)
        } else {
            1 << (self.dtype.bits() - 1)
        }
    }

    /// Quantisation parameters for the observed range `[min[c], max[c]]` of
    /// each channel (one entry for per-tensor schemes), computed as PyTorch's
    /// `UniformQuantizationObserverBase._calculate_qparams`, in f32:
    ///
    /// ```text
    /// min⁻ = min(min, 0),  max⁺ = max(max, 0)              (the range contains 0)
    /// symmetric:  s  = max(−min⁻, max⁺) / ((qmax − qmin)/2)
    ///             zp = symmetric_zero_point()             (0 signed, 128 for u8)
    /// affine:     s  = (max⁺ − min⁻) / (qmax − qmin)
    ///             zp = clamp(qmin − round_half_even(min⁻ / s), qmin, qmax)
    /// both:       s  = max(s, QUANT_EPS)                   (zero range → eps)
    /// ```
    ///
    /// A constant tensor (`min = max`) is not special: its range is widened to
    /// contain 0, and an all-zero tensor gets `s = QUANT_EPS` and the zero
    /// point `qmin` (affine; `qmin − round(0/eps)`) or the symmetric one. This
    /// is what PyTorch's code does (its docstrings' "scale 1.0 and zero point
    /// 0" applies only to an observer that saw nothing, which is an error here).
    ///
    /// Errors if the lengths differ, are not 1 for a per-tensor scheme or are
    /// 0, if a bound is not finite, if `min > max`, or if the scale overflows
    /// f32. Never returns a NaN, zero or subnormal scale.
    pub fn qparams_from_range(&self, min: &[f32], max: &[f32]) -> Result<QParams> {
        const OP: &str = "QScheme::qparams_from_range";
        if min.len() != max.len() {
            return Err(Error::invalid(
                OP,
                format!(
                    "{} minima but {} maxima (one per channel)",
                    min.len(),
                    max.len()
                ),
            ));
        }
        if min.is_empty() {
            return Err(Error::invalid(OP, "no channels"));
        }
        if self.axis().is_none() && min.len() != 1 {
            return Err(Error::invalid(
                OP,
                format!(
                    "a per-tensor scheme needs one range, got {} (one per channel?)",
                    min.len()
                ),
            ));
        }
        let mut scales = Vec::with_capacity(min.len());
        let mut zero_points = Vec::with_capacity(min.len());
        for (c, (&lo, &hi)) in min.iter().zip(max).enumerate() {
            if !lo.is_finite() || !hi.is_finite() {
                return Err(Error::invalid(
                    OP,
                    format!("channel {c}: the range [{lo}, {hi}] is not finite"),
                ));
            }
            if lo > hi {
                return Err(Error::invalid(
                    OP,
                    format!("channel {c}: min {lo} is greater than max {hi}"),
                ));
            }
            let (s, zp) = self.qparams_one(lo, hi);
            if !s.is_finite() {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "channel {c}: the range [{lo}, {hi}] is too wide: its scale overflows f32"
                    ),
                ));
            }
            scales.push(s);
            zero_points.push(zp);
        }
        Ok(QParams {
            scales,
            zero_points,
            axis: self.axis(),
        })
    }

    /// `(scale, zero_point)` for one finite range `lo ≤ hi`, in f32 as PyTorch.
    fn qparams_one(&self, lo: f32, hi: f32) -> (f32, i32) {
        let (qmin, qmax) = (self.qmin, self.qmax);
        let lo = lo.min(0.0);
        let hi = hi.max(0.0);
        match self.mapping {
            QMapping::Symmetric => {
                let amax = (-lo).max(hi);
                let s = (amax / ((qmax - qmin) as f32 / 2.0)).max(QUANT_EPS);
                (s, self.symmetric_zero_point())
            }
            QMapping::Affine => {
                let s = ((hi - lo) / (qmax - qmin) as f32).max(QUANT_EPS);
                let zp = qmin as f64 - f64::from((lo / s).round_ties_even());
                (s, zp.clamp(qmin as f64, qmax as f64) as i32)
            }
        }
    }
}

impl fmt::Display for QScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mapping = match self.mapping {
            QMapping::Affine => "affine",
            QMapping::Symmetric => "symmetric",
        };
        match self.granularity {
            Granularity::PerTensor => write!(f, "per-tensor {mapping}")?,
            Granularity::PerChannel { axis } => write!(f, "per-channel (axis {axis}) {mapping}")?,
        }
        write!(f, " {} [{}, {}]", self.dtype, self.qmin, self.qmax)
    }
}

/// Quantisation parameters: one scale (f32) and zero point (i32) per tensor,
/// or per channel along `axis`.
///
/// Scales are finite and positive; zero points are checked against a scheme's
/// range when they are used ([`QParams::check`]).
#[derive(Clone, Debug, PartialEq)]
pub struct QParams {
    scales: Vec<f32>,
    zero_points: Vec<i32>,
    axis: Option<usize>,
}

impl QParams {
    /// Per-tensor parameters. Errors if `scale` is not finite and positive.
    pub fn per_tensor(scale: f32, zero_point: i32) -> Result<Self> {
        check_scales("QParams::per_tensor", &[scale])?;
        Ok(QParams {
            scales: vec![scale],
            zero_points: vec![zero_point],
            axis: None,
        })
    }

    /// Per-channel parameters along `axis`. Errors if the lengths differ or
    /// are 0, or if a scale is not finite and positive.
    pub fn per_channel(scales: Vec<f32>, zero_points: Vec<i32>, axis: usize) -> Result<Self> {
        const OP: &str = "QParams::per_channel";
        if scales.len() != zero_points.len() || scales.is_empty() {
            return Err(Error::invalid(
                OP,
                format!(
                    "{} scales and {} zero points: need the same non-zero number",
                    scales.len(),
                    zero_points.len()
                ),
            ));
        }
        check_scales(OP, &scales)?;
        Ok(QParams {
            scales,
            zero_points,
            axis: Some(axis),
        })
    }

    /// The scales, one per channel (one for per-tensor parameters).
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// The zero points, one per channel (one for per-tensor parameters).
    pub fn zero_points(&self) -> &[i32] {
        &self.zero_points
    }

    /// The channel axis, `None` for per-tensor parameters.
    pub fn axis(&self) -> Option<usize> {
        self.axis
    }

    /// The number of `(scale, zero_point)` pairs.
    pub fn len(&self) -> usize {
        self.scales.len()
    }

    /// Always false: parameters hold at least one pair.
    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    /// The scale of per-tensor parameters (the first one otherwise).
    pub fn scale(&self) -> f32 {
        self.scales[0]
    }

    /// The zero point of per-tensor parameters (the first one otherwise).
    pub fn zero_point(&self) -> i32 {
        self.zero_points[0]
    }

    /// Checks that these parameters fit `scheme`: the same axis (per-tensor
    /// parameters for a per-tensor scheme) and zero points in
    /// `[qmin, qmax]`.
    pub fn check(&self, scheme: &QScheme) -> Result<()> {
        const OP: &str = "QParams::check";
        if self.axis != scheme.axis() {
            return Err(Error::invalid(
                OP,
                format!(
                    "parameters with channel axis {} do not fit a scheme with channel axis {}",
                    fmt_axis(self.axis),
                    fmt_axis(scheme.axis())
                ),
            ));
        }
        if let Some((c, &zp)) = self
            .zero_points
            .iter()
            .enumerate()
            .find(|(_, &zp)| zp < scheme.qmin || zp > scheme.qmax)
        {
            return Err(Error::invalid(
                OP,
                format!(
                    "zero point {zp} (channel {c}) is outside the range [{}, {}] of {scheme}",
                    scheme.qmin, scheme.qmax
                ),
            ));
        }
        Ok(())
    }
}

fn fmt_axis(axis: Option<usize>) -> String {
    match axis {
        None => "none (per-tensor)".into(),
        Some(a) => a.to_string(),
    }
}

fn check_scales(op: &'static str, scales: &[f32]) -> Result<()> {
    match scales
        .iter()
        .enumerate()
        .find(|(_, &s)| !(s.is_finite() && s > 0.0))
    {
        Some((c, s)) => Err(Error::invalid(
            op,
            format!("scale {s} (channel {c}) must be finite and positive"),
        )),
        None => Ok(()),
    }
}

/// Quantises one value: `clamp(round_half_even(x / scale) + zero_point, qmin, qmax)`.
///
/// `±∞` saturates; NaN gives `clamp(zero_point, qmin, qmax)` (callers that
/// care reject NaN first, as [`QTensor::quantize`] does). A range with
/// `qmin > qmax` gives `qmax`, as `torch.clamp` does (the clamp is
/// `min(max(·, qmin), qmax)`, not [`Ord::clamp`], which would panic).
#[inline]
pub fn quantize_value(x: f32, scale: f32, zero_point: i32, qmin: i32, qmax: i32) -> i32 {
    let r = f64::from((x / scale).round_ties_even());
    if r.is_nan() {
        return zero_point.max(qmin).min(qmax);
    }
    // Not NaN: `r` is finite or ±∞ and the zero point is finite.
    (r + f64::from(zero_point))
        .max(f64::from(qmin))
        .min(f64::from(qmax)) as i32
}

/// Dequantises one value: `(q − zero_point) · scale`, the difference taken
/// in 64 bits so that no pair of `i32`s overflows.
#[inline]
pub fn dequantize_value(q: i32, scale: f32, zero_point: i32) -> f32 {
    (i64::from(q) - i64::from(zero_point)) as f32 * scale
}

/// `(outer, channels, inner)` of `shape` around `axis`: element `i` belongs
/// to channel `(i / inner) % channels`.
pub(crate) fn channel_layout(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// The multi-index of flat (row-major) index `flat` in `shape`.
pub(crate) fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (d, &n) in shape.iter().enumerate().rev() {
        if n > 0 {
            idx[d] = flat % n;
            flat /= n;
        }
    }
    idx
}

/// Checks that `params` fit `scheme` and a tensor of `shape`; returns the
/// per-channel layout (`channels = 1` for per-tensor parameters).
fn check_layout(
    op: &'static str,
    shape: &[usize],
    scheme: &QScheme,
    params: &QParams,
) -> Result<(usize, usize, usize)> {
    params.check(scheme).map_err(|e| match e {
        Error::InvalidArgument { message, .. } => Error::invalid(op, message),
        other => other,
    })?;
    match scheme.axis() {
        None => {
            if params.len() != 1 {
                return Err(Error::invalid(
                    op,
                    format!(
                        "per-tensor parameters must hold one pair, not {}",
                        params.len()
                    ),
                ));
            }
            Ok((1, 1, shape.iter().product()))
        }
        Some(axis) => {
            if axis >= shape.len() {
                return Err(Error::AxisOutOfRange {
                    op,
                    axis: axis as isize,
                    rank: shape.len(),
                });
            }
            let layout = channel_layout(shape, axis);
            if layout.1 != params.len() {
                return Err(Error::shape(
                    op,
                    &[shape],
                    format!(
                        "{} channels along axis {axis} but {} (scale, zero point) pairs",
                        layout.1,
                        params.len()
                    ),
                ));
            }
            Ok(layout)
        }
    }
}

/// A quantised tensor: integers plus the scheme and parameters that give them
/// meaning (PyTorch's quantised tensor; `int_repr` is [`QTensor::int_repr`]).
///
/// The integers are stored as `i32` whatever the scheme's type, so one type
/// serves u8, i8, u4 and i4 and kernels can read them without conversion;
/// every value lies in `[qmin, qmax]`. [`QTensor::to_u8`] and
/// [`QTensor::to_i8`] give the compact form and [`QTensor::data_bytes`] the
/// packed size (`⌈numel · bits / 8⌉`).
///
/// ```
/// use anneal_quant::{QDType, QParams, QScheme, QTensor};
/// use anneal_tensor::Tensor;
/// let x = Tensor::from_vec(vec![-1.0f32, 0.25, 0.75, 200.0], &[4])?;
/// let q = QTensor::quantize(&x, &QScheme::per_tensor_affine(QDType::U8), &QParams::per_tensor(0.5, 10)?)?;
/// // x/s = −2, 0.5, 1.5, 400: ties go to even (0.5 → 0, 1.5 → 2), 400 + 10 saturates
/// assert_eq!(q.int_repr().to_vec(), vec![8, 10, 12, 255]);
/// assert_eq!(q.dequantize().to_vec(), vec![-1.0, 0.0, 1.0, 122.5]);
/// # Ok::<(), anneal_tensor::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct QTensor {
    data: Tensor<i32>,
    scheme: QScheme,
    params: QParams,
}

impl QTensor {
    /// Quantises `x`: `q = clamp(round_half_even(x / s) + zp, qmin, qmax)`
    /// with the `(s, zp)` of each element's channel.
    ///
    /// # Shapes
    /// `x`: any shape; per-channel parameters need `x.shape()[axis]` pairs.
    ///
    /// Errors if the parameters do not fit the scheme (axis, zero points) or
    /// the shape, or if `x` holds a NaN (the error names its index).
    pub fn quantize(x: &Tensor<f32>, scheme: &QScheme, params: &QParams) -> Result<Self> {
        const OP: &str = "QTensor::quantize";
        let (outer, channels, inner) = check_layout(OP, x.shape(), scheme, params)?;
        let src = x.as_slice();
        if let Some(i) = src.iter().position(|v| v.is_nan()) {
            return Err(Error::invalid(
                OP,
                format!(
                    "NaN at index {i} {:?} of a tensor of shape {:?}",
                    unravel(i, x.shape()),
                    x.shape()
                ),
            ));
        }
        let (qmin, qmax) = (scheme.qmin, scheme.qmax);
        let data = if channels == 1 {
            let (s, zp) = (params.scales[0], params.zero_points[0]);
            x.map(move |v| quantize_value(v, s, zp, qmin, qmax))
        } else {
            let mut out = Vec::with_capacity(src.len());
            for o in 0..outer {
                for c in 0..channels {
                    let (s, zp) = (params.scales[c], params.zero_points[c]);
                    let base = (o * channels + c) * inner;
                    out.extend(
                        src[base..base + inner]
                            .iter()
                            .map(|&v| quantize_value(v, s, zp, qmin, qmax)),
                    );
                }
            }
            Tensor::from_vec(out, x.shape())?
        };
        Ok(QTensor {
            data,
            scheme: *scheme,
            params: params.clone(),
        })
    }

    /// Wraps integers that are already quantised (e.g. loaded from disk).
    ///
    /// Errors if the parameters do not fit the scheme or the shape, or if a
    /// value lies outside `[qmin, qmax]`.
    pub fn from_int(data: Tensor<i32>, scheme: QScheme, params: QParams) -> Result<Self> {
        const OP: &str = "QTensor::from_int";
        check_layout(OP, data.shape(), &scheme, &params)?;
        if let Some((i, &q)) = data
            .as_slice()
            .iter()
            .enumerate()
            .find(|(_, &q)| q < scheme.qmin || q > scheme.qmax)
        {
            return Err(Error::invalid(
                OP,
                format!(
                    "value {q} at index {i} is outside [{}, {}]",
                    scheme.qmin, scheme.qmax
                ),
            ));
        }
        Ok(QTensor {
            data,
            scheme,
            params,
        })
    }

    /// The real values `x̂ = (q − zp) · s`.
    pub fn dequantize(&self) -> Tensor<f32> {
        let (outer, channels, inner) = match self.scheme.axis() {
            None => (1, 1, self.data.numel()),
            Some(axis) => channel_layout(self.data.shape(), axis),
        };
        if channels == 1 {
            let (s, zp) = (self.params.scales[0], self.params.zero_points[0]);
            return self.data.map(move |q| dequantize_value(q, s, zp));
        }
        let src = self.data.as_slice();
        let mut out = Vec::with_capacity(src.len());
        for o in 0..outer {
            for c in 0..channels {
                let (s, zp) = (self.params.scales[c], self.params.zero_points[c]);
                let base = (o * channels + c) * inner;
                out.extend(
                    src[base..base + inner]
                        .iter()
                        .map(|&q| dequantize_value(q, s, zp)),
                );
            }
        }
        Tensor::from_vec(out, self.data.shape()).expect("same shape")
    }

    /// The integers (PyTorch's `int_repr()`), each in `[qmin, qmax]`.
    pub fn int_repr(&self) -> &Tensor<i32> {
        &self.data
    }

    /// The integers, giving up the quantised tensor.
    pub fn into_int_repr(self) -> Tensor<i32> {
        self.data
    }

    /// The integers as `u8`. Errors unless the type is unsigned (u8 or u4).
    pub fn to_u8(&self) -> Result<Tensor<u8>> {
        if self.scheme.dtype.is_signed() {
            return Err(Error::invalid(
                "QTensor::to_u8",
                format!("the values are {}, not unsigned", self.scheme.dtype),
            ));
        }
        Ok(self.data.map(|q| q as u8))
    }

    /// The integers as `i8`. Errors unless the type is signed (i8 or i4).
    pub fn to_i8(&self) -> Result<Tensor<i8>> {
        if !self.scheme.dtype.is_signed() {
            return Err(Error::invalid(
                "QTensor::to_i8",
                format!("the values are {}, not signed", self.scheme.dtype),
            ));
        }
        Ok(self.data.map(|q| q as i8))
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        self.data.shape()
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.data.numel()
    }

    /// The scheme.
    pub fn scheme(&self) -> &QScheme {
        &self.scheme
    }

    /// The scales, zero points and axis.
    pub fn qparams(&self) -> &QParams {
        &self.params
    }

    /// The packed size of the integers in bytes, `⌈numel · bits / 8⌉` (two
    /// 4-bit values per byte); the parameters are not counted.
    pub fn data_bytes(&self) -> usize {
        (self.numel() * self.scheme.dtype.bits() as usize).div_ceil(8)
    }
}

/// Quantises and dequantises at once, `x̂ = dequantize(quantize(x))`: the
/// forward pass of PyTorch's fake-quant. Errors as [`QTensor::quantize`].
pub fn fake_quantize(x: &Tensor<f32>, scheme: &QScheme, params: &QParams) -> Result<Tensor<f32>> {
    Ok(QTensor::quantize(x, scheme, params)?.dequantize())
}

/// Signal-to-quantisation-noise ratio in decibels,
/// `10 · log10(Σ x² / Σ (x − x̂)²)`, accumulated in f64.
///
/// `+∞` when `approx` equals `reference` exactly (no noise); `−∞` when the
/// reference is all zeros and the approximation is not.
///
/// # Errors
/// If the slices differ in length.
pub fn sqnr_db(reference: &[f32], approx: &[f32]) -> Result<f64> {
    if reference.len() != approx.len() {
        return Err(Error::invalid(
            "sqnr_db",
            format!(
                "reference has {} values, approx {}",
                reference.len(),
                approx.len()
            ),
        ));
    }
    let (mut signal, mut noise) = (0.0f64, 0.0f64);
    for (&x, &y) in reference.iter().zip(approx) {
        let (x, y) = (f64::from(x), f64::from(y));
        signal += x * x;
        noise += (x - y) * (x - y);
    }
    if noise == 0.0 {
        return Ok(f64::INFINITY);
    }
    Ok(10.0 * (signal / noise).log10())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_ranges() {
        assert_eq!((QDType::U8.min_value(), QDType::U8.max_value()), (0, 255));
        assert_eq!(
            (QDType::I8.min_value(), QDType::I8.max_value()),
            (-128, 127)
        );
        assert_eq!((QDType::U4.min_value(), QDType::U4.max_value()), (0, 15));
        assert_eq!((QDType::I4.min_value(), QDType::I4.max_value()), (-8, 7));
    }

    #[test]
    fn symmetric_zero_points() {
        assert_eq!(
            QScheme::per_tensor_symmetric(QDType::U8).symmetric_zero_point(),
            128
        );
        assert_eq!(
            QScheme::per_tensor_symmetric(QDType::U4).symmetric_zero_point(),
            8
        );
        assert_eq!(
            QScheme::per_tensor_symmetric(QDType::I8).symmetric_zero_point(),
            0
        );
        let custom = QScheme::per_tensor_symmetric(QDType::U8)
            .with_range(0, 15)
            .unwrap();
        assert_eq!(custom.symmetric_zero_point(), 7);
    }

    #[test]
    fn affine_qparams_by_hand() {
        // [-1, 3] over [0, 255]: s = 4/255, zp = 0 - round(-1 / s) = round(63.75) = 64
        let p = QScheme::per_tensor_affine(QDType::U8)
            .qparams_from_range(&[-1.0], &[3.0])
            .unwrap();
        assert_eq!(p.scale(), 4.0f32 / 255.0);
        assert_eq!(p.zero_point(), 64);
    }

    #[test]
    fn unravel_row_major() {
        assert_eq!(unravel(7, &[2, 3, 2]), vec![1, 0, 1]);
        assert_eq!(channel_layout(&[2, 3, 4], 1), (2, 3, 4));
    }
}
