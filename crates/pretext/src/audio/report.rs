//! The report of an audio run (`pretext report RUN --data DIR`): the shared run sections (loss
//! curves, time, label studies) and the config; with a clip folder also a map of the test
//! clips' embeddings, test clips beside their nearest training clips drawn as log-mel
//! thumbnails, and the linear probe's confusion matrix.

use std::path::Path;

use anyhow::{Context, Result};
use burn::prelude::*;
use image::{Rgb, RgbImage};

use super::checkpoint::AudioCheckpoint;
use super::data::stream::{ClipStore, read_splits};
use super::eval::{align_labels, split_features, standardise};
use crate::core::eval::{Features, first_of_each_class, nearest_rows};
use crate::core::html::{Page, escape, png_img, table};
use crate::core::run_report::{
    LabelledFeatures, config_section, confusion_section, map_section, run_sections,
};
use crate::vision::data::OnError;

/// Nearest training clips shown per test clip.
const NEIGHBOURS: usize = 4;

pub fn audio_report(run: &Path, data: Option<&Path>, device: &Device) -> Result<String> {
    let ckpt = AudioCheckpoint::open(run, device)?;
    let c = &ckpt.config;
    let mut page = Page::new(&format!("pretext report: {}", run.display()));
    let encoder = match c.backbone.vit_shape() {
        Some(v) => format!(
            "ViT {} wide, {} deep, patches of {}",
            v.dim, v.depth, v.patch
        ),
        None => format!(
            "audio CNN, {} channels, {} features",
            c.backbone.width, c.backbone.hidden
        ),
    };
    let overview = [
        ("method".to_string(), c.method.clone()),
        ("encoder".into(), encoder),
        (
            "input".into(),
            format!(
                "{} s clips at {} Hz, {} mel bands, crops of {} frames",
                c.data.clip_seconds, c.data.mel.sample_rate, c.data.mel.n_mels, c.data.crop_frames
            ),
        ),
        ("seed".into(), c.seed.to_string()),
    ];
    run_sections(&mut page, &ckpt.dir, &overview)?;
    if let Some(data) = data {
        clip_sections(&mut page, &ckpt, data, device)?;
    }
    config_section(&mut page, &c.to_toml());
    Ok(page.render())
}

fn clip_sections(
    page: &mut Page,
    ckpt: &AudioCheckpoint,
    data: &Path,
    device: &Device,
) -> Result<()> {
    let mut config = ckpt.config.data.clone();
    (config.train_limit, config.test_limit) = (0, 0);
    // Streamed when the run was: features kept, images read again only for the thumbnails.
    let (train, test) = read_splits(data, None, &config)?;
    let column = train.task("class")?;
    let (rows, test_labels) = align_labels(column, test.task("class")?);
    let test = test.select(&rows);
    let names = &column.classes;
    let features = |store: &ClipStore| -> Result<Features> {
        let all: Vec<usize> = (0..store.len()).collect();
        let mut f = split_features(
            &[&ckpt.encoder],
            store,
            &all,
            ckpt.norm(),
            OnError::Stop,
            device,
        )?;
        f.encoders.pop().context("one encoder's features")
    };
    let (ftrain, ftest) = standardise(&features(&train)?, &features(&test)?);
    let train_side = LabelledFeatures {
        features: &ftrain,
        labels: &column.labels,
    };
    let test_side = LabelledFeatures {
        features: &ftest,
        labels: &test_labels,
    };
    map_section(page, test_side, names, "clips")?;
    let mut table_rows = Vec::new();
    for q in first_of_each_class(&test_labels, 10) {
        let mut row = vec![format!(
            "<b>{}</b><br>{}",
            escape(&names[test_labels[q] as usize]),
            png_img(&thumbnail(&test, q)?, "test clip")
        )];
        for j in nearest_rows(&ftrain, ftest.row(q), NEIGHBOURS) {
            let l = column.labels[j];
            let mark = if l == test_labels[q] { "✓" } else { "✗" };
            row.push(format!(
                "{mark} {}<br>{}",
                escape(&names[l as usize]),
                png_img(&thumbnail(&train, j)?, "training clip")
            ));
        }
        table_rows.push(row);
    }
    let mut header = vec!["test clip".to_string()];
    header.extend((1..=NEIGHBOURS).map(|k| format!("neighbour {k}")));
    page.section(
        "neighbours",
        "Nearest training clips",
        format!(
            "{}<p class=\"note\">Each test clip's log-mel image (low frequencies at the bottom, \
             time to the right), then its {NEIGHBOURS} nearest training clips by cosine \
             similarity of the encoder's features; ✓ marks the test clip's class.</p>",
            table(&header, &table_rows)
        ),
    );
    confusion_section(
        page,
        train_side,
        test_side,
        names,
        &ckpt.config.eval,
        ckpt.config.seed,
        device,
    )
}

/// A clip's log-mel image as a PNG, twice its size, low bands at the bottom, on a dark-to-
/// yellow scale between its 2nd and 99.5th percentiles.
pub fn thumbnail(set: &ClipStore, clip: usize) -> Result<Vec<u8>> {
    let values = set.image(clip)?;
    let (frames, n_mels) = (set.frames(), set.n_mels());
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
    let (lo, hi) = (at(0.02), at(0.995));
    let scale = 2;
    let (w, h) = (frames as u32 * scale, n_mels as u32 * scale);
    let mut img = RgbImage::new(w, h);
    for y in 0..h {
        let band = n_mels - 1 - (y / scale) as usize;
        for x in 0..w {
            let v = values[band * frames + (x / scale) as usize];
            let t = ((v - lo) / (hi - lo).max(1e-6)).clamp(0.0, 1.0);
            img.put_pixel(x, y, Rgb(colour(t)));
        }
    }
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(png)
}

/// Dark blue through red to pale yellow, as spectrogram colour maps go.
fn colour(t: f32) -> [u8; 3] {
    let stops = [
        (0.0, [10.0, 7.0, 40.0]),
        (0.4, [120.0, 28.0, 110.0]),
        (0.7, [230.0, 80.0, 50.0]),
        (1.0, [252.0, 250.0, 170.0]),
    ];
    for pair in stops.windows(2) {
        let ((a, ca), (b, cb)) = (pair[0], pair[1]);
        if t <= b {
            let u = (t - a) / (b - a);
            return [0, 1, 2].map(|i| (ca[i] + u * (cb[i] - ca[i])).round() as u8);
        }
    }
    [252, 250, 170]
}
