//! The report of an image run (`pretext report RUN`): the shared run sections, then what the
//! pretrained backbone's features show on the data: a 2-D map of the test embeddings, test
//! images beside their nearest training images, and the linear probe's confusion matrix.

use std::path::Path;

use anyhow::Result;
use burn::prelude::*;
use image::{Rgb, RgbImage};

use super::checkpoint::ImageCheckpoint;
use super::config::PretrainConfig;
use super::data::source::limited;
use super::data::{ImageSource, SourceSplits};
use super::eval::extract;
use super::reconstruct::reconstruction_grid;
use crate::core::eval::{Features, first_of_each_class, nearest_rows};
use crate::core::html::{Page, png_img};
use crate::core::run_report::{
    LabelledFeatures, config_section, confusion_section, map_section, run_sections,
};

/// Rows of the nearest-neighbour grid and neighbours per row.
const GRID_ROWS: usize = 10;
const NEIGHBOURS: usize = 8;

/// The whole report of the image run in `run`, evaluated on `splits`; `overrides` (`--set`)
/// change the checkpoint's evaluation settings (`data.test_limit`, `eval.*`).
pub fn image_report(
    run: &Path,
    splits: &SourceSplits,
    overrides: &[String],
    device: &Device,
) -> Result<String> {
    let ckpt = ImageCheckpoint::open(run, device)?;
    let config =
        &PretrainConfig::from_toml(&ckpt.config.to_toml(), "checkpoint config", overrides)?;
    let mut page = Page::new(&format!("pretext report: {}", run.display()));
    let overview = [
        ("method".to_string(), config.method.clone()),
        ("backbone".into(), config.backbone.arch.clone()),
        ("data".into(), splits.description.clone()),
        ("seed".into(), config.seed.to_string()),
        (
            "images".into(),
            format!("{}x{}x{}", ckpt.shape.1, ckpt.shape.2, ckpt.shape.0),
        ),
    ];
    run_sections(&mut page, &ckpt.dir, &overview)?;

    let train = limited(splits.train.clone(), config.data.train_limit);
    let test = limited(splits.require_test()?.clone(), config.data.test_limit);
    let (train, test) = (&*train, &*test);
    ckpt.check_compatible(train)?;
    let (train_labels, test_labels) = (train.require_labels()?, test.require_labels()?);
    let ftrain = extract(&ckpt.backbone, train, &ckpt.mean, &ckpt.std, device)?;
    let ftest = extract(&ckpt.backbone, test, &ckpt.mean, &ckpt.std, device)?;
    let names = class_names(train, test);

    let test_set = LabelledFeatures {
        features: &ftest,
        labels: test_labels,
    };
    map_section(&mut page, test_set, &names, "images")?;

    let queries = first_of_each_class(test_labels, GRID_ROWS);
    let grid = neighbour_grid(train, test, &ftrain, &ftest, &queries)?;
    page.section(
        "neighbours",
        "Nearest training images",
        format!(
            "{}<p class=\"note\">Each row: a test image (grey frame), then its {NEIGHBOURS} \
             nearest training images by cosine similarity of the pretrained features; a green \
             frame has the test image's class, a red one another.</p>",
            png_img(&grid, "test images and their nearest training images")
        ),
    );

    if let Some(png) = reconstruction_grid(&ckpt, test, 16, config.seed, device)? {
        page.section(
            "reconstructions",
            "Reconstructions",
            format!(
                "{}<p class=\"note\">Rows: test images, the masked or corrupted inputs the model \
                 saw (masked patches in grey), and its reconstructions (for masked-patch methods \
                 the visible patches are shown as they were). The same as <code>pretext \
                 reconstruct</code>.</p>",
                png_img(&png, "originals, inputs and reconstructions")
            ),
        );
    }

    let train_set = LabelledFeatures {
        features: &ftrain,
        labels: train_labels,
    };
    confusion_section(
        &mut page,
        train_set,
        test_set,
        &names,
        &config.eval,
        config.seed,
        device,
    )?;
    config_section(&mut page, &config.to_toml());
    Ok(page.render())
}

fn class_names(train: &dyn ImageSource, test: &dyn ImageSource) -> Vec<String> {
    let classes = train.num_classes().max(test.num_classes());
    (0..classes)
        .map(|c| {
            train
                .class_names()
                .get(c)
                .cloned()
                .unwrap_or_else(|| c.to_string())
        })
        .collect()
}

/// A PNG grid: per row a query test image and its nearest training images, framed by
/// whether their class matches.
fn neighbour_grid(
    train: &dyn ImageSource,
    test: &dyn ImageSource,
    ftrain: &Features,
    ftest: &Features,
    queries: &[usize],
) -> Result<Vec<u8>> {
    let (h, w) = (test.size().0 as u32, test.size().1 as u32);
    let scale = (64 / h.max(w)).max(1);
    let frame = 3;
    let cell_w = w * scale + 2 * frame;
    let cell_h = h * scale + 2 * frame;
    let gap = 6;
    let cols = 1 + NEIGHBOURS as u32;
    let mut img = RgbImage::from_pixel(
        cols * cell_w + gap,
        queries.len().max(1) as u32 * cell_h,
        Rgb([255, 255, 255]),
    );
    let (train_labels, test_labels) = (train.require_labels()?, test.require_labels()?);
    let mut draw = |set: &dyn ImageSource, index: usize, x0: u32, y0: u32, colour: [u8; 3]| {
        for y in 0..cell_h {
            for x in 0..cell_w {
                img.put_pixel(x0 + x, y0 + y, Rgb(colour));
            }
        }
        let image = set.image(index)?;
        let pixels: Vec<u8> = image
            .data
            .iter()
            .map(|v| (v * 255.0).round() as u8)
            .collect();
        let c = image.channels;
        for y in 0..h * scale {
            for x in 0..w * scale {
                let p = ((y / scale) * w + x / scale) as usize * c;
                let rgb = if c == 3 {
                    [pixels[p], pixels[p + 1], pixels[p + 2]]
                } else {
                    [pixels[p]; 3]
                };
                img.put_pixel(x0 + frame + x, y0 + frame + y, Rgb(rgb));
            }
        }
        anyhow::Ok(())
    };
    for (row, &q) in queries.iter().enumerate() {
        let y0 = row as u32 * cell_h;
        draw(test, q, 0, y0, [150, 150, 150])?;
        for (k, j) in nearest_rows(ftrain, ftest.row(q), NEIGHBOURS)
            .into_iter()
            .enumerate()
        {
            let colour = if train_labels[j] == test_labels[q] {
                [40, 170, 60]
            } else {
                [210, 40, 40]
            };
            draw(train, j, gap + (k as u32 + 1) * cell_w, y0, colour)?;
        }
    }
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(png)
}
