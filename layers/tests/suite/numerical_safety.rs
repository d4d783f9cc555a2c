//! Numerical safety: softmax, log-softmax, logsumexp, sigmoid,
//! cross-entropy, BCE-with-logits and LayerNorm stay finite — values and
//! gradients — for inputs of ±1e4 (where a naive `exp` overflows) and for
//! all-equal inputs (where a naive variance or normalisation divides 0 by 0),
//! in f32 and f64. Every expected value is the closed form of the maths
//! (e.g. `log_softmax([1e4, −1e4, 0]) = [0, −2e4, −1e4]` because
//! `e^{−1e4}` underflows to 0 in both types), not a recorded output.

use anneal_autograd::Var;
use anneal_layers::{
    bce_with_logits, cross_entropy, CrossEntropyOptions, LayerNorm, Module, Reduction,
};
use anneal_tensor::{Element, Tensor};

fn t<T: Element>(v: &[f64], shape: &[usize]) -> Tensor<T> {
    Tensor::from_vec(v.iter().map(|&x| T::from_f64_lossy(x)).collect(), shape).unwrap()
}

fn vals<T: Element>(x: &Tensor<T>) -> Vec<f64> {
    x.as_slice().iter().map(|v| v.to_f64_exact()).collect()
}

/// Asserts every value is finite and within `tol·(1 + |expected|)`.
#[track_caller]
fn close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}[{i}] = {g} is not finite");
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, expected {w}"
        );
    }
}

/// Gradient of `Σ c·f(x)` with respect to `x`, with the value of `f(x)`.
fn value_and_grad<T: Element>(
    x: &[f64],
    shape: &[usize],
    c: &[f64],
    f: impl Fn(&Var<T>) -> Var<T>,
) -> (Vec<f64>, Vec<f64>) {
    let xv = Var::leaf(t::<T>(x, shape));
    let y = f(&xv);
    let g = y.backward_with(t::<T>(c, y.shape())).unwrap();
    (vals(y.value()), vals(g.wrt(&xv).unwrap()))
}

fn softmax_family<T: Element>(tol: f64) {
    let big = 1e4;
    // Two tied maxima at 1e4 and one at −1e4: softmax [½, ½, 0].
    let x = [big, big, -big];
    let c = [1.0, 2.0, 3.0];
    let (y, g) = value_and_grad::<T>(&x, &[1, 3], &c, |v| v.softmax(-1).unwrap());
    close("softmax(±1e4)", &y, &[0.5, 0.5, 0.0], tol);
    // ∂/∂x_i Σ c·y = y_i (c_i − Σ_j y_j c_j), Σ y c = 1.5.
    close("softmax(±1e4) grad", &g, &[-0.25, 0.25, 0.0], tol);

    // log_softmax([1e4, −1e4, 0]) = x − 1e4 exactly; its gradient
    // c − softmax·Σc with softmax = [1, 0, 0].
    let x = [big, -big, 0.0];
    let (y, g) = value_and_grad::<T>(&x, &[1, 3], &c, |v| v.log_softmax(-1).unwrap());
    close("log_softmax(±1e4)", &y, &[0.0, -2.0 * big, -big], tol);
    close("log_softmax(±1e4) grad", &g, &[1.0 - 6.0, 2.0, 3.0], tol);

    // logsumexp of equal large values: x + ln n; gradient 1/n each.
    for v in [big, -big, 0.0] {
        let x = [v, v, v];
        let (y, g) =
            value_and_grad::<T>(&x, &[3], &[1.0], |u| u.logsumexp_axes(&[0], false).unwrap());
        close("logsumexp(equal)", &y, &[v + 3f64.ln()], tol);
        // The gradient e^{x − lse} reads the rounded output: lse ≈ 1e4 is
        // only known to ε·1e4 (PyTorch computes it the same way).
        let ulps = 4.0 * T::epsilon().to_f64_exact() * v.abs();
        close("logsumexp(equal) grad", &g, &[1.0 / 3.0; 3], tol.max(ulps));
        // All-equal softmax is uniform whatever the magnitude.
        let (y, g) = value_and_grad::<T>(&[v; 4], &[4], &[1.0, 2.0, 3.0, 4.0], |u| {
            u.softmax(0).unwrap()
        });
        close("softmax(equal)", &y, &[0.25; 4], tol);
        // 0.25·(c_i − 2.5)
        close(
            "softmax(equal) grad",
            &g,
            &[-0.375, -0.125, 0.125, 0.375],
            tol,
        );
        let (y, _) = value_and_grad::<T>(&[v; 4], &[4], &[1.0; 4], |u| u.log_softmax(0).unwrap());
        close("log_softmax(equal)", &y, &[-(4f64.ln()); 4], tol);
    }
    // logsumexp(1e4, −1e4) = 1e4 (the other term underflows).
    let (y, g) = value_and_grad::<T>(&[big, -big], &[2], &[1.0], |u| {
        u.logsumexp_axes(&[0], false).unwrap()
    });
    close("logsumexp(±1e4)", &y, &[big], tol);
    close("logsumexp(±1e4) grad", &g, &[1.0, 0.0], tol);

    // The tensor kernels directly.
    let x = t::<T>(&[big, -big, 0.0, big, big, big], &[2, 3]);
    close(
        "Tensor::softmax",
        &vals(&x.softmax(1).unwrap()),
        &[1.0, 0.0, 0.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0],
        tol,
    );
    close(
        "Tensor::log_softmax",
        &vals(&x.log_softmax(1).unwrap()),
        &[
            0.0,
            -2.0 * big,
            -big,
            -(3f64.ln()),
            -(3f64.ln()),
            -(3f64.ln()),
        ],
        tol,
    );
    close(
        "Tensor::logsumexp_axes",
        &vals(&x.logsumexp_axes(&[1], false).unwrap()),
        &[big, big + 3f64.ln()],
        tol,
    );
}

fn sigmoid_and_losses<T: Element>(tol: f64) {
    let big = 1e4;
    // σ(±1e4) = 1 and 0; σ' = σ(1 − σ) = 0 at both ends, σ'(0) = ¼.
    let (y, g) = value_and_grad::<T>(&[big, -big, 0.0], &[3], &[1.0; 3], |v| v.sigmoid());
    close("sigmoid(±1e4)", &y, &[1.0, 0.0, 0.5], tol);
    close("sigmoid(±1e4) grad", &g, &[0.0, 0.0, 0.25], tol);
    close(
        "Tensor::sigmoid",
        &vals(&t::<T>(&[big, -big], &[2]).sigmoid()),
        &[1.0, 0.0],
        tol,
    );

    // Cross-entropy of logits [1e4, −1e4, 0]: −log_softmax[target];
    // gradient softmax − onehot = [1, 0, 0] − onehot.
    let logits = [big, -big, 0.0, big, -big, 0.0, 5.0, 5.0, 5.0];
    let targets = Tensor::from_vec(vec![0usize, 1, 2], &[3]).unwrap();
    for reduction in [Reduction::None, Reduction::Sum] {
        let opts = CrossEntropyOptions {
            reduction,
            ..Default::default()
        };
        let seed = if reduction == Reduction::None {
            vec![1.0; 3]
        } else {
            vec![1.0]
        };
        let (y, g) = value_and_grad::<T>(&logits, &[3, 3], &seed, |v| {
            cross_entropy(v, &targets, &opts).unwrap()
        });
        let losses = [0.0, 2.0 * big, 3f64.ln()];
        let want: Vec<f64> = if reduction == Reduction::None {
            losses.to_vec()
        } else {
            vec![losses.iter().sum()]
        };
        close("cross_entropy(±1e4)", &y, &want, tol);
        let third = 1.0 / 3.0;
        close(
            "cross_entropy(±1e4) grad",
            &g,
            &[0.0, 0.0, 0.0, 1.0, -1.0, 0.0, third, third, third - 1.0],
            tol,
        );
    }
    // With label smoothing ε the smoothing term −ε/C·Σ log p stays finite.
    let eps = 0.1;
    let opts = CrossEntropyOptions {
        label_smoothing: eps,
        reduction: Reduction::Sum,
        ..Default::default()
    };
    let (y, g) = value_and_grad::<T>(&logits[..3], &[1, 3], &[1.0], |v| {
        cross_entropy(v, &targets.narrow(0, 0, 1).unwrap(), &opts).unwrap()
    });
    // (1 − ε)·0 + ε/3·(0 + 2e4 + 1e4)
    close("cross_entropy smoothed", &y, &[eps / 3.0 * 3.0 * big], tol);
    // softmax − ((1 − ε)·onehot + ε/3)
    let s = eps / 3.0;
    close(
        "cross_entropy smoothed grad",
        &g,
        &[1.0 - (1.0 - eps) - s, -s, -s],
        tol,
    );

    // BCE with logits: ℓ(x, y) = max(x, 0) − x·y + log(1 + e^{−|x|});
    // ℓ(1e4, 0) = ℓ(−1e4, 1) = 1e4, ℓ(1e4, 1) = ℓ(−1e4, 0) = 0;
    // ∂ℓ/∂x = σ(x) − y.
    let x = [big, -big, big, -big, 0.0];
    let y_t = t::<T>(&[0.0, 1.0, 1.0, 0.0, 1.0], &[5]);
    let (y, g) = value_and_grad::<T>(&x, &[5], &[1.0; 5], |v| {
        bce_with_logits(v, &y_t, None, Reduction::None).unwrap()
    });
    close(
        "bce_with_logits(±1e4)",
        &y,
        &[big, big, 0.0, 0.0, 2f64.ln()],
        tol,
    );
    close(
        "bce_with_logits(±1e4) grad",
        &g,
        &[1.0, -1.0, 0.0, 0.0, -0.5],
        tol,
    );
    let pos = t::<T>(&[3.0], &[1]);
    let (y, g) = value_and_grad::<T>(&x, &[5], &[1.0; 5], |v| {
        bce_with_logits(v, &y_t, Some(&pos), Reduction::None).unwrap()
    });
    // pos_weight p: ℓ = (1 − y)·x + (1 + (p − 1)·y)·softplus(−x);
    // ∂ℓ/∂x = (1 − y) − (1 + (p − 1)·y)·σ(−x).
    close(
        "bce_with_logits pos_weight",
        &y,
        &[big, 3.0 * big, 0.0, 0.0, 3.0 * 2f64.ln()],
        tol,
    );
    close(
        "bce_with_logits pos_weight grad",
        &g,
        &[1.0, -3.0, 0.0, 0.0, -1.5],
        tol,
    );
}

fn layer_norm<T: Element>(tol: f64) {
    let ln = LayerNorm::<T>::new(&[4]).unwrap();
    let big = 1e4;
    let c = [1.0, -2.0, 0.5, 3.0];
    for v in [0.0, big, -big, 123.456] {
        // All-equal rows: x − mean = 0 exactly, so the output is β = 0 and
        // dx = (g − mean(g))/√ε (x̂ = 0), finite.
        let (y, g) = value_and_grad::<T>(&[v; 4], &[1, 4], &c, |x| ln.forward(x).unwrap());
        close("LayerNorm(equal)", &y, &[0.0; 4], tol);
        let mean_c = c.iter().sum::<f64>() / 4.0;
        let inv = 1.0 / 1e-5f64.sqrt();
        let want: Vec<f64> = c.iter().map(|&ci| (ci - mean_c) * inv).collect();
        close("LayerNorm(equal) grad", &g, &want, 1e-3);
    }
    // ±1e4: mean 0, variance 1e8, x̂ = ±1/√(1 + 1e-13) ≈ ±1.
    let x = [big, -big, big, -big];
    let (y, g) = value_and_grad::<T>(&x, &[1, 4], &c, |v| ln.forward(v).unwrap());
    close("LayerNorm(±1e4)", &y, &[1.0, -1.0, 1.0, -1.0], tol);
    // dx = (g − mean(g) − x̂·mean(g·x̂))/σ with σ = 1e4.
    let mean_c = c.iter().sum::<f64>() / 4.0;
    let xh = [1.0, -1.0, 1.0, -1.0];
    let mean_cx: f64 = c.iter().zip(&xh).map(|(a, b)| a * b).sum::<f64>() / 4.0;
    let want: Vec<f64> = c
        .iter()
        .zip(&xh)
        .map(|(&ci, &h)| (ci - mean_c - h * mean_cx) / big)
        .collect();
    close("LayerNorm(±1e4) grad", &g, &want, tol);
    // A large offset with a small spread: naive E[x²] − E[x]² cancels
    // catastrophically here; the result must still be the normalised spread.
    let x = [big + 1.0, big - 1.0, big + 1.0, big - 1.0];
    let (y, _) = value_and_grad::<T>(&x, &[1, 4], &c, |v| ln.forward(v).unwrap());
    let s = 1.0 / (1.0f64 + 1e-5).sqrt();
    close("LayerNorm(1e4 ± 1)", &y, &[s, -s, s, -s], 1e-3);
}

#[test]
fn softmax_log_softmax_and_logsumexp_stay_finite_f32() {
    softmax_family::<f32>(1e-6);
}

#[test]
fn softmax_log_softmax_and_logsumexp_stay_finite_f64() {
    softmax_family::<f64>(1e-12);
}

#[test]
fn sigmoid_cross_entropy_and_bce_stay_finite_f32() {
    sigmoid_and_losses::<f32>(1e-6);
}

#[test]
fn sigmoid_cross_entropy_and_bce_stay_finite_f64() {
    sigmoid_and_losses::<f64>(1e-12);
}

#[test]
fn layer_norm_stays_finite_f32() {
    layer_norm::<f32>(1e-5);
}

#[test]
fn layer_norm_stays_finite_f64() {
    layer_norm::<f64>(1e-10);
}
