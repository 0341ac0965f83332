//! Round trips through the Hugging Face format, names and shapes, and error messages.

use std::path::PathBuf;

use burn::prelude::*;
use serde_json::json;

use super::export::*;
use super::import::*;
use super::*;
use crate::core::checkpoint::{load_module, module_tensors};
use crate::text::checkpoint::MlmCheckpoint;
use crate::text::config::MlmConfig;
use crate::text::encoder::MlmModel;
use crate::text::encoder::{NormPlacement, SizePreset};
use crate::text::test_support::{TempDir, grammar_corpus};
use crate::text::tokenizer::TextTokenizer;
use safetensors::tensor::{Dtype, TensorView};

const SENTENCES: [&str; 3] = [
    "the quick fox jumps over the lazy dog.",
    "The wise queen helps the zebra and the grumpy yak avoids the knight.",
    "a cat",
];

/// A one-layer model of `family` with every parameter moved off its initial value (so a
/// mix-up of, say, LayerNorm weight and bias cannot go unseen), and its tokenizer.
fn checkpoint(family: Family, lowercase: bool, dir: &TempDir) -> MlmCheckpoint {
    checkpoint_with(family, lowercase, NormPlacement::Post, dir)
}

/// [`checkpoint`] with post- or pre-norm layers.
fn checkpoint_with(
    family: Family,
    lowercase: bool,
    norm: NormPlacement,
    dir: &TempDir,
) -> MlmCheckpoint {
    let corpus = dir.write("corpus.txt", &grammar_corpus(200, 4).join("\n"));
    let tokenizer = TextTokenizer::train(family, &[corpus], 300, lowercase).unwrap();
    let encoder = EncoderConfig {
        layers: 1,
        hidden: 64,
        ffn: 128,
        max_position: 64 + family_offset(family),
        pad_id: tokenizer.pad_id() as usize,
        norm,
        ..EncoderConfig::preset(SizePreset::Tiny, family, tokenizer.vocab_size())
    };
    let device = Device::flex();
    let model = encoder.init(&device).unwrap();
    let mut tensors = module_tensors(&model);
    for (k, t) in tensors.iter_mut().enumerate() {
        for (j, v) in t.values.iter_mut().enumerate() {
            *v += 0.05 * ((j * 7919 + k * 104_729) as f32 * 0.618).sin();
        }
    }
    let model = load_module(model, &tensors).unwrap();
    let mut config = MlmConfig::default();
    config.tokenizer.family = family;
    config.tokenizer.lowercase = lowercase;
    MlmCheckpoint {
        model,
        encoder,
        tokenizer,
        config,
        simcse: None,
        mlm_head: true,
        step: 0,
        dir: dir.path().to_path_buf(),
    }
}

fn family_offset(family: Family) -> usize {
    match family {
        Family::Bert => 0,
        Family::Roberta => 2,
    }
}

/// Logits of `sentences` as one padded batch: per sentence, `len x vocab` values of its
/// real tokens.
fn logits(model: &MlmModel, tok: &TextTokenizer, sentences: &[&str]) -> Vec<Vec<f32>> {
    let device = Device::flex();
    let rows: Vec<Vec<u32>> = sentences.iter().map(|s| tok.encode(s).unwrap()).collect();
    let len = rows.iter().map(Vec::len).max().unwrap();
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for r in &rows {
        ids.extend(r.iter().map(|&i| i64::from(i)));
        ids.extend(std::iter::repeat_n(i64::from(tok.pad_id()), len - r.len()));
        mask.extend(std::iter::repeat_n(true, r.len()));
        mask.extend(std::iter::repeat_n(false, len - r.len()));
    }
    let shape = [rows.len(), len];
    let out = model
        .logits(
            Tensor::from_data(TensorData::new(ids, shape), &device),
            Tensor::from_data(TensorData::new(mask, shape), &device),
        )
        .unwrap();
    let vocab = out.dims()[2];
    let flat = out
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap();
    rows.iter()
        .enumerate()
        .map(|(i, r)| flat[i * len * vocab..(i * len + r.len()) * vocab].to_vec())
        .collect()
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

#[test]
fn export_then_import_keeps_the_model() {
    for (family, lowercase) in [(Family::Bert, true), (Family::Roberta, false)] {
        let dir = TempDir::new(&format!("export-round-{}", family.name()));
        let ckpt = checkpoint(family, lowercase, &dir);
        let out = dir.path().join("hf");
        let summary = export_hf(&ckpt, &out).unwrap();
        assert_eq!(summary.parameters, ckpt.model.num_params());
        for file in &summary.files {
            assert!(out.join(file).is_file(), "{file}");
        }
        let (model, enc, tok) = import_hf(&out, &Device::flex()).unwrap();
        assert_eq!(enc, ckpt.encoder);
        assert_eq!(module_tensors(&model), module_tensors(&ckpt.model));
        assert_eq!(tok.special_ids(), ckpt.tokenizer.special_ids());
        for s in SENTENCES {
            assert_eq!(tok.encode(s).unwrap(), ckpt.tokenizer.encode(s).unwrap());
        }
        let before = logits(&ckpt.model, &ckpt.tokenizer, &SENTENCES);
        let after = logits(&model, &tok, &SENTENCES);
        let diff = max_abs_diff(&before, &after);
        assert!(diff < 1e-6, "{family:?}: logits differ by {diff}");

        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(CONFIG_FILE)).unwrap()).unwrap();
        assert_eq!(config["model_type"], family.name());
        assert_eq!(config["architectures"][0], summary.architecture);
        let tok_config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(TOKENIZER_CONFIG_FILE)).unwrap())
                .unwrap();
        assert_eq!(tok_config["model_max_length"], 64);
        assert_eq!(tok_config["mask_token"], family.special_tokens().mask);
        let class = match family {
            Family::Bert => "BertTokenizerFast",
            Family::Roberta => "RobertaTokenizerFast",
        };
        assert_eq!(tok_config["tokenizer_class"], class);
        // No temporary file is left behind.
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want = summary.files.clone();
        want.sort();
        assert_eq!(names, want);
        // Exporting again over the folder replaces it.
        export_hf(&ckpt, &out).unwrap();
    }
}

/// Pre-norm encoders of either tokenizer family leave as `RobertaPreLayerNormForMaskedLM`
/// (its names, its position count from `pad_token_id + 1`) and come back unchanged.
#[test]
fn pre_norm_encoders_export_as_roberta_prelayernorm_and_come_back() {
    for family in [Family::Bert, Family::Roberta] {
        let dir = TempDir::new(&format!("export-pre-{}", family.name()));
        let ckpt = checkpoint_with(family, true, NormPlacement::Pre, &dir);
        let out = dir.path().join("hf");
        let summary = export_hf(&ckpt, &out).unwrap();
        assert_eq!(summary.architecture, "RobertaPreLayerNormForMaskedLM");
        assert_eq!(summary.parameters, ckpt.model.num_params());
        let weights = read_weights(&out.join(WEIGHTS_FILE)).unwrap();
        let p = "roberta_prelayernorm";
        for name in [
            format!("{p}.LayerNorm.weight"),
            format!("{p}.encoder.layer.0.attention.LayerNorm.bias"),
            format!("{p}.encoder.layer.0.intermediate.LayerNorm.weight"),
            "lm_head.layer_norm.weight".to_string(),
        ] {
            assert!(weights.contains_key(&name), "{family:?}: no {name}");
        }
        assert!(weights.keys().all(|n| !n.contains("output.LayerNorm")));
        // Hugging Face reads position pad_token_id + 1 for the first token: BERT's tokenizer
        // pads with 0, so one unused row goes first; RoBERTa's table is already laid out so.
        let shift = match family {
            Family::Bert => 1,
            Family::Roberta => 0,
        };
        let (shape, values) = &weights[&format!("{p}.embeddings.position_embeddings.weight")];
        assert_eq!(shape[0], ckpt.encoder.max_position + shift);
        assert!(values[..shift * 64].iter().all(|&v| v == 0.0));
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(CONFIG_FILE)).unwrap()).unwrap();
        assert_eq!(config["model_type"], "roberta-prelayernorm");
        assert_eq!(config["max_position_embeddings"], shape[0]);

        let (model, enc, tok) = import_hf(&out, &Device::flex()).unwrap();
        assert_eq!(enc, ckpt.encoder);
        assert_eq!(module_tensors(&model), module_tensors(&ckpt.model));
        let before = logits(&ckpt.model, &ckpt.tokenizer, &SENTENCES);
        let after = logits(&model, &tok, &SENTENCES);
        assert!(max_abs_diff(&before, &after) < 1e-6, "{family:?}");
        // And the layers are not the post-norm ones under other names.
        let mut post = ckpt.encoder.clone();
        post.norm = NormPlacement::Post;
        let tensors: Vec<_> = module_tensors(&ckpt.model)
            .into_iter()
            .filter(|t| !t.name.starts_with("encoder.final_norm"))
            .collect();
        let post_model = load_module(post.init(&Device::flex()).unwrap(), &tensors).unwrap();
        let other = logits(&post_model, &tok, &SENTENCES);
        assert!(max_abs_diff(&before, &other) > 1e-2, "{family:?}");
    }
}

#[test]
fn tokenizer_config_follows_the_normalizer() {
    let bert = |normalizer: serde_json::Value| {
        let file = json!({ "normalizer": normalizer }).to_string();
        tokenizer_files(Family::Bert, file.as_bytes(), true, 512)
            .unwrap()
            .0
    };
    let cased = bert(json!({"type": "BertNormalizer", "clean_text": true,
        "handle_chinese_chars": true, "strip_accents": null, "lowercase": false}));
    assert_eq!(cased["tokenizer_class"], "BertTokenizerFast");
    assert_eq!(
        cased["do_lower_case"], false,
        "the file wins over the setting"
    );
    assert_eq!(cased["model_max_length"], 512);
    let foreign = bert(json!({"type": "NFKC"}));
    assert_eq!(foreign["tokenizer_class"], "PreTrainedTokenizerFast");

    let roberta = |normalizer: serde_json::Value| {
        let file = json!({ "normalizer": normalizer }).to_string();
        tokenizer_files(Family::Roberta, file.as_bytes(), false, 512).unwrap()
    };
    let (config, special) = roberta(json!({"type": "Lowercase"}));
    assert_eq!(config["tokenizer_class"], "PreTrainedTokenizerFast");
    assert_eq!(special["bos_token"], "<s>");
    assert_eq!(special["eos_token"], "</s>");
    let (config, _) = roberta(serde_json::Value::Null);
    assert_eq!(config["tokenizer_class"], "RobertaTokenizerFast");
    assert_eq!(config["add_prefix_space"], true);
}

/// Every parameter name of `BertForMaskedLM` / `RobertaForMaskedLM` (transformers 5.24)
/// for two layers, written out independently of [`hf_table`].
fn expected_names(family: Family) -> Vec<String> {
    let p = family.name();
    let mut names: Vec<String> = [
        "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight",
        "embeddings.LayerNorm.weight",
        "embeddings.LayerNorm.bias",
    ]
    .iter()
    .map(|n| format!("{p}.{n}"))
    .collect();
    for i in 0..2 {
        for n in [
            "attention.self.query.weight",
            "attention.self.query.bias",
            "attention.self.key.weight",
            "attention.self.key.bias",
            "attention.self.value.weight",
            "attention.self.value.bias",
            "attention.output.dense.weight",
            "attention.output.dense.bias",
            "attention.output.LayerNorm.weight",
            "attention.output.LayerNorm.bias",
            "intermediate.dense.weight",
            "intermediate.dense.bias",
            "output.dense.weight",
            "output.dense.bias",
            "output.LayerNorm.weight",
            "output.LayerNorm.bias",
        ] {
            names.push(format!("{p}.encoder.layer.{i}.{n}"));
        }
    }
    let head: [&str; 8] = match family {
        Family::Bert => [
            "cls.predictions.bias",
            "cls.predictions.transform.dense.weight",
            "cls.predictions.transform.dense.bias",
            "cls.predictions.transform.LayerNorm.weight",
            "cls.predictions.transform.LayerNorm.bias",
            "cls.predictions.decoder.weight",
            "cls.predictions.decoder.bias",
            "",
        ],
        Family::Roberta => [
            "lm_head.bias",
            "lm_head.dense.weight",
            "lm_head.dense.bias",
            "lm_head.layer_norm.weight",
            "lm_head.layer_norm.bias",
            "lm_head.decoder.weight",
            "lm_head.decoder.bias",
            "",
        ],
    };
    names.extend(head.iter().filter(|n| !n.is_empty()).map(|n| n.to_string()));
    names.sort();
    names
}

#[test]
fn exported_names_and_shapes_are_hugging_face_ones() {
    for family in [Family::Bert, Family::Roberta] {
        let dir = TempDir::new(&format!("export-names-{}", family.name()));
        let mut ckpt = checkpoint(family, true, &dir);
        ckpt.encoder.layers = 2;
        ckpt.model = ckpt.encoder.init(&Device::flex()).unwrap();
        let out = dir.path().join("hf");
        export_hf(&ckpt, &out).unwrap();
        let weights = read_weights(&out.join(WEIGHTS_FILE)).unwrap();
        let mut names: Vec<String> = weights.keys().cloned().collect();
        names.sort();
        assert_eq!(names, expected_names(family));
        let (h, f, v) = (64, 128, ckpt.encoder.vocab_size);
        let p = family.name();
        let shape = |n: &str| weights[n].0.clone();
        assert_eq!(
            shape(&format!("{p}.encoder.layer.1.intermediate.dense.weight")),
            [f, h]
        );
        assert_eq!(
            shape(&format!("{p}.encoder.layer.1.output.dense.weight")),
            [h, f]
        );
        assert_eq!(
            shape(&format!("{p}.embeddings.word_embeddings.weight")),
            [v, h]
        );
        // PyTorch layout: row o of a Linear weight holds the inputs of output o.
        let burn = module_tensors(&ckpt.model);
        let w = burn
            .iter()
            .find(|t| t.name == "encoder.layers.1.intermediate.weight")
            .unwrap();
        let hf = &weights[&format!("{p}.encoder.layer.1.intermediate.dense.weight")].1;
        assert_eq!(hf[3 * h + 5], w.values[5 * f + 3]);
    }
}

#[test]
fn import_errors_name_the_file_and_the_tensor() {
    let dir = TempDir::new("export-errors");
    let ckpt = checkpoint(Family::Bert, true, &dir);
    let out = dir.path().join("hf");
    export_hf(&ckpt, &out).unwrap();
    let device = Device::flex();
    let weights_path = out.join(WEIGHTS_FILE);
    let good = std::fs::read(&weights_path).unwrap();
    let rewrite = |edit: &dyn Fn(&mut Weights)| {
        let mut w = read_weights(&weights_path).unwrap();
        edit(&mut w);
        let owned: Vec<(String, Vec<usize>, Vec<u8>)> = w
            .into_iter()
            .map(|(n, (s, v))| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
            .collect();
        let views: Vec<(String, TensorView)> = owned
            .iter()
            .map(|(n, s, b)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
                )
            })
            .collect();
        std::fs::write(
            &weights_path,
            safetensors::tensor::serialize(views, None).unwrap(),
        )
        .unwrap();
    };
    let err_of = || format!("{:#}", import_hf(&out, &device).err().unwrap());

    let missing = "bert.encoder.layer.0.attention.output.LayerNorm.bias";
    rewrite(&|w| {
        w.remove(missing);
    });
    let err = err_of();
    assert!(
        err.contains(missing) && err.contains(WEIGHTS_FILE) && err.contains("missing"),
        "{err}"
    );

    std::fs::write(&weights_path, &good).unwrap();
    let name = "bert.encoder.layer.0.intermediate.dense.weight";
    rewrite(&|w| {
        w.get_mut(name).unwrap().0 = vec![64, 128];
    });
    let err = err_of();
    assert!(err.contains(name) && err.contains("[64, 128]"), "{err}");

    std::fs::write(&weights_path, &good).unwrap();
    rewrite(&|w| {
        w.get_mut("cls.predictions.decoder.weight").unwrap().1[0] += 1.0;
    });
    let err = err_of();
    assert!(
        err.contains("cls.predictions.decoder.weight")
            && err.contains("bert.embeddings.word_embeddings.weight"),
        "{err}"
    );

    // The tied copies are optional, as in transformers' own save_pretrained output.
    std::fs::write(&weights_path, &good).unwrap();
    rewrite(&|w| {
        w.remove("cls.predictions.decoder.weight");
        w.remove("cls.predictions.decoder.bias");
    });
    import_hf(&out, &device).unwrap();

    rewrite(&|w| {
        w.insert("bert.pooler.dense.bias".into(), (vec![1], vec![0.0]));
    });
    let err = err_of();
    assert!(err.contains("bert.pooler.dense.bias"), "{err}");

    std::fs::write(&weights_path, &good).unwrap();
    let config_path = out.join(CONFIG_FILE);
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        config.replace("\"model_type\": \"bert\"", "\"model_type\": \"distilbert\""),
    )
    .unwrap();
    let err = err_of();
    assert!(
        err.contains("distilbert") && err.contains(CONFIG_FILE),
        "{err}"
    );
    std::fs::write(&config_path, config.replace("\"gelu\"", "\"relu\"")).unwrap();
    let err = err_of();
    assert!(err.contains("relu") && err.contains(CONFIG_FILE), "{err}");
    std::fs::write(&config_path, &config).unwrap();
    import_hf(&out, &device).unwrap();

    std::fs::remove_file(out.join(TOKENIZER_FILE)).unwrap();
    assert!(err_of().contains(TOKENIZER_FILE));

    let file = dir.write("a-file", "x");
    let err = export_hf(&ckpt, &file).unwrap_err().to_string();
    assert!(
        err.contains("a-file") && err.contains("not a folder"),
        "{err}"
    );
}

/// Run folders for `bench/mlm/check_export.py`, written under `$PRETEXT_EXPORT_FIXTURE`
/// (one per family and casing): a briefly trained model's `checkpoint.safetensors` and
/// `tokenizer.json`, its export in `hf/`, and `logits.json` as `pretext mlm logits` writes
/// it. `PRETEXT_EXPORT_FIXTURE=/tmp/fx cargo test --release -p pretext --lib
/// text::hf -- --ignored`
#[test]
#[ignore = "writes fixtures for the Python check; needs PRETEXT_EXPORT_FIXTURE"]
fn write_python_fixture() {
    use burn::optim::GradientsParams;

    use crate::core::checkpoint::Checkpoint;
    use crate::core::optim::{OptimConfig, Optimizer, cosine_lr};
    use crate::text::examples::{line_examples, pad_batch};
    use crate::text::masking::{MaskingConfig, mask_tokens};

    let root =
        PathBuf::from(std::env::var("PRETEXT_EXPORT_FIXTURE").expect("set PRETEXT_EXPORT_FIXTURE"));
    let sentences = [
        "the quick fox jumps over the lazy dog.",
        "The Wise QUEEN helps the zebra, and the grumpy yak avoids the knight!",
        "zigzag ünïcode café ✓",
    ];
    for (family, lowercase, norm) in [
        (Family::Bert, true, NormPlacement::Post),
        (Family::Bert, false, NormPlacement::Post),
        (Family::Roberta, true, NormPlacement::Post),
        (Family::Roberta, false, NormPlacement::Post),
        (Family::Bert, true, NormPlacement::Pre),
        (Family::Roberta, false, NormPlacement::Pre),
    ] {
        let run = root.join(format!(
            "{}-{}{}",
            family.name(),
            if lowercase { "lower" } else { "cased" },
            if norm == NormPlacement::Pre {
                "-pre"
            } else {
                ""
            }
        ));
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(&run).unwrap();
        let scratch = TempDir::new(&format!("fixture-{}-{lowercase}", family.name()));
        let lines = grammar_corpus(400, 5);
        let corpus = scratch.write("c.txt", &lines.join("\n"));
        let tok = TextTokenizer::train(family, &[corpus], 300, lowercase).unwrap();
        tok.save(&run.join(TOKENIZER_FILE)).unwrap();
        let encoder = EncoderConfig {
            layers: 2,
            hidden: 64,
            ffn: 256,
            max_position: 64 + family_offset(family),
            dropout: 0.0,
            pad_id: tok.pad_id() as usize,
            norm,
            ..EncoderConfig::preset(SizePreset::Tiny, family, tok.vocab_size())
        };
        let device = Device::flex().autodiff();
        device.seed(1);
        let mut model = encoder.init(&device).unwrap();
        let examples = line_examples(&tok, &lines, 48).unwrap();
        let masking = MaskingConfig::default();
        let mut opt = Optimizer::new(OptimConfig {
            lr: 2e-3,
            weight_decay: 0.01,
            ..Default::default()
        });
        let (steps, batch_size) = (200, 16);
        for step in 0..steps {
            let rows: Vec<_> = (0..batch_size)
                .map(|b| {
                    let i = (step * batch_size + b) % examples.len();
                    let seed = masking.seed_mix(0, step as u64, i as u64);
                    let ids = &examples[i].ids;
                    mask_tokens(
                        ids,
                        None,
                        &masking,
                        &tok.special_ids(),
                        tok.vocab_size(),
                        seed,
                    )
                    .unwrap()
                })
                .collect();
            let batch = pad_batch(&rows, tok.pad_id(), 0).unwrap();
            if batch.masked_count() == 0 {
                continue;
            }
            let loss = model
                .loss(
                    batch.input_tensor(&device),
                    batch.attention_tensor(&device),
                    &batch.labels,
                )
                .unwrap();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = opt.step(model, grads, cosine_lr(2e-3, step, 20, steps));
        }
        let model = model.valid();
        let mut config = MlmConfig::default();
        config.tokenizer.family = family;
        config.tokenizer.lowercase = lowercase;
        Checkpoint {
            model: module_tensors(&model),
            optimizer: Vec::new(),
            meta: json!({
                "kind": "mlm",
                "config": config.to_toml(),
                "encoder": encoder,
                "step": steps,
            }),
        }
        .save(&run.join("checkpoint.safetensors"))
        .unwrap();

        let ckpt = MlmCheckpoint::load(&run, &Device::flex()).unwrap();
        export_hf(&ckpt, &run.join("hf")).unwrap();
        let mut input_ids = Vec::new();
        let mut all_logits = Vec::new();
        let masked = format!("The lazy {} chases the cat.", family.special_tokens().mask);
        let sentences = [sentences[0], sentences[1], sentences[2], masked.as_str()];
        for s in sentences {
            let ids = ckpt.tokenizer.encode(s).unwrap();
            let vocab = ckpt.encoder.vocab_size;
            let flat = logits(&ckpt.model, &ckpt.tokenizer, &[s]).remove(0);
            all_logits.push(flat.chunks(vocab).map(<[f32]>::to_vec).collect::<Vec<_>>());
            input_ids.push(ids);
        }
        let out = json!({"sentences": sentences, "input_ids": input_ids, "logits": all_logits});
        std::fs::write(run.join("logits.json"), out.to_string()).unwrap();
        eprintln!("wrote {}", run.display());
    }
}
