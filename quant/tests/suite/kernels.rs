//! Property tests of the integer kernels (`anneal_quant::kernels`).
//!
//! Every int8 GEMM path must equal the portable path bit for bit, and the
//! portable path a naive i32 triple loop, over ragged shapes (M, N, K from
//! 1 to 70; K not a multiple of 4, N not a multiple of 16) and extreme
//! values. Requantisation is checked against the formula in f64, the
//! dynamic int8 linear against an f64 reference within the error bound
//! derived from the scales, and the Q4_0/Q8_0 formats against GGML's
//! reference rules and a dequantise-then-multiply reference.

use anneal_quant::kernels::*;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const EPS: f64 = f32::EPSILON as f64 / 2.0; // unit roundoff, 2⁻²⁴

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Random codes; with `extreme` most values sit at the ends of the range.
fn codes_u8(r: &mut StdRng, len: usize, extreme: bool) -> Vec<u8> {
    (0..len)
        .map(|_| {
            if extreme && r.random_bool(0.8) {
                if r.random_bool(0.9) {
                    255
                } else {
                    0
                }
            } else {
                r.random()
            }
        })
        .collect()
}

fn codes_i8(r: &mut StdRng, len: usize, extreme: bool) -> Vec<i8> {
    (0..len)
        .map(|_| {
            if extreme && r.random_bool(0.8) {
                if r.random_bool(0.9) {
                    -128
                } else {
                    127
                }
            } else {
                r.random()
            }
        })
        .collect()
}

fn naive_i32(a: &[u8], w: &[i8], m: usize, n: usize, k: usize) -> Vec<i32> {
    let mut c = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0i32;
            for p in 0..k {
                s += a[i * k + p] as i32 * w[j * k + p] as i32;
            }
            c[i * n + j] = s;
        }
    }
    c
}

fn uniform(r: &mut StdRng, len: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..len).map(|_| r.random_range(lo..hi)).collect()
}

/// Runs `f` inside a rayon pool with `threads` threads.
fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn reports_paths() {
    let paths = KernelPath::all_available();
    eprintln!(
        "int8 GEMM paths on this CPU: {paths:?}; block path {:?}",
        BlockPath::best()
    );
    assert!(paths.contains(&KernelPath::Portable));
    assert_eq!(KernelPath::best(), paths[0]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every available path equals the portable path, which equals a naive
    /// triple loop, bit for bit.
    #[test]
    fn gemm_paths_bit_identical(
        m in 1usize..=70, n in 1usize..=70, k in 1usize..=70,
        extreme in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let a = codes_u8(&mut r, m * k, extreme);
        let w = codes_i8(&mut r, n * k, extreme);
        let packed = PackedWeightsI8::pack(&w, n, k).unwrap();
        prop_assert_eq!(packed.unpack(), w.clone());
        let want = naive_i32(&a, &w, m, n, k);
        let mut portable = vec![0i32; m * n];
        gemm_u8i8_i32_with(KernelPath::Portable, &a, &packed, &mut portable).unwrap();
        prop_assert_eq!(&portable, &want);
        for path in KernelPath::all_available() {
            let mut got = vec![-7i32; m * n];
            gemm_u8i8_i32_with(path, &a, &packed, &mut got).unwrap();
            prop_assert_eq!(&got, &want, "path {:?}", path);
        }
    }

    /// The fused f32 and u8 epilogues equal the scalar requantisation of
    /// the i32 sums, bit for bit, on every path.
    #[test]
    fn fused_epilogues_bit_identical(
        m in 1usize..=40, n in 1usize..=70, k in 1usize..=70,
        per_channel in any::<bool>(), with_bias in any::<bool>(),
        za in any::<u8>(), zo in any::<u8>(), seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let a = codes_u8(&mut r, m * k, false);
        let w = codes_i8(&mut r, n * k, false);
        let packed = PackedWeightsI8::pack(&w, n, k).unwrap();
        let ws = uniform(&mut r, if per_channel { n } else { 1 }, 1e-4, 1e-2);
        let bias = uniform(&mut r, n, -2.0, 2.0);
        let rq = Requant {
            input: AffineU8 { scale: r.random_range(1e-3..0.1), zero_point: za },
            w_scales: &ws,
            bias: with_bias.then_some(&bias[..]),
        };
        let output = AffineU8 { scale: r.random_range(1e-3..0.2), zero_point: zo };
        let mut acc = vec![0i32; m * n];
        gemm_u8i8_i32_with(KernelPath::Portable, &a, &packed, &mut acc).unwrap();
        let mut want_f = vec![0f32; m * n];
        requantize_f32(&acc, packed.row_sums(), &rq, &mut want_f).unwrap();
        let mut want_q = vec![0u8; m * n];
        requantize_u8(&acc, packed.row_sums(), &rq, output, &mut want_q).unwrap();
        for path in KernelPath::all_available() {
            let mut got = vec![f32::NAN; m * n];
            gemm_u8i8_f32_with(path, &a, &packed, &rq, &mut got).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&got), bits(&want_f), "f32, path {:?}", path);
            let mut q = vec![0u8; m * n];
            gemm_u8i8_u8_with(path, &a, &packed, &rq, output, &mut q).unwrap();
            prop_assert_eq!(&q, &want_q, "u8, path {:?}", path);
        }
    }

    /// requantize_f32/u8 against the formula evaluated in f64.
    #[test]
    fn requantisation_matches_f64_formula(
        n in 1usize..=40, seed in any::<u64>(), za in any::<u8>(), zo in any::<u8>(),
    ) {
        let mut r = rng(seed);
        let m = 3;
        let acc: Vec<i32> = (0..m * n).map(|_| r.random_range(-3_000_000..3_000_000)).collect();
        let rs: Vec<i32> = (0..n).map(|_| r.random_range(-20_000..20_000)).collect();
        let ws = uniform(&mut r, n, 1e-4, 1e-2);
        let bias = uniform(&mut r, n, -3.0, 3.0);
        let input = AffineU8 { scale: r.random_range(1e-3..0.1), zero_point: za };
        let rq = Requant { input, w_scales: &ws, bias: Some(&bias) };
        let output = AffineU8 { scale: r.random_range(0.05..2.0), zero_point: zo };
        let mut y = vec![0f32; m * n];
        requantize_f32(&acc, &rs, &rq, &mut y).unwrap();
        let mut q = vec![0u8; m * n];
        requantize_u8(&acc, &rs, &rq, output, &mut q).unwrap();
        for i in 0..m {
            for j in 0..n {
                let c = acc[i * n + j] as f64 - za as f64 * rs[j] as f64;
                let prod = c * input.scale as f64 * ws[j] as f64;
                let y64 = prod + bias[j] as f64;
                let got = y[i * n + j] as f64;
                // f32 rounding of the conversion, s_a·s_w, the product and
                // the sum: each at most one unit roundoff.
                let tol = 4.0 * EPS * (prod.abs() + y64.abs()) + 1e-30;
                prop_assert!((got - y64).abs() <= tol, "y {} vs {} (tol {})", got, y64, tol);
                let t = y64 / output.scale as f64;
                let q64 = (t.round_ties_even() + zo as f64).clamp(0.0, 255.0);
                let qd = q[i * n + j] as f64;
                prop_assert!((qd - q64).abs() <= 1.0);
                // Away from a rounding boundary the codes agree exactly.
                if (t - t.floor() - 0.5).abs() > 1e-3 {
                    prop_assert_eq!(qd, q64, "t = {}", t);
                }
            }
        }
    }

    /// Dynamic int8 linear: same bits on every path, equal to the explicit
    /// quantise → fused GEMM pipeline, and within the derived error bound
    /// of the f64 product of the f32 inputs.
    ///
    /// With `W = s_w·q + δw` (|δw| ≤ s_w/2) and `x = s_a(A − z_a) + δa`
    /// (|δa| ≤ s_a/2), the integer sum is exact and
    /// `x·W − s_a·s_w·Σ(A − z_a)q = Σ (x·δw + δa·W − δa·δw)`, so
    /// `|y − ŷ| ≤ Σ_k (|W|·s_a/2 + |x|·s_w/2 + s_a·s_w/4)` plus the f32
    /// rounding of the epilogue (a few units of 2⁻²⁴ relative).
    #[test]
    fn dynamic_linear_within_bound(
        m in 1usize..=40, n in 1usize..=70, k in 1usize..=70,
        with_bias in any::<bool>(), seed in any::<u64>(),
        xlo in -4.0f32..0.5, xspan in 0.0f32..6.0,
    ) {
        let mut r = rng(seed);
        let x = uniform(&mut r, m * k, xlo, xlo + xspan + 1e-3);
        let wf = uniform(&mut r, n * k, -0.5, 0.5);
        let bias = uniform(&mut r, n, -1.0, 1.0);
        let bias = with_bias.then_some(&bias[..]);
        let (packed, ws) = PackedWeightsI8::from_f32_per_channel(&wf, n, k).unwrap();
        let mut y = vec![0f32; m * n];
        linear_dynamic_int8_with(KernelPath::Portable, &x, &packed, &ws, bias, &mut y).unwrap();
        for path in KernelPath::all_available() {
            let mut got = vec![0f32; m * n];
            linear_dynamic_int8_with(path, &x, &packed, &ws, bias, &mut got).unwrap();
            prop_assert!(got.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()), "path {:?}", path);
        }
        // The fused pipeline equals its parts.
        let (a, qp) = quantize_activations_u8(&x).unwrap();
        let mut parts = vec![0f32; m * n];
        let rq = Requant { input: qp, w_scales: &ws, bias };
        gemm_u8i8_f32(&a, &packed, &rq, &mut parts).unwrap();
        prop_assert!(parts.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()));
        let (sa, sw) = (qp.scale as f64, &ws);
        for i in 0..m {
            for j in 0..n {
                let (mut exact, mut bound, mut mag) = (0f64, 0f64, 0f64);
                for p in 0..k {
                    let (xv, wv) = (x[i * k + p] as f64, wf[j * k + p] as f64);
                    exact += xv * wv;
                    mag += (xv * wv).abs();
                    bound += wv.abs() * sa / 2.0 + xv.abs() * sw[j] as f64 / 2.0
                        + sa * sw[j] as f64 / 4.0;
                }
                let b = bias.map_or(0.0, |b| b[j] as f64);
                exact += b;
                let tol = bound * (1.0 + 1e-5) + 8.0 * EPS * (mag + b.abs()) + 1e-7;
                let err = (y[i * n + j] as f64 - exact).abs();
                prop_assert!(err <= tol, "[{}, {}]: err {} > bound {}", i, j, err, tol);
            }
        }
    }

    /// The SIMD activation quantiser equals the scalar rule
    /// `sat_u8(round_half_even(x·(1/s)) + z)`, tails included.
    #[test]
    fn activation_quantisation_matches_rule(len in 0usize..200, seed in any::<u64>(), lo in -10.0f32..1.0) {
        let mut r = rng(seed);
        let mut x = uniform(&mut r, len, lo, lo + 8.0);
        if len > 3 {
            x[1] = 0.0;
            x[2] = lo; // exact range ends
        }
        let (q, p) = quantize_activations_u8(&x).unwrap();
        let min = x.iter().fold(0f32, |a, &b| a.min(b));
        let max = x.iter().fold(0f32, |a, &b| a.max(b));
        prop_assert_eq!(p, choose_qparams_u8(min, max).unwrap());
        let inv = 1.0 / p.scale;
        for (&v, &c) in x.iter().zip(&q) {
            let want = ((v * inv).round_ties_even() as i32 + p.zero_point as i32).clamp(0, 255) as u8;
            prop_assert_eq!(c, want);
            prop_assert_eq!(c, p.quantize(v));
            // Within half a step of the value (range covers all of x).
            let back = p.dequantize(c) as f64;
            prop_assert!((back - v as f64).abs() <= p.scale as f64 * 0.5 * (1.0 + 1e-4) + 1e-7);
        }
    }

    /// Q4_0: GGML's rule and the round-trip bound; matvec and matmul equal
    /// the f64 product of the dequantised weights within f32 rounding;
    /// matmul row i equals matvec of row i bit for bit.
    #[test]
    fn q4_0_roundtrip_and_products(
        n in 1usize..=40, k in 1usize..=140, m in 1usize..=6, seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let w = uniform(&mut r, n * k, -1.0, 1.0);
        let q = Q4Matrix::quantize(&w, n, k).unwrap();
        let deq = q.dequantize();
        for row in 0..n {
            for b in 0..q.blocks_per_row() {
                let blk = q.block(row, b).unwrap();
                let d = blk.d.abs() as f64;
                for t in 0..QK.min(k - b * QK) {
                    let (x, y) = (w[row * k + b * QK + t] as f64, deq[row * k + b * QK + t] as f64);
                    let lim = if x / blk.d as f64 > 7.5 { d } else { d / 2.0 };
                    // Plus the f32 rounding of x·(1/d) (|x/d| ≤ 8) and of (q−8)·d.
                    let tol = lim + 8.0 * 4.0 * EPS * d + 2.0 * EPS * x.abs();
                    prop_assert!((x - y).abs() <= tol, "{} → {} (d {})", x, y, d);
                }
            }
        }
        check_products(&mut r, m, n, k, &deq, |p, x, o| matvec_q4_0_with(p, x, &q, o), |p, x, o| matmul_q4_0_with(p, x, &q, o))?;
    }

    /// Q8_0: round trip within d/2; products as for Q4_0.
    #[test]
    fn q8_0_roundtrip_and_products(
        n in 1usize..=40, k in 1usize..=140, m in 1usize..=6, seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let w = uniform(&mut r, n * k, -1.0, 1.0);
        let q = Q8Matrix::quantize(&w, n, k).unwrap();
        let deq = q.dequantize();
        for row in 0..n {
            for b in 0..q.blocks_per_row() {
                let d = q.block(row, b).unwrap().d as f64;
                for t in 0..QK.min(k - b * QK) {
                    let i = row * k + b * QK + t;
                    // x·(1/d) is rounded in f32 before rounding to a code
                    // (|x/d| ≤ 127), and q·d once more.
                    let tol = d / 2.0 + 127.0 * 4.0 * EPS * d + 2.0 * EPS * (w[i] as f64).abs();
                    prop_assert!((w[i] as f64 - deq[i] as f64).abs() <= tol);
                }
            }
        }
        check_products(&mut r, m, n, k, &deq, |p, x, o| matvec_q8_0_with(p, x, &q, o), |p, x, o| matmul_q8_0_with(p, x, &q, o))?;
    }
}

fn check_products(
    r: &mut StdRng,
    m: usize,
    n: usize,
    k: usize,
    deq: &[f32],
    matvec: impl Fn(BlockPath, &[f32], &mut [f32]) -> anneal_tensor::Result<()>,
    matmul: impl Fn(BlockPath, &[f32], &mut [f32]) -> anneal_tensor::Result<()>,
) -> Result<(), TestCaseError> {
    let x = uniform(r, m * k, -2.0, 2.0);
    for path in [BlockPath::Portable, BlockPath::Avx512] {
        if !path.available() {
            continue;
        }
        let mut mm = vec![0f32; m * n];
        matmul(path, &x, &mut mm).unwrap();
        for i in 0..m {
            let xi = &x[i * k..(i + 1) * k];
            let mut mv = vec![0f32; n];
            matvec(path, xi, &mut mv).unwrap();
            for j in 0..n {
                let (mut exact, mut mag) = (0f64, 0f64);
                for p in 0..k {
                    let t = deq[j * k + p] as f64 * xi[p] as f64;
                    exact += t;
                    mag += t.abs();
                }
                let tol = (k as f64 + 2.0) * EPS * mag + 1e-30;
                prop_assert!(
                    (mv[j] as f64 - exact).abs() <= tol,
                    "{:?} matvec [{}]: {} vs {}",
                    path,
                    j,
                    mv[j],
                    exact
                );
                prop_assert_eq!(
                    mm[i * n + j].to_bits(),
                    mv[j].to_bits(),
                    "{:?} batch ≠ matvec",
                    path
                );
            }
        }
    }
    Ok(())
}

#[test]
fn extreme_values_at_max_k() {
    // K = MAX_K with a = 255 and w = −128 (or 127): the largest sums that
    // fit in i32, on every path.
    let (m, n, k) = (3, 17, MAX_K);
    let a = vec![255u8; m * k];
    let mut w = vec![-128i8; n * k];
    w[k..2 * k].fill(127);
    let packed = PackedWeightsI8::pack(&w, n, k).unwrap();
    for path in KernelPath::all_available() {
        let mut c = vec![0i32; m * n];
        gemm_u8i8_i32_with(path, &a, &packed, &mut c).unwrap();
        for i in 0..m {
            assert_eq!(c[i * n], -255 * 128 * k as i32, "{path:?}");
            assert_eq!(c[i * n + 1], 255 * 127 * k as i32, "{path:?}");
        }
    }
    let e = PackedWeightsI8::pack(&vec![0; MAX_K + 1], 1, MAX_K + 1).unwrap_err();
    assert!(e.to_string().contains("PackedWeightsI8::pack"), "{e}");
}

#[test]
fn results_independent_of_thread_count() {
    let (m, n, k) = (67, 300, 259);
    let mut r = rng(11);
    let x = uniform(&mut r, m * k, -1.0, 3.0);
    let wf = uniform(&mut r, n * k, -0.1, 0.1);
    let (packed, ws) = PackedWeightsI8::from_f32_per_channel(&wf, n, k).unwrap();
    let q4 = Q4Matrix::quantize(&wf, n, k).unwrap();
    let run = || {
        let mut y = vec![0f32; m * n];
        linear_dynamic_int8(&x, &packed, &ws, None, &mut y).unwrap();
        let mut z = vec![0f32; m * n];
        matmul_q4_0(&x, &q4, &mut z).unwrap();
        let mut v = vec![0f32; n];
        matvec_q4_0(&x[..k], &q4, &mut v).unwrap();
        (y, z, v)
    };
    let one = with_threads(1, run);
    let two = with_threads(2, run);
    let three = with_threads(3, run);
    assert!(one == two && two == three);
}

#[test]
fn choose_qparams_known_values() {
    // PyTorch: torch._choose_qparams_per_tensor(x, reduce_range=False).
    let p = choose_qparams_u8(-1.0, 1.0).unwrap();
    assert_eq!(p.scale, (2.0f64 / 255.0) as f32);
    assert_eq!(p.zero_point, 128); // 127.5 rounds half to even
    let p = choose_qparams_u8(2.0, 5.0).unwrap(); // range widened to [0, 5]
    assert_eq!((p.scale, p.zero_point), ((5.0f64 / 255.0) as f32, 0));
    let p = choose_qparams_u8(-3.0, -1.0).unwrap(); // [−3, 0]
    assert_eq!((p.scale, p.zero_point), ((3.0f64 / 255.0) as f32, 255));
    let p = choose_qparams_u8(0.0, 0.0).unwrap(); // degenerate: scale 0.1
    assert_eq!((p.scale, p.zero_point), (0.1, 0));
    assert!(choose_qparams_u8(f32::NAN, 1.0).is_err());
}

#[test]
fn q4_0_ggml_worked_example() {
    // x = j − 16: the largest magnitude is −16, so d = −16/−8 = 2 and
    // q = min(15, ⌊x/2 + 8.5⌋).
    let x: [f32; QK] = std::array::from_fn(|j| j as f32 - 16.0);
    let b = BlockQ4_0::quantize(&x);
    assert_eq!(b.d, 2.0);
    let codes: Vec<u8> = (0..QK)
        .map(|j| {
            if j < 16 {
                b.qs[j] & 15
            } else {
                b.qs[j - 16] >> 4
            }
        })
        .collect();
    let want: Vec<u8> = (0..QK)
        .map(|j| (((j as f32 - 16.0) / 2.0 + 8.5).floor() as u8).min(15))
        .collect();
    assert_eq!(codes, want);
    assert_eq!(&codes[..4], &[0, 1, 1, 2]); // −16, −15 (half up), −14, −13
    assert_eq!(codes[31], 15); // 15/2 + 8.5 = 16 → clamped
    assert_eq!(b.dequantize()[1], -14.0);
    // Q8_0: d = 16/127, q = round_half_away(x·127/16).
    let q8 = BlockQ8_0::quantize(&x);
    assert_eq!(q8.d, 16.0 / 127.0);
    assert_eq!(q8.qs[0], -127);
    assert_eq!(q8.qs[8], -64); // −8 · 127/16 = −63.5 → −64
                               // All-zero block.
    let z = BlockQ4_0::quantize(&[0.0; QK]);
    assert_eq!(z.d, 0.0);
    assert!(z.dequantize().iter().all(|&v| v == 0.0));
}

#[test]
fn sizes_shrink() {
    let (n, k) = (64, 4096);
    let w = vec![0.5f32; n * k];
    assert_eq!(
        Q4Matrix::quantize(&w, n, k).unwrap().size_bytes(),
        n * k / 32 * 20
    );
    assert_eq!(
        Q8Matrix::quantize(&w, n, k).unwrap().size_bytes(),
        n * k / 32 * 36
    );
    let p = PackedWeightsI8::pack(&vec![1i8; n * k], n, k).unwrap();
    assert_eq!(p.size_bytes(), n * k + 4 * n);
    assert_eq!(p.row_sums(), &vec![k as i32; n][..]);
}

#[test]
fn errors_name_the_function() {
    let w = vec![1i8; 6];
    let p = PackedWeightsI8::pack(&w, 2, 3).unwrap();
    let err = |e: anneal_tensor::Error| e.to_string();
    assert!(err(PackedWeightsI8::pack(&w, 2, 4).unwrap_err())
        .starts_with("PackedWeightsI8::pack: w has 6"));
    assert!(PackedWeightsI8::pack(&[], 0, 3).is_err());
    let mut out = vec![0i32; 4];
    let e = err(gemm_u8i8_i32(&[1; 7], &p, &mut out).unwrap_err());
    assert!(
        e.starts_with("gemm_u8i8_i32:") && e.contains("k = 3"),
        "{e}"
    );
    let e = err(gemm_u8i8_i32(&[1; 9], &p, &mut out).unwrap_err());
    assert!(
        e.starts_with("gemm_u8i8_i32: out has 4") && e.contains("[3, 2]"),
        "{e}"
    );
    let rq = Requant {
        input: AffineU8 {
            scale: 0.1,
            zero_point: 3,
        },
        w_scales: &[1.0, 2.0, 3.0],
        bias: None,
    };
    let mut f = vec![0f32; 4];
    let e = err(gemm_u8i8_f32(&[1; 6], &p, &rq, &mut f).unwrap_err());
    assert!(e.contains("w_scales has 3"), "{e}");
    let bad = Requant {
        input: AffineU8 {
            scale: 0.0,
            zero_point: 0,
        },
        w_scales: &[1.0],
        bias: None,
    };
    assert!(gemm_u8i8_f32(&[1; 6], &p, &bad, &mut f).is_err());
    let e = err(
        linear_dynamic_int8(&[1.0, f32::NAN, 0.0], &p, &[1.0], None, &mut [0.0; 2]).unwrap_err(),
    );
    assert!(
        e.starts_with("linear_dynamic_int8:") && e.contains("finite"),
        "{e}"
    );
    assert!(quantize_activations_u8(&[f32::INFINITY]).is_err());
    assert!(quantize_activations_u8_into(&[1.0], &mut [0u8; 2]).is_err());
    let q = Q4Matrix::quantize(&[0.5; 6], 2, 3).unwrap();
    let e = err(matvec_q4_0(&[1.0; 4], &q, &mut [0.0; 2]).unwrap_err());
    assert!(e.starts_with("matvec_q4_0: x has 4"), "{e}");
    assert!(matmul_q4_0(&[1.0; 7], &q, &mut [0.0; 4]).is_err());
    assert!(Q8Matrix::quantize(&[f32::NAN; 6], 2, 3).is_err());
    assert!(requantize_f32(&[1; 5], &[0, 0], &rq, &mut [0.0; 5]).is_err());
    // Zero rows is not an error.
    gemm_u8i8_i32(&[], &p, &mut []).unwrap();
}

#[test]
fn large_parallel_gemm_matches_naive() {
    // Above the parallel threshold, with ragged N and K.
    let (m, n, k) = (100, 203, 301);
    let mut r = rng(5);
    let a = codes_u8(&mut r, m * k, false);
    let w = codes_i8(&mut r, n * k, false);
    let packed = PackedWeightsI8::pack(&w, n, k).unwrap();
    let want = naive_i32(&a, &w, m, n, k);
    for path in KernelPath::all_available() {
        for threads in [1, 2] {
            let mut got = vec![0i32; m * n];
            with_threads(threads, || {
                gemm_u8i8_i32_with(path, &a, &packed, &mut got).unwrap()
            });
            assert_eq!(got, want, "{path:?}, {threads} threads");
        }
    }
}

#[test]
fn epilogue_special_values_agree() {
    // NaN and huge biases: the SIMD epilogues follow the scalar rule
    // (NaN → NaN in f32, saturation to 0 or 255 in u8).
    let (m, n, k) = (5, 37, 9);
    let mut r = rng(9);
    let a = codes_u8(&mut r, m * k, true);
    let w = codes_i8(&mut r, n * k, true);
    let packed = PackedWeightsI8::pack(&w, n, k).unwrap();
    let bias: Vec<f32> = (0..n)
        .map(|j| match j % 4 {
            0 => f32::NAN,
            1 => 1e30,
            2 => -1e30,
            _ => 0.5,
        })
        .collect();
    let rq = Requant {
        input: AffineU8 {
            scale: 0.02,
            zero_point: 200,
        },
        w_scales: &[3e-3],
        bias: Some(&bias),
    };
    let output = AffineU8 {
        scale: 0.05,
        zero_point: 7,
    };
    let mut acc = vec![0i32; m * n];
    gemm_u8i8_i32(&a, &packed, &mut acc).unwrap();
    let mut want_f = vec![0f32; m * n];
    requantize_f32(&acc, packed.row_sums(), &rq, &mut want_f).unwrap();
    let mut want_q = vec![0u8; m * n];
    requantize_u8(&acc, packed.row_sums(), &rq, output, &mut want_q).unwrap();
    for (i, &q) in want_q.iter().enumerate() {
        let expect = match (i % n) % 4 {
            0 | 2 => Some(0),
            1 => Some(255),
            _ => None,
        };
        if let Some(e) = expect {
            assert_eq!(q, e, "element {i}");
        }
    }
    for path in KernelPath::all_available() {
        let mut f = vec![0f32; m * n];
        gemm_u8i8_f32_with(path, &a, &packed, &rq, &mut f).unwrap();
        for (g, w) in f.iter().zip(&want_f) {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{path:?}"
            );
        }
        let mut q = vec![0u8; m * n];
        gemm_u8i8_u8_with(path, &a, &packed, &rq, output, &mut q).unwrap();
        assert_eq!(q, want_q, "{path:?}");
    }
}

/// Issue 8's int8 problem (Linear 1024→1024, batch 64, x ~ N(0, 1),
/// W ~ 0.03·N(0, 1), as `anneal bench` runs it): our dynamic int8 error
/// must not exceed ONNX Runtime's on the same problem. ORT 1.32's
/// `quantize_dynamic` measured here (zoo/benches/pytorch_reference.py,
/// numpy inputs): max abs error 0.0595 with its defaults (per-tensor
/// weights), 0.0520 per-channel. The 0.0045 is not reachable with
/// 8-bit activations on N(0, 1) inputs: the activation step alone is
/// ≈ 9.4/255, giving an output error std of ≈ 0.035/√12·0.03·√1024 ≈ 0.0097.
#[test]
fn dynamic_int8_error_on_the_benchmark_problem_within_onnx_runtime() {
    let (m, n, k) = (64, 1024, 1024);
    let x = anneal_tensor::Tensor::<f32>::randn_seeded(&[m, k], 10).unwrap();
    let w = anneal_tensor::Tensor::<f32>::randn_seeded(&[n, k], 9)
        .unwrap()
        .mul_scalar(0.03);
    let exact = x.linear(&w, None).unwrap();
    let (packed, scales) = PackedWeightsI8::from_f32_per_channel(w.as_slice(), n, k).unwrap();
    let mut y = vec![0f32; m * n];
    linear_dynamic_int8(x.as_slice(), &packed, &scales, None, &mut y).unwrap();
    let max_err = y
        .iter()
        .zip(exact.as_slice())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("dynamic int8 max abs error {max_err}");
    assert!(
        max_err > 0.0 && max_err <= 0.0595,
        "max abs error {max_err}"
    );
}
