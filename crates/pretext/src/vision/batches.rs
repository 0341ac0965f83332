//! Batches of augmented views for image methods, built on the shared [`Loader`].
//!
//! Each view's randomness is seeded from (seed, epoch, image, view), so a run is reproducible
//! whatever the thread count, and a resumed run sees exactly the views it would have seen.

use std::sync::Arc;
use std::time::Duration;

use burn::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::data::ImageSet;
use super::views::{Image, Pipeline};
use crate::core::loader::{Loader, Schedule, mix_seed};
use crate::core::train::BatchSource;

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

/// Image views from the background [`Loader`], as the tensors a method takes.
pub struct ViewBatches {
    pub loader: Loader<ViewBatch>,
    pub device: Device,
}

impl BatchSource for ViewBatches {
    type Batch = Vec<Tensor<4>>;

    fn next_batch(&mut self) -> Option<(Self::Batch, usize)> {
        let batch = self.loader.next_batch()?;
        let tensors = batch
            .views
            .into_iter()
            .zip(&batch.shapes)
            .map(|(v, s)| Tensor::from_data(TensorData::new(v, *s), &self.device))
            .collect();
        Some((tensors, batch.epoch))
    }

    fn waited(&self) -> Duration {
        self.loader.waited()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::views::ViewConfig;

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
