//! Mutation fuzzing of every reader on stable Rust: valid files of each format are damaged (bits
//! flipped, truncated, bytes inserted, header fields overwritten with huge numbers) and read
//! back. Each case must end in a clean error or a valid result: never a panic, a hang or an
//! allocation of the size a forged header asks for (that would abort the test process).
//!
//! The interesting cases are kept in `tests/fuzz_corpus/READER/`: for every reader, one damaged
//! file per distinct error (messages compared with their numbers left out), beside a `.expect`
//! file holding the message it must still give ("ok" when it reads). They replay on every run,
//! whatever the mutation code becomes. `PRETEXT_FUZZ_BLESS=1 cargo test --release -p
//! pretext-cli --test fuzz` rewrites them after a deliberate change of a message.

use std::collections::BTreeSet;
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

/// A reader under test: a valid file, where a damaged copy goes (other files of its data set
/// stay valid beside it), and the reader, returning its error message.
struct Target {
    name: String,
    valid: Vec<u8>,
    file: PathBuf,
    /// Prefix of the paths in messages, replaced by `$DIR` in the kept expectations.
    dir: PathBuf,
    read: Reader,
}

/// Reads a file, returning the error message.
type Reader = Box<dyn Fn(&Path) -> Result<(), String>>;

impl Target {
    fn new<T, E: std::fmt::Display>(
        name: &str,
        valid: Vec<u8>,
        file: PathBuf,
        dir: &Path,
        read: impl Fn(&Path) -> Result<T, E> + 'static,
    ) -> Target {
        Target {
            name: name.to_string(),
            valid,
            file,
            dir: dir.to_path_buf(),
            read: Box::new(move |p| read(p).map(|_| ()).map_err(|e| format!("{e:#}"))),
        }
    }

    /// Write `case` where the damaged file goes and read it: "ok", or the error message with
    /// the scratch folder's path as `$DIR`; a panic fails the test.
    fn outcome(&self, case: &[u8], what: &str) -> String {
        std::fs::write(&self.file, case).unwrap();
        match catch_unwind(AssertUnwindSafe(|| (self.read)(&self.file))) {
            Ok(Ok(())) => "ok".to_string(),
            Ok(Err(e)) => e.replace(&self.dir.display().to_string(), "$DIR"),
            Err(_) => panic!("{}: {what} panicked ({} bytes)", self.name, case.len()),
        }
    }

    /// `tests/fuzz_corpus/<name as a file name>`.
    fn corpus_dir(&self) -> PathBuf {
        let slug: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fuzz_corpus")
            .join(slug.trim_matches('_'))
    }
}

/// Kept cases per reader: the first of each kind of outcome, up to this many.
const KEEP: usize = 8;

/// The start of a message with its numbers left out: cases that differ only in a count, an
/// offset or the garbage a message quotes are the same kind of damage.
fn kind_of(outcome: &str) -> String {
    outcome
        .split(' ')
        .map(|w| if w.starts_with("$DIR") { "$DIR" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .take(96)
        .collect()
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pretext-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Damage each target's valid file `CASES` times and read every case; count the outcomes. With
/// `PRETEXT_FUZZ_BLESS` set, keep the first case of each kind of outcome as the target's corpus.
fn fuzz(targets: &[Target]) {
    let bless = std::env::var_os("PRETEXT_FUZZ_BLESS").is_some();
    for t in targets {
        let (mut ok, mut refused) = (0, 0);
        let mut kinds = BTreeSet::new();
        if bless {
            let _ = std::fs::remove_dir_all(t.corpus_dir());
            std::fs::create_dir_all(t.corpus_dir()).unwrap();
        }
        for seed in 1..=CASES {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let case = mutate(&t.valid, &mut rng);
            let outcome = t.outcome(&case, &format!("case {seed}"));
            if outcome == "ok" {
                ok += 1;
            } else {
                refused += 1;
            }
            if kinds.insert(kind_of(&outcome)) && bless && kinds.len() <= KEEP {
                let kept = t.corpus_dir().join(format!("case{seed:03}"));
                std::fs::write(kept.with_extension("bin"), &case).unwrap();
                std::fs::write(kept.with_extension("expect"), &outcome).unwrap();
            }
        }
        eprintln!(
            "{}: {CASES} damaged cases, {refused} refused with an error, {ok} read ({} kinds of \
             outcome)",
            t.name,
            kinds.len()
        );
    }
}

/// Replay each target's kept corpus: every case must still end exactly as recorded.
fn replay(targets: &[Target]) {
    for t in targets {
        let mut cases = 0;
        let dir = t.corpus_dir();
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: no corpus at {} ({e})", t.name, dir.display()));
        let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for bin in files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        {
            let want = std::fs::read_to_string(bin.with_extension("expect")).unwrap();
            let case = std::fs::read(bin).unwrap();
            let got = t.outcome(&case, &bin.display().to_string());
            assert_eq!(
                got,
                want,
                "{}: {} no longer ends as recorded (PRETEXT_FUZZ_BLESS=1 rewrites the corpus \
                 after a deliberate change)",
                t.name,
                bin.display()
            );
            cases += 1;
        }
        assert!(cases > 0, "{}: empty corpus in {}", t.name, dir.display());
        eprintln!("{}: {cases} kept cases replayed", t.name);
    }
}

fn idx_targets() -> Vec<Target> {
    let valid = idx::encode_idx(&idx::IdxArray {
        dims: vec![3, 4, 5],
        data: (0..60).collect(),
    });
    let dir = tempdir("idx");
    // Through the dataset loader too, with a label file beside it.
    let labels = idx::encode_idx(&idx::IdxArray {
        dims: vec![3],
        data: vec![0, 1, 2],
    });
    std::fs::write(dir.join("train-labels-idx1-ubyte"), &labels).unwrap();
    let set = dir.clone();
    vec![
        Target::new("IDX", valid.clone(), dir.join("x.idx"), &dir, idx::read_idx),
        Target::new(
            "IDX dataset",
            valid,
            dir.join("train-images-idx3-ubyte"),
            &dir,
            move |_| load_dir(&set, None),
        ),
    ]
}

fn cifar_targets() -> Vec<Target> {
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
    let set = dir.clone();
    vec![Target::new(
        "CIFAR",
        record.repeat(2),
        dir.join("data_batch_1.bin"),
        &dir,
        move |_| load_dir(&set, None),
    )]
}

fn image_targets() -> Vec<Target> {
    let img = image::GrayImage::from_fn(8, 6, |x, y| image::Luma([(x * 30 + y * 7) as u8]));
    ["png", "jpg"]
        .into_iter()
        .map(|ext| {
            // One folder per format, so one target's damaged file never sits beside the other's.
            let dir = tempdir(&format!("images-{ext}"));
            for (class, ext) in [("a", "png"), ("b", "jpg")] {
                std::fs::create_dir_all(dir.join(class)).unwrap();
                img.save(dir.join(class).join(format!("ok.{ext}"))).unwrap();
            }
            let mut valid = Vec::new();
            let format = if ext == "png" {
                image::ImageFormat::Png
            } else {
                image::ImageFormat::Jpeg
            };
            img.write_to(&mut std::io::Cursor::new(&mut valid), format)
                .unwrap();
            let set = dir.clone();
            Target::new(
                &format!("{ext} folder"),
                valid,
                dir.join("a").join(format!("damaged.{ext}")),
                &dir,
                move |_| load_dir(&set, None),
            )
        })
        .collect()
}

/// A WebDataset shard of three samples (a PNG and its class each), opened and every image
/// decoded, damaged members stopping the read (`data.on_error = "stop"`).
fn shard_targets() -> Vec<Target> {
    use pretext::vision::data::shards::{ShardSet, shards_from_folder};
    use pretext::vision::data::{ImageSource, OnError};
    let source = tempdir("shard-source");
    let img = image::GrayImage::from_fn(8, 6, |x, y| image::Luma([(x * 30 + y * 7) as u8]));
    for (class, n) in [("a", 2), ("b", 1)] {
        std::fs::create_dir_all(source.join(class)).unwrap();
        for i in 0..n {
            img.save(source.join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let dir = tempdir("shard");
    shards_from_folder(&source, &dir, 10, 0).unwrap();
    let file = dir.join("train-000000.tar");
    let valid = std::fs::read(&file).unwrap();
    vec![Target::new("webdataset shard", valid, file, &dir, |p| {
        let (set, _) = ShardSet::open(&[p.to_path_buf()], None, 4, OnError::Stop)?;
        (0..set.len()).try_for_each(|i| set.image(i).map(|_| ()))
    })]
}

fn word_vector_targets() -> Vec<Target> {
    let dir = tempdir("w2v");
    let e = Embeddings::new(
        vec!["cat".into(), "dog".into(), "yak".into()],
        4,
        (0..12).map(|i| i as f32 * 0.5).collect(),
    )
    .unwrap();
    [
        (Format::Text, "word2vec text"),
        (Format::Binary, "word2vec binary"),
    ]
    .into_iter()
    .map(|(format, name)| {
        let mut valid = Vec::new();
        e.write_to(&mut valid, format).unwrap();
        Target::new(name, valid, dir.join(format!("v.{name}")), &dir, |p| {
            Embeddings::load(p).map(|_| ())
        })
    })
    .collect()
}

fn config_tsv_checkpoint_targets() -> Vec<Target> {
    let dir = tempdir("misc");
    let config =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/mae_fmnist.toml"))
            .unwrap();
    let tsv =
        b"id\tlabel\ttext\n1\tpos\tgood film\n2\tneg\tbad film\n3\tpos\tfine acting\n".to_vec();
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
    vec![
        Target::new("TOML config", config, dir.join("c.toml"), &dir, |p| {
            PretrainConfig::load(Some(p), &[]).map(|_| ())
        }),
        Target::new("TSV", tsv, dir.join("t.tsv"), &dir, |p| {
            read_labelled_tsv(p, None, None).map(|_| ())
        }),
        Target::new("checkpoint", valid, path, &dir, |p| {
            Checkpoint::load(p).map(|_| ())
        }),
    ]
}

fn tokenizer_targets() -> Vec<Target> {
    let dir = tempdir("tokenizer");
    let corpus = dir.join("corpus.txt");
    let lines: Vec<String> = (0..300)
        .map(|i| format!("the quick fox {} jumps over dog {}", i % 17, i % 5))
        .collect();
    std::fs::write(&corpus, lines.join("\n")).unwrap();
    [Family::Bert, Family::Roberta]
        .into_iter()
        .map(|family| {
            let tok =
                TextTokenizer::train(family, std::slice::from_ref(&corpus), 120, true).unwrap();
            let path = dir.join(format!("{family:?}.json"));
            tok.save(&path).unwrap();
            let valid = std::fs::read(&path).unwrap();
            Target::new(
                &format!("tokenizer.json ({family:?})"),
                valid,
                path,
                &dir,
                |p| TextTokenizer::load(p).map(|_| ()),
            )
        })
        .collect()
}

/// Every reader, fuzzed then replayed. One test per group, so they run in parallel.
fn check(targets: Vec<Target>) {
    fuzz(&targets);
    replay(&targets);
}

#[test]
fn idx_files_never_panic() {
    check(idx_targets());
}

#[test]
fn cifar_batches_never_panic() {
    check(cifar_targets());
}

#[test]
fn png_and_jpeg_folders_never_panic() {
    check(image_targets());
}

#[test]
fn webdataset_shards_never_panic() {
    check(shard_targets());
}

#[test]
fn word_vectors_never_panic() {
    check(word_vector_targets());
}

#[test]
fn configs_tsvs_and_checkpoints_never_panic() {
    check(config_tsv_checkpoint_targets());
}

#[test]
fn tokenizer_files_never_panic() {
    check(tokenizer_targets());
}
