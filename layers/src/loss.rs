//! Loss functions with PyTorch's formulas, weights and reductions.

use anneal_autograd::Var;
use anneal_tensor::{Element, Error, Result, Tensor};

/// How per-element losses are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// The (weighted) mean.
    #[default]
    Mean,
    /// The sum.
    Sum,
    /// No reduction: one loss per element (per sample for classification).
    None,
}

fn reduce<T: Element>(loss: Var<T>, reduction: Reduction) -> Result<Var<T>> {
    match reduction {
        Reduction::Mean => loss.mean_all(),
        Reduction::Sum => loss.sum_all(),
        Reduction::None => Ok(loss),
    }
}

/// Options of [`cross_entropy`] and [`nll_loss`] (`torch.nn.CrossEntropyLoss`).
#[derive(Debug, Clone, Default)]
pub struct CrossEntropyOptions<T: Element = f32> {
    /// Per-class weights `[C]`.
    pub weight: Option<Tensor<T>>,
    /// Targets equal to this index contribute nothing (and leave the mean's
    /// denominator).
    pub ignore_index: Option<usize>,
    /// How to reduce.
    pub reduction: Reduction,
    /// Label smoothing ε ∈ [0, 1].
    pub label_smoothing: f64,
}

/// Moves the class axis 1 of `[N, C, d…]` last and flattens to `[M, C]`.
fn rows_by_class<T: Element>(
    op: &'static str,
    x: &Var<T>,
    targets: &Tensor<usize>,
) -> Result<Var<T>> {
    let s = x.shape();
    let ok = match s.len() {
        1 => targets.rank() == 0,
        2 => targets.shape() == [s[0]],
        r if r > 2 => {
            targets.rank() == r - 1 && targets.shape()[0] == s[0] && targets.shape()[1..] == s[2..]
        }
        _ => false,
    };
    if !ok {
        return Err(Error::shape(
            op,
            &[s, targets.shape()],
            "expected input [N, C, d…] with targets [N, d…] (or [C] with a scalar target)",
        ));
    }
    match s.len() {
        1 => x.reshape(&[1, s[0]]),
        2 => Ok(x.clone()),
        r => {
            let mut perm = vec![0];
            perm.extend(2..r);
            perm.push(1);
            let c = s[1];
            let moved = x.permute(&perm)?;
            moved.reshape(&[moved.value().numel() / c.max(1), c])
        }
    }
}

/// The shared body of cross-entropy and NLL on log-probabilities `[M, C]`.
fn nll_rows<T: Element>(
    op: &'static str,
    logp: &Var<T>,
    targets: &Tensor<usize>,
    opts: &CrossEntropyOptions<T>,
) -> Result<Var<T>> {
    let (m, c) = (logp.shape()[0], logp.shape()[1]);
    if let Some(w) = &opts.weight {
        if w.shape() != [c] {
            return Err(Error::shape(
                op,
                &[logp.shape(), w.shape()],
                format!("class weights must have shape [{c}]"),
            ));
        }
    }
    if !(0.0..=1.0).contains(&opts.label_smoothing) {
        return Err(Error::invalid(
            op,
            format!("label_smoothing {} is outside [0, 1]", opts.label_smoothing),
        ));
    }
    let t = targets.as_slice();
    let ignored = |y: usize| opts.ignore_index == Some(y);
    if let Some(&bad) = t.iter().find(|&&y| y >= c && !ignored(y)) {
        return Err(Error::IndexOutOfRange {
            op,
            index: bad,
            size: c,
            axis: 1,
        });
    }
    let class_w = |k: usize| opts.weight.as_ref().map_or(T::one(), |w| w.as_slice()[k]);
    // Per-row weight of the target class (0 for ignored rows) and a safe index.
    let wy: Vec<T> = t
        .iter()
        .map(|&y| if ignored(y) { T::zero() } else { class_w(y) })
        .collect();
    let idx: Vec<usize> = t.iter().map(|&y| if ignored(y) { 0 } else { y }).collect();
    let wy = Tensor::from_vec(wy, &[m, 1])?;
    let picked = logp.gather(1, &Tensor::from_vec(idx, &[m, 1])?)?;
    let mut loss = picked.mul(&Var::constant(wy.clone()))?.neg();
    let eps = opts.label_smoothing;
    if eps > 0.0 {
        // ε/C · Σ_c −w_c·log p_c, zero on ignored rows (PyTorch's formula).
        let keep = Tensor::from_vec(
            t.iter()
                .map(|&y| if ignored(y) { T::zero() } else { T::one() })
                .collect(),
            &[m, 1],
        )?;
        let weighted = match &opts.weight {
            Some(w) => logp.mul(&Var::constant(w.reshape(&[1, c])?))?,
            None => logp.clone(),
        };
        let smooth = weighted
            .sum_axes(&[1], true)?
            .neg()
            .mul(&Var::constant(keep))?;
        loss = loss
            .mul_scalar(T::from_f64_lossy(1.0 - eps))
            .add(&smooth.mul_scalar(T::from_f64_lossy(eps / c as f64)))?;
    }
    let loss = loss.reshape(&[m])?;
    match opts.reduction {
        // The mean divides by the total target weight, as nll_loss does.
        Reduction::Mean => Ok(loss.sum_all()?.div_scalar(wy.sum_all())),
        Reduction::Sum => loss.sum_all(),
        Reduction::None => Ok(loss),
    }
}

/// Cross-entropy of raw logits against class indices
/// (`torch.nn.functional.cross_entropy`): `log_softmax` then NLL, with
/// optional class weights, `ignore_index` and label smoothing
/// `(1 − ε)·nll + ε/C·Σ_c −w_c·log p_c`.
///
/// # Shapes
/// logits `[N, C]` or `[N, C, d…]`, targets `[N]` or `[N, d…]`; with
/// `Reduction::None` the result has the targets' shape.
pub fn cross_entropy<T: Element>(
    logits: &Var<T>,
    targets: &Tensor<usize>,
    opts: &CrossEntropyOptions<T>,
) -> Result<Var<T>> {
    let rows = rows_by_class("cross_entropy", logits, targets)?;
    let out = nll_rows("cross_entropy", &rows.log_softmax(1)?, targets, opts)?;
    reshape_none(out, targets, opts.reduction)
}

/// Negative log-likelihood of log-probabilities (`torch.nn.functional.nll_loss`).
pub fn nll_loss<T: Element>(
    log_probs: &Var<T>,
    targets: &Tensor<usize>,
    opts: &CrossEntropyOptions<T>,
) -> Result<Var<T>> {
    let rows = rows_by_class("nll_loss", log_probs, targets)?;
    let out = nll_rows(
        "nll_loss",
        &rows,
        targets,
        &CrossEntropyOptions {
            label_smoothing: 0.0,
            ..opts.clone()
        },
    )?;
    reshape_none(out, targets, opts.reduction)
}

fn reshape_none<T: Element>(out: Var<T>, targets: &Tensor<usize>, r: Reduction) -> Result<Var<T>> {
    if r == Reduction::None {
        out.reshape(targets.shape())
    } else {
        Ok(out)
    }
}

fn check_same<T: Element>(op: &'static str, a: &Var<T>, b: &Tensor<T>) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape(
            op,
            &[a.shape(), b.shape()],
            "input and target must have the same shape",
        ));
    }
    Ok(())
}

/// Mean squared error `(x − y)²` (`torch.nn.functional.mse_loss`).
pub fn mse_loss<T: Element>(
    input: &Var<T>,
    target: &Tensor<T>,
    reduction: Reduction,
) -> Result<Var<T>> {
    check_same("mse_loss", input, target)?;
    reduce(
        input.sub(&Var::constant(target.clone()))?.square(),
        reduction,
    )
}

/// Mean absolute error `|x − y|` (`torch.nn.functional.l1_loss`).
pub fn l1_loss<T: Element>(
    input: &Var<T>,
    target: &Tensor<T>,
    reduction: Reduction,
) -> Result<Var<T>> {
    check_same("l1_loss", input, target)?;
    reduce(input.sub(&Var::constant(target.clone()))?.abs(), reduction)
}

/// Huber loss (`torch.nn.functional.huber_loss`): `½d²` for `|d| < δ`,
/// `δ(|d| − ½δ)` otherwise.
pub fn huber_loss<T: Element>(
    input: &Var<T>,
    target: &Tensor<T>,
    delta: f64,
    reduction: Reduction,
) -> Result<Var<T>> {
    check_same("huber_loss", input, target)?;
    if delta.is_nan() || delta <= 0.0 {
        return Err(Error::invalid(
            "huber_loss",
            format!("delta {delta} must be positive"),
        ));
    }
    let d = input.sub(&Var::constant(target.clone()))?;
    let a = d.abs();
    let dl = T::from_f64_lossy(delta);
    let small = a.value().lt_scalar(dl);
    let quad = d.square().mul_scalar(T::from_f64_lossy(0.5));
    let lin = a.add_scalar(T::from_f64_lossy(-0.5 * delta)).mul_scalar(dl);
    reduce(Var::where_cond(&small, &quad, &lin)?, reduction)
}

/// Smooth L1 loss (`torch.nn.functional.smooth_l1_loss`): `½d²/β` for
/// `|d| < β`, `|d| − ½β` otherwise; `β = 0` is plain L1.
pub fn smooth_l1_loss<T: Element>(
    input: &Var<T>,
    target: &Tensor<T>,
    beta: f64,
    reduction: Reduction,
) -> Result<Var<T>> {
    check_same("smooth_l1_loss", input, target)?;
    if beta.is_nan() || beta < 0.0 {
        return Err(Error::invalid(
            "smooth_l1_loss",
            format!("beta {beta} must be non-negative"),
        ));
    }
    if beta == 0.0 {
        return l1_loss(input, target, reduction);
    }
    let d = input.sub(&Var::constant(target.clone()))?;
    let a = d.abs();
    let small = a.value().lt_scalar(T::from_f64_lossy(beta));
    let quad = d.square().mul_scalar(T::from_f64_lossy(0.5 / beta));
    let lin = a.add_scalar(T::from_f64_lossy(-0.5 * beta));
    reduce(Var::where_cond(&small, &quad, &lin)?, reduction)
}

/// Binary cross-entropy on logits (`torch.nn.functional.binary_cross_entropy_with_logits`),
/// in PyTorch's stable form
/// `(1 − y)·x + (1 + (p − 1)·y)·(log(1 + e^{−|x|}) + max(−x, 0))`
/// with `p` the optional positive-class weight (broadcast over the last axis).
pub fn bce_with_logits<T: Element>(
    logits: &Var<T>,
    target: &Tensor<T>,
    pos_weight: Option<&Tensor<T>>,
    reduction: Reduction,
) -> Result<Var<T>> {
    check_same("bce_with_logits", logits, target)?;
    let one_minus_y = Var::constant(target.map(|v| T::one() - v));
    // softplus(−z) = m + ln(e^{−m} + e^{−z−m}) for any constant m; with
    // m = max(−z, 0) (detached) it never overflows and its gradient is
    // exactly −σ(−z) everywhere, including z = 0.
    let m = logits.neg().relu().detach();
    let softplus_neg = m
        .neg()
        .exp()
        .add(&logits.neg().sub(&m)?.exp())?
        .ln()
        .add(&m)?;
    let coeff = match pos_weight {
        Some(p) => Var::constant(
            target.zip_with(p, "bce_with_logits", |y, p| T::one() + (p - T::one()) * y)?,
        ),
        None => Var::constant(Tensor::ones_like(target)),
    };
    let loss = one_minus_y.mul(logits)?.add(&coeff.mul(&softplus_neg)?)?;
    reduce(loss, reduction)
}
