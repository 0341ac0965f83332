//! Evaluation on frozen features of any modality: weighted kNN and a linear probe over a
//! [`Features`] matrix with one label per row. Each modality turns its data into features
//! (image backbones, text encoders) and hands them here.

use crate::core::losses::cross_entropy;
use anyhow::{Result, bail};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::prelude::*;
use rayon::prelude::*;
use serde::Serialize;

use crate::core::config::EvalConfig;
use crate::core::loader::epoch_order;
use crate::core::optim::{OptimConfig, Optimizer, cosine_lr};

/// Features `[n, dim]` as a flat row-major buffer.
#[derive(Debug, Clone)]
pub struct Features {
    pub dim: usize,
    pub values: Vec<f32>,
}

impl Features {
    pub fn len(&self) -> usize {
        self.values.len() / self.dim.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    /// The rows at `idx`, in that order.
    pub fn rows(&self, idx: &[usize]) -> Features {
        let mut values = Vec::with_capacity(idx.len() * self.dim);
        for &i in idx {
            values.extend_from_slice(self.row(i));
        }
        Features {
            dim: self.dim,
            values,
        }
    }

    /// Rows scaled to unit length.
    pub fn normalized(&self) -> Features {
        let mut values = self.values.clone();
        values.par_chunks_mut(self.dim).for_each(|r| {
            let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            r.iter_mut().for_each(|v| *v /= n);
        });
        Features {
            dim: self.dim,
            values,
        }
    }
}

/// Features with one label per row.
#[derive(Debug, Clone, Copy)]
pub struct Labelled<'a> {
    pub features: &'a Features,
    pub labels: &'a [u32],
}

impl<'a> Labelled<'a> {
    pub fn new(features: &'a Features, labels: &'a [u32]) -> Self {
        Labelled { features, labels }
    }
}

/// Weighted kNN (Wu et al. 2018, as lightly and solo-learn report it): cosine similarity to
/// every training feature, the `k` nearest vote with weight `exp(sim / temperature)`.
pub fn knn_accuracy(
    train: Labelled,
    test: Labelled,
    classes: usize,
    k: usize,
    temperature: f64,
) -> f64 {
    let (train_labels, test_labels) = (train.labels, test.labels);
    let train = train.features.normalized();
    let test = test.features.normalized();
    let k = k.min(train.len());
    let correct: usize = (0..test.len())
        .into_par_iter()
        .map(|i| {
            let q = test.row(i);
            let mut sims: Vec<(f32, u32)> = (0..train.len())
                .map(|j| (dot(q, train.row(j)), train_labels[j]))
                .collect();
            sims.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
            let mut votes = vec![0f64; classes];
            for &(s, l) in &sims[..k] {
                votes[l as usize] += (s as f64 / temperature).exp();
            }
            let pred = argmax(&votes);
            usize::from(pred == test_labels[i] as usize)
        })
        .sum();
    correct as f64 / test.len().max(1) as f64
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv { (i, x) } else { (bi, bv) }
        })
        .0
}

/// Logistic regression on L2-normalised frozen features, trained with AdamW and a cosine
/// schedule; returns the predicted class of every test row.
pub fn linear_probe_predictions(
    train: Labelled,
    test: Labelled,
    classes: usize,
    config: &EvalConfig,
    seed: u64,
    device: &Device,
) -> Result<Vec<u32>> {
    if train.features.is_empty() || test.features.is_empty() {
        bail!("linear probe needs non-empty train and test features");
    }
    let train_labels = train.labels;
    let ad = device.clone().autodiff();
    device.seed(seed);
    let (train, test) = (train.features.normalized(), test.features.normalized());
    let dim = train.dim;
    let mut model: Linear = LinearConfig::new(dim, classes).init(&ad);
    let mut opt = Optimizer::new(OptimConfig {
        kind: "adamw".into(),
        lr: config.linear_lr,
        weight_decay: config.linear_weight_decay,
        warmup_epochs: 0.0,
        ..OptimConfig::default()
    });
    let batch = config.linear_batch_size.min(train.len()).max(1);
    let steps_per_epoch = train.len().div_ceil(batch);
    let epochs = config
        .linear_epochs
        .max(config.linear_min_steps.div_ceil(steps_per_epoch));
    let total = steps_per_epoch * epochs;
    let mut step = 0;
    for epoch in 0..epochs {
        let order = epoch_order(train.len(), seed ^ 0x11AE, epoch);
        for chunk in order.chunks(batch) {
            let mut x = Vec::with_capacity(chunk.len() * dim);
            let mut y = Vec::with_capacity(chunk.len());
            for &i in chunk {
                x.extend_from_slice(train.row(i));
                y.push(train_labels[i] as i64);
            }
            let x = Tensor::<2>::from_data(TensorData::new(x, [chunk.len(), dim]), &ad);
            let y = Tensor::<1, Int>::from_data(TensorData::new(y, [chunk.len()]), &ad);
            let loss = cross_entropy(model.forward(x), y);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = opt.step(model, grads, cosine_lr(config.linear_lr, step, 0, total));
            step += 1;
        }
    }
    let plain = device.clone().without_autodiff();
    let model = model.valid().to_device(&plain);
    let x = Tensor::<2>::from_data(
        TensorData::new(test.values.clone(), [test.len(), dim]),
        &plain,
    );
    let pred = model
        .forward(x)
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .unwrap_or_default();
    Ok(pred.into_iter().map(|p| p as u32).collect())
}

/// Test accuracy of [`linear_probe_predictions`].
pub fn linear_probe(
    train: Labelled,
    test: Labelled,
    classes: usize,
    config: &EvalConfig,
    seed: u64,
    device: &Device,
) -> Result<f64> {
    let pred = linear_probe_predictions(train, test, classes, config, seed, device)?;
    let correct = pred.iter().zip(test.labels).filter(|(p, l)| p == l).count();
    Ok(correct as f64 / pred.len().max(1) as f64)
}

/// `matrix[true][predicted]` counts.
pub fn confusion_matrix(predicted: &[u32], labels: &[u32], classes: usize) -> Vec<Vec<usize>> {
    let mut m = vec![vec![0; classes]; classes];
    for (&p, &l) in predicted.iter().zip(labels) {
        if (l as usize) < classes && (p as usize) < classes {
            m[l as usize][p as usize] += 1;
        }
    }
    m
}

/// The first test image of each class, in class order, until `rows` are chosen.
pub fn first_of_each_class(labels: &[u32], rows: usize) -> Vec<usize> {
    let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    let mut picked: Vec<usize> = (0..classes as u32)
        .filter_map(|c| labels.iter().position(|&l| l == c))
        .take(rows)
        .collect();
    picked.sort_unstable();
    picked
}

/// The `k` training rows most cosine-similar to `query`, best first.
pub fn nearest_rows(train: &Features, query: &[f32], k: usize) -> Vec<usize> {
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    let q = norm(query);
    let mut sims: Vec<(f32, usize)> = (0..train.len())
        .map(|j| {
            let r = train.row(j);
            let dot: f32 = r.iter().zip(query).map(|(a, b)| a * b).sum();
            (dot / (norm(r) * q), j)
        })
        .collect();
    sims.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    sims.into_iter().take(k).map(|(_, j)| j).collect()
}

/// kNN and linear-probe accuracy of one backbone.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Scores {
    pub knn: Option<f64>,
    pub linear: Option<f64>,
}

/// Which protocols to run.
#[derive(Debug, Clone, Copy)]
pub struct Protocols {
    pub knn: bool,
    pub linear: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knn_votes_by_nearest_neighbours() {
        // Two clusters on the unit circle; queries near each.
        let train = Features {
            dim: 2,
            values: vec![1.0, 0.1, 1.0, -0.1, -0.1, 1.0, 0.1, 1.0],
        };
        let test = Features {
            dim: 2,
            values: vec![0.9, 0.0, 0.0, 0.8],
        };
        let tr = Labelled {
            features: &train,
            labels: &[0, 0, 1, 1],
        };
        let acc = knn_accuracy(
            tr,
            Labelled {
                features: &test,
                labels: &[0, 1],
            },
            2,
            2,
            0.1,
        );
        assert_eq!(acc, 1.0);
        let wrong = knn_accuracy(
            tr,
            Labelled {
                features: &test,
                labels: &[1, 0],
            },
            2,
            2,
            0.1,
        );
        assert_eq!(wrong, 0.0);
    }

    #[test]
    fn linear_probe_separates_separable_data() {
        let mut values = Vec::new();
        let mut labels = Vec::new();
        for i in 0..60 {
            let class = i % 3;
            let angle = class as f32 * 2.0 + (i as f32 * 0.01);
            values.extend([angle.cos(), angle.sin(), 0.1]);
            labels.push(class as u32);
        }
        let f = Features { dim: 3, values };
        let cfg = EvalConfig {
            linear_epochs: 40,
            linear_lr: 0.05,
            ..EvalConfig::default()
        };
        let data = Labelled {
            features: &f,
            labels: &labels,
        };
        let acc = linear_probe(data, data, 3, &cfg, 0, &Device::flex()).unwrap();
        assert!(acc > 0.95, "accuracy {acc}");
    }
}
