//! The graph machinery: how gradients flow through shared and reused nodes,
//! what `no_grad`, `detach` and frozen parameters cut off, deep graphs,
//! memory release, error cases of `backward`, accumulation of gradients and
//! the failure report of `gradcheck`.
//!
//! Every reference value is derived by hand in the comment beside it.

use anneal_autograd::{gradcheck, is_grad_enabled, no_grad, Gradients, Param, Var};
use anneal_tensor::Tensor;

fn t(data: &[f64], shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(data.to_vec(), shape).unwrap()
}

fn leaf(data: &[f64], shape: &[usize]) -> Var<f64> {
    Var::leaf(t(data, shape))
}

#[track_caller]
fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "length: got {got:?}, want {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "element {i}: got {g}, want {w} (all: got {got:?}, want {want:?})"
        );
    }
}

// ---------------------------------------------------------------------------
// Shared and reused nodes
// ---------------------------------------------------------------------------

/// y = a·b with a = x + 1 and b = 2x: y = 2x² + 2x, dy/dx = 4x + 2.
/// Both paths from y reach x, so their contributions must add:
/// ∂y/∂a·∂a/∂x + ∂y/∂b·∂b/∂x = b·1 + a·2 = 2x + 2(x + 1) = 4x + 2.
#[test]
fn diamond() {
    let x = leaf(&[3.0], &[]);
    let a = x.add_scalar(1.0);
    let b = x.mul_scalar(2.0);
    let y = a.mul(&b).unwrap();
    // y(3) = 4·6 = 24.
    assert_close(y.value().as_slice(), &[24.0], 0.0);
    let g = y.backward().unwrap();
    // 4·3 + 2 = 14.
    assert_close(g.wrt(&x).unwrap().as_slice(), &[14.0], 1e-15);

    // Element-wise over a vector with a sum on top: ∂/∂xᵢ = 4xᵢ + 2.
    let x = leaf(&[1.0, -2.0, 0.5], &[3]);
    let y = x
        .add_scalar(1.0)
        .mul(&x.mul_scalar(2.0))
        .unwrap()
        .sum_all()
        .unwrap();
    let g = y.backward().unwrap();
    assert_close(g.wrt(&x).unwrap().as_slice(), &[6.0, -6.0, 4.0], 1e-15);
}

/// x used five times: y = x·x·x·x·x = x⁵, dy/dx = 5x⁴; at x = 2 that is 80.
/// And z = x + x + x + x + x = 5x, dz/dx = 5.
#[test]
fn value_reused_five_times() {
    let x = leaf(&[2.0], &[]);
    let mut y = x.clone();
    for _ in 0..4 {
        y = y.mul(&x).unwrap();
    }
    assert_close(y.value().as_slice(), &[32.0], 0.0);
    let g = y.backward().unwrap();
    assert_close(g.wrt(&x).unwrap().as_slice(), &[80.0], 1e-15);

    let mut z = x.clone();
    for _ in 0..4 {
        z = z.add(&x).unwrap();
    }
    let g = z.backward().unwrap();
    assert_close(g.wrt(&x).unwrap().as_slice(), &[5.0], 0.0);

    // All five uses in one op each, on a vector, mixed ops:
    // w = x² + sin(x)·x + eˣ  (x appears 5 times)
    // dw/dx = 2x + cos(x)·x + sin(x) + eˣ.
    let xs = [0.3, -1.2, 2.0];
    let x = leaf(&xs, &[3]);
    let w = x
        .mul(&x)
        .unwrap()
        .add(&x.sin().mul(&x).unwrap())
        .unwrap()
        .add(&x.exp())
        .unwrap();
    let g = w.backward_with(Tensor::ones(&[3]).unwrap()).unwrap();
    let want: Vec<f64> = xs
        .iter()
        .map(|&x: &f64| 2.0 * x + x.cos() * x + x.sin() + x.exp())
        .collect();
    assert_close(g.wrt(&x).unwrap().as_slice(), &want, 1e-14);
}

/// One leaf feeding two independent graphs: y₁ = Σx² (∂ = 2x) and
/// y₂ = Σ3x (∂ = 3). Each backward gives its own gradient, and running one
/// does not leak into the other (no accumulation inside the leaf).
#[test]
fn var_in_two_graphs() {
    let x = leaf(&[1.0, 2.0], &[2]);
    let y1 = x.square().sum_all().unwrap();
    let y2 = x.mul_scalar(3.0).sum_all().unwrap();
    let g1 = y1.backward().unwrap();
    let g2 = y2.backward().unwrap();
    assert_close(g1.wrt(&x).unwrap().as_slice(), &[2.0, 4.0], 0.0);
    assert_close(g2.wrt(&x).unwrap().as_slice(), &[3.0, 3.0], 0.0);
    // The graph survives a backward: a second pass gives the same numbers.
    let g1_again = y1.backward().unwrap();
    assert_close(g1_again.wrt(&x).unwrap().as_slice(), &[2.0, 4.0], 0.0);
    // The first store is unchanged by the later passes.
    assert_close(g1.wrt(&x).unwrap().as_slice(), &[2.0, 4.0], 0.0);
}

/// A parameter whose leaf is made twice in one graph: y = Σ p·p from two
/// `p.var()` calls; both leaves carry the same ParamId, so the gradient is
/// 2p, reported once.
#[test]
fn param_used_through_two_leaves_accumulates() {
    let p = Param::new(t(&[1.5, -2.0], &[2]));
    let y = p.var().mul(&p.var()).unwrap().sum_all().unwrap();
    let g = y.backward().unwrap();
    assert_eq!(g.len(), 1);
    assert_close(g.get(&p).unwrap().as_slice(), &[3.0, -4.0], 0.0);
    // `get_by_id` and `wrt` read the same entry.
    assert_close(g.get_by_id(p.id()).unwrap().as_slice(), &[3.0, -4.0], 0.0);
    assert_close(g.wrt(&p.var()).unwrap().as_slice(), &[3.0, -4.0], 0.0);
}

/// Cloning a Param gives a fresh identity: gradients of the clone are not
/// the original's.
#[test]
fn cloned_param_has_its_own_gradient() {
    let p = Param::new(t(&[1.0, 2.0], &[2]));
    let q = p.clone();
    assert_ne!(p.id(), q.id());
    // y = Σ(2p + 5q): ∂/∂p = 2, ∂/∂q = 5.
    let y = p
        .var()
        .mul_scalar(2.0)
        .add(&q.var().mul_scalar(5.0))
        .unwrap()
        .sum_all()
        .unwrap();
    let g = y.backward().unwrap();
    assert_close(g.get(&p).unwrap().as_slice(), &[2.0, 2.0], 0.0);
    assert_close(g.get(&q).unwrap().as_slice(), &[5.0, 5.0], 0.0);
}

/// The output itself is a leaf: d x / d x = 1.
#[test]
fn backward_of_a_leaf_is_one() {
    let x = leaf(&[7.0], &[]);
    let g = x.backward().unwrap();
    assert_close(g.wrt(&x).unwrap().as_slice(), &[1.0], 0.0);
}

// ---------------------------------------------------------------------------
// What records nothing
// ---------------------------------------------------------------------------

#[test]
fn no_grad_records_nothing() {
    let x = leaf(&[1.0, 2.0, 3.0], &[3]);
    let p = Param::new(t(&[0.5, 0.5, 0.5], &[3]));
    assert!(x.requires_grad());
    let (y, inner_leaf, inner_param) = no_grad(|| {
        assert!(!is_grad_enabled());
        let y = x.mul(&p.var()).unwrap().tanh().sum_all().unwrap();
        (y, Var::leaf(t(&[1.0], &[1])), p.var())
    });
    assert!(is_grad_enabled());
    assert!(!y.requires_grad());
    // Inside no_grad a leaf is a constant and a parameter's var records nothing.
    assert!(!inner_leaf.requires_grad());
    assert!(!inner_param.requires_grad());
    // The value is still computed: Σ tanh(0.5·xᵢ).
    let want: f64 = [1.0f64, 2.0, 3.0].iter().map(|x| (0.5 * x).tanh()).sum();
    assert_close(y.value().as_slice(), &[want], 1e-15);
    // Backward from it: no gradients at all.
    let g = y.backward().unwrap();
    assert!(g.is_empty());
    assert!(g.wrt(&x).is_none());
    assert!(g.get(&p).is_none());

    // Ops after no_grad record again.
    let z = x.mul(&p.var()).unwrap().sum_all().unwrap();
    assert!(z.requires_grad());
    let g = z.backward().unwrap();
    // ∂/∂x = p = 0.5, ∂/∂p = x.
    assert_close(g.wrt(&x).unwrap().as_slice(), &[0.5, 0.5, 0.5], 0.0);
    assert_close(g.get(&p).unwrap().as_slice(), &[1.0, 2.0, 3.0], 0.0);
}

#[test]
fn no_grad_nests_and_restores() {
    let x = leaf(&[2.0], &[]);
    assert!(is_grad_enabled());
    let r = no_grad(|| {
        assert!(!is_grad_enabled());
        let inner = no_grad(|| {
            assert!(!is_grad_enabled());
            x.square()
        });
        // Leaving the inner scope keeps the outer one in force.
        assert!(!is_grad_enabled());
        assert!(!inner.requires_grad());
        let after_inner = x.exp();
        assert!(!after_inner.requires_grad());
        42
    });
    assert_eq!(r, 42);
    assert!(is_grad_enabled());
    assert!(x.square().requires_grad());

    // A panic inside no_grad still restores recording.
    let caught = std::panic::catch_unwind(|| no_grad(|| panic!("inside no_grad")));
    assert!(caught.is_err());
    assert!(is_grad_enabled());
}

/// no_grad is per thread: a thread spawned from inside it records.
#[test]
fn no_grad_does_not_leak_into_other_threads() {
    no_grad(|| {
        let other = std::thread::spawn(|| {
            let x = Var::leaf(Tensor::<f64>::scalar(1.0));
            (is_grad_enabled(), x.exp().requires_grad())
        })
        .join()
        .unwrap();
        assert_eq!(other, (true, true));
        assert!(!is_grad_enabled());
    });
}

/// A parameter that does not reach the loss has no entry: `None`, not zeros.
#[test]
fn unused_param_has_no_gradient() {
    let used = Param::new(t(&[1.0, 2.0], &[2]));
    let unused = Param::new(t(&[3.0, 4.0], &[2]));
    let cut = Param::new(t(&[5.0, 6.0], &[2]));
    let _dangling = unused.var().square(); // in a graph, but not the loss's
                                           // loss = Σ used² + Σ detach(cut): ∂/∂used = 2·used; cut is cut off.
    let loss = used
        .var()
        .square()
        .add(&cut.var().detach())
        .unwrap()
        .sum_all()
        .unwrap();
    let g = loss.backward().unwrap();
    assert_eq!(g.len(), 1);
    assert_close(g.get(&used).unwrap().as_slice(), &[2.0, 4.0], 0.0);
    assert!(g.get(&unused).is_none());
    assert!(g.get(&cut).is_none());
    assert_eq!(g.iter().count(), 1);
    assert_eq!(g.iter().next().unwrap().0, used.id());
}

/// A frozen parameter (set_requires_grad(false)) gets no gradient; the
/// others are unaffected. Unfreezing brings it back.
#[test]
fn frozen_param_gets_no_gradient() {
    let mut w = Param::new(t(&[2.0, 3.0], &[2]));
    let b = Param::new(t(&[1.0, 1.0], &[2]));
    w.set_requires_grad(false);
    assert!(!w.requires_grad());
    assert!(!w.var().requires_grad());
    let x = Var::constant(t(&[10.0, 20.0], &[2]));
    // loss = Σ (w·x + b)²; ∂/∂b = 2(w·x + b) = 2·[21, 61] = [42, 122].
    let loss = |w: &Param<f64>| {
        w.var()
            .mul(&x)
            .unwrap()
            .add(&b.var())
            .unwrap()
            .square()
            .sum_all()
            .unwrap()
    };
    let g = loss(&w).backward().unwrap();
    assert!(g.get(&w).is_none());
    assert_close(g.get(&b).unwrap().as_slice(), &[42.0, 122.0], 0.0);

    // Unfrozen: ∂/∂w = 2(w·x + b)·x = [42·10, 122·20] = [420, 2440].
    w.set_requires_grad(true);
    let g = loss(&w).backward().unwrap();
    assert_close(g.get(&w).unwrap().as_slice(), &[420.0, 2440.0], 0.0);

    // All parameters frozen: the loss needs no gradient and backward is empty.
    let mut only = Param::new(t(&[1.0], &[1]));
    only.set_requires_grad(false);
    let l = only.var().square().sum_all().unwrap();
    assert!(!l.requires_grad());
    assert!(l.backward().unwrap().is_empty());
}

/// `detach` stops gradients: y = x·detach(x) has dy/dx = detach(x) = x, not 2x.
#[test]
fn detach_stops_gradients() {
    let x = leaf(&[3.0, -1.0], &[2]);
    let d = x.detach();
    assert!(!d.requires_grad());
    assert_eq!(d.value().as_slice(), x.value().as_slice());
    let y = x.mul(&d).unwrap().sum_all().unwrap();
    let g = y.backward().unwrap();
    assert_close(g.wrt(&x).unwrap().as_slice(), &[3.0, -1.0], 0.0);
    // A graph made only of detached values records nothing.
    let z = d.exp().sum_all().unwrap();
    assert!(!z.requires_grad());
    assert!(z.backward().unwrap().wrt(&x).is_none());
}

#[test]
fn constants_get_no_gradient() {
    let x = leaf(&[2.0], &[1]);
    let c = Var::constant(t(&[5.0], &[1]));
    let from: Var<f64> = t(&[7.0], &[1]).into();
    assert!(!c.requires_grad());
    assert!(!from.requires_grad());
    assert_eq!(c.op_name(), "constant");
    assert_eq!(x.op_name(), "leaf");
    // y = x·c + from: ∂/∂x = c = 5.
    let y = x.mul(&c).unwrap().add(&from).unwrap().sum_all().unwrap();
    let g = y.backward().unwrap();
    assert_close(g.wrt(&x).unwrap().as_slice(), &[5.0], 0.0);
    assert!(g.wrt(&c).is_none());
    assert!(g.wrt(&from).is_none());
}

// ---------------------------------------------------------------------------
// Deep graphs and memory
// ---------------------------------------------------------------------------

const SMALL_STACK: usize = 256 * 1024;

/// Runs `f` on a thread with a 256 KiB stack: a recursive walk or drop of a
/// 10,000-node graph would overflow it.
fn on_small_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

/// Builds vₖ₊₁ = vₖ + 0.001·tanh(vₖ) for `steps` steps (three ops each:
/// tanh, mul_scalar, add), starting from the leaf `x`.
fn ladder(x: &Var<f64>, steps: usize) -> Var<f64> {
    let mut v = x.clone();
    for _ in 0..steps {
        v = v.add(&v.tanh().mul_scalar(0.001)).unwrap();
    }
    v
}

/// 3,334 steps = 10,002 ops. The reference comes from forward-mode
/// differentiation in plain f64: with v' = v + 0.001·tanh v,
/// dv'/dx = dv/dx · (1 + 0.001·(1 − tanh² v)).
#[test]
fn chain_of_ten_thousand_ops_backward_and_drop() {
    const STEPS: usize = 3_334;
    let (value, grad, want_value, want_grad) = on_small_stack(|| {
        let x = Var::leaf(Tensor::<f64>::scalar(0.5));
        let y = ladder(&x, STEPS);
        let g = y.backward().unwrap();
        let (mut v, mut d) = (0.5f64, 1.0f64);
        for _ in 0..STEPS {
            let th = v.tanh();
            d *= 1.0 + 0.001 * (1.0 - th * th);
            v += 0.001 * th;
        }
        let value = y.value().item().unwrap();
        let grad = g.wrt(&x).unwrap().item().unwrap();
        drop(y); // iterative drop of the whole chain, on the small stack
        drop(g);
        (value, grad, v, d)
    });
    assert!((value - want_value).abs() <= 1e-12 * want_value.abs());
    assert!((grad - want_grad).abs() <= 1e-12 * want_grad.abs());
}

/// A 10,000-op chain of scalar ops alone: backward gives the product of the
/// factors, dropping it needs no deep recursion.
/// y = ((x·1.0001) + 0.5)… repeated 5,000 times: dy/dx = 1.0001⁵⁰⁰⁰.
#[test]
fn chain_of_scalar_ops_and_drop_without_backward() {
    let (grad, dropped_ok) = on_small_stack(|| {
        let x = Var::leaf(Tensor::<f64>::scalar(1.0));
        let mut y = x.clone();
        for _ in 0..5_000 {
            y = y.mul_scalar(1.0001).add_scalar(0.5);
        }
        let grad = y.backward().unwrap().wrt(&x).unwrap().item().unwrap();
        // A second chain, dropped without ever running backward.
        let mut z = x.clone();
        for _ in 0..10_000 {
            z = z.tanh();
        }
        drop(z);
        (grad, true)
    });
    let want = 1.0001f64.powi(5_000);
    assert!((grad - want).abs() <= 1e-12 * want);
    assert!(dropped_ok);
}

/// Tensors captured by a graph for backward are released when the last
/// `Var` of the graph is dropped.
#[test]
fn graph_memory_is_released() {
    let captured = t(&[1.0, 2.0, 3.0], &[3]);
    assert!(captured.is_unique());
    let x = leaf(&[0.5, 0.5, 0.5], &[3]);
    // `mul` keeps both operand values for its backward.
    let y = x
        .mul(&Var::constant(captured.clone()))
        .unwrap()
        .exp()
        .sum_all()
        .unwrap();
    assert!(!captured.is_unique());
    drop(y);
    assert!(captured.is_unique(), "graph still holds the tensor");
    // The leaf is untouched and still usable.
    assert!(x.requires_grad());

    // The same through a leaf's own value and a long chain, freed on a
    // small stack.
    let released = on_small_stack(|| {
        let value = t(&[0.25, -0.25], &[2]);
        let x = Var::leaf(value.clone());
        let mut y = x.clone();
        for _ in 0..10_000 {
            y = y.sin();
        }
        drop(x);
        let held = !value.is_unique();
        drop(y);
        (held, value.is_unique())
    });
    assert_eq!(released, (true, true));

    // Gradients do not keep the graph alive either.
    let captured = t(&[4.0], &[1]);
    let x = leaf(&[2.0], &[1]);
    let y = x
        .mul(&Var::constant(captured.clone()))
        .unwrap()
        .sum_all()
        .unwrap();
    let g = y.backward().unwrap();
    drop(y);
    assert!(captured.is_unique());
    // ∂(4x)/∂x = 4.
    assert_close(g.wrt(&x).unwrap().as_slice(), &[4.0], 0.0);
}

// ---------------------------------------------------------------------------
// backward's contract
// ---------------------------------------------------------------------------

#[test]
fn backward_of_non_scalar_is_an_error() {
    let x = leaf(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let y = x.mul_scalar(2.0);
    let err = y.backward().unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.op(), "backward");
    assert!(msg.contains("backward"), "{msg}");
    assert!(msg.contains("[2, 3]"), "{msg}");

    // With an explicit output gradient G: ∂⟨G, 2x⟩/∂x = 2G.
    let g = y
        .backward_with(t(&[1.0, 0.0, -1.0, 0.5, 2.0, 3.0], &[2, 3]))
        .unwrap();
    assert_close(
        g.wrt(&x).unwrap().as_slice(),
        &[2.0, 0.0, -2.0, 1.0, 4.0, 6.0],
        0.0,
    );
    assert_eq!(g.wrt(&x).unwrap().shape(), &[2, 3]);

    // A wrongly shaped gradient is an error naming backward and both shapes.
    let err = y
        .backward_with(t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]))
        .unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.op(), "backward");
    assert!(msg.contains("[2, 3]") && msg.contains("[3, 2]"), "{msg}");

    // A one-element output of rank 2 counts as a scalar.
    let s = leaf(&[3.0], &[1, 1]);
    let g = s.square().backward().unwrap();
    // d(s²)/ds = 2s = 6.
    assert_close(g.wrt(&s).unwrap().as_slice(), &[6.0], 0.0);
}

/// `Gradients::accumulate` adds up two passes (micro-batches):
/// L₁ = Σ p·a, L₂ = Σ p·b ⇒ ∂L₁/∂p + ∂L₂/∂p = a + b.
#[test]
fn gradients_accumulate_over_two_passes() {
    let p = Param::new(t(&[1.0, 1.0, 1.0], &[3]));
    let q = Param::new(t(&[2.0], &[1]));
    let a = Var::constant(t(&[1.0, 2.0, 3.0], &[3]));
    let b = Var::constant(t(&[10.0, 20.0, 30.0], &[3]));
    let x = leaf(&[4.0], &[1]);
    // L₁ also depends on q and the leaf x: + q·x, ∂/∂q = x = 4, ∂/∂x = q = 2.
    let l1 = p
        .var()
        .mul(&a)
        .unwrap()
        .sum_all()
        .unwrap()
        .add(&q.var().mul(&x).unwrap().sum_all().unwrap())
        .unwrap();
    // L₂ = Σ p·b + 3x: ∂/∂x = 3; q does not appear.
    let l2 = p
        .var()
        .mul(&b)
        .unwrap()
        .sum_all()
        .unwrap()
        .add(&x.mul_scalar(3.0).sum_all().unwrap())
        .unwrap();
    let mut acc = l1.backward().unwrap();
    let g2 = l2.backward().unwrap();
    acc.accumulate(&g2).unwrap();
    assert_close(acc.get(&p).unwrap().as_slice(), &[11.0, 22.0, 33.0], 0.0);
    assert_close(acc.get(&q).unwrap().as_slice(), &[4.0], 0.0);
    assert_close(acc.wrt(&x).unwrap().as_slice(), &[5.0], 0.0);
    // g2 itself is unchanged.
    assert_close(g2.get(&p).unwrap().as_slice(), &[10.0, 20.0, 30.0], 0.0);
    assert!(g2.get(&q).is_none());

    // Accumulating into an empty store copies.
    let mut empty = Gradients::new();
    empty.accumulate(&g2).unwrap();
    assert_close(empty.get(&p).unwrap().as_slice(), &[10.0, 20.0, 30.0], 0.0);
    assert_eq!(empty.len(), 1);
}

/// insert / remove / iter_mut edit the store (for clipping and the like).
#[test]
fn gradients_store_edits() {
    let p = Param::new(t(&[1.0, -1.0], &[2]));
    // ∂(Σ 3p)/∂p = 3.
    let mut g = p
        .var()
        .mul_scalar(3.0)
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (_, grad) in g.iter_mut() {
        *grad = grad.mul_scalar(0.5);
    }
    assert_close(g.get(&p).unwrap().as_slice(), &[1.5, 1.5], 0.0);
    g.insert(p.id(), t(&[7.0, 8.0], &[2]));
    assert_close(g.get(&p).unwrap().as_slice(), &[7.0, 8.0], 0.0);
    let removed = g.remove(p.id()).unwrap();
    assert_close(removed.as_slice(), &[7.0, 8.0], 0.0);
    assert!(g.get(&p).is_none());
    assert!(g.is_empty());
}

// ---------------------------------------------------------------------------
// gradcheck reports failures
// ---------------------------------------------------------------------------

/// f(x, z) = x ⊙ (z ⊙ detach(z)). Its forward is x·z², but the analytic
/// gradient with respect to z misses the term through the detached copy:
/// analytic ∂/∂zₖ = rₖ·xₖ·zₖ while the numeric one is 2·rₖ·xₖ·zₖ (r is
/// gradcheck's projection direction). The gradient with respect to x is
/// right (rₖ·zₖ²), so the failure must name input 1, and at the reported
/// element numeric = 2·analytic.
#[test]
fn gradcheck_reports_a_wrong_gradient() {
    let x = t(&[1.0, -2.0, 0.5, 3.0], &[4]);
    let z = t(&[2.0, 1.5, -1.0, 0.75], &[4]);
    let report = gradcheck(
        |v| v[0].mul(&v[1].mul(&v[1].detach())?),
        &[x.clone(), z.clone()],
        1e-6,
        1e-5,
    )
    .unwrap();
    let failure = report.unwrap_err();
    assert_eq!(failure.op, "mul");
    assert_eq!(failure.input, 1);
    assert!(failure.index < 4);
    assert!(failure.analytic.abs() > 1e-3);
    assert!(
        (failure.numeric - 2.0 * failure.analytic).abs() <= 1e-6 * failure.numeric.abs().max(1.0),
        "{failure}"
    );
    let msg = failure.to_string();
    assert!(msg.contains("gradcheck of mul"), "{msg}");
    assert!(msg.contains("input 1"), "{msg}");
    assert!(msg.contains(&format!("element {}", failure.index)), "{msg}");

    // The honest version of the same function passes.
    let ok = gradcheck(
        |v| v[0].mul(&v[1].mul(&v[1])?),
        &[x.clone(), z.clone()],
        1e-6,
        1e-5,
    )
    .unwrap();
    assert!(ok.is_ok());

    // A gradient that is missing entirely (the output never reaches z
    // through the graph) is reported as analytic 0.
    let report = gradcheck(
        |v| v[0].mul(&v[1].detach().exp()),
        &[x.clone(), z.clone()],
        1e-6,
        1e-5,
    )
    .unwrap();
    let failure = report.unwrap_err();
    assert_eq!(failure.input, 1);
    assert_eq!(failure.analytic, 0.0);
    assert!(failure.numeric.abs() > 1e-3);
}

#[test]
fn gradcheck_rejects_bad_arguments_and_failing_forwards() {
    let x = t(&[1.0, 2.0], &[2]);
    // eps must be positive, tol non-negative.
    assert!(gradcheck(|v| Ok(v[0].exp()), std::slice::from_ref(&x), 0.0, 1e-5).is_err());
    assert!(gradcheck(|v| Ok(v[0].exp()), std::slice::from_ref(&x), 1e-6, -1.0).is_err());
    // An error inside f is passed through as Err, not as a failure report.
    let y = t(&[1.0, 2.0, 3.0], &[3]);
    let err = gradcheck(|v| v[0].add(&v[1]), &[x.clone(), y], 1e-6, 1e-5).unwrap_err();
    assert_eq!(err.op(), "add");
    // A function that ignores its input has zero gradient both ways.
    let r = gradcheck(|_| Ok(Var::constant(t(&[1.0], &[1]))), &[x], 1e-6, 1e-5).unwrap();
    assert!(r.is_ok());
}

/// 1-D·1-D matmul is a dot product: rank 0, value Σ aᵢbᵢ, ∂/∂a = b, ∂/∂b = a.
#[test]
fn vector_dot_product() {
    let a = Var::leaf(Tensor::from_vec(vec![1.0f64, 2.0], &[2]).unwrap());
    let b = Var::leaf(Tensor::from_vec(vec![3.0f64, 4.0], &[2]).unwrap());
    let y = a.matmul(&b).unwrap();
    assert_eq!(y.shape(), &[] as &[usize]);
    assert_eq!(y.value().item().unwrap(), 11.0);
    let g = y.backward().unwrap();
    assert_eq!(g.wrt(&a).unwrap().to_vec(), vec![3.0, 4.0]);
    assert_eq!(g.wrt(&b).unwrap().to_vec(), vec![1.0, 2.0]);
}
