use std::time::Instant;

use burn::prelude::*;
use pretext::text::encoder::{EncoderConfig, SizePreset};
use pretext::text::tokenizer::Family;

fn main() {
    let device = Device::flex();
    device.seed(1);
    let model = EncoderConfig::preset(SizePreset::Mini, Family::Bert, 8000).init(&device).unwrap();
    for (b, len) in [(8, 128), (32, 128), (64, 128), (32, 32), (128, 32)] {
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![7i64; b * len], [b, len]), &device);
        let m = Tensor::<2, Bool>::from_data(TensorData::new(vec![true; b * len], [b, len]), &device);
        let _ = model.hidden(ids.clone(), m.clone()).unwrap().into_data();
        let t = Instant::now();
        let reps = 3;
        for _ in 0..reps {
            let _ = model.hidden(ids.clone(), m.clone()).unwrap().into_data();
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        println!("b {b} len {len}: {:.3}s/batch, {:.0} tok/s", s, (b * len) as f64 / s);
    }
}
