//! The report of a video run (`pretext report RUN --data DIR`): the shared run sections (loss
//! curves, time, label studies) and the config; with data also a map of the test videos'
//! clip features and the linear probe's confusion matrix on a single-label column (the
//! direction of motion where there is one), and for a next-frame model its forecasts of a few
//! test videos drawn under the true frames.

use std::io::Cursor;
use std::path::Path;

use anyhow::{Context, Result};
use burn::prelude::*;
use image::{GrayImage, Luma};

use super::checkpoint::{VideoCheckpoint, read_meta};
use super::data::stream::open_splits;
use super::eval::{all_rows, clip_features, single_labels};
use super::methods::VideoMethod;
use super::views::first_frames_batch;
use crate::core::feature_scores::standardise;
use crate::core::html::{Page, png_img};
use crate::core::run_report::{
    LabelledFeatures, config_section, confusion_section, map_section, run_sections,
};
use crate::with_video_method;

/// Test videos whose forecasts are drawn.
const FORECASTS: usize = 4;

pub fn video_report(run: &Path, data: Option<&Path>, device: &Device) -> Result<String> {
    let (_, config, _) = read_meta(run)?;
    with_video_method!(config.method.as_str(), M => {
        let ckpt = VideoCheckpoint::<M>::open(run, device)?;
        report_of(&ckpt, data, device)
    })
}

fn report_of<M: VideoMethod>(
    ckpt: &VideoCheckpoint<M>,
    data: Option<&Path>,
    device: &Device,
) -> Result<String> {
    let c = &ckpt.config;
    let mut page = Page::new(&format!("pretext report: {}", ckpt.dir.display()));
    let encoder = match (c.method.as_str(), c.backbone.vit_shape()) {
        ("next_frame", _) => format!(
            "SimVP-like predictor, {} channels per frame, translator {} wide",
            c.next_frame.hidden, c.next_frame.translator
        ),
        ("frame_order", _) | (_, None) => format!("{} on every frame", c.backbone.arch),
        (_, Some(v)) => format!(
            "space-time ViT {} wide, {} deep, tubelets of {}x{p}x{p}",
            v.dim,
            v.depth,
            c.tubelet,
            p = v.patch
        ),
    };
    let (ch, h, w) = ckpt.frame;
    let overview = [
        ("method".to_string(), c.method.clone()),
        ("encoder".into(), encoder),
        (
            "input".into(),
            format!(
                "clips of {} frames of {h}x{w}, {ch} channel(s)",
                M::clip_frames(c)
            ),
        ),
        ("seed".into(), c.seed.to_string()),
    ];
    run_sections(&mut page, &ckpt.dir, &overview)?;
    if let Some(data) = data {
        video_sections(&mut page, ckpt, data, device)?;
    }
    config_section(&mut page, &c.to_toml());
    Ok(page.render())
}

fn video_sections<M: VideoMethod>(
    page: &mut Page,
    ckpt: &VideoCheckpoint<M>,
    data: &Path,
    device: &Device,
) -> Result<()> {
    let c = &ckpt.config;
    let config = c
        .data
        .first_frames_only(M::clip_frames(c).max(M::feature_frames(c)));
    let (train, test, _) = open_splits(data, &config)?;
    let test = test.with_context(|| format!("{}: no test split to report on", data.display()))?;
    let task = ["direction", "class", "classes"]
        .into_iter()
        .filter_map(|name| {
            let (a, b) = (train.task(name).ok()?, test.task(name).ok()?);
            Some((a, single_labels(a, b).ok()?))
        })
        .next();
    if let Some((column, (train_labels, rows, test_labels))) = task {
        let frames = M::feature_frames(c);
        let (ftrain, ftest) = standardise(
            &clip_features(&ckpt.model, &train, &all_rows(&train), frames, device)?,
            &clip_features(&ckpt.model, &test, &rows, frames, device)?,
        );
        let train_side = LabelledFeatures {
            features: &ftrain,
            labels: &train_labels,
        };
        let test_side = LabelledFeatures {
            features: &ftest,
            labels: &test_labels,
        };
        map_section(page, test_side, &column.classes, "videos")?;
        confusion_section(
            page,
            train_side,
            test_side,
            &column.classes,
            &c.eval,
            c.seed,
            device,
        )?;
    }
    if c.method == "next_frame" {
        let (input, output) = (c.next_frame.input, c.next_frame.output);
        let shown: Vec<usize> = (0..test.len().min(FORECASTS)).collect();
        let clips = first_frames_batch(&test, &shown, input + output, device)?;
        if let Some(pred) = ckpt.model.predict(clips.clone().narrow(1, 0, input)) {
            let truth = clips.narrow(1, input, output);
            let mut html = String::new();
            for v in 0..shown.len() {
                let row = |t: &Tensor<5>| t.clone().narrow(0, v, 1);
                html += &png_img(&strip(&[row(&truth), row(&pred)])?, "forecast");
                html += "<br>";
            }
            page.section(
                "forecasts",
                "Forecasts",
                format!(
                    "{html}<p class=\"note\">The first {} test videos: the true frames {input} to \
                     {} on top, the model's forecast from frames 0 to {} below.</p>",
                    shown.len(),
                    input + output - 1,
                    input - 1
                ),
            );
        }
    }
    Ok(())
}

/// Rows of frames `[1, t, c, h, w]` (the first channel, pixels in [0, 1]) as one grey PNG.
fn strip(rows: &[Tensor<5>]) -> Result<Vec<u8>> {
    let [_, t, _, h, w] = rows[0].dims();
    let mut img = GrayImage::new((t * (w + 1)) as u32, (rows.len() * (h + 1)) as u32);
    for (r, row) in rows.iter().enumerate() {
        let values = row.clone().into_data().convert::<f32>().try_to_vec::<f32>();
        let values = values.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let frame_len = values.len() / t;
        for f in 0..t {
            for y in 0..h {
                for x in 0..w {
                    let v = values[f * frame_len + y * w + x].clamp(0.0, 1.0);
                    img.put_pixel(
                        (f * (w + 1) + x) as u32,
                        (r * (h + 1) + y) as u32,
                        Luma([(v * 255.0) as u8]),
                    );
                }
            }
        }
    }
    let mut png = Vec::new();
    img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(png)
}
