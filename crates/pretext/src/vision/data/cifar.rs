//! CIFAR-10 and CIFAR-100 binary batches.
//!
//! CIFAR-10: `data_batch_{1..5}.bin` and `test_batch.bin`, records of 1 label byte + 3072 pixel
//! bytes (32x32, planar R, G, B). CIFAR-100: `train.bin` and `test.bin`, records of a coarse and
//! a fine label byte + 3072 pixel bytes; the fine label is used.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::{ImageSet, Splits};

const SIDE: usize = 32;
const PLANE: usize = SIDE * SIDE;

fn read_records(paths: &[std::path::PathBuf], label_bytes: usize) -> Result<ImageSet> {
    let record = label_bytes + 3 * PLANE;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for path in paths {
        let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        if raw.is_empty() || raw.len() % record != 0 {
            bail!(
                "{}: {} bytes is not a whole number of {record}-byte CIFAR records (truncated?)",
                path.display(),
                raw.len()
            );
        }
        for rec in raw.chunks_exact(record) {
            labels.push(rec[label_bytes - 1] as u32);
            let planes = &rec[label_bytes..];
            for i in 0..PLANE {
                pixels.extend_from_slice(&[planes[i], planes[PLANE + i], planes[2 * PLANE + i]]);
            }
        }
    }
    Ok(ImageSet {
        height: SIDE,
        width: SIDE,
        channels: 3,
        pixels,
        labels: Some(labels),
        class_names: Vec::new(),
    })
}

/// Read a CIFAR folder, or `None` when `dir` holds no CIFAR batches.
pub fn load(dir: &Path) -> Result<Option<Splits>> {
    let cifar10: Vec<_> = (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .filter(|p| p.is_file())
        .collect();
    let (train_files, test_file, label_bytes, kind) = if !cifar10.is_empty() {
        (cifar10, dir.join("test_batch.bin"), 1, "CIFAR-10")
    } else if dir.join("train.bin").is_file() {
        (
            vec![dir.join("train.bin")],
            dir.join("test.bin"),
            2,
            "CIFAR-100",
        )
    } else {
        return Ok(None);
    };
    let train = read_records(&train_files, label_bytes)?;
    let test = if test_file.is_file() {
        Some(read_records(&[test_file], label_bytes)?)
    } else {
        None
    };
    Ok(Some(Splits {
        train,
        test,
        description: format!("{kind} binary batches in {}", dir.display()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planar_records_become_interleaved_pixels() {
        let dir = crate::vision::data::tests::tempdir("cifar");
        let mut rec = vec![7u8];
        rec.extend(std::iter::repeat_n(10u8, PLANE));
        rec.extend(std::iter::repeat_n(20u8, PLANE));
        rec.extend(std::iter::repeat_n(30u8, PLANE));
        std::fs::write(
            dir.join("data_batch_1.bin"),
            [rec.clone(), rec.clone()].concat(),
        )
        .unwrap();
        let s = load(&dir).unwrap().unwrap();
        assert_eq!(s.train.len(), 2);
        assert_eq!(&s.train.image(1)[..6], &[10, 20, 30, 10, 20, 30]);
        assert_eq!(s.train.labels.as_deref(), Some(&[7, 7][..]));
        std::fs::write(dir.join("test_batch.bin"), &rec[..100]).unwrap();
        let err = format!("{:#}", load(&dir).unwrap_err());
        assert!(
            err.contains("test_batch.bin") && err.contains("truncated"),
            "{err}"
        );
    }
}
