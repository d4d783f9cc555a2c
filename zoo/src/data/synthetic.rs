//! Synthetic sequence tasks for the sequence models: copy, reverse, sort and
//! parity over random token sequences.

use rand::{Rng, SeedableRng};

/// Which transformation the target applies to the input sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceTask {
    /// Target equals the input.
    Copy,
    /// Target is the input reversed.
    Reverse,
    /// Target is the input sorted ascending.
    Sort,
    /// Target at step t is the parity (0/1) of the number of odd tokens in `input[..=t]`.
    Parity,
}

/// `n` random sequences of `len` tokens in `0..vocab` and their targets,
/// each `[n][len]` flattened row-major. Deterministic for a seed.
pub fn sequence_task(
    task: SequenceTask,
    n: usize,
    len: usize,
    vocab: usize,
    seed: u64,
) -> crate::Result<(Vec<usize>, Vec<usize>)> {
    if vocab < 2 || len == 0 {
        return Err(crate::Error::Invalid(format!(
            "sequence task needs vocab ≥ 2 and len ≥ 1 (got vocab {vocab}, len {len})"
        )));
    }
    let too_large = || {
        crate::Error::Invalid(format!(
            "sequence task of {n} sequences of length {len} does not fit in memory"
        ))
    };
    let total = n.checked_mul(len).ok_or_else(too_large)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut inputs, mut targets) = (Vec::new(), Vec::new());
    inputs.try_reserve_exact(total).map_err(|_| too_large())?;
    targets.try_reserve_exact(total).map_err(|_| too_large())?;
    for _ in 0..n {
        let seq: Vec<usize> = (0..len).map(|_| rng.random_range(0..vocab)).collect();
        let tgt: Vec<usize> = match task {
            SequenceTask::Copy => seq.clone(),
            SequenceTask::Reverse => seq.iter().rev().copied().collect(),
            SequenceTask::Sort => {
                let mut s = seq.clone();
                s.sort_unstable();
                s
            }
            SequenceTask::Parity => seq
                .iter()
                .scan(0usize, |acc, &t| {
                    *acc ^= t & 1;
                    Some(*acc)
                })
                .collect(),
        };
        inputs.extend(seq);
        targets.extend(tgt);
    }
    Ok((inputs, targets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_do_what_they_say() {
        let (x, y) = sequence_task(SequenceTask::Reverse, 3, 5, 7, 1).unwrap();
        for r in 0..3 {
            let xs = &x[r * 5..r * 5 + 5];
            let ys: Vec<usize> = xs.iter().rev().copied().collect();
            assert_eq!(&y[r * 5..r * 5 + 5], ys.as_slice());
        }
        let (x, y) = sequence_task(SequenceTask::Parity, 1, 4, 2, 2).unwrap();
        let mut p = 0;
        for t in 0..4 {
            p ^= x[t] & 1;
            assert_eq!(y[t], p);
        }
        assert!(sequence_task(SequenceTask::Sort, 1, 0, 5, 0).is_err());
    }
}
