//! End-to-end behaviour of pretraining, and of evaluation reading its checkpoints, on small
//! slices of the embedded data.

use std::path::PathBuf;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use pretext::core::checkpoint::{Checkpoint, module_tensors};
use pretext::core::eval::Protocols;
use pretext::core::labels::{LabelsConfig, StudyJournal, run_study};
use pretext::core::run_report::{LABELS_FILE, save_label_study};
use pretext::core::train::TrainOptions;
use pretext::vision::backbones::Backbone;
use pretext::vision::checkpoint::ImageCheckpoint;
use pretext::vision::config::PretrainConfig;
use pretext::vision::data::{ImageSet, embedded_fashion_mnist};
use pretext::vision::eval::evaluate;
use pretext::vision::labels::ImageLabels;
use pretext::vision::methods::{Byol, Dino, Method, MocoV2, MocoV3, Nnclr, SimClr, Swav};
use pretext::vision::pretrain::pretrain;
use pretext::vision::report::image_report;

/// A run folder unique to this test process (a second config with the same name shares it).
fn out_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("pretext-it-{name}-{}", std::process::id()))
}

/// A configuration small enough for a test: narrow CNN, small head.
fn tiny_config(name: &str, extra: &[&str]) -> PretrainConfig {
    let mut sets: Vec<String> = [
        "backbone.width=8",
        "projection.hidden=32",
        "projection.output=16",
        "prediction.hidden=32",
        "prediction.output=16",
        "batch_size=32",
        "epochs=2",
        "data.train_limit=256",
        "optimizer.lr=0.003",
        "optimizer.warmup_epochs=0.5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    sets.push(format!("train.out_dir=\"{}\"", out_dir(name).display()));
    sets.extend(extra.iter().map(|s| s.to_string()));
    PretrainConfig::from_toml("", name, &sets).unwrap()
}

fn train_set() -> ImageSet {
    embedded_fashion_mnist().unwrap().train
}

fn quiet() -> TrainOptions {
    TrainOptions {
        quiet: true,
        ..Default::default()
    }
}

#[derive(Default)]
struct Ids(Vec<(ParamId, usize)>);

impl ModuleVisitor for Ids {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        self.0.push((p.id, D));
    }
}

fn ids<M: Module>(m: &M) -> Vec<(ParamId, usize)> {
    let mut v = Ids::default();
    m.visit(&mut v);
    v.0
}

fn has_grad(grads: &GradientsParams, id: ParamId, rank: usize) -> bool {
    match rank {
        1 => grads.get::<1>(id).is_some(),
        2 => grads.get::<2>(id).is_some(),
        4 => grads.get::<4>(id).is_some(),
        _ => false,
    }
}

#[test]
fn byol_target_takes_no_gradient_and_online_learns() {
    let config = tiny_config("byol-grad", &["method=byol"]);
    let device = Device::flex().autodiff();
    let model = Byol::init(&config, (1, 28, 28), &device);
    let views: Vec<Tensor<4>> = (0..2)
        .map(|v| {
            Tensor::<4>::random(
                [8, 1, 28, 28],
                burn::tensor::Distribution::Normal(v as f64, 1.0),
                &device,
            )
        })
        .collect();
    // The target's forward is never taped: its parameters and the images take no gradient, so
    // every op on the way is untracked (burn's autodiff keeps no backward step and no saved
    // activation for it), and its output needs no detach to be cut off. Were any target
    // parameter left trainable, its output would be tracked, as the online branch's is.
    let both = || Tensor::cat(views.clone(), 0);
    assert!(
        !model.target.forward(both()).is_tracked(),
        "the target's forward was recorded on the autodiff tape"
    );
    assert!(model.online.forward(both()).is_tracked());
    let loss = model.loss(views).unwrap().loss;
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let online = ids(&model.online);
    let target = ids(&model.target);
    // Every trainable online parameter gets a gradient (running statistics are buffers).
    let online_with_grad = online
        .iter()
        .filter(|(id, r)| has_grad(&grads, *id, *r))
        .count();
    assert!(
        online_with_grad >= 10,
        "only {online_with_grad} online tensors received a gradient"
    );
    assert!(
        ids(&model.predictor)
            .iter()
            .all(|(id, r)| has_grad(&grads, *id, *r) || *r == 1)
    );
    // Stop-gradient: nothing reaches the target network.
    assert!(
        target.iter().all(|(id, r)| !has_grad(&grads, *id, *r)),
        "a gradient reached the target"
    );
    // The online network still requires gradients after the target was built from it.
    assert!(model.online.projection_requires_grad());
}

trait RequiresGrad {
    fn projection_requires_grad(&self) -> bool;
}

impl RequiresGrad for pretext::vision::methods::Branch {
    fn projection_requires_grad(&self) -> bool {
        let mut found = Vec::new();
        struct Check<'a>(&'a mut Vec<bool>);
        impl ModuleVisitor for Check<'_> {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                if D > 1 {
                    self.0.push(p.val().is_require_grad());
                }
            }
        }
        self.projection.visit(&mut Check(&mut found));
        !found.is_empty() && found.iter().all(|&b| b)
    }
}

#[test]
fn byol_run_learns_and_moves_the_target() {
    let config = tiny_config("byol-run", &["method=byol", "epochs=1"]);
    let before = Byol::init(&config, (1, 28, 28), &Device::flex().autodiff());
    let (after, summary) =
        pretrain::<Byol>(&config, &train_set(), &Device::flex(), &quiet()).unwrap();
    assert_eq!(summary.steps, 8);
    assert!(summary.final_loss.is_finite());
    let changed = |a: &pretext::vision::methods::Branch, b: &pretext::vision::methods::Branch| {
        module_tensors(a)
            .iter()
            .zip(module_tensors(b))
            .any(|(x, y)| x.values != y.values)
    };
    assert!(
        changed(&before.online, &after.online),
        "online network did not train"
    );
    assert!(
        changed(&before.target, &after.target),
        "EMA did not move the target"
    );
}

#[test]
fn simclr_loss_falls_and_features_beat_random_init() {
    let config = tiny_config(
        "simclr-learns",
        &[
            "epochs=6",
            "data.train_limit=1024",
            "batch_size=64",
            "backbone.width=16",
            "eval.linear_epochs=20",
        ],
    );
    let splits = embedded_fashion_mnist().unwrap();
    let device = Device::flex();
    let (model, summary) = pretrain::<SimClr>(&config, &splits.train, &device, &quiet()).unwrap();
    assert!(
        summary.last_epoch_loss < summary.first_loss - 0.3,
        "loss did not fall: first {} last epoch {}",
        summary.first_loss,
        summary.last_epoch_loss
    );
    let train = splits.train.take(1024);
    let test = splits.test.unwrap().take(500);
    let (mean, std) = train.channel_stats();
    let protocols = Protocols {
        knn: true,
        linear: true,
    };
    let score = |backbone: &pretext::vision::backbones::Backbone| {
        evaluate(
            backbone,
            &train,
            &test,
            &mean,
            &std,
            &config.eval,
            protocols,
            0,
            &device,
        )
        .unwrap()
    };
    let trained = score(model.backbone());
    device.seed(config.seed);
    let baseline = score(SimClr::init(&config, (1, 28, 28), &device).backbone());
    let (tk, rk) = (trained.knn.unwrap(), baseline.knn.unwrap());
    let (tl, rl) = (trained.linear.unwrap(), baseline.linear.unwrap());
    eprintln!("kNN {tk:.3} vs random {rk:.3}; linear {tl:.3} vs random {rl:.3}");
    assert!(tk > 0.1 && tl > 0.1, "no better than chance");
    assert!(tk > rk, "kNN {tk} does not beat random init {rk}");
    assert!(tl > rl, "linear probe {tl} does not beat random init {rl}");
}

#[test]
fn resumed_run_equals_uninterrupted_run_and_same_seed_repeats() {
    let set = train_set();
    let device = Device::flex();
    let full = tiny_config("resume-full", &[]);
    let (_, a) = pretrain::<SimClr>(&full, &set, &device, &quiet()).unwrap();
    assert_eq!(a.steps, 16);

    let part = tiny_config("resume-part", &["train.max_steps=5"]);
    let (_, p) = pretrain::<SimClr>(&part, &set, &device, &quiet()).unwrap();
    assert_eq!(p.steps, 5);
    let rest = tiny_config("resume-part", &[]);
    let (_, b) = pretrain::<SimClr>(
        &rest,
        &set,
        &device,
        &TrainOptions {
            resume: true,
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(b.resumed_from_step, 5);
    assert_eq!(b.steps, 16);

    let ca = Checkpoint::load(&a.checkpoint).unwrap();
    let cb = Checkpoint::load(&b.checkpoint).unwrap();
    // Same seed, same machine: the same numbers again.
    let again = tiny_config("resume-again", &[]);
    let (_, c) = pretrain::<SimClr>(&again, &set, &device, &quiet()).unwrap();
    let cc = Checkpoint::load(&c.checkpoint).unwrap();
    assert_eq!(
        first_difference(&ca.model, &cc.model),
        None,
        "same seed, different weights"
    );
    assert_eq!(
        first_difference(&ca.model, &cb.model),
        None,
        "resumed weights differ from the uninterrupted run"
    );
    assert!(
        ca.optimizer == cb.optimizer,
        "resumed optimizer state differs"
    );
    assert_eq!(a.final_loss, b.final_loss);
}

/// The first tensor whose values differ, with the largest difference.
fn first_difference(
    a: &[pretext::core::checkpoint::NamedTensor],
    b: &[pretext::core::checkpoint::NamedTensor],
) -> Option<(String, f32)> {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .find(|(x, y)| x.values != y.values)
        .map(|(x, y)| {
            let worst = x
                .values
                .iter()
                .zip(&y.values)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            (x.name.clone(), worst)
        })
}

#[test]
fn nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let config = tiny_config(
        "nan",
        &[
            "optimizer.kind=\"sgd\"",
            "optimizer.lr=1e20",
            "optimizer.warmup_epochs=0",
            "train.checkpoint_every=1",
        ],
    );
    let err = pretrain::<SimClr>(&config, &train_set(), &Device::flex(), &quiet())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("loss became") || err.contains("weights became non-finite"),
        "{err}"
    );
    assert!(err.contains("last good checkpoint"), "{err}");
    let ckpt = Checkpoint::load(&pretext::vision::pretrain::checkpoint_path(&config)).unwrap();
    let step = ckpt.meta["step"].as_u64().unwrap();
    assert!(
        step >= 1,
        "no good checkpoint was written before the failure"
    );
    assert!(
        ckpt.model
            .iter()
            .all(|t| t.values.iter().all(|v| v.is_finite())),
        "the kept checkpoint holds non-finite weights"
    );

    // Before any checkpoint exists, the guard does not claim to keep one.
    let early = tiny_config(
        "nan-early",
        &[
            "optimizer.kind=\"sgd\"",
            "optimizer.lr=1e20",
            "optimizer.warmup_epochs=0",
        ],
    );
    let err = pretrain::<SimClr>(&early, &train_set(), &Device::flex(), &quiet())
        .unwrap_err()
        .to_string();
    assert!(err.contains("No checkpoint had been written yet"), "{err}");
}

#[test]
fn batch_larger_than_dataset_is_an_error() {
    let config = tiny_config("big-batch", &["batch_size=512", "data.train_limit=100"]);
    let err = pretrain::<SimClr>(&config, &train_set(), &Device::flex(), &quiet())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("batch_size = 512") && err.contains("100 images"),
        "{err}"
    );
}

#[test]
fn label_study_runs_every_arm_and_leaves_the_checkpoint_alone() {
    let config = tiny_config(
        "labels",
        &[
            "epochs=1",
            "eval.finetune.epochs=1",
            "eval.finetune.min_steps=40",
            "eval.finetune.lr=0.005",
            "eval.finetune.batch_size=32",
            "eval.linear_epochs=10",
        ],
    );
    let splits = embedded_fashion_mnist().unwrap();
    let device = Device::flex();
    let (_, summary) = pretrain::<SimClr>(&config, &splits.train, &device, &quiet()).unwrap();
    let ckpt = ImageCheckpoint::open(&summary.checkpoint, &device).unwrap();

    // The supervised arm starts from a fresh initialisation; fine-tuning from the checkpoint.
    let flat = |b: &pretext::vision::backbones::Backbone| {
        module_tensors(b)
            .into_iter()
            .flat_map(|t| t.values)
            .collect::<Vec<f32>>()
    };
    let ad = device.clone().autodiff();
    let pretrained = flat(&ckpt.backbone);
    assert_eq!(flat(&ckpt.backbone_on(&ad).unwrap()), pretrained);
    assert_ne!(flat(&ckpt.random_backbone(11, &ad)), pretrained);

    let pool = splits.train.take(400);
    let test = splits.test.unwrap().take(200);
    let task = ImageLabels::new(&ckpt, &config, &pool, &test, &device).unwrap();
    // FixMatch from scratch starts where the supervised baseline does; the other arms from
    // the checkpoint.
    for (arm, from_checkpoint) in [
        ("fixmatch_scratch", false),
        ("scratch", false),
        ("fixmatch", true),
        ("distill", true),
    ] {
        let start = flat(&task.starting_encoder(arm, 9).unwrap().backbone);
        assert_eq!(start == pretrained, from_checkpoint, "{arm}");
    }
    assert_eq!(
        flat(
            &task
                .starting_encoder("fixmatch_scratch", 9)
                .unwrap()
                .backbone
        ),
        flat(&task.starting_encoder("scratch", 9).unwrap().backbone)
    );
    let labels = LabelsConfig {
        fractions: vec![1.0, 0.25],
        seeds: 1,
        validation_fraction: 0.1,
        arms: Vec::new(),
    };
    let journal_path = out_dir("labels-journal.jsonl");
    let _ = std::fs::remove_file(&journal_path);
    let mut journal = StudyJournal::open(&journal_path, serde_json::json!({"test": 1})).unwrap();
    let study = run_study(&task, &labels, 5, Some(&mut journal), |_| {}).unwrap();
    drop(journal);
    let arms = [
        "knn",
        "linear",
        "finetune",
        "scratch",
        "distill",
        "fixmatch",
        "fixmatch_scratch",
    ];
    for arm in arms {
        // The semi-supervised arms have no unlabelled images to use at 100%.
        let semi = ["distill", "fixmatch", "fixmatch_scratch"].contains(&arm);
        for fraction in [0.25, 1.0] {
            let run = study
                .runs
                .iter()
                .find(|r| r.arm == arm && r.fraction == fraction);
            if semi && fraction == 1.0 {
                assert!(run.is_none(), "{arm} ran at 100%");
                continue;
            }
            let run = run.unwrap_or_else(|| panic!("no run of {arm} at {fraction}"));
            assert!(run.accuracy > 0.15, "{arm} at {fraction}: {}", run.accuracy);
        }
    }
    assert_eq!(study.runs.len(), 11);
    let fixmatch = study.runs.iter().find(|r| r.arm == "fixmatch").unwrap();
    assert!(
        fixmatch.detail["pseudo_label_rate"].as_f64().is_some(),
        "{:?}",
        fixmatch.detail
    );
    let quarter = study.runs.iter().find(|r| r.fraction == 0.25).unwrap();
    assert!((95..=105).contains(&(quarter.labelled + quarter.validation)));
    let json = serde_json::to_value(&study).unwrap();
    assert_eq!(json["summary"].as_array().unwrap().len(), 11);
    assert_eq!(json["labels_saved"].as_array().unwrap().len(), 1);
    // Every arm resumes from the journal: the same study again runs nothing.
    let mut journal = StudyJournal::open(&journal_path, serde_json::json!({"test": 1})).unwrap();
    let again = run_study(&task, &labels, 5, Some(&mut journal), |_| {
        panic!("reran a run")
    })
    .unwrap();
    assert_eq!(again.reused, 11);
    for (a, b) in study.runs.iter().zip(&again.runs) {
        assert_eq!((&a.arm, a.accuracy), (&b.arm, b.accuracy));
    }
    // Neither the frozen probes nor fine-tuning (which trains its own copy) touch the
    // checkpoint's backbone.
    assert_eq!(flat(&ckpt.backbone), pretrained);

    // The run's report shows every figure, the study's curves among them.
    save_label_study(&ckpt.dir.join(LABELS_FILE), &study, serde_json::json!({})).unwrap();
    let splits = pretext::vision::data::SourceSplits::from(pretext::vision::data::Splits {
        train: pool,
        test: Some(test),
        ..splits
    });
    let html = image_report(&ckpt.dir, &splits, &[], &device).unwrap();
    for id in [
        "overview",
        "curves",
        "time",
        "labels",
        "map",
        "neighbours",
        "confusion",
        "config",
    ] {
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "no {id} section"
        );
    }
    assert!(html.contains("data:image/png;base64,"), "no neighbour grid");
    assert!(
        html.matches("<svg").count() >= 5,
        "curves, label plot and map"
    );
    assert!(html.contains("test accuracy against labelled fraction"));
    assert!(!html.contains("Not recorded"), "summary.json was written");
    let _ = std::fs::remove_dir_all(out_dir("labels"));
}

/// What `eval labels --baseline-from` relies on: the supervised-from-scratch arm does not depend
/// on the method or the weights of the checkpoint it is run beside, only on its architecture.
#[test]
fn the_supervised_baseline_is_the_same_beside_any_method_of_one_architecture() {
    let finetune = [
        "epochs=1",
        "eval.finetune.epochs=1",
        "eval.finetune.min_steps=20",
        "eval.finetune.batch_size=32",
    ];
    let splits = embedded_fashion_mnist().unwrap();
    let (pool, test) = (splits.train.take(300), splits.test.unwrap().take(100));
    let device = Device::flex();
    let labels = LabelsConfig {
        fractions: vec![0.5],
        seeds: 1,
        validation_fraction: 0.1,
        arms: vec!["scratch".into()],
    };
    let config = tiny_config("baseline-simclr", &finetune);
    let (_, simclr) = pretrain::<SimClr>(&config, &splits.train, &device, &quiet()).unwrap();
    let simclr = ImageCheckpoint::open(&simclr.checkpoint, &device).unwrap();
    let byol_config = tiny_config(
        "baseline-byol",
        &[&finetune[..], &["method=\"byol\""]].concat(),
    );
    let (_, byol) = pretrain::<Byol>(&byol_config, &splits.train, &device, &quiet()).unwrap();
    let byol = ImageCheckpoint::open(&byol.checkpoint, &device).unwrap();
    let study = |ckpt: &ImageCheckpoint, config: &PretrainConfig| {
        let task = ImageLabels::new(ckpt, config, &pool, &test, &device).unwrap();
        run_study(&task, &labels, 5, None, |_| {}).unwrap()
    };
    let (a, b) = (study(&simclr, &config), study(&byol, &byol_config));
    let accuracy = |s: &pretext::core::labels::LabelStudy, arm: &str| {
        s.runs.iter().find(|r| r.arm == arm).unwrap().accuracy
    };
    assert_eq!(accuracy(&a, "scratch"), accuracy(&b, "scratch"));
    // ... while the arms that read the checkpoint see two different backbones.
    assert_ne!(
        module_tensors(&simclr.backbone)[0].values,
        module_tensors(&byol.backbone)[0].values
    );
    for dir in ["baseline-simclr", "baseline-byol"] {
        let _ = std::fs::remove_dir_all(out_dir(dir));
    }
}

#[test]
fn a_run_folder_is_never_silently_replaced_resumed_on_other_data_or_shared() {
    let set = train_set();
    let device = Device::flex();
    let config = tiny_config("guarded", &["epochs=1", "data.train_limit=64"]);
    let (_, first) = pretrain::<SimClr>(&config, &set, &device, &quiet()).unwrap();
    let written = Checkpoint::load(&first.checkpoint).unwrap();

    // A fresh run into the folder is refused and leaves the checkpoint as it was.
    let err = pretrain::<SimClr>(&config, &set, &device, &quiet()).unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("already holds a run")
            && text.contains("--resume")
            && text.contains("--overwrite"),
        "{text}"
    );
    assert!(Checkpoint::load(&first.checkpoint).unwrap().model == written.model);

    // A temporary file left by a killed writer is removed by the next run in the folder.
    let stale =
        std::path::Path::new(&config.train.out_dir).join(".checkpoint.safetensors.tmp-99999");
    std::fs::write(&stale, b"half a checkpoint").unwrap();

    // --resume on the finished run says so.
    let resume = TrainOptions {
        resume: true,
        quiet: true,
        ..Default::default()
    };
    let err = format!(
        "{:#}",
        pretrain::<SimClr>(&config, &set, &device, &resume).unwrap_err()
    );
    assert!(err.contains("finished (2 of 2 steps)"), "{err}");

    // --resume of an unfinished run on other data names both data sets.
    let part = tiny_config(
        "guarded-part",
        &["epochs=2", "data.train_limit=64", "train.max_steps=1"],
    );
    pretrain::<SimClr>(&part, &set, &device, &quiet()).unwrap();
    let rest = tiny_config("guarded-part", &["epochs=2", "data.train_limit=64"]);
    let mut other = set.clone();
    other.pixels[0] ^= 0xFF;
    let err = format!(
        "{:#}",
        pretrain::<SimClr>(&rest, &other, &device, &resume).unwrap_err()
    );
    assert!(
        err.contains("trained on other data") && err.matches("xxh3").count() == 2,
        "{err}"
    );
    // ... and with another config, names each differing key once, with both values.
    let changed = tiny_config("guarded-part", &["epochs=3", "data.train_limit=64"]);
    let err = format!(
        "{:#}",
        pretrain::<SimClr>(&changed, &set, &device, &resume).unwrap_err()
    );
    assert!(
        err.contains("epochs: checkpoint 2, now 3") && err.matches("epochs").count() == 1,
        "{err}"
    );
    let (_, resumed) = pretrain::<SimClr>(&rest, &set, &device, &resume).unwrap();
    assert_eq!(resumed.resumed_from_step, 1);

    // --overwrite replaces it.
    let overwrite = TrainOptions {
        overwrite: true,
        quiet: true,
        ..Default::default()
    };
    let (_, again) = pretrain::<SimClr>(&config, &set, &device, &overwrite).unwrap();
    assert_eq!(again.resumed_from_step, 0);
    assert!(!stale.exists(), "the stale temporary file was removed");

    // While another holder has the folder, a run is refused with the holder's PID.
    let dir = std::path::PathBuf::from(&config.train.out_dir);
    let lock = pretext::core::train::RunLock::acquire(&dir, "eval labels").unwrap();
    let err = format!(
        "{:#}",
        pretrain::<SimClr>(&config, &set, &device, &overwrite).unwrap_err()
    );
    assert!(
        err.contains("in use by another pretext process") && err.contains("eval labels"),
        "{err}"
    );
    drop(lock);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&part.train.out_dir);
}

#[test]
fn simsiam_barlow_twins_and_vicreg_learn_features_that_beat_chance() {
    use pretext::vision::methods::{BarlowTwins, SimSiam, VicReg};
    let set = train_set();
    let device = Device::flex();
    let check = |summary: &pretext::core::train::TrainSummary,
                 backbone: &pretext::vision::backbones::Backbone,
                 name: &str| {
        assert!(
            summary.last_epoch_loss < summary.first_loss,
            "{name}: loss {} -> {}",
            summary.first_loss,
            summary.last_epoch_loss
        );
        let knn = knn_of(backbone, &summary.checkpoint);
        eprintln!(
            "{name}: loss {:.4} -> {:.4}, kNN {knn:.3}",
            summary.first_loss, summary.last_epoch_loss
        );
        assert!(knn > 0.2, "{name}: kNN {knn} is near chance (0.1)");
    };
    let c = tiny_config("simsiam", &["method=simsiam"]);
    let (m, s) = pretrain::<SimSiam>(&c, &set, &device, &quiet()).unwrap();
    check(&s, m.backbone(), "simsiam");
    let c = tiny_config(
        "barlowtwins",
        &["method=barlowtwins", "projection.output=32"],
    );
    let (m, s) = pretrain::<BarlowTwins>(&c, &set, &device, &quiet()).unwrap();
    check(&s, m.backbone(), "barlowtwins");
    let c = tiny_config("vicreg", &["method=vicreg", "projection.output=32"]);
    let (m, s) = pretrain::<VicReg>(&c, &set, &device, &quiet()).unwrap();
    check(&s, m.backbone(), "vicreg");
}

/// Two random views of 8 images on the autodiff device.
fn random_views(device: &Device) -> Vec<Tensor<4>> {
    (0..2)
        .map(|v| {
            Tensor::<4>::random(
                [8, 1, 28, 28],
                burn::tensor::Distribution::Normal(v as f64, 1.0),
                device,
            )
        })
        .collect()
}

/// How many of `params` received a gradient.
fn with_grad(grads: &GradientsParams, params: &[(ParamId, usize)]) -> usize {
    params
        .iter()
        .filter(|(id, r)| has_grad(grads, *id, *r))
        .count()
}

#[test]
fn moco_and_nnclr_keep_gradients_off_their_key_encoders_and_queues() {
    let device = Device::flex().autodiff();
    let image = (1, 28, 28);

    let c = tiny_config("mocov2-grad", &["method=mocov2", "mocov2.queue_size=64"]);
    let moco = MocoV2::init(&c, image, &device);
    let step = moco.loss(random_views(&device)).unwrap();
    let grads = GradientsParams::from_grads(step.loss.backward(), &moco);
    assert!(
        with_grad(&grads, &ids(&moco.query)) >= 10,
        "the query learns"
    );
    assert_eq!(with_grad(&grads, &ids(&moco.key)), 0, "stop-gradient: key");
    assert_eq!(
        with_grad(&grads, &ids(&moco.queue)),
        0,
        "the queue is a buffer"
    );
    // After the step the keys enter the queue, newest first, and the key encoder moves.
    let keys = step.carry.unwrap();
    let key_before = module_tensors(&moco.key);
    let moco = moco.after_step(0.1, vec![keys.clone()]);
    let front = moco.queue.rows().narrow(0, 0, 8);
    let unit_keys = pretext::core::losses::l2_normalize(keys);
    let gap = (front - unit_keys).abs().max().into_scalar::<f32>();
    assert!(
        gap < 1e-6,
        "the queue's front is not the step's keys: {gap}"
    );
    assert!(
        module_tensors(&moco.key) != key_before,
        "EMA moved the key encoder"
    );

    let c = tiny_config("mocov3-grad", &["method=mocov3"]);
    let moco = MocoV3::init(&c, image, &device);
    let loss = moco.loss(random_views(&device)).unwrap().loss;
    let grads = GradientsParams::from_grads(loss.backward(), &moco);
    assert!(with_grad(&grads, &ids(&moco.query)) >= 10);
    assert!(with_grad(&grads, &ids(&moco.predictor)) >= 2);
    assert_eq!(with_grad(&grads, &ids(&moco.key)), 0, "stop-gradient: key");

    let c = tiny_config("nnclr-grad", &["method=nnclr", "nnclr.support_size=64"]);
    let nnclr = Nnclr::init(&c, image, &device);
    let loss = nnclr.loss(random_views(&device)).unwrap().loss;
    let grads = GradientsParams::from_grads(loss.backward(), &nnclr);
    assert!(with_grad(&grads, &ids(&nnclr.backbone)) >= 5);
    assert!(with_grad(&grads, &ids(&nnclr.predictor)) >= 2);
    assert_eq!(with_grad(&grads, &ids(&nnclr.support)), 0, "support set");
}

/// MoCo v3 on a one-block ViT.
const MOCOV3_TINY_VIT: [&str; 5] = [
    "method=mocov3",
    "backbone.arch=vit_tiny",
    "backbone.dim=32",
    "backbone.depth=1",
    "backbone.heads=2",
];

/// A fresh MoCo v3 built from `settings` and the gradients of one loss on random views.
fn moco_v3_gradients(name: &str, settings: &[&str]) -> (MocoV3, GradientsParams) {
    let device = Device::flex().autodiff();
    let moco = MocoV3::init(&tiny_config(name, settings), (1, 28, 28), &device);
    let loss = moco.loss(random_views(&device)).unwrap().loss;
    let grads = GradientsParams::from_grads(loss.backward(), &moco);
    (moco, grads)
}

/// MoCo v3 on the ViT, as its paper trains it: the key encoder (a ViT too) takes no gradient,
/// and a short run lowers the loss and learns features that beat chance.
#[test]
fn moco_v3_trains_a_vit_with_its_key_encoder_off_the_gradient() {
    let vit = MOCOV3_TINY_VIT;
    let (moco, grads) = moco_v3_gradients("mocov3-vit-grad", &vit);
    assert!(
        with_grad(&grads, &ids(&moco.query)) >= 10,
        "the query ViT learns"
    );
    assert_eq!(
        with_grad(&grads, &ids(&moco.key)),
        0,
        "stop-gradient: key ViT"
    );

    let c = tiny_config("mocov3-vit", &vit);
    let (m, s) = pretrain::<MocoV3>(&c, &train_set(), &Device::flex(), &quiet()).unwrap();
    assert!(
        s.last_epoch_loss < s.first_loss,
        "loss {} -> {}",
        s.first_loss,
        s.last_epoch_loss
    );
    let knn = knn_of(m.backbone(), &s.checkpoint);
    eprintln!(
        "mocov3 vit: loss {:.4} -> {:.4}, kNN {knn:.3}",
        s.first_loss, s.last_epoch_loss
    );
    assert!(knn > 0.2, "mocov3 vit: kNN {knn} is near chance (0.1)");
    let _ = std::fs::remove_dir_all(out_dir("mocov3-vit"));
}

/// The patch projection of `backbone` (a ViT) as a flat vector.
fn patch_embed_weights(backbone: &Backbone) -> Vec<f32> {
    let Backbone::Vit(vit) = backbone else {
        panic!("not a ViT")
    };
    vit.patch_embed
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn moco_v3_frozen_patch_projection_takes_no_gradient_and_stays_put() {
    let mut vit = MOCOV3_TINY_VIT.to_vec();
    vit.push("mocov3.freeze_patch_embed=true");
    let (moco, grads) = moco_v3_gradients("mocov3-frozen-grad", &vit);
    let Backbone::Vit(query_vit) = &moco.query.backbone else {
        panic!("not a ViT")
    };
    assert_eq!(
        with_grad(&grads, &ids(&query_vit.patch_embed)),
        0,
        "frozen patch projection"
    );
    assert!(
        with_grad(&grads, &ids(&query_vit.blocks)) >= 10,
        "the rest of the query ViT learns"
    );

    // Trained, the query's projection still equals the key's (both at their shared random
    // start), while the blocks behind it have moved away from the lagging key's.
    let c = tiny_config("mocov3-frozen", &vit);
    let (m, _) = pretrain::<MocoV3>(&c, &train_set(), &Device::flex(), &quiet()).unwrap();
    let (q, k) = (&m.query.backbone, &m.key.backbone);
    let patch_gap = max_abs_diff(&patch_embed_weights(q), &patch_embed_weights(k));
    assert!(
        patch_gap < 1e-6,
        "the frozen projection moved by {patch_gap}"
    );
    let tensors = |b: &Backbone| module_tensors(b);
    let moved = tensors(q)
        .iter()
        .zip(tensors(k).iter())
        .map(|(a, b)| max_abs_diff(&a.values, &b.values))
        .fold(0.0, f32::max);
    assert!(moved > 1e-4, "the query ViT did not train (gap {moved})");
    // On a CNN the setting would do nothing: refused, naming it.
    let sets = [
        "method=mocov3".into(),
        "mocov3.freeze_patch_embed=true".into(),
    ];
    let err = PretrainConfig::from_toml("", "cnn", &sets).unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("mocov3.freeze_patch_embed"), "{err}");
    let _ = std::fs::remove_dir_all(out_dir("mocov3-frozen"));
}

#[test]
fn moco_v2_resumes_with_its_queue_to_the_uninterrupted_weights() {
    resumes_to_the_uninterrupted_run::<MocoV2>(
        "mocov2",
        &["method=mocov2", "mocov2.queue_size=96"],
        "queue",
    );
}

/// Train `M` with `extra` settings to the end, and again stopped after 5 steps and resumed: the
/// two end on the same weights, buffers (whose names start with `buffer`, which the checkpoint
/// must hold) and optimizer state. Returns the uninterrupted run.
fn resumes_to_the_uninterrupted_run<M: Method>(
    name: &str,
    extra: &[&str],
    buffer: &str,
) -> (M, pretext::core::train::TrainSummary) {
    let (set, device) = (train_set(), Device::flex());
    let full = tiny_config(&format!("{name}-full"), extra);
    let (model, a) = pretrain::<M>(&full, &set, &device, &quiet()).unwrap();
    let part = format!("{name}-part");
    let stop = [extra, &["train.max_steps=5"]].concat();
    pretrain::<M>(&tiny_config(&part, &stop), &set, &device, &quiet()).unwrap();
    let resume = TrainOptions {
        resume: true,
        quiet: true,
        ..Default::default()
    };
    let (_, b) = pretrain::<M>(&tiny_config(&part, extra), &set, &device, &resume).unwrap();
    assert_eq!((b.resumed_from_step, b.steps), (5, a.steps));
    let (ca, cb) = (
        Checkpoint::load(&a.checkpoint).unwrap(),
        Checkpoint::load(&b.checkpoint).unwrap(),
    );
    assert!(
        ca.model.iter().any(|t| t.name.starts_with(buffer)),
        "{name}: the checkpoint holds no {buffer}"
    );
    assert_eq!(first_difference(&ca.model, &cb.model), None, "{name}");
    assert!(ca.optimizer == cb.optimizer, "{name}: optimizer state");
    let _ = std::fs::remove_dir_all(out_dir(&part));
    (model, a)
}

#[test]
fn moco_v2_v3_and_nnclr_learn_features_that_beat_chance() {
    let set = train_set();
    let device = Device::flex();
    // `chance`: the loss of guessing the positive among the candidates. MoCo v2's loss first
    // rises, as the random rows the queue starts with give way to real (harder) keys, so it
    // is held below chance instead of below its first value.
    let check = |summary: &pretext::core::train::TrainSummary,
                 backbone: &pretext::vision::backbones::Backbone,
                 name: &str,
                 chance: Option<f64>| {
        let bound = chance.unwrap_or(summary.first_loss);
        assert!(
            summary.last_epoch_loss < bound,
            "{name}: loss {} -> {}, not below {bound}",
            summary.first_loss,
            summary.last_epoch_loss
        );
        let knn = knn_of(backbone, &summary.checkpoint);
        eprintln!(
            "{name}: loss {:.4} -> {:.4}, kNN {knn:.3}",
            summary.first_loss, summary.last_epoch_loss
        );
        assert!(knn > 0.2, "{name}: kNN {knn} is near chance (0.1)");
        // The collapse monitor logged every step.
        let metrics =
            std::fs::read_to_string(summary.checkpoint.with_file_name("metrics.jsonl")).unwrap();
        assert!(
            metrics.lines().all(|l| l.contains("embedding_std")),
            "{name}: no embedding_std in metrics.jsonl"
        );
    };
    let c = tiny_config("mocov2", &["method=mocov2", "mocov2.queue_size=128"]);
    let (m, s) = pretrain::<MocoV2>(&c, &set, &device, &quiet()).unwrap();
    check(&s, m.backbone(), "mocov2", Some((129f64).ln()));
    let c = tiny_config("mocov3", &["method=mocov3"]);
    let (m, s) = pretrain::<MocoV3>(&c, &set, &device, &quiet()).unwrap();
    check(&s, m.backbone(), "mocov3", None);
    // With online kNN: 64 training images held out and scored at each epoch end.
    let c = tiny_config(
        "nnclr",
        &[
            "method=nnclr",
            "nnclr.support_size=128",
            "train.online_knn=64",
        ],
    );
    let (m, s) = pretrain::<Nnclr>(&c, &set, &device, &quiet()).unwrap();
    check(&s, m.backbone(), "nnclr", None);
    assert_eq!(
        s.steps,
        2 * (256 - 64) / 32,
        "the held-out images are not trained on"
    );
    let metrics = std::fs::read_to_string(s.checkpoint.with_file_name("metrics.jsonl")).unwrap();
    let online: Vec<f64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["online_knn"].as_f64())
        .collect();
    assert_eq!(online.len(), 2, "one score per epoch: {metrics}");
    assert!(online.iter().all(|&k| k > 0.2), "online kNN {online:?}");
}

/// The kNN accuracy of `backbone`, from the run whose checkpoint is `run`: 256 training images as
/// the bank, 300 test images as queries, with the run's normalisation and settings.
fn knn_of(backbone: &pretext::vision::backbones::Backbone, run: &std::path::Path) -> f64 {
    let device = Device::flex();
    let ckpt = ImageCheckpoint::open(run, &device).unwrap();
    let test = embedded_fashion_mnist().unwrap().test.unwrap().take(300);
    let knn = Protocols {
        knn: true,
        linear: false,
    };
    let bank = train_set().take(256);
    evaluate(
        backbone,
        &bank,
        &test,
        &ckpt.mean,
        &ckpt.std,
        &ckpt.config.eval,
        knn,
        0,
        &device,
    )
    .unwrap()
    .knn
    .unwrap()
}

/// Small DINO and SwAV settings: two local views of 12 pixels besides the two global ones.
const MULTI_CROP: [&str; 5] = [
    "multi_crop.local_views=2",
    "dino.hidden=32",
    "dino.bottleneck=16",
    "dino.prototypes=64",
    "swav.prototypes=32",
];

/// Two global views of 28 pixels and two local ones of 12, 8 images each.
fn multi_crop_views(device: &Device) -> Vec<Tensor<4>> {
    [28, 28, 12, 12]
        .iter()
        .enumerate()
        .map(|(v, &side)| {
            Tensor::<4>::random(
                [8, 1, side, side],
                burn::tensor::Distribution::Normal(v as f64 * 0.1, 1.0),
                device,
            )
        })
        .collect()
}

#[test]
fn dino_and_swav_freeze_their_prototypes_first_and_keep_gradients_off_teacher_and_buffers() {
    let device = Device::flex().autodiff();
    let image = (1, 28, 28);
    let c = tiny_config("dino-grad", &[&MULTI_CROP[..], &["method=dino"]].concat());
    assert_eq!(c.epochs, 2);
    let model = Dino::init(&c, image, &device);
    let prototypes = ids(&model.student.head).split_off(ids(&model.student.head).len() - 1);
    let step = |progress: f64| {
        let out = model.loss_at(multi_crop_views(&device), progress).unwrap();
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        (grads, out.carry)
    };
    // Half an epoch in: the head's last layer (the prototypes) is still frozen.
    let (grads, _) = step(0.25);
    assert!(
        with_grad(&grads, &ids(&model.student.backbone)) >= 5,
        "the student learns"
    );
    assert_eq!(with_grad(&grads, &prototypes), 0, "frozen last layer");
    assert_eq!(
        with_grad(&grads, &ids(&model.teacher)),
        0,
        "stop-gradient: teacher"
    );
    assert_eq!(
        with_grad(&grads, &ids(&model.center)),
        0,
        "the centre is a buffer"
    );
    // From the second epoch on it learns too.
    let (grads, carry) = step(0.75);
    assert_eq!(
        with_grad(&grads, &prototypes),
        1,
        "the last layer learns after epoch 1"
    );
    // After the step the centre moves a tenth of the way to the teacher's batch mean.
    let mean = carry.unwrap();
    let teacher_before = module_tensors(&model.teacher);
    let model = model.after_step(0.75, vec![mean.clone()]);
    let gap = (model.center.values() - mean.mul_scalar(0.1))
        .abs()
        .max()
        .into_scalar::<f32>();
    assert!(gap < 1e-6, "centre off by {gap}");
    assert!(
        module_tensors(&model.teacher) != teacher_before,
        "EMA moved the teacher"
    );

    let c = tiny_config(
        "swav-grad",
        &[&MULTI_CROP[..], &["method=swav", "swav.queue_size=32"]].concat(),
    );
    let model = Swav::init(&c, image, &device);
    let step = |progress: f64| {
        let out = model.loss_at(multi_crop_views(&device), progress).unwrap();
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        (grads, out.carry)
    };
    let (grads, _) = step(0.25);
    assert!(with_grad(&grads, &ids(&model.backbone)) >= 5);
    assert_eq!(
        with_grad(&grads, &ids(&model.prototypes)),
        0,
        "frozen prototypes"
    );
    let (grads, carry) = step(0.75);
    assert_eq!(with_grad(&grads, &ids(&model.prototypes)), 1);
    assert_eq!(
        with_grad(&grads, &ids(&model.queues)),
        0,
        "the queues are buffers"
    );
    // Each global view's embeddings enter its own queue, newest first.
    let kept = carry.unwrap();
    let model = model.after_step(0.75, vec![kept.clone()]);
    for (v, queue) in model.queues.iter().enumerate() {
        let front = queue.rows().narrow(0, 0, 8);
        let gap = (front - kept.clone().narrow(0, 8 * v, 8))
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(gap < 1e-5, "queue {v}: front off by {gap}");
    }
}

#[test]
fn dino_and_swav_learn_from_multi_crop_views_and_dino_resumes_with_its_centre() {
    let (set, device) = (train_set(), Device::flex());
    let dino = [&MULTI_CROP[..], &["method=dino"]].concat();
    let (m, a) = resumes_to_the_uninterrupted_run::<Dino>("dino", &dino, "center");
    let score = knn_of(m.backbone(), &a.checkpoint);
    eprintln!(
        "dino: loss {:.4} -> {:.4}, kNN {score:.3}",
        a.first_loss, a.last_epoch_loss
    );
    // DINO's loss need not fall at first: the teacher starts as a copy of the student (a low
    // cross-entropy) and sharpens. Below ln K the student predicts the teacher better than a
    // uniform guess; the kNN score shows the features are not collapsed.
    assert!(
        a.last_epoch_loss < (64f64).ln(),
        "dino: loss {} is not below ln 64",
        a.last_epoch_loss
    );
    assert!(score > 0.2, "dino: kNN {score} is near chance (0.1)");

    let swav = [&MULTI_CROP[..], &["method=swav"]].concat();
    let c = tiny_config("swav", &swav);
    let (m, s) = pretrain::<Swav>(&c, &set, &device, &quiet()).unwrap();
    let score = knn_of(m.backbone(), &s.checkpoint);
    eprintln!(
        "swav: loss {:.4} -> {:.4}, kNN {score:.3}",
        s.first_loss, s.last_epoch_loss
    );
    assert!(s.last_epoch_loss < s.first_loss, "swav: loss did not fall");
    assert!(score > 0.2, "swav: kNN {score} is near chance (0.1)");
    for dir in ["dino-full", "swav"] {
        let _ = std::fs::remove_dir_all(out_dir(dir));
    }
}

/// 96 training images as PNGs of sizes from 20 to 41 pixels a side in class folders, and one
/// corrupt PNG (`class0/zz_corrupt.png`).
fn mixed_size_folder(name: &str) -> std::path::PathBuf {
    let dir = out_dir(name);
    let _ = std::fs::remove_dir_all(&dir);
    let set = train_set();
    for i in 0..96 {
        let class = dir.join(format!("class{}", set.labels.as_ref().unwrap()[i]));
        std::fs::create_dir_all(&class).unwrap();
        let im = image::GrayImage::from_raw(28, 28, set.image(i).to_vec()).unwrap();
        // Views are cropped from each image at its own size.
        let side = 20 + (i as u32 * 7) % 22;
        let im = image::imageops::resize(&im, side, side, image::imageops::FilterType::Triangle);
        im.save(class.join(format!("{i:03}.png"))).unwrap();
    }
    std::fs::write(dir.join("class0/zz_corrupt.png"), b"\x89PNG not really").unwrap();
    dir
}

/// A folder streamed from disk trains, skips its corrupt image, and resumes to the weights of
/// the uninterrupted run, as a set in memory does.
#[test]
fn a_streamed_folder_trains_skips_a_corrupt_image_and_resumes_exactly() {
    use pretext::vision::data::stream::StreamedFolder;
    use pretext::vision::pretrain::pretrain_on;
    let dir = mixed_size_folder("stream-folder-data");
    let (folder, description) = StreamedFolder::open(&dir, Some((24, 24))).unwrap().unwrap();
    assert!(description.contains("97 images, streamed"), "{description}");
    let source: std::sync::Arc<dyn pretext::vision::data::ImageSource> =
        std::sync::Arc::new(folder);
    let device = Device::flex();
    let extra = [
        "data.image_size=[24,24]",
        "batch_size=16",
        "data.train_limit=0",
    ];
    let full = tiny_config("stream-full", &extra);
    let (_, a) = pretrain_on::<SimClr>(&full, source.clone(), &device, &quiet()).unwrap();
    assert_eq!(a.steps, 12);
    assert!(a.final_loss.is_finite());
    let part = tiny_config(
        "stream-part",
        &[&extra[..], &["train.max_steps=5"]].concat(),
    );
    pretrain_on::<SimClr>(&part, source.clone(), &device, &quiet()).unwrap();
    let rest = tiny_config("stream-part", &extra);
    let resume = TrainOptions {
        resume: true,
        quiet: true,
        ..Default::default()
    };
    let (_, b) = pretrain_on::<SimClr>(&rest, source, &device, &resume).unwrap();
    assert_eq!((b.resumed_from_step, b.steps), (5, 12));
    let (ca, cb) = (
        Checkpoint::load(&a.checkpoint).unwrap(),
        Checkpoint::load(&b.checkpoint).unwrap(),
    );
    assert_eq!(first_difference(&ca.model, &cb.model), None);
    // Under data.on_error = "stop" the corrupt image ends the run, naming it.
    let stop = tiny_config(
        "stream-stop",
        &[&extra[..], &["data.on_error=\"stop\""]].concat(),
    );
    let (folder, _) = StreamedFolder::open(&dir, Some((24, 24))).unwrap().unwrap();
    let err = pretrain_on::<SimClr>(&stop, std::sync::Arc::new(folder), &device, &quiet())
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap();
    assert!(err.contains("zz_corrupt.png"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same folder written as WebDataset shards trains through the shuffle buffer, skips the
/// corrupt member, and a run stopped mid-epoch resumes to the uninterrupted run's weights.
#[test]
fn shards_train_through_the_shuffle_buffer_and_resume_exactly() {
    use pretext::vision::data::shards::{ShardSet, shard_paths, shards_from_folder};
    use pretext::vision::data::{ImageSource, OnError};
    use pretext::vision::pretrain::pretrain_on;
    let folder = mixed_size_folder("shards-folder-data");
    let out = out_dir("shards-data");
    let _ = std::fs::remove_dir_all(&out);
    let written = shards_from_folder(&folder, &out, 10, 3).unwrap();
    assert_eq!((written[0].1.shards, written[0].1.samples), (10, 97));
    let paths = shard_paths(&out.join("train-{000000..000009}.tar"))
        .unwrap()
        .unwrap();
    let (set, description) = ShardSet::open(&paths, Some((24, 24)), 16, OnError::Skip).unwrap();
    assert!(
        description.contains("10 shards, ") && description.contains(" 97 samples"),
        "{description}"
    );
    let source: std::sync::Arc<dyn ImageSource> = std::sync::Arc::new(set);
    let device = Device::flex();
    let extra = [
        "data.image_size=[24,24]",
        "batch_size=16",
        "data.train_limit=0",
        "data.shuffle_buffer=16",
    ];
    let full = tiny_config("shards-full", &extra);
    let (_, a) = pretrain_on::<SimClr>(&full, source.clone(), &device, &quiet()).unwrap();
    assert_eq!(a.steps, 12);
    assert!(a.final_loss.is_finite());
    // Stopped in the second epoch, resumed at its step.
    let part = tiny_config(
        "shards-part",
        &[&extra[..], &["train.max_steps=8"]].concat(),
    );
    pretrain_on::<SimClr>(&part, source.clone(), &device, &quiet()).unwrap();
    let rest = tiny_config("shards-part", &extra);
    let resume = TrainOptions {
        resume: true,
        quiet: true,
        ..Default::default()
    };
    let (_, b) = pretrain_on::<SimClr>(&rest, source.clone(), &device, &resume).unwrap();
    assert_eq!((b.resumed_from_step, b.steps), (8, 12));
    let (ca, cb) = (
        Checkpoint::load(&a.checkpoint).unwrap(),
        Checkpoint::load(&b.checkpoint).unwrap(),
    );
    assert_eq!(first_difference(&ca.model, &cb.model), None);
    // Another shuffle buffer is another order of samples: the resume refuses it.
    let other = tiny_config(
        "shards-part",
        &[&extra[..], &["data.shuffle_buffer=4"]].concat(),
    );
    let (set4, _) = ShardSet::open(&paths, Some((24, 24)), 4, OnError::Skip).unwrap();
    let err = pretrain_on::<SimClr>(&other, std::sync::Arc::new(set4), &device, &resume)
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap();
    assert!(err.contains("shuffle_buffer"), "{err}");
    let _ = std::fs::remove_dir_all(&folder);
    let _ = std::fs::remove_dir_all(&out);
}
