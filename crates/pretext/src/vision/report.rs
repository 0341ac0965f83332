//! The report of an image run (`pretext report RUN`): the shared run sections, then what the
//! pretrained backbone's features show on the data: a 2-D map of the test embeddings, test
//! images beside their nearest training images, and the linear probe's confusion matrix.

use std::path::Path;

use anyhow::Result;
use burn::prelude::*;
use image::{Rgb, RgbImage};

use super::checkpoint::ImageCheckpoint;
use super::config::PretrainConfig;
use super::data::{ImageSet, Splits};
use super::eval::extract;
use crate::core::eval::{Features, Labelled, confusion_matrix, linear_probe_predictions};
use crate::core::html::{Page, escape, png_img, table};
use crate::core::map2d::{map_2d, scatter_svg};
use crate::core::run_report::{config_section, run_sections};

/// Test images in the map at most (t-SNE grows with the square of the count).
const MAP_POINTS: usize = 2000;
/// Rows of the nearest-neighbour grid and neighbours per row.
const GRID_ROWS: usize = 10;
const NEIGHBOURS: usize = 8;

/// The whole report of the image run in `run`, evaluated on `splits`; `overrides` (`--set`)
/// change the checkpoint's evaluation settings (`data.test_limit`, `eval.*`).
pub fn image_report(
    run: &Path,
    splits: &Splits,
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

    let train = splits.train.limited(config.data.train_limit);
    let test = splits.require_test()?.limited(config.data.test_limit);
    ckpt.check_compatible(&train)?;
    let (train_labels, test_labels) = (train.require_labels()?, test.require_labels()?);
    let ftrain = extract(&ckpt.backbone, &train, &ckpt.mean, &ckpt.std, device);
    let ftest = extract(&ckpt.backbone, &test, &ckpt.mean, &ckpt.std, device);
    let names = class_names(&train, &test);

    let shown: Vec<usize> = (0..test.len().min(MAP_POINTS)).collect();
    let map = map_2d(&ftest.rows(&shown));
    let map_labels: Vec<u32> = shown.iter().map(|&i| test_labels[i]).collect();
    page.section(
        "map",
        &format!("Test embeddings ({})", map.method),
        format!(
            "{}<p class=\"note\">{} of the {} test images, pretrained features, L2-normalised; \
             {} keeps neighbours together, distances between far clusters mean little.</p>",
            scatter_svg(&map, &map_labels, &names)?,
            shown.len(),
            test.len(),
            map.method
        ),
    );

    let queries = grid_queries(test_labels, GRID_ROWS);
    let grid = neighbour_grid(&train, &test, &ftrain, &ftest, &queries)?;
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

    let classes = names.len();
    let train_l = Labelled::new(&ftrain, train_labels);
    let test_l = Labelled::new(&ftest, test_labels);
    let predicted =
        linear_probe_predictions(train_l, test_l, classes, &config.eval, config.seed, device)?;
    page.section(
        "confusion",
        "Linear probe: confusion matrix",
        confusion_table(&predicted, test_labels, &names),
    );
    config_section(&mut page, &config.to_toml());
    Ok(page.render())
}

fn class_names(train: &ImageSet, test: &ImageSet) -> Vec<String> {
    let classes = train.num_classes().max(test.num_classes());
    (0..classes)
        .map(|c| {
            train
                .class_names
                .get(c)
                .cloned()
                .unwrap_or_else(|| c.to_string())
        })
        .collect()
}

/// The first test image of each class, in class order, until `rows` are chosen.
fn grid_queries(labels: &[u32], rows: usize) -> Vec<usize> {
    let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    let mut picked: Vec<usize> = (0..classes as u32)
        .filter_map(|c| labels.iter().position(|&l| l == c))
        .take(rows)
        .collect();
    picked.sort_unstable();
    picked
}

/// The `k` training rows most cosine-similar to `query`, best first.
fn nearest(train: &Features, query: &[f32], k: usize) -> Vec<usize> {
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

/// A PNG grid: per row a query test image and its nearest training images, framed by
/// whether their class matches.
fn neighbour_grid(
    train: &ImageSet,
    test: &ImageSet,
    ftrain: &Features,
    ftest: &Features,
    queries: &[usize],
) -> Result<Vec<u8>> {
    let (h, w) = (test.height as u32, test.width as u32);
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
    let mut draw = |set: &ImageSet, index: usize, x0: u32, y0: u32, colour: [u8; 3]| {
        for y in 0..cell_h {
            for x in 0..cell_w {
                img.put_pixel(x0 + x, y0 + y, Rgb(colour));
            }
        }
        let pixels = set.image(index);
        let c = set.channels;
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
    };
    for (row, &q) in queries.iter().enumerate() {
        let y0 = row as u32 * cell_h;
        draw(test, q, 0, y0, [150, 150, 150]);
        for (k, j) in nearest(ftrain, ftest.row(q), NEIGHBOURS)
            .into_iter()
            .enumerate()
        {
            let colour = if train_labels[j] == test_labels[q] {
                [40, 170, 60]
            } else {
                [210, 40, 40]
            };
            draw(train, j, gap + (k as u32 + 1) * cell_w, y0, colour);
        }
    }
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(png)
}

/// The confusion matrix with per-class accuracy (recall) in the last column.
fn confusion_table(predicted: &[u32], labels: &[u32], names: &[String]) -> String {
    let m = confusion_matrix(predicted, labels, names.len());
    let mut header = vec!["true \\ predicted".to_string()];
    header.extend(names.iter().map(|n| escape(n)));
    header.push("accuracy".into());
    let rows: Vec<Vec<String>> = m
        .iter()
        .enumerate()
        .map(|(c, row)| {
            let total: usize = row.iter().sum();
            let mut cells = vec![escape(&names[c])];
            cells.extend(row.iter().enumerate().map(|(p, n)| {
                if p == c {
                    format!("<b>{n}</b>")
                } else {
                    n.to_string()
                }
            }));
            cells.push(format!(
                "{:.1}%",
                100.0 * row[c] as f64 / total.max(1) as f64
            ));
            cells
        })
        .collect();
    let correct: usize = (0..m.len()).map(|c| m[c][c]).sum();
    format!(
        "{}<p>overall: {:.2}% of {} test images</p>",
        table(&header, &rows),
        100.0 * correct as f64 / labels.len().max(1) as f64,
        labels.len()
    )
}
