//! Image backbones on the shared frozen-feature protocols: features of every image (no
//! augmentation, batch norm in inference mode), then kNN and the linear probe.

use anyhow::{Result, bail};
use burn::module::Module;
use burn::prelude::*;
use rayon::prelude::*;

use super::backbones::Backbone;
use super::data::ImageSet;
use super::views::{Image, eval_pipeline};
use crate::core::config::EvalConfig;
use crate::core::eval::{Features, Labelled, Protocols, Scores, knn_accuracy, linear_probe};

/// Backbone features of every image (no augmentation; batch norm in inference mode).
pub fn extract(
    backbone: &Backbone,
    set: &ImageSet,
    mean: &[f32],
    std: &[f32],
    device: &Device,
) -> Features {
    let model = backbone
        .valid()
        .to_device(&device.clone().without_autodiff());
    let device = device.clone().without_autodiff();
    let pipeline = eval_pipeline(mean, std);
    let (c, h, w) = (set.channels, set.height, set.width);
    let dim = backbone.out_dim();
    let mut values = Vec::with_capacity(set.len() * dim);
    const CHUNK: usize = 500;
    for start in (0..set.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(set.len());
        let mut buf = vec![0f32; (end - start) * c * h * w];
        buf.par_chunks_mut(c * h * w)
            .enumerate()
            .for_each(|(i, out)| {
                let img = Image::from_bytes(set.image(start + i), h, w, c);
                let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
                pipeline.apply(img, &mut rng).write_chw(out);
            });
        let x = Tensor::<4>::from_data(TensorData::new(buf, [end - start, c, h, w]), &device);
        let f = model.forward(x).into_data().convert::<f32>();
        values.extend(f.try_to_vec::<f32>().unwrap_or_default());
    }
    Features { dim, values }
}

/// Evaluate `backbone` with the chosen protocols on a labelled train/test pair.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    backbone: &Backbone,
    train: &ImageSet,
    test: &ImageSet,
    mean: &[f32],
    std: &[f32],
    config: &EvalConfig,
    protocols: Protocols,
    seed: u64,
    device: &Device,
) -> Result<Scores> {
    let train_labels = train.require_labels()?;
    let test_labels = test.require_labels()?;
    if (train.channels, train.height, train.width) != (test.channels, test.height, test.width) {
        bail!("train and test images differ in shape");
    }
    let classes = train.num_classes().max(test.num_classes());
    let ftrain = extract(backbone, train, mean, std, device);
    let ftest = extract(backbone, test, mean, std, device);
    let train = Labelled::new(&ftrain, train_labels);
    let test = Labelled::new(&ftest, test_labels);
    let knn = protocols
        .knn
        .then(|| knn_accuracy(train, test, classes, config.knn_k, config.knn_temperature));
    let linear = if protocols.linear {
        Some(linear_probe(train, test, classes, config, seed, device)?)
    } else {
        None
    };
    Ok(Scores { knn, linear })
}
