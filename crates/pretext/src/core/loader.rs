//! The background batch producer every job shares: a seeded shuffle per epoch, batches built
//! on a background thread ahead of the model (image views, masked text), and a resume point at
//! (epoch, step) that yields exactly the batches an uninterrupted run would have seen.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::core::train::BatchSource;

/// Mix several integers into one well-spread seed (splitmix64 finaliser).
pub fn mix_seed(parts: &[u64]) -> u64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15;
    for &p in parts {
        h ^= p
            .wrapping_add(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(h << 6)
            .wrapping_add(h >> 2);
        h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^= h >> 31;
    }
    h
}

/// The random stream of view `view` of example `item` in `epoch`: seeded from all four, so a
/// view is the same whatever thread makes it and after `--resume`.
pub fn view_rng(seed: u64, epoch: usize, item: usize, view: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix_seed(&[seed, epoch as u64, item as u64, view as u64]))
}

/// The image order of one epoch.
pub fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(&[seed, epoch as u64, 0xE90C]));
    for i in (1..len).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    order
}

/// Where the loader starts and stops.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub batch_size: usize,
    /// Batches per epoch; the examples past the last full batch sit the epoch out.
    pub steps_per_epoch: usize,
    pub epochs: usize,
    pub start_epoch: usize,
    pub start_step: usize,
    pub prefetch: usize,
    pub seed: u64,
}

impl Schedule {
    /// The schedule of a run that starts at global step `start` (0, or where a resumed run
    /// left off).
    pub fn from_step(
        start: usize,
        batch_size: usize,
        steps_per_epoch: usize,
        epochs: usize,
        prefetch: usize,
        seed: u64,
    ) -> Schedule {
        let per_epoch = steps_per_epoch.max(1);
        Schedule {
            batch_size,
            steps_per_epoch,
            epochs,
            start_epoch: start / per_epoch,
            start_step: start % per_epoch,
            prefetch,
            seed,
        }
    }
}

/// A background producer of batches: it walks the seeded epoch orders of a dataset of `len`
/// examples from (start epoch, start step) and hands each batch's indices to a `make` function
/// (augment images, mask text), keeping up to `prefetch` batches ahead of the consumer.
pub struct Loader<T> {
    rx: Option<Receiver<T>>,
    handle: Option<JoinHandle<()>>,
    waited: Duration,
}

impl<T: Send + 'static> Loader<T> {
    /// `make(epoch, step_in_epoch, indices)` builds one batch; each epoch visits the examples
    /// in a seeded random order.
    pub fn spawn<F>(len: usize, schedule: Schedule, make: F) -> Loader<T>
    where
        F: Fn(usize, usize, &[usize]) -> T + Send + 'static,
    {
        let seed = schedule.seed;
        Self::spawn_ordered(
            len,
            schedule,
            move |epoch| epoch_order(len, seed, epoch),
            make,
        )
    }

    /// As [`Self::spawn`], with each epoch's order (a permutation of `0..len`) from `order`.
    pub fn spawn_ordered<O, F>(len: usize, schedule: Schedule, order: O, make: F) -> Loader<T>
    where
        O: Fn(usize) -> Vec<usize> + Send + 'static,
        F: Fn(usize, usize, &[usize]) -> T + Send + 'static,
    {
        let (tx, rx): (SyncSender<T>, _) = sync_channel(schedule.prefetch.max(1));
        let world = crate::core::distributed::world();
        let steps = schedule
            .steps_per_epoch
            .min(len / schedule.batch_size.max(1));
        let handle = std::thread::Builder::new()
            .name("pretext-loader".into())
            .spawn(move || {
                for epoch in schedule.start_epoch..schedule.epochs {
                    let order = order(epoch);
                    let first = if epoch == schedule.start_epoch {
                        schedule.start_step
                    } else {
                        0
                    };
                    for step in first..steps {
                        let batch =
                            &order[step * schedule.batch_size..(step + 1) * schedule.batch_size];
                        // Under MPI, this rank's share of the global batch.
                        let indices = world.share(batch);
                        if tx.send(make(epoch, step, indices)).is_err() {
                            return;
                        }
                    }
                }
            })
            .ok();
        Loader {
            rx: Some(rx),
            handle,
            waited: Duration::ZERO,
        }
    }

    /// The next batch, or `None` at the end; the time spent blocked is added to [`Self::waited`].
    pub fn next_batch(&mut self) -> Option<T> {
        let start = Instant::now();
        let batch = self.rx.as_ref()?.recv().ok();
        self.waited += start.elapsed();
        batch
    }

    /// Total time the consumer spent waiting for data.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}
/// What the loader does with an example it cannot read (`data.on_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Count it, name the first few, and take the next readable example in its place.
    #[default]
    Skip,
    /// Stop the run with the file's name and the decoder's reason.
    Stop,
}

/// Example `index` as `read` gives it, or under [`OnError::Skip`] the first of the following
/// ones (wrapping round the `len` examples) that `read` can use, with the reason for each
/// passed over; under [`OnError::Stop`] the first failure, named. `what` names an example
/// ("clip", "video") in the messages.
pub fn next_usable<T>(
    len: usize,
    index: usize,
    on_error: OnError,
    what: &str,
    read: impl Fn(usize) -> Result<T>,
) -> Result<(T, Vec<String>)> {
    let mut skipped = Vec::new();
    // A set where a hundred examples in a row cannot be used is not one to train on.
    for k in 0..100.min(len) {
        match read((index + k) % len) {
            Ok(example) => return Ok((example, skipped)),
            Err(e) if on_error == OnError::Skip => skipped.push(format!("{e:#}")),
            Err(e) => return Err(e.context(stop_hint(what))),
        }
    }
    anyhow::bail!(
        "{} unusable {what}s in a row from {what} {index} on; the first: {}",
        skipped.len(),
        skipped.first().map_or("", String::as_str)
    )
}

/// What a stop under [`OnError::Stop`] says about the other choice.
pub fn stop_hint(what: &str) -> String {
    format!("data.on_error = \"stop\" (\"skip\" leaves unusable {what}s out and counts them)")
}

/// How many unreadable examples are named one by one before only the counts are said.
const NAMED_SKIPS: usize = 5;

/// What a loader says about the unreadable examples it skipped (`data.on_error = "skip"`):
/// the first few reasons, each once, and at the end of every epoch that skipped any, a count.
pub struct SkipReport {
    /// What an example is, for the messages: "image", "clip".
    what: &'static str,
    /// Skipped so far: in the current epoch, and in all.
    skipped: (usize, usize),
    /// The reasons said so far.
    named: Vec<String>,
    epoch: Option<usize>,
}

impl SkipReport {
    pub fn new(what: &'static str) -> SkipReport {
        SkipReport {
            what,
            skipped: (0, 0),
            named: Vec::new(),
            epoch: None,
        }
    }

    /// A batch of `epoch` arrived having skipped `reasons`.
    pub fn batch(&mut self, epoch: usize, reasons: Vec<String>) {
        if self.epoch != Some(epoch) {
            self.end_epoch();
            self.epoch = Some(epoch);
        }
        for reason in reasons {
            if self.named.len() < NAMED_SKIPS && !self.named.contains(&reason) {
                eprintln!("skipped: {reason}");
                self.named.push(reason);
            }
            self.skipped.0 += 1;
            self.skipped.1 += 1;
        }
    }

    /// Say the examples skipped in the epoch that just ended, if any.
    pub fn end_epoch(&mut self) {
        if let Some(epoch) = self.epoch
            && self.skipped.0 > 0
        {
            eprintln!(
                "epoch {}: skipped {} unreadable {}(s) ({} in all; data.on_error = \"skip\")",
                epoch + 1,
                self.skipped.0,
                self.what,
                self.skipped.1
            );
        }
        self.skipped.0 = 0;
    }

    /// Skipped in all so far.
    pub fn total(&self) -> usize {
        self.skipped.1
    }
}

/// One batch of views as floats: each view `shape` flattened, the batch's epoch, and the
/// unreadable examples skipped to make it.
pub struct FloatViews<const D: usize> {
    pub views: Vec<Vec<f32>>,
    pub shape: [usize; D],
    pub epoch: usize,
    pub skipped: Vec<String>,
}

/// Batches of views made on a background [`Loader`], handed to the model as tensors on its
/// device: the batch source of the audio and video jobs.
pub struct FloatViewBatches<const D: usize> {
    loader: Loader<Result<FloatViews<D>>>,
    device: Device,
    skips: SkipReport,
}

impl<const D: usize> FloatViewBatches<D> {
    /// `make(epoch, step, indices)` builds a batch of the examples at `indices` (an error
    /// stops the run); `what` names an example in the messages about skipped ones.
    pub fn spawn<F>(
        len: usize,
        schedule: Schedule,
        device: Device,
        what: &'static str,
        make: F,
    ) -> Self
    where
        F: Fn(usize, usize, &[usize]) -> Result<FloatViews<D>> + Send + 'static,
    {
        FloatViewBatches {
            loader: Loader::spawn(len, schedule, move |epoch, step, indices| {
                make(epoch, step, indices)
                    .with_context(|| format!("epoch {}, batch {}", epoch + 1, step + 1))
            }),
            device,
            skips: SkipReport::new(what),
        }
    }
}

impl<const D: usize> BatchSource for FloatViewBatches<D> {
    type Batch = Vec<Tensor<D>>;

    fn next_batch(&mut self) -> Result<Option<(Self::Batch, usize)>> {
        let Some(batch) = self.loader.next_batch() else {
            self.skips.end_epoch();
            return Ok(None);
        };
        let batch = batch?;
        self.skips.batch(batch.epoch, batch.skipped);
        let tensors = batch
            .views
            .into_iter()
            .map(|v| Tensor::from_data(TensorData::new(v, batch.shape), &self.device))
            .collect();
        Ok(Some((tensors, batch.epoch)))
    }

    fn waited(&self) -> Duration {
        self.loader.waited()
    }
}

impl<T> Drop for Loader<T> {
    fn drop(&mut self) {
        // Dropping the receiver makes the producer's next send fail, so it exits.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_permutations_and_differ() {
        let a = epoch_order(50, 1, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(a, epoch_order(50, 1, 1));
        assert_eq!(a, epoch_order(50, 1, 0));
    }
}
