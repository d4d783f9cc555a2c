//! Shape arithmetic: element counts, strides, axis normalisation and NumPy
//! broadcasting.

use crate::error::{fmt_shape, Error, Result};

/// An axis argument: non-negative counts from the front, negative from the
/// back (`-1` is the last axis), as in NumPy and PyTorch.
pub trait Dim: Copy {
    /// The axis as a signed offset.
    fn as_isize(self) -> isize;
}

macro_rules! impl_dim {
    ($($t:ty),*) => { $(impl Dim for $t {
        #[inline]
        fn as_isize(self) -> isize { self as isize }
    })* };
}
impl_dim!(i32, i64, isize, usize, u32);

/// Resolves `axis` against `rank`, or reports it out of range for `op`.
pub fn normalize_axis<D: Dim>(op: &'static str, axis: D, rank: usize) -> Result<usize> {
    let a = axis.as_isize();
    let r = rank as isize;
    let resolved = if a < 0 { a + r } else { a };
    if resolved < 0 || resolved >= r {
        return Err(Error::AxisOutOfRange { op, axis: a, rank });
    }
    Ok(resolved as usize)
}

/// Resolves a set of axes; duplicates are an error. The result is sorted.
pub fn normalize_axes<D: Dim>(op: &'static str, axes: &[D], rank: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = normalize_axis(op, a, rank)?;
        if out.contains(&n) {
            return Err(Error::invalid(
                op,
                format!("axis {n} appears more than once"),
            ));
        }
        out.push(n);
    }
    out.sort_unstable();
    Ok(out)
}

/// The number of elements of `shape`, or [`Error::TooLarge`] on overflow.
pub fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    let mut n: usize = 1;
    for &d in shape {
        n = n.checked_mul(d).ok_or_else(|| Error::TooLarge {
            op,
            shape: shape.to_vec(),
        })?;
    }
    // A Vec cannot hold more than isize::MAX bytes; refuse early.
    if n > (isize::MAX as usize) / 8 {
        return Err(Error::TooLarge {
            op,
            shape: shape.to_vec(),
        });
    }
    Ok(n)
}

/// Row-major (C-order) strides of `shape`, in elements.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1usize;
    for i in (0..shape.len()).rev() {
        strides[i] = acc;
        acc = acc.saturating_mul(shape[i]);
    }
    strides
}

/// The broadcast shape of `a` and `b` under NumPy's rule: align trailing
/// axes; each pair must be equal or contain a 1.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::shape(
                op,
                &[a, b],
                format!(
                    "cannot broadcast: axis {} has sizes {da} and {db}",
                    i as isize - rank as isize
                ),
            ));
        };
    }
    Ok(out)
}

/// Strides (in elements) for reading a tensor of shape `from` as if it had the
/// broadcast shape `to`: broadcast axes get stride 0. `from` must broadcast
/// to `to` (checked by the caller).
pub(crate) fn broadcast_strides(from: &[usize], to: &[usize]) -> Vec<usize> {
    let src = contiguous_strides(from);
    let offset = to.len() - from.len();
    (0..to.len())
        .map(|i| {
            if i < offset || from[i - offset] == 1 {
                0
            } else {
                src[i - offset]
            }
        })
        .collect()
}

/// Checks that `from` broadcasts to exactly `to`.
pub(crate) fn check_broadcast_to(op: &'static str, from: &[usize], to: &[usize]) -> Result<()> {
    if from.len() > to.len() {
        return Err(Error::shape(
            op,
            &[from, to],
            format!("cannot broadcast rank {} to rank {}", from.len(), to.len()),
        ));
    }
    let offset = to.len() - from.len();
    for (i, &d) in from.iter().enumerate() {
        if d != 1 && d != to[i + offset] {
            return Err(Error::shape(
                op,
                &[from, to],
                format!(
                    "axis {i} has size {d}, which is neither 1 nor {}",
                    to[i + offset]
                ),
            ));
        }
    }
    Ok(())
}

/// Formats a shape as `[2, 3]` (public for the crates built on this one).
pub fn shape_to_string(shape: &[usize]) -> String {
    fmt_shape(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_rule() {
        assert_eq!(
            broadcast_shapes("t", &[3, 1, 5], &[4, 1]).unwrap(),
            vec![3, 4, 5]
        );
        assert_eq!(broadcast_shapes("t", &[], &[2]).unwrap(), vec![2]);
        assert_eq!(broadcast_shapes("t", &[0, 1], &[1, 3]).unwrap(), vec![0, 3]);
        let e = broadcast_shapes("add", &[2, 3], &[4, 3]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "add: [2, 3] × [4, 3]: cannot broadcast: axis -2 has sizes 2 and 4"
        );
    }

    #[test]
    fn axes() {
        assert_eq!(normalize_axis("t", -1, 3).unwrap(), 2);
        assert!(normalize_axis("t", 3, 3).is_err());
        assert!(normalize_axis("t", -4, 3).is_err());
        assert!(normalize_axis("t", 0, 0).is_err());
        assert!(normalize_axes("t", &[0, -3], 3).is_err());
        assert_eq!(normalize_axes("t", &[2, 0], 3).unwrap(), vec![0, 2]);
    }

    #[test]
    fn overflow_is_an_error() {
        assert!(matches!(
            checked_numel("t", &[usize::MAX, 2]),
            Err(Error::TooLarge { .. })
        ));
        assert_eq!(checked_numel("t", &[]).unwrap(), 1);
        assert_eq!(checked_numel("t", &[3, 0]).unwrap(), 0);
    }
}
