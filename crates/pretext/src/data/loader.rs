//! Batches of augmented views, produced on a background thread ahead of the model.
//!
//! Epoch order is a seeded shuffle and each view's randomness is seeded from
//! (seed, epoch, image, view), so a run is reproducible whatever the thread count and a resumed
//! run picks up at (epoch, step) with exactly the batches it would have seen.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::ImageSet;
use crate::views::{Image, Pipeline};

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

/// The image order of one epoch.
pub fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(&[seed, epoch as u64, 0xE90C]));
    for i in (1..len).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    order
}

/// Views of one batch: `views[v]` is `[batch, channels, height, width]` flattened.
#[derive(Debug)]
pub struct ViewBatch {
    pub views: Vec<Vec<f32>>,
    pub shapes: Vec<[usize; 4]>,
    pub epoch: usize,
    pub step_in_epoch: usize,
    /// Which images of the set the batch holds, in order (methods never see them).
    pub indices: Vec<usize>,
}

/// Produce every view of the images at `indices`.
pub fn make_views(
    data: &ImageSet,
    pipelines: &[Pipeline],
    indices: &[usize],
    seed: u64,
    epoch: usize,
) -> (Vec<Vec<f32>>, Vec<[usize; 4]>) {
    let per_image: Vec<Vec<Image>> = indices
        .par_iter()
        .map(|&idx| {
            pipelines
                .iter()
                .enumerate()
                .map(|(v, p)| {
                    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(&[
                        seed,
                        epoch as u64,
                        idx as u64,
                        v as u64,
                    ]));
                    let img =
                        Image::from_bytes(data.image(idx), data.height, data.width, data.channels);
                    p.apply(img, &mut rng)
                })
                .collect()
        })
        .collect();
    let mut views = Vec::with_capacity(pipelines.len());
    let mut shapes = Vec::with_capacity(pipelines.len());
    for v in 0..pipelines.len() {
        let first = &per_image[0][v];
        let len = first.data.len();
        let mut buf = vec![0f32; len * indices.len()];
        buf.par_chunks_mut(len)
            .zip(per_image.par_iter())
            .for_each(|(out, imgs)| imgs[v].write_chw(out));
        shapes.push([indices.len(), first.channels, first.height, first.width]);
        views.push(buf);
    }
    (views, shapes)
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

/// A background producer of batches: it walks the seeded epoch orders of a dataset of `len`
/// examples from (start epoch, start step) and hands each batch's indices to a `make` function
/// (augment images, mask text), keeping up to `prefetch` batches ahead of the consumer.
pub struct Loader<T> {
    rx: Option<Receiver<T>>,
    handle: Option<JoinHandle<()>>,
    waited: Duration,
}

impl<T: Send + 'static> Loader<T> {
    /// `make(epoch, step_in_epoch, indices)` builds one batch.
    pub fn spawn<F>(len: usize, schedule: Schedule, make: F) -> Loader<T>
    where
        F: Fn(usize, usize, &[usize]) -> T + Send + 'static,
    {
        let (tx, rx): (SyncSender<T>, _) = sync_channel(schedule.prefetch.max(1));
        let steps = schedule
            .steps_per_epoch
            .min(len / schedule.batch_size.max(1));
        let handle = std::thread::Builder::new()
            .name("pretext-loader".into())
            .spawn(move || {
                for epoch in schedule.start_epoch..schedule.epochs {
                    let order = epoch_order(len, schedule.seed, epoch);
                    let first = if epoch == schedule.start_epoch {
                        schedule.start_step
                    } else {
                        0
                    };
                    for step in first..steps {
                        let indices =
                            &order[step * schedule.batch_size..(step + 1) * schedule.batch_size];
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

/// A loader of augmented views of `data`, one view per pipeline.
pub fn view_loader(
    data: Arc<ImageSet>,
    pipelines: Arc<Vec<Pipeline>>,
    schedule: Schedule,
) -> Loader<ViewBatch> {
    let seed = schedule.seed;
    Loader::spawn(data.len(), schedule, move |epoch, step, indices| {
        let (views, shapes) = make_views(&data, &pipelines, indices, seed, epoch);
        ViewBatch {
            views,
            shapes,
            epoch,
            step_in_epoch: step,
            indices: indices.to_vec(),
        }
    })
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
    use crate::views::ViewConfig;

    fn tiny_set(n: usize) -> ImageSet {
        ImageSet {
            height: 6,
            width: 6,
            channels: 1,
            pixels: (0..n * 36).map(|i| (i % 251) as u8).collect(),
            labels: Some((0..n as u32).collect()),
            class_names: vec![],
        }
    }

    #[test]
    fn epochs_are_permutations_and_differ() {
        let a = epoch_order(50, 1, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(a, epoch_order(50, 1, 1));
        assert_eq!(a, epoch_order(50, 1, 0));
    }

    #[test]
    fn resumed_loader_yields_the_same_batches() {
        let data = Arc::new(tiny_set(20));
        let pipes = Arc::new(vec![ViewConfig::simclr().build((6, 6), &[0.5], &[0.25])]);
        let sched = Schedule {
            batch_size: 4,
            steps_per_epoch: 5,
            epochs: 2,
            start_epoch: 0,
            start_step: 0,
            prefetch: 2,
            seed: 9,
        };
        let mut full = view_loader(data.clone(), pipes.clone(), sched);
        let mut all = Vec::new();
        while let Some(b) = full.next_batch() {
            all.push(b);
        }
        assert_eq!(all.len(), 10);
        let resumed_sched = Schedule {
            start_epoch: 1,
            start_step: 2,
            ..sched
        };
        let mut resumed = view_loader(data, pipes, resumed_sched);
        let mut rest = Vec::new();
        while let Some(b) = resumed.next_batch() {
            rest.push(b);
        }
        assert_eq!(rest.len(), 3);
        for (a, b) in all[7..].iter().zip(&rest) {
            assert_eq!(a.indices, b.indices);
            assert_eq!(a.views, b.views);
        }
    }
}
