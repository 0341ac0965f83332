//! pretext's SSL losses against lightly's (1.6.0) loss classes on the same fixed inputs. The
//! values were computed once by `bench/fixtures/lightly_losses.py` and committed as
//! `tests/fixtures/lightly_losses.json`; where lightly has no class for a loss (MoCo v3's and
//! NNCLR's one-direction cross-view InfoNCE), the script computes it with plain PyTorch.

use burn::prelude::*;
use pretext::core::losses::{
    barlow_twins, cross_view_info_nce, dino, info_nce, negative_cosine, nt_xent, sinkhorn, swav,
    vicreg,
};
use pretext::core::queue::EmbeddingQueue;
use pretext::vision::methods::dino::Center;
use serde_json::Value;

fn fixture() -> Value {
    let text = include_str!("fixtures/lightly_losses.json");
    serde_json::from_str(text).unwrap()
}

fn matrix(v: &Value, device: &Device) -> Tensor<2> {
    let rows = v.as_array().unwrap();
    let flat: Vec<f32> = rows
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    let cols = flat.len() / rows.len();
    Tensor::from_data(TensorData::new(flat, [rows.len(), cols]), device)
}

#[test]
fn every_loss_matches_lightly_on_the_fixture() {
    let device = Device::flex();
    let f = fixture();
    let (z1, z2, bank) = (
        matrix(&f["z1"], &device),
        matrix(&f["z2"], &device),
        matrix(&f["bank"], &device),
    );
    let cases = f["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    for case in cases {
        let name = case["loss"].as_str().unwrap();
        let num = |k: &str| case[k].as_f64().unwrap();
        let (a, b) = (z1.clone(), z2.clone());
        let ours = match name {
            "nt_xent" => nt_xent(a, b, num("temperature")),
            "info_nce" => info_nce(a, b, bank.clone(), num("temperature")),
            "cross_view_info_nce" => cross_view_info_nce(a, b, num("temperature")),
            "negative_cosine" => negative_cosine(a, b),
            "barlow_twins" => barlow_twins(a, b, num("lambda")),
            "vicreg" => vicreg(a, b, num("lambda"), num("mu"), num("nu")),
            other => panic!("no pretext loss for fixture case {other}"),
        }
        .into_scalar::<f64>();
        let want = num("value");
        assert!(
            (ours - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{name}: pretext {ours}, lightly {want}"
        );
    }
}

#[test]
fn nearest_neighbours_match_lightlys_support_set() {
    let device = Device::flex();
    let f = fixture();
    let bank = matrix(&f["bank"], &device);
    let rows = bank.dims()[0];
    // Fill a queue with the fixture's bank, oldest first, so its rows are the bank's.
    let queue = EmbeddingQueue::new(rows, bank.dims()[1], &device).push(vec![bank]);
    let ours = queue.nearest(matrix(&f["z1"], &device));
    let want = matrix(&f["nearest"], &device);
    let gap = (ours - want).abs().max().into_scalar::<f32>();
    assert!(gap < 1e-6, "nearest rows differ by {gap}");
}

fn views(v: &Value, device: &Device) -> Vec<Tensor<2>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| matrix(m, device))
        .collect()
}

fn close(ours: f64, want: f64, what: &str) {
    assert!(
        (ours - want).abs() <= 1e-5 * want.abs().max(1.0),
        "{what}: pretext {ours}, lightly {want}"
    );
}

#[test]
fn dino_loss_and_centre_match_lightlys_dino_loss() {
    let device = Device::flex();
    let f = &fixture()["dino"];
    let (teacher, student) = (views(&f["teacher"], &device), views(&f["student"], &device));
    let center = matrix(&f["center"], &device);
    let cases = f["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let num = |k: &str| case[k].as_f64().unwrap();
        let (tt, ts) = (num("teacher_temperature"), num("student_temperature"));
        let ours = dino(&teacher, &student, center.clone(), tt, ts).into_scalar::<f64>();
        close(ours, num("value"), &format!("dino at {tt} / {ts}"));
        // lightly moves the centre towards the mean of all teacher outputs after the loss.
        let batch_mean = Tensor::cat(teacher.clone(), 0).mean_dim(0);
        let after = Center::new(center.clone())
            .update(vec![batch_mean], 0.9)
            .values();
        let gap = (after - matrix(&case["center_after"], &device))
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(gap < 1e-6, "centre differs by {gap}");
    }
}

#[test]
fn sinkhorn_and_swav_loss_match_lightlys_swav_loss() {
    let device = Device::flex();
    let f = &fixture()["swav"];
    let (high, low, queue) = (
        views(&f["high"], &device),
        views(&f["low"], &device),
        views(&f["queue"], &device),
    );
    let codes = sinkhorn(high[0].clone(), 3, 0.05);
    let gap = (codes.clone() - matrix(&f["sinkhorn"], &device))
        .abs()
        .max()
        .into_scalar::<f32>();
    assert!(gap < 1e-5, "sinkhorn codes differ by {gap}");
    let cases = f["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let num = |k: &str| case[k].as_f64().unwrap();
        let queued = case["queue"].as_bool().unwrap().then_some(&queue[..]);
        let ours = swav(
            &high,
            &low,
            queued,
            num("temperature"),
            num("iterations") as usize,
            num("epsilon"),
        )
        .into_scalar::<f64>();
        close(
            ours,
            num("value"),
            &format!("swav (queue: {})", queued.is_some()),
        );
    }
}
