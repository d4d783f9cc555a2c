//! A deterministic stratified train/test split.

use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Indices of the two halves of a split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Training indices.
    pub train: Vec<usize>,
    /// Test indices.
    pub test: Vec<usize>,
}

/// Splits indices so that every class keeps (to rounding) the proportion
/// `test_fraction` in the test part; shuffled with `seed`, so the same seed
/// gives the same split. Both parts are sorted.
pub fn stratified_split(labels: &[usize], test_fraction: f64, seed: u64) -> crate::Result<Split> {
    if !(0.0..=1.0).contains(&test_fraction) {
        return Err(crate::Error::Invalid(format!(
            "test fraction {test_fraction} is outside [0, 1]"
        )));
    }
    // The classes present, ascending (not `0..=max`: a label may be huge).
    let mut classes = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut split = Split {
        train: Vec::new(),
        test: Vec::new(),
    };
    for c in classes {
        let mut idx: Vec<usize> = labels
            .iter()
            .enumerate()
            .filter(|(_, &l)| l == c)
            .map(|(i, _)| i)
            .collect();
        idx.shuffle(&mut rng);
        let n_test = (idx.len() as f64 * test_fraction).round() as usize;
        split.test.extend_from_slice(&idx[..n_test]);
        split.train.extend_from_slice(&idx[n_test..]);
    }
    split.train.sort_unstable();
    split.test.sort_unstable();
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_and_reproducible() {
        let labels: Vec<usize> = (0..100).map(|i| if i < 80 { 0 } else { 1 }).collect();
        let s = stratified_split(&labels, 0.25, 3).unwrap();
        assert_eq!(s.test.len(), 25);
        assert_eq!(s.test.iter().filter(|&&i| labels[i] == 1).count(), 5);
        assert_eq!(s, stratified_split(&labels, 0.25, 3).unwrap());
        assert_ne!(s, stratified_split(&labels, 0.25, 4).unwrap());
        let mut all: Vec<usize> = s.train.iter().chain(&s.test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert!(stratified_split(&labels, 1.5, 0).is_err());
    }
}
