//! Mutation fuzzing of every reader on stable Rust: valid files of each format are damaged (bits
//! flipped, truncated, bytes inserted, header fields overwritten with huge numbers) and read
//! back. Each case must end in a clean error or a valid result: never a panic, a hang or an
//! allocation of the size a forged header asks for (that would abort the test process).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use pretext::core::checkpoint::{Checkpoint, NamedTensor};
use pretext::text::tokenizer::{Family, TextTokenizer};
use pretext::text::tsv::read_labelled_tsv;
use pretext::vision::config::PretrainConfig;
use pretext::vision::data::{idx, load_dir};
use pretext_word2vec::format::{Embeddings, Format};

/// Cases per reader.
const CASES: u64 = 400;

/// xorshift64*: a tiny seeded generator, enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One damaged copy of `valid`.
fn mutate(valid: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = valid.to_vec();
    match rng.below(4) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => b.truncate(rng.below(b.len())),
        2 => {
            let at = rng.below(b.len() + 1);
            let extra: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
            b.splice(at..at, extra);
        }
        _ => {
            // A forged length or dimension in the header: a huge number where one is read.
            let at = rng.below(b.len().min(64).saturating_sub(4).max(1));
            let forged = [0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x10][rng.below(6)];
            for byte in b.iter_mut().skip(at).take(4) {
                *byte = forged;
            }
        }
    }
    b
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pretext-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Damage `valid` `CASES` times, write each case to `file` and call `read`; count the outcomes.
/// A panic fails the test with the seed that caused it.
fn fuzz(name: &str, valid: &[u8], file: &Path, read: impl Fn(&Path) -> bool) {
    let (mut ok, mut refused) = (0, 0);
    for seed in 1..=CASES {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let case = mutate(valid, &mut rng);
        std::fs::write(file, &case).unwrap();
        match catch_unwind(AssertUnwindSafe(|| read(file))) {
            Ok(true) => ok += 1,
            Ok(false) => refused += 1,
            Err(_) => panic!("{name}: case {seed} panicked ({} bytes)", case.len()),
        }
    }
    eprintln!("{name}: {CASES} damaged cases, {refused} refused with an error, {ok} read");
}

#[test]
fn idx_files_never_panic() {
    let valid = idx::encode_idx(&idx::IdxArray {
        dims: vec![3, 4, 5],
        data: (0..60).collect(),
    });
    let dir = tempdir("idx");
    fuzz("IDX", &valid, &dir.join("x.idx"), |p| {
        idx::read_idx(p).is_ok()
    });
    // Through the dataset loader, with a label file beside it.
    let labels = idx::encode_idx(&idx::IdxArray {
        dims: vec![3],
        data: vec![0, 1, 2],
    });
    std::fs::write(dir.join("train-labels-idx1-ubyte"), &labels).unwrap();
    fuzz(
        "IDX dataset",
        &valid,
        &dir.join("train-images-idx3-ubyte"),
        |_| load_dir(&dir).is_ok(),
    );
}

#[test]
fn cifar_batches_never_panic() {
    let dir = tempdir("cifar");
    let record: Vec<u8> = (0..3073).map(|i| (i % 251) as u8).collect();
    for name in [
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ] {
        std::fs::write(dir.join(format!("{name}.bin")), record.repeat(2)).unwrap();
    }
    fuzz(
        "CIFAR",
        &record.repeat(2),
        &dir.join("data_batch_1.bin"),
        |_| load_dir(&dir).is_ok(),
    );
}

#[test]
fn png_and_jpeg_folders_never_panic() {
    let dir = tempdir("images");
    let img = image::GrayImage::from_fn(8, 6, |x, y| image::Luma([(x * 30 + y * 7) as u8]));
    for (class, ext) in [("a", "png"), ("b", "jpg")] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        img.save(dir.join(class).join(format!("ok.{ext}"))).unwrap();
    }
    for ext in ["png", "jpg"] {
        let mut valid = Vec::new();
        let format = if ext == "png" {
            image::ImageFormat::Png
        } else {
            image::ImageFormat::Jpeg
        };
        img.write_to(&mut std::io::Cursor::new(&mut valid), format)
            .unwrap();
        let file = dir.join("a").join(format!("damaged.{ext}"));
        fuzz(&format!("{ext} folder"), &valid, &file, |_| {
            load_dir(&dir).is_ok()
        });
        let _ = std::fs::remove_file(&file);
    }
}

#[test]
fn word_vectors_never_panic() {
    let dir = tempdir("w2v");
    let e = Embeddings::new(
        vec!["cat".into(), "dog".into(), "yak".into()],
        4,
        (0..12).map(|i| i as f32 * 0.5).collect(),
    )
    .unwrap();
    for (format, name) in [
        (Format::Text, "word2vec text"),
        (Format::Binary, "word2vec binary"),
    ] {
        let mut valid = Vec::new();
        e.write_to(&mut valid, format).unwrap();
        fuzz(name, &valid, &dir.join("v"), |p| {
            Embeddings::load(p).is_ok()
        });
    }
}

#[test]
fn configs_tsvs_and_checkpoints_never_panic() {
    let dir = tempdir("misc");
    let config =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/mae_fmnist.toml"))
            .unwrap();
    fuzz("TOML config", &config, &dir.join("c.toml"), |p| {
        PretrainConfig::load(Some(p), &[]).is_ok()
    });

    let tsv =
        b"id\tlabel\ttext\n1\tpos\tgood film\n2\tneg\tbad film\n3\tpos\tfine acting\n".to_vec();
    fuzz("TSV", &tsv, &dir.join("t.tsv"), |p| {
        read_labelled_tsv(p, None, None).is_ok()
    });

    let ckpt = Checkpoint {
        model: vec![NamedTensor {
            name: "w".into(),
            shape: vec![2, 3],
            values: vec![0.5; 6],
        }],
        optimizer: vec![("w#first".into(), vec![0.1; 6])],
        meta: serde_json::json!({ "step": 3 }),
    };
    let path = dir.join("checkpoint.safetensors");
    ckpt.save(&path).unwrap();
    let valid = std::fs::read(&path).unwrap();
    fuzz("checkpoint", &valid, &path, |p| Checkpoint::load(p).is_ok());
}

#[test]
fn tokenizer_files_never_panic() {
    let dir = tempdir("tokenizer");
    let corpus = dir.join("corpus.txt");
    let lines: Vec<String> = (0..300)
        .map(|i| format!("the quick fox {} jumps over dog {}", i % 17, i % 5))
        .collect();
    std::fs::write(&corpus, lines.join("\n")).unwrap();
    for family in [Family::Bert, Family::Roberta] {
        let tok = TextTokenizer::train(family, std::slice::from_ref(&corpus), 120, true).unwrap();
        let path = dir.join("tokenizer.json");
        tok.save(&path).unwrap();
        let valid = std::fs::read(&path).unwrap();
        fuzz(
            &format!("tokenizer.json ({family:?})"),
            &valid,
            &path,
            |p| TextTokenizer::load(p).is_ok(),
        );
    }
}
