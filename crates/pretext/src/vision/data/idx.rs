//! IDX files, the format of MNIST and its relatives (Fashion-MNIST, KMNIST, EMNIST).
//!
//! Layout: two zero bytes, a type byte (0x08 = unsigned byte, the only type image sets use),
//! a rank byte, then `rank` big-endian u32 dimensions, then the data. Files may be gzipped;
//! the gzip magic decides, not the file name.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use flate2::read::GzDecoder;

use crate::core::checkpoint::write_atomic;

/// An unsigned-byte IDX array: its dimensions and its bytes in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const TYPE_U8: u8 = 0x08;

/// Write a labelled image set in the MNIST layout into `dir`: gzipped
/// `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz` and their `t10k-` test
/// counterparts from (pixels, labels) of `height x width` grey images, and `classes.txt` (one
/// name per line, which the IDX reader takes as class names). Each file is written atomically.
pub fn write_mnist_layout(
    dir: &Path,
    (height, width): (usize, usize),
    train: &(Vec<u8>, Vec<u8>),
    test: &(Vec<u8>, Vec<u8>),
    classes: &[String],
) -> Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let gz = |bytes: Vec<u8>| -> Result<Vec<u8>> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&bytes)?;
        Ok(enc.finish()?)
    };
    for (prefix, (pixels, labels)) in [("train", train), ("t10k", test)] {
        let n = labels.len();
        let images = IdxArray {
            dims: vec![n, height, width],
            data: pixels.clone(),
        };
        let label_array = IdxArray {
            dims: vec![n],
            data: labels.clone(),
        };
        write_atomic(
            &dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
            &gz(encode_idx(&images))?,
        )?;
        write_atomic(
            &dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
            &gz(encode_idx(&label_array))?,
        )?;
    }
    let names: String = classes.iter().map(|c| format!("{c}\n")).collect();
    write_atomic(&dir.join("classes.txt"), names.as_bytes())
}

/// Read an IDX file (raw or gzipped); every error names the file.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_idx(&raw).with_context(|| format!("{} is not a valid IDX file", path.display()))
}

/// Parse IDX bytes (raw or gzipped).
pub fn parse_idx(raw: &[u8]) -> Result<IdxArray> {
    let bytes = if raw.starts_with(&GZIP_MAGIC) {
        // Sized once from the gzip trailer's length (modulo 2³², so only a hint, bounded by
        // deflate's largest ratio): growing by doubling copied and first-touched twice the
        // bytes, seconds for Moving MNIST's 820 MB on a fresh machine.
        let trailer = raw.len().checked_sub(4).map(|at| &raw[at..]);
        let hint = trailer.map_or(0, |t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as usize);
        let mut out = Vec::with_capacity(hint.min(raw.len().saturating_mul(1032)));
        GzDecoder::new(raw)
            .read_to_end(&mut out)
            .context("gzip stream is corrupt or truncated")?;
        out
    } else {
        raw.to_vec()
    };
    if bytes.len() < 4 {
        bail!(
            "file is {} bytes long, shorter than the 4-byte IDX magic",
            bytes.len()
        );
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        bail!(
            "wrong magic {:02x}{:02x}{:02x}{:02x}: IDX files start with two zero bytes",
            bytes[0],
            bytes[1],
            bytes[2],
            bytes[3]
        );
    }
    if bytes[2] != TYPE_U8 {
        bail!(
            "element type 0x{:02x} is not supported (only 0x08, unsigned byte)",
            bytes[2]
        );
    }
    let rank = bytes[3] as usize;
    if rank == 0 {
        bail!("rank 0 in the magic number");
    }
    let header_len = 4 + 4 * rank;
    if bytes.len() < header_len {
        bail!(
            "truncated header: rank {rank} needs {header_len} bytes, file has {}",
            bytes.len()
        );
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| {
            let at = 4 + 4 * i;
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
        })
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .context("dimensions overflow")?;
    let body = bytes.len() - header_len;
    if body != expected {
        bail!(
            "dimensions {dims:?} need {expected} data bytes but the file has {body}{}",
            if body < expected { " (truncated)" } else { "" }
        );
    }
    let mut data = bytes;
    data.drain(..header_len);
    Ok(IdxArray { dims, data })
}

/// Serialise an unsigned-byte IDX array (uncompressed).
pub fn encode_idx(array: &IdxArray) -> Vec<u8> {
    let mut out = vec![0, 0, TYPE_U8, array.dims.len() as u8];
    for &d in &array.dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(&array.data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    fn sample() -> IdxArray {
        IdxArray {
            dims: vec![3, 2, 5],
            data: (0..30).collect(),
        }
    }

    #[test]
    fn raw_and_gzip_round_trip() {
        let bytes = encode_idx(&sample());
        assert_eq!(parse_idx(&bytes).unwrap(), sample());
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&bytes).unwrap();
        assert_eq!(parse_idx(&gz.finish().unwrap()).unwrap(), sample());
    }

    fn error_of(bytes: &[u8]) -> String {
        format!("{:#}", parse_idx(bytes).unwrap_err())
    }

    #[test]
    fn corrupt_files_are_named_errors() {
        let good = encode_idx(&sample());
        let mut bad_magic = good.clone();
        bad_magic[0] = 7;
        assert!(error_of(&bad_magic).contains("wrong magic"));
        let mut bad_type = good.clone();
        bad_type[2] = 0x0d;
        assert!(error_of(&bad_type).contains("element type"));
        assert!(error_of(&good[..good.len() - 1]).contains("truncated"));
        assert!(error_of(&good[..6]).contains("truncated header"));
        assert!(error_of(&good[..2]).contains("shorter than"));
        let mut long = good.clone();
        long.push(1);
        assert!(error_of(&long).contains("need 30 data bytes but the file has 31"));
        assert!(error_of(&[0x1f, 0x8b, 1, 2, 3]).contains("gzip"));
    }
}
