//! Stratified train/test splits of labelled examples, for evaluation in any modality.

use anyhow::{Result, bail};

use crate::core::loader::{epoch_order, mix_seed};

/// Train and test row indices, each ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// Per class, a seeded shuffle of the class's rows sends `round(n * test_fraction)` of them
/// to test, at least one and at most `n - 1` (a class of one row stays in train), the rest
/// to train. Deterministic in `seed`; independent of the other classes' sizes.
pub fn stratified_split(labels: &[u32], test_fraction: f64, seed: u64) -> Result<Split> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        bail!("test fraction {test_fraction}: must be in (0, 1)");
    }
    let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (class, rows) in by_class.iter().enumerate() {
        let n = rows.len();
        if n == 0 {
            continue;
        }
        let take = if n == 1 {
            0
        } else {
            ((n as f64 * test_fraction).round() as usize).clamp(1, n - 1)
        };
        let order = epoch_order(n, mix_seed(&[seed, class as u64, 0x5711]), 0);
        test.extend(order[..take].iter().map(|&k| rows[k]));
        train.extend(order[take..].iter().map(|&k| rows[k]));
    }
    train.sort_unstable();
    test.sort_unstable();
    Ok(Split { train, test })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stratified_and_deterministic() {
        // 50 of class 0, 20 of class 1, 1 of class 2, interleaved.
        let mut labels: Vec<u32> = (0..70).map(|i| u32::from(i % 7 < 2)).collect();
        labels.push(2);
        let split = stratified_split(&labels, 0.2, 7).unwrap();
        assert_eq!(split, stratified_split(&labels, 0.2, 7).unwrap());
        assert_ne!(split, stratified_split(&labels, 0.2, 8).unwrap());
        let count = |idx: &[usize], c: u32| idx.iter().filter(|&&i| labels[i] == c).count();
        assert_eq!((count(&split.test, 0), count(&split.train, 0)), (10, 40));
        assert_eq!((count(&split.test, 1), count(&split.train, 1)), (4, 16));
        assert_eq!((count(&split.test, 2), count(&split.train, 2)), (0, 1));
        let mut all: Vec<usize> = split.train.iter().chain(&split.test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..labels.len()).collect::<Vec<_>>(), "a partition");
        assert!(split.train.is_sorted() && split.test.is_sorted());
        assert!(stratified_split(&labels, 1.0, 0).is_err());
    }
}
