//! Image backbones on the shared frozen-feature protocols: features of every image (no
//! augmentation, batch norm in inference mode), then kNN and the linear probe.

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::prelude::*;
use rayon::prelude::*;

use super::backbones::Backbone;
use super::data::ImageSource;
use super::views::eval_pipeline;
use crate::core::config::EvalConfig;
use crate::core::eval::{Features, Labelled, Protocols, Scores, knn_accuracy, linear_probe};

/// Backbone features of every image (no augmentation; batch norm in inference mode), read and
/// decoded a chunk at a time: memory holds the features (images x dimension x 4 bytes) and one
/// chunk of images, whatever the set's size. An unreadable image stops it, naming the file.
pub fn extract(
    backbone: &Backbone,
    set: &dyn ImageSource,
    mean: &[f32],
    std: &[f32],
    device: &Device,
) -> Result<Features> {
    let model = backbone
        .valid()
        .to_device(&device.clone().without_autodiff());
    let device = device.clone().without_autodiff();
    let dim = backbone.out_dim();
    let mut values = Vec::with_capacity(set.len() * dim);
    const CHUNK: usize = 500;
    for start in (0..set.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(set.len());
        let indices: Vec<usize> = (start..end).collect();
        let x = normalized_batch(set, &indices, mean, std, &device)?;
        let f = model.forward(x).into_data().convert::<f32>();
        values.extend(f.try_to_vec::<f32>().unwrap_or_default());
    }
    Ok(Features { dim, values })
}

/// The images at `indices`, normalised with `mean` and `std` and nothing else, as one batch
/// `[indices, channels, height, width]`; every image must come at the set's size.
pub fn normalized_batch(
    set: &dyn ImageSource,
    indices: &[usize],
    mean: &[f32],
    std: &[f32],
    device: &Device,
) -> Result<Tensor<4>> {
    let pipeline = eval_pipeline(mean, std);
    let c = set.channels();
    let (h, w) = set.size();
    let mut buf = vec![0f32; indices.len() * c * h * w];
    buf.par_chunks_mut(c * h * w)
        .zip(indices.par_iter())
        .try_for_each(|(out, &i)| {
            let img = set.image(i)?;
            if (img.height, img.width) != (h, w) {
                bail!(
                    "image {i} is {}x{}, the set's size is {w}x{h}",
                    img.width,
                    img.height
                );
            }
            // The pipeline only normalises: the RNG is never drawn from.
            let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
            pipeline.apply(img, &mut rng).write_chw(out);
            Ok(())
        })?;
    Ok(Tensor::from_data(
        TensorData::new(buf, [indices.len(), c, h, w]),
        device,
    ))
}

/// Evaluate `backbone` with the chosen protocols on a labelled train/test pair.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    backbone: &Backbone,
    train: &dyn ImageSource,
    test: &dyn ImageSource,
    mean: &[f32],
    std: &[f32],
    config: &EvalConfig,
    protocols: Protocols,
    seed: u64,
    device: &Device,
) -> Result<Scores> {
    let train_labels = train.require_labels()?;
    let test_labels = test.require_labels()?;
    if (train.channels(), train.size()) != (test.channels(), test.size()) {
        bail!("train and test images differ in shape");
    }
    let classes = train.num_classes().max(test.num_classes());
    let ftrain = extract(backbone, train, mean, std, device).context("the train split")?;
    let ftest = extract(backbone, test, mean, std, device).context("the test split")?;
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
