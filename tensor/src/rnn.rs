//! The LSTM recurrence over a whole sequence as one kernel, with its
//! hand-written backward pass (backpropagation through time).
//!
//! The input projections `x_t·W_ihᵀ + b_ih` of every step are computed
//! beforehand by one GEMM (they do not depend on the recurrence). Each step
//! then adds `h_{t−1}·W_hhᵀ` to its gates with one GEMM, and applies the
//! non-linearities and the cell update in one pass over the gates. The
//! backward pass walks the steps in reverse with one GEMM per step for the
//! gradient of `h_{t−1}`, keeps every step's gate gradients, and forms the
//! weight gradient `dW_hh` with a single GEMM over all steps at the end.
//!
//! Everything runs on the calling thread except that last GEMM, whose
//! threaded form gives the same bits as the sequential one, so results do
//! not depend on the thread count.

use crate::element::Element;
use crate::error::{Error, Result};
use crate::matmul::{gemm_parallel, MatRef};
use crate::simd_math::{map_in_place, Func};
use crate::small_gemm::StepGemm;
use crate::Tensor;

const OP: &str = "lstm_sequence";

/// The result of [`Tensor::lstm_sequence`]: the hidden states of every step,
/// the final state, and the activations its [`backward`](Self::backward)
/// pass reuses.
#[derive(Debug, Clone)]
pub struct LstmSequence<T: Element> {
    output: Tensor<T>,
    h_n: Tensor<T>,
    c_n: Tensor<T>,
    /// Activated gates `[B, T, 4H]`: σ(i), σ(f), tanh(g), σ(o).
    gates: Vec<T>,
    /// Cell states `c_t` `[B, T, H]`.
    cells: Vec<T>,
    /// `tanh(c_t)` `[B, T, H]`.
    tanh_cells: Vec<T>,
    w_hh: Tensor<T>,
    h0: Option<Tensor<T>>,
    c0: Option<Tensor<T>>,
    reverse: bool,
}

/// Gradients from [`LstmSequence::backward`].
#[derive(Debug, Clone)]
pub struct LstmSequenceGrads<T: Element> {
    /// Gradient of the gate inputs `[B, T, 4H]` (the pre-activation gates,
    /// so also of `x·W_ihᵀ + b_ih`).
    pub gate_inputs: Tensor<T>,
    /// Gradient of `W_hh` `[4H, H]`.
    pub w_hh: Tensor<T>,
    /// Gradient of `b_hh` `[4H]`.
    pub b_hh: Tensor<T>,
    /// Gradient of the initial hidden state `[B, H]`.
    pub h0: Tensor<T>,
    /// Gradient of the initial cell state `[B, H]`.
    pub c0: Tensor<T>,
}

/// Time index of processing step `s`, and of the step before it.
#[inline]
fn step_index(s: usize, steps: usize, reverse: bool) -> (usize, Option<usize>) {
    if reverse {
        let t = steps - 1 - s;
        (t, (s > 0).then_some(t + 1))
    } else {
        (s, s.checked_sub(1))
    }
}

/// Row `read` (shared) and row `write` (mutable, `read != write`) of `len`
/// elements each from one buffer.
fn two_rows<T>(buf: &mut [T], read: usize, write: usize, len: usize) -> (&[T], &mut [T]) {
    debug_assert_ne!(read, write);
    if read < write {
        let (lo, hi) = buf.split_at_mut(write * len);
        (&lo[read * len..(read + 1) * len], &mut hi[..len])
    } else {
        let (lo, hi) = buf.split_at_mut(read * len);
        (&hi[..len], &mut lo[write * len..(write + 1) * len])
    }
}

impl<T: Element> Tensor<T> {
    /// Runs an LSTM layer (one direction) over a sequence, batch-first.
    ///
    /// `self` holds the gate inputs `x_t·W_ihᵀ + b_ih` `[B, T, 4H]`, gates
    /// in PyTorch's order i, f, g, o. Each step computes
    /// `z = self[:, t] + h_{t−1}·W_hhᵀ + b_hh`, then
    /// `c_t = σ(z_f)⊙c_{t−1} + σ(z_i)⊙tanh(z_g)` and `h_t = σ(z_o)⊙tanh(c_t)`.
    /// `h0`, `c0` `[B, H]` are the initial states (zeros when `None`).
    /// With `reverse` the steps run from `t = T − 1` down to 0 (the backward
    /// direction of a bidirectional LSTM); outputs stay in time order.
    ///
    /// # Errors
    /// When the shapes do not fit: `self` `[B, T ≥ 1, 4H]` with `H ≥ 1`,
    /// `w_hh` `[4H, H]`, `b_hh` `[4H]`, `h0` and `c0` `[B, H]`.
    pub fn lstm_sequence(
        &self,
        w_hh: &Tensor<T>,
        b_hh: Option<&Tensor<T>>,
        h0: Option<&Tensor<T>>,
        c0: Option<&Tensor<T>>,
        reverse: bool,
    ) -> Result<LstmSequence<T>> {
        let ws = w_hh.shape();
        if self.rank() != 3
            || ws.len() != 2
            || ws[1] == 0
            || ws[0] != 4 * ws[1]
            || self.shape()[2] != ws[0]
        {
            return Err(Error::shape(
                OP,
                &[self.shape(), ws],
                "expected gate inputs [B, T, 4H] and w_hh [4H, H] with H ≥ 1",
            ));
        }
        let (b, steps, g, h) = (self.shape()[0], self.shape()[1], ws[0], ws[1]);
        if steps == 0 {
            return Err(Error::shape(
                OP,
                &[self.shape()],
                "the sequence has no time steps",
            ));
        }
        if let Some(bias) = b_hh {
            if bias.shape() != [g] {
                return Err(Error::shape(
                    OP,
                    &[bias.shape(), ws],
                    format!("b_hh must have shape [{g}] for w_hh [{g}, {h}]"),
                ));
            }
        }
        for (name, s) in [("h0", h0), ("c0", c0)] {
            if let Some(s) = s {
                if s.shape() != [b, h] {
                    return Err(Error::shape(
                        OP,
                        &[s.shape(), self.shape()],
                        format!(
                            "{name} must have shape [{b}, {h}] for gate inputs [{b}, {steps}, {g}]"
                        ),
                    ));
                }
            }
        }

        let mut gates = self.to_vec();
        if let Some(bias) = b_hh {
            for row in gates.chunks_exact_mut(g) {
                for (z, &bv) in row.iter_mut().zip(bias.as_slice()) {
                    *z += bv;
                }
            }
        }
        // B = W_hhᵀ [H, 4H].
        let w = w_hh.as_slice();
        let rec = StepGemm::new(h, g, |p, j| w[j * h + p]);
        let n = b * steps * h;
        let mut out = vec![T::zero(); n];
        let mut cells = vec![T::zero(); n];
        let mut tanh_cells = vec![T::zero(); n];
        // An empty batch has nothing to compute (and no rows to address).
        for s in (0..steps).filter(|_| b > 0) {
            let (t, prev) = step_index(s, steps, reverse);
            // z_t += h_{t−1}·W_hhᵀ (skipped for a zero initial state).
            let hp = match prev {
                Some(p) => Some((out[p * h..].as_ptr(), steps * h)),
                None => h0.map(|h0| (h0.as_slice().as_ptr(), h)),
            };
            if let Some((hp, rs)) = hp {
                // SAFETY: `hp` addresses B rows of H at stride `rs` inside
                // `out` or `h0`; the gates of step t are B rows of 4H at
                // stride T·4H inside `gates`, disjoint from both.
                unsafe { rec.run(b, hp, rs, gates[t * g..].as_mut_ptr(), steps * g, true) };
            }
            for bi in 0..b {
                let z = &mut gates[(bi * steps + t) * g..][..g];
                map_in_place(Func::Sigmoid, &mut z[..2 * h]);
                map_in_place(Func::Tanh, &mut z[2 * h..3 * h]);
                map_in_place(Func::Sigmoid, &mut z[3 * h..]);
                let (zi, rest) = z.split_at(h);
                let (zf, rest) = rest.split_at(h);
                let (zg, zo) = rest.split_at(h);
                let row = bi * steps + t;
                let (c_prev, c): (Option<&[T]>, &mut [T]) = match prev {
                    Some(p) => {
                        let (r, w) = two_rows(&mut cells, bi * steps + p, row, h);
                        (Some(r), w)
                    }
                    None => (
                        c0.map(|c0| &c0.as_slice()[bi * h..(bi + 1) * h]),
                        &mut cells[row * h..(row + 1) * h],
                    ),
                };
                match c_prev {
                    Some(cp) => {
                        for j in 0..h {
                            c[j] = zf[j] * cp[j] + zi[j] * zg[j];
                        }
                    }
                    None => {
                        for j in 0..h {
                            c[j] = zi[j] * zg[j];
                        }
                    }
                }
                let tc = &mut tanh_cells[row * h..(row + 1) * h];
                tc.copy_from_slice(c);
                map_in_place(Func::Tanh, tc);
                for ((y, &o), &tcj) in out[row * h..(row + 1) * h]
                    .iter_mut()
                    .zip(zo)
                    .zip(tc.iter())
                {
                    *y = o * tcj;
                }
            }
        }
        let (last, _) = step_index(steps - 1, steps, reverse);
        let final_rows = |buf: &[T]| -> Vec<T> {
            (0..b)
                .flat_map(|bi| buf[(bi * steps + last) * h..][..h].iter().copied())
                .collect()
        };
        let h_n = Tensor::from_parts(final_rows(&out), vec![b, h]);
        let c_n = Tensor::from_parts(final_rows(&cells), vec![b, h]);
        Ok(LstmSequence {
            output: Tensor::from_parts(out, vec![b, steps, h]),
            h_n,
            c_n,
            gates,
            cells,
            tanh_cells,
            w_hh: w_hh.clone(),
            h0: h0.cloned(),
            c0: c0.cloned(),
            reverse,
        })
    }
}

impl<T: Element> LstmSequence<T> {
    /// The hidden state of every step `[B, T, H]`, in time order.
    pub fn output(&self) -> &Tensor<T> {
        &self.output
    }

    /// The hidden state after the last step processed `[B, H]` (time `T − 1`,
    /// or time 0 when reversed); the same values as that step of
    /// [`output`](Self::output).
    pub fn h_n(&self) -> &Tensor<T> {
        &self.h_n
    }

    /// The cell state after the last step processed `[B, H]`.
    pub fn c_n(&self) -> &Tensor<T> {
        &self.c_n
    }

    /// Backpropagation through time: the gradients of the gate inputs,
    /// `W_hh`, `b_hh` and the initial states, given the gradients of the
    /// outputs `d_output` `[B, T, H]` and, when they feed the loss apart from
    /// `output`, of the final states `d_h_n`, `d_c_n` `[B, H]`.
    ///
    /// # Errors
    /// When a gradient's shape differs from its value's.
    pub fn backward(
        &self,
        d_output: &Tensor<T>,
        d_h_n: Option<&Tensor<T>>,
        d_c_n: Option<&Tensor<T>>,
    ) -> Result<LstmSequenceGrads<T>> {
        let op = "lstm_sequence backward";
        let (b, steps, h) = (
            self.output.shape()[0],
            self.output.shape()[1],
            self.output.shape()[2],
        );
        let g = 4 * h;
        if d_output.shape() != self.output.shape() {
            return Err(Error::shape(
                op,
                &[d_output.shape(), self.output.shape()],
                "the output gradient must have the output's shape",
            ));
        }
        for (name, d) in [("h_n", d_h_n), ("c_n", d_c_n)] {
            if let Some(d) = d {
                if d.shape() != [b, h] {
                    return Err(Error::shape(
                        op,
                        &[d.shape(), self.h_n.shape()],
                        format!("the gradient of {name} must have its shape"),
                    ));
                }
            }
        }
        let state =
            |d: Option<&Tensor<T>>| d.map_or_else(|| vec![T::zero(); b * h], Tensor::to_vec);
        let mut dh_next = state(d_h_n);
        let mut dc_next = state(d_c_n);
        let dy = d_output.as_slice();
        let w = self.w_hh.as_slice();
        let rec = StepGemm::new(g, h, |p, j| w[p * h + j]);
        let zeros = vec![T::zero(); h];
        let mut dz = vec![T::zero(); b * steps * g];
        let one = T::one();
        for s in (0..steps).rev().filter(|_| b > 0) {
            let (t, prev) = step_index(s, steps, self.reverse);
            for bi in 0..b {
                let row = bi * steps + t;
                let z = &self.gates[row * g..][..g];
                let (zi, rest) = z.split_at(h);
                let (zf, rest) = rest.split_at(h);
                let (zg, zo) = rest.split_at(h);
                let tc = &self.tanh_cells[row * h..][..h];
                let dyr = &dy[row * h..][..h];
                let cp: &[T] = match prev {
                    Some(p) => &self.cells[(bi * steps + p) * h..][..h],
                    None => self
                        .c0
                        .as_ref()
                        .map_or(&zeros[..], |c0| &c0.as_slice()[bi * h..][..h]),
                };
                let dhn = &dh_next[bi * h..][..h];
                let dcn = &mut dc_next[bi * h..][..h];
                let dzr = &mut dz[row * g..][..g];
                let (di, rest) = dzr.split_at_mut(h);
                let (df, rest) = rest.split_at_mut(h);
                let (dg, d_o) = rest.split_at_mut(h);
                for j in 0..h {
                    let dh = dyr[j] + dhn[j];
                    let (i, f, gg, o, tcj) = (zi[j], zf[j], zg[j], zo[j], tc[j]);
                    let dc = dcn[j] + dh * o * (one - tcj * tcj);
                    di[j] = dc * gg * i * (one - i);
                    df[j] = dc * cp[j] * f * (one - f);
                    dg[j] = dc * i * (one - gg * gg);
                    d_o[j] = dh * tcj * o * (one - o);
                    dcn[j] = dc * f;
                }
            }
            // dh_{t−1} = dz_t·W_hh: [B, 4H]·[4H, H] (at s = 0, dh0).
            // SAFETY: dz rows of step t are B rows of 4H at stride T·4H;
            // dh_next is B×H and disjoint from them.
            unsafe {
                rec.run(
                    b,
                    dz[t * g..].as_ptr(),
                    steps * g,
                    dh_next.as_mut_ptr(),
                    h,
                    false,
                )
            };
        }
        // The hidden state each step started from, aligned with dz's rows.
        let mut h_prev = vec![T::zero(); b * steps * h];
        let out = self.output.as_slice();
        for bi in 0..b {
            for s in 0..steps {
                let (t, prev) = step_index(s, steps, self.reverse);
                let dst = &mut h_prev[(bi * steps + t) * h..][..h];
                match prev {
                    Some(p) => dst.copy_from_slice(&out[(bi * steps + p) * h..][..h]),
                    None => {
                        if let Some(h0) = &self.h0 {
                            dst.copy_from_slice(&h0.as_slice()[bi * h..][..h]);
                        }
                    }
                }
            }
        }
        // dW_hhᵀ = Σ_t h_{t−1}ᵀ·dz_t: one GEMM [H, B·T]·[B·T, 4H] (the
        // transposed operand is the narrower one), then transposed.
        let mut dwt = vec![T::zero(); h * g];
        let hp = MatRef {
            ptr: h_prev.as_ptr(),
            rs: 1,
            cs: h as isize,
        };
        let dzm = MatRef {
            ptr: dz.as_ptr(),
            rs: g as isize,
            cs: 1,
        };
        // SAFETY: `hp` is the H×(B·T) transpose of h_prev, `dzm` is (B·T)×4H.
        unsafe { gemm_parallel(h, b * steps, g, one, hp, dzm, T::zero(), &mut dwt) };
        let mut dw = vec![T::zero(); g * h];
        for (p, row) in dwt.chunks_exact(g).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                dw[j * h + p] = v;
            }
        }
        let mut db = vec![T::zero(); g];
        for row in dz.chunks_exact(g) {
            for (acc, &v) in db.iter_mut().zip(row) {
                *acc += v;
            }
        }
        Ok(LstmSequenceGrads {
            gate_inputs: Tensor::from_parts(dz, vec![b, steps, g]),
            w_hh: Tensor::from_parts(dw, vec![g, h]),
            b_hh: Tensor::from_parts(db, vec![g]),
            h0: Tensor::from_parts(dh_next, vec![b, h]),
            c0: Tensor::from_parts(dc_next, vec![b, h]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// The textbook recurrence, one scalar at a time: (output, c_n).
    fn reference(
        gi: &Tensor<f64>,
        w: &Tensor<f64>,
        bias: Option<&Tensor<f64>>,
        h0: Option<&Tensor<f64>>,
        c0: Option<&Tensor<f64>>,
        reverse: bool,
    ) -> (Vec<f64>, Vec<f64>) {
        let (b, steps, g) = (gi.shape()[0], gi.shape()[1], gi.shape()[2]);
        let h = g / 4;
        let (gi, w) = (gi.as_slice(), w.as_slice());
        let mut out = vec![0.0; b * steps * h];
        let mut c_n = vec![0.0; b * h];
        for bi in 0..b {
            let mut hs = h0.map_or(vec![0.0; h], |t| t.as_slice()[bi * h..][..h].to_vec());
            let mut cs = c0.map_or(vec![0.0; h], |t| t.as_slice()[bi * h..][..h].to_vec());
            for s in 0..steps {
                let t = if reverse { steps - 1 - s } else { s };
                let z: Vec<f64> = (0..g)
                    .map(|r| {
                        let rec: f64 = (0..h).map(|p| w[r * h + p] * hs[p]).sum();
                        gi[(bi * steps + t) * g + r] + rec + bias.map_or(0.0, |v| v.as_slice()[r])
                    })
                    .collect();
                for j in 0..h {
                    let (i, f) = (sig(z[j]), sig(z[h + j]));
                    let (gg, o) = (z[2 * h + j].tanh(), sig(z[3 * h + j]));
                    cs[j] = f * cs[j] + i * gg;
                    hs[j] = o * cs[j].tanh();
                    out[(bi * steps + t) * h + j] = hs[j];
                }
            }
            c_n[bi * h..][..h].copy_from_slice(&cs);
        }
        (out, c_n)
    }

    fn randn(shape: &[usize], seed: u64, scale: f64) -> Tensor<f64> {
        Tensor::<f64>::randn_seeded(shape, seed)
            .unwrap()
            .mul_scalar(scale)
    }

    fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    }

    #[test]
    fn forward_matches_the_textbook_recurrence() {
        let (b, steps, h) = (3, 5, 4);
        let gi = randn(&[b, steps, 4 * h], 1, 1.0);
        let w = randn(&[4 * h, h], 2, 0.5);
        let bias = randn(&[4 * h], 3, 0.5);
        let h0 = randn(&[b, h], 4, 0.5);
        let c0 = randn(&[b, h], 5, 0.5);
        for reverse in [false, true] {
            for (bias, h0, c0) in [
                (None, None, None),
                (Some(&bias), Some(&h0), Some(&c0)),
                (Some(&bias), None, Some(&c0)),
            ] {
                let seq = gi.lstm_sequence(&w, bias, h0, c0, reverse).unwrap();
                let (out, c_n) = reference(&gi, &w, bias, h0, c0, reverse);
                assert!(close(seq.output().as_slice(), &out, 1e-14));
                assert!(close(seq.c_n().as_slice(), &c_n, 1e-14));
                let last = if reverse { 0 } else { steps - 1 };
                let h_n: Vec<f64> = (0..b)
                    .flat_map(|bi| seq.output().as_slice()[(bi * steps + last) * h..][..h].to_vec())
                    .collect();
                assert_eq!(seq.h_n().as_slice(), &h_n[..]);
            }
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (b, steps, h) = (2, 4, 3);
        let gi = randn(&[b, steps, 4 * h], 11, 1.0);
        let w = randn(&[4 * h, h], 12, 0.5);
        let bias = randn(&[4 * h], 13, 0.5);
        let h0 = randn(&[b, h], 14, 0.5);
        let c0 = randn(&[b, h], 15, 0.5);
        // Loss = Σ u⊙output + Σ v⊙h_n + Σ q⊙c_n.
        let u = randn(&[b, steps, h], 16, 1.0);
        let v = randn(&[b, h], 17, 1.0);
        let q = randn(&[b, h], 18, 1.0);
        let dot = |a: &Tensor<f64>, b: &Tensor<f64>| -> f64 {
            a.as_slice()
                .iter()
                .zip(b.as_slice())
                .map(|(x, y)| x * y)
                .sum()
        };
        for reverse in [false, true] {
            let loss = |a: &[Tensor<f64>]| -> f64 {
                let s = a[0]
                    .lstm_sequence(&a[1], Some(&a[2]), Some(&a[3]), Some(&a[4]), reverse)
                    .unwrap();
                dot(s.output(), &u) + dot(s.h_n(), &v) + dot(s.c_n(), &q)
            };
            let seq = gi
                .lstm_sequence(&w, Some(&bias), Some(&h0), Some(&c0), reverse)
                .unwrap();
            let d = seq.backward(&u, Some(&v), Some(&q)).unwrap();
            let eps = 1e-6;
            let check = |which: usize, analytic: &Tensor<f64>| {
                let base = [&gi, &w, &bias, &h0, &c0];
                for k in 0..analytic.numel() {
                    let bump = |delta: f64| {
                        let mut args: Vec<Tensor<f64>> =
                            base.iter().map(|t| (*t).clone()).collect();
                        args[which].data_mut()[k] += delta;
                        loss(&args)
                    };
                    let numeric = (bump(eps) - bump(-eps)) / (2.0 * eps);
                    let a = analytic.as_slice()[k];
                    assert!(
                        (numeric - a).abs() <= 1e-7 * (1.0 + a.abs()),
                        "input {which} element {k} (reverse {reverse}): {a} vs {numeric}"
                    );
                }
            };
            check(0, &d.gate_inputs);
            check(1, &d.w_hh);
            check(2, &d.b_hh);
            check(3, &d.h0);
            check(4, &d.c0);
        }
    }

    #[test]
    fn f32_kernel_agrees_with_f64_on_ragged_sizes() {
        // Batch 13 = 8 + 4 + 1 rows, H = 20: 80 gate columns = 2 panels + 16.
        let (b, steps, h) = (13, 6, 20);
        let gi = randn(&[b, steps, 4 * h], 21, 1.0);
        let w = randn(&[4 * h, h], 22, 0.3);
        let h0 = randn(&[b, h], 23, 0.5);
        let f = |t: &Tensor<f64>| t.map(|x| x as f32);
        for reverse in [false, true] {
            let s64 = gi
                .lstm_sequence(&w, None, Some(&h0), None, reverse)
                .unwrap();
            let s32 = f(&gi)
                .lstm_sequence(&f(&w), None, Some(&f(&h0)), None, reverse)
                .unwrap();
            let up = |t: &Tensor<f32>| t.as_slice().iter().map(|&x| x as f64).collect::<Vec<_>>();
            assert!(close(&up(s32.output()), s64.output().as_slice(), 1e-5));
            let dy = randn(&[b, steps, h], 24, 1.0);
            let d64 = s64.backward(&dy, None, None).unwrap();
            let d32 = s32.backward(&f(&dy), None, None).unwrap();
            assert!(close(
                &up(&d32.gate_inputs),
                d64.gate_inputs.as_slice(),
                1e-4
            ));
            assert!(close(&up(&d32.w_hh), d64.w_hh.as_slice(), 1e-3));
            assert!(close(&up(&d32.h0), d64.h0.as_slice(), 1e-4));
        }
    }

    #[test]
    fn shape_errors_name_the_op() {
        let gi = Tensor::<f32>::zeros(&[2, 3, 8]).unwrap();
        let w = Tensor::<f32>::zeros(&[8, 2]).unwrap();
        let e = gi
            .lstm_sequence(&Tensor::zeros(&[8, 3]).unwrap(), None, None, None, false)
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("lstm_sequence: [2, 3, 8] × [8, 3]"),
            "{e}"
        );
        let e = Tensor::<f32>::zeros(&[2, 0, 8])
            .unwrap()
            .lstm_sequence(&w, None, None, None, false)
            .unwrap_err();
        assert!(e.to_string().contains("no time steps"), "{e}");
        let bad = Tensor::<f32>::zeros(&[3, 2]).unwrap();
        let e = gi
            .lstm_sequence(&w, None, Some(&bad), None, false)
            .unwrap_err();
        assert!(e.to_string().contains("h0 must have shape [2, 2]"), "{e}");
        let seq = gi.lstm_sequence(&w, None, None, None, false).unwrap();
        assert!(seq.backward(&bad, None, None).is_err());
        let dy = Tensor::<f32>::zeros(&[2, 3, 2]).unwrap();
        assert!(seq.backward(&dy, None, Some(&bad)).is_err());
        // An empty batch is fine.
        let empty = Tensor::<f32>::zeros(&[0, 3, 8]).unwrap();
        let s = empty.lstm_sequence(&w, None, None, None, false).unwrap();
        assert_eq!(s.output().shape(), &[0, 3, 2]);
    }
}
