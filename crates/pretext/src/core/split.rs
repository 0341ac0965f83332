//! Stratified splits of labelled examples, for evaluation in any modality: train/test splits,
//! and the nested labelled subsets of a label-efficiency study.

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

/// The labelled rows of one fraction of a label-efficiency study, with a validation part
/// carved from them for early stopping (the test split stays untouched until the end).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelSubset {
    pub fraction: f64,
    /// Rows to train on, ascending.
    pub train: Vec<usize>,
    /// Rows held out of `train` to choose the epoch, ascending (empty when a class has too few
    /// rows to spare one).
    pub validation: Vec<usize>,
}

/// Per class, one seeded order of the class's rows; fraction `f` labels its first
/// `round(n_class * f)` rows, so the subsets are stratified and nested (the 1% subset lies
/// inside the 10% one) and the same for every arm that uses the same seed. Of each class's
/// labelled rows, `round(n * validation_fraction)` (none when that would leave fewer than two
/// for training) form the validation part. A fraction outside (0, 1], or one that leaves a class
/// without a labelled row, is an error naming the class and its count.
pub fn label_subsets(
    labels: &[u32],
    class_names: &[String],
    fractions: &[f64],
    validation_fraction: f64,
    seed: u64,
) -> Result<Vec<LabelSubset>> {
    if labels.is_empty() {
        bail!("no labelled rows");
    }
    if !(0.0..1.0).contains(&validation_fraction) {
        bail!("validation fraction {validation_fraction}: must be in [0, 1)");
    }
    let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let orders: Vec<Vec<usize>> = by_class
        .iter()
        .enumerate()
        .map(|(class, rows)| {
            let order = epoch_order(rows.len(), mix_seed(&[seed, class as u64, 0x1ABE1]), 0);
            order.into_iter().map(|k| rows[k]).collect()
        })
        .collect();
    let name = |class: usize| {
        class_names.get(class).map_or_else(
            || format!("class {class}"),
            |n| format!("class {class} ({n})"),
        )
    };
    let mut subsets = Vec::with_capacity(fractions.len());
    for &fraction in fractions {
        if !(fraction > 0.0 && fraction <= 1.0) {
            bail!("fraction {fraction}: must be in (0, 1]");
        }
        let (mut train, mut validation) = (Vec::new(), Vec::new());
        for (class, order) in orders.iter().enumerate() {
            if order.is_empty() {
                continue;
            }
            let take = (order.len() as f64 * fraction).round() as usize;
            if take == 0 {
                bail!(
                    "fraction {fraction} leaves {} without a labelled example (it has {} in all; \
                     the smallest usable fraction is {:.4})",
                    name(class),
                    order.len(),
                    0.5 / order.len() as f64
                );
            }
            let held = (take as f64 * validation_fraction).round() as usize;
            let held = if take - held.min(take) < 2 { 0 } else { held };
            validation.extend(&order[..held]);
            train.extend(&order[held..take]);
        }
        train.sort_unstable();
        validation.sort_unstable();
        subsets.push(LabelSubset {
            fraction,
            train,
            validation,
        });
    }
    Ok(subsets)
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

    #[test]
    fn label_subsets_are_stratified_nested_and_seeded() {
        // 300 of class 0, 100 of class 1, interleaved.
        let labels: Vec<u32> = (0..400).map(|i| u32::from(i % 4 == 0)).collect();
        let names = vec!["shirt".to_string(), "bag".to_string()];
        let subsets = label_subsets(&labels, &names, &[0.05, 0.2, 1.0], 0.1, 3).unwrap();
        let count = |idx: &[usize], c: u32| idx.iter().filter(|&&i| labels[i] == c).count();
        let all = |s: &LabelSubset| {
            let mut v: Vec<usize> = s.train.iter().chain(&s.validation).copied().collect();
            v.sort_unstable();
            v
        };
        // 5%: 15 + 5 labelled rows; 10% of each class held for validation (2 and 0 -> 1).
        let small = &subsets[0];
        assert_eq!((count(&all(small), 0), count(&all(small), 1)), (15, 5));
        assert_eq!(
            (count(&small.validation, 0), count(&small.validation, 1)),
            (2, 1)
        );
        assert_eq!(
            all(&subsets[2]),
            (0..400).collect::<Vec<_>>(),
            "100% is every row"
        );
        for pair in subsets.windows(2) {
            let bigger = all(&pair[1]);
            assert!(
                all(&pair[0])
                    .iter()
                    .all(|i| bigger.binary_search(i).is_ok()),
                "nested"
            );
        }
        assert!(
            small
                .train
                .iter()
                .all(|i| small.validation.binary_search(i).is_err())
        );
        assert_eq!(
            subsets,
            label_subsets(&labels, &names, &[0.05, 0.2, 1.0], 0.1, 3).unwrap()
        );
        assert_ne!(
            subsets,
            label_subsets(&labels, &names, &[0.05, 0.2, 1.0], 0.1, 4).unwrap()
        );

        let err = label_subsets(&labels, &names, &[0.004], 0.1, 3)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("class 1 (bag)") && err.contains("100"),
            "{err}"
        );
        for bad in [0.0, 1.5, -0.1, f64::NAN] {
            let err = label_subsets(&labels, &names, &[bad], 0.1, 3)
                .unwrap_err()
                .to_string();
            assert!(err.contains("(0, 1]"), "{err}");
        }
    }
}
