//! The image pretraining config (`pretext pretrain`): method, backbone, heads, views,
//! optimizer, and the shared `train` and `eval` tables.

use std::path::Path;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::backbones::BackboneConfig;
use super::methods::METHODS;
use super::methods::autoencoder::AutoencoderConfig;
use super::methods::barlow_twins::BarlowTwinsConfig;
use super::methods::dino::DinoConfig;
use super::methods::jigsaw::JigsawConfig;
use super::methods::mae::MaeConfig;
use super::methods::mocov2::MocoV2Config;
use super::methods::mocov3::MocoV3Config;
use super::methods::nnclr::NnclrConfig;
use super::methods::simmim::SimMimConfig;
use super::methods::swav::SwavConfig;
use super::methods::vicreg::VicRegConfig;
use super::views::{MultiCropConfig, ViewConfig, ViewOverride};
use crate::core::config::{EvalConfig, TrainConfig, blame_invalid, parse_config};
use crate::core::heads::MlpConfig;
use crate::core::optim::OptimConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainConfig {
    /// `simclr`, `mocov2`, `mocov3`, `nnclr`, `byol`, `simsiam`, `barlowtwins`, `vicreg`,
    /// `dino`, `swav`, `mae`, `simmim`, `autoencoder`, `denoising_autoencoder`, `rotation` or `jigsaw`.
    pub method: String,
    pub seed: u64,
    pub epochs: usize,
    pub batch_size: usize,
    pub data: DataConfig,
    pub backbone: BackboneConfig,
    pub projection: MlpConfig,
    pub prediction: MlpConfig,
    /// Changes to the method's preset views: one entry for every view, or one per view; the
    /// keys an entry leaves out keep the preset's values. Empty: the presets as they are.
    pub views: Vec<ViewOverride>,
    /// The local views of DINO and SwAV.
    pub multi_crop: MultiCropConfig,
    pub simclr: SimClrConfig,
    pub mocov2: MocoV2Config,
    pub mocov3: MocoV3Config,
    pub nnclr: NnclrConfig,
    pub byol: ByolConfig,
    pub barlowtwins: BarlowTwinsConfig,
    pub vicreg: VicRegConfig,
    pub dino: DinoConfig,
    pub swav: SwavConfig,
    pub mae: MaeConfig,
    pub simmim: SimMimConfig,
    /// Both autoencoders; the corruption applies to `denoising_autoencoder` only.
    pub autoencoder: AutoencoderConfig,
    pub jigsaw: JigsawConfig,
    pub optimizer: OptimConfig,
    pub train: TrainConfig,
    pub eval: EvalConfig,
    /// The augmentation of fine-tuning and of the supervised baseline in `eval labels`
    /// (`[finetune_view]`; default: crop scale 0.5-1 and horizontal flip, which suits
    /// Fashion-MNIST but not digits or letters, where a flip changes the class).
    pub finetune_view: ViewConfig,
    /// FixMatch's strong augmentation in `eval labels` (`[strong_view]`; its weak one is
    /// `finetune_view`): a wider crop, colour jitter, grayscale, blur and solarisation on top
    /// of the weak view's flip, the parts of RandAugment the views module has. It never flips
    /// more often than `finetune_view`, so a flip turned off there stays off.
    pub strong_view: ViewConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Use only the first N training images (0: all). For quick runs and tests.
    pub train_limit: usize,
    /// Use only the first N test images for evaluation (0: all).
    pub test_limit: usize,
    /// `[height, width]` every image is resized to (empty: as stored; an image folder of mixed
    /// sizes then takes its most common size). Evaluation resizes the same way. Pretraining
    /// streams image folders from disk and crops each view from the image at its own size,
    /// producing views of this size.
    pub image_size: Vec<usize>,
    /// Threads that decode and augment images ahead of training (0: share the training's
    /// thread pool, which suits a machine whose cores the model keeps busy).
    pub workers: usize,
    /// An image that cannot be read while streaming: `"skip"` (count it, name the first few,
    /// take the next image in its place) or `"stop"`.
    pub on_error: super::data::OnError,
    /// WebDataset shards: samples mixed in the shuffle buffer between reading them shard by
    /// shard and training on them. It holds sample numbers, not pixels, so its size costs no
    /// memory; a larger one mixes more, a smaller one keeps reads within fewer shards.
    pub shuffle_buffer: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            train_limit: 0,
            test_limit: 0,
            image_size: Vec::new(),
            workers: 0,
            on_error: Default::default(),
            shuffle_buffer: 10_000,
        }
    }
}

impl DataConfig {
    /// The `image_size` key as (height, width), checked.
    pub fn resize_to(&self) -> Result<Option<(usize, usize)>> {
        match self.image_size[..] {
            [] => Ok(None),
            [h, w] if h > 0 && w > 0 && h * w <= 4096 * 4096 => Ok(Some((h, w))),
            _ => bail!(
                "data.image_size = {:?}: expected [height, width] of positive sizes, or [] to \
                 keep the stored size",
                self.image_size
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimClrConfig {
    pub temperature: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ByolConfig {
    /// Starting EMA rate of the target network, raised to 1 along a cosine.
    pub tau_base: f64,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
            method: "simclr".into(),
            seed: 0,
            epochs: 10,
            batch_size: 256,
            data: DataConfig::default(),
            backbone: BackboneConfig::default(),
            projection: MlpConfig::default(),
            prediction: MlpConfig {
                hidden: 512,
                output: 128,
                layers: 2,
                last_norm: false,
            },
            views: Vec::new(),
            multi_crop: MultiCropConfig::default(),
            simclr: SimClrConfig { temperature: 0.5 },
            mocov2: MocoV2Config::default(),
            mocov3: MocoV3Config::default(),
            nnclr: NnclrConfig::default(),
            byol: ByolConfig { tau_base: 0.99 },
            barlowtwins: BarlowTwinsConfig::default(),
            vicreg: VicRegConfig::default(),
            dino: DinoConfig::default(),
            swav: SwavConfig::default(),
            mae: MaeConfig::default(),
            simmim: SimMimConfig::default(),
            autoencoder: AutoencoderConfig::default(),
            jigsaw: JigsawConfig::default(),
            optimizer: OptimConfig::default(),
            train: TrainConfig::default(),
            eval: EvalConfig::default(),
            finetune_view: ViewConfig::finetune(),
            strong_view: ViewConfig::strong(),
        }
    }
}

impl Default for SimClrConfig {
    fn default() -> Self {
        SimClrConfig { temperature: 0.5 }
    }
}

impl Default for ByolConfig {
    fn default() -> Self {
        ByolConfig { tau_base: 0.99 }
    }
}

impl PretrainConfig {
    /// Build from an optional TOML file plus `--set` overrides; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let cfg: PretrainConfig = parse_config(text, origin, overrides)?;
        cfg.validate()
            .map_err(|e| blame_invalid(e, origin, overrides))?;
        Ok(cfg)
    }

    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self> {
        crate::core::config::load_validated(path, overrides, Self::validate)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    pub fn validate(&self) -> Result<()> {
        if !METHODS.contains(&self.method.as_str()) {
            bail!(
                "method = \"{}\": expected one of {}",
                self.method,
                METHODS.map(|m| format!("\"{m}\"")).join(", ")
            );
        }
        if matches!(self.method.as_str(), "mae" | "simmim") && !self.backbone.is_vit() {
            bail!(
                "method = \"{}\" masks patches of a ViT: set backbone.arch = \"vit_tiny\" or \
                 \"vit_small\" (it is \"{}\")",
                self.method,
                self.backbone.arch
            );
        }
        if matches!(self.method.as_str(), "dino" | "swav")
            && self.multi_crop.local_views > 0
            && self.backbone.position == "learned"
            && self.backbone.is_vit()
        {
            bail!(
                "method = \"{}\" with local views of {} pixels: a ViT's learned positions fit \
                 only the training grid; set backbone.position = \"sincos\" (or \
                 multi_crop.local_views = 0)",
                self.method,
                self.multi_crop.local_size
            );
        }
        if self.mocov3.freeze_patch_embed && !self.backbone.is_vit() {
            bail!(
                "mocov3.freeze_patch_embed = true freezes a ViT's patch projection: backbone.arch \
                 is \"{}\" (set a vit_* arch or drop the setting)",
                self.backbone.arch
            );
        }
        if self.batch_size < 2 {
            bail!(
                "batch_size = {}: contrastive and batch-norm methods need at least 2",
                self.batch_size
            );
        }
        if self.epochs == 0 {
            bail!("epochs must be at least 1");
        }
        self.data.resize_to()?;
        self.mocov2.validate()?;
        self.mocov3.validate()?;
        self.nnclr.validate()?;
        self.dino.validate()?;
        self.swav.validate()?;
        self.multi_crop.validate()?;
        if self.simclr.temperature <= 0.0 {
            bail!("simclr.temperature must be positive");
        }
        if self.barlowtwins.lambda.is_nan() || self.barlowtwins.lambda < 0.0 {
            bail!(
                "barlowtwins.lambda = {}: must be 0 or more",
                self.barlowtwins.lambda
            );
        }
        let v = &self.vicreg;
        if [v.lambda, v.mu, v.nu]
            .iter()
            .any(|w| w.is_nan() || *w < 0.0)
        {
            bail!("vicreg: lambda, mu and nu must be 0 or more");
        }
        if !(0.0..=1.0).contains(&self.byol.tau_base) {
            bail!("byol.tau_base = {}: must lie in [0, 1]", self.byol.tau_base);
        }
        self.backbone.validate()?;
        self.mae.validate()?;
        self.simmim.validate()?;
        self.autoencoder.validate()?;
        self.jigsaw.validate()?;
        self.projection.validate("projection")?;
        self.prediction.validate("prediction")?;
        // The predictor maps a projection to the space of the other view's projection.
        let predicts = ["byol", "simsiam", "nnclr", "mocov3"];
        if predicts.contains(&self.method.as_str())
            && self.prediction.output != self.projection.output
        {
            bail!(
                "prediction.output = {} must equal projection.output = {} for method = \"{}\": \
                 its predictor regresses one view's projection from the other's",
                self.prediction.output,
                self.projection.output,
                self.method
            );
        }
        self.optimizer.validate()?;
        for (i, v) in self.views.iter().enumerate() {
            v.apply(&ViewConfig::default())
                .validate(&format!("views[{i}]"))?;
        }
        self.finetune_view.validate("finetune_view")?;
        self.strong_view.validate("strong_view")?;
        self.eval.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = PretrainConfig::from_toml("epochz = 3", "a.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("a.toml") && err.contains("epochz"), "{err}");
        let err = PretrainConfig::from_toml("[optimizer]\nlrr = 1.0", "b.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lrr"), "{err}");
        let err = PretrainConfig::from_toml("", "c", &["optimizer.lrr=2".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("optimizer.lrr") && err.contains("'lrr'"),
            "{err}"
        );
    }

    #[test]
    fn range_errors_blame_the_flag_that_gave_the_value_else_the_file() {
        let err = |text: &str, sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            format!(
                "{:#}",
                PretrainConfig::from_toml(text, "my.toml", &sets).unwrap_err()
            )
        };
        let e = err("", &["seed=3", "epochs=0"]);
        assert!(
            e.starts_with("--set epochs=0: invalid config: epochs"),
            "{e}"
        );
        let e = err("epochs = 0", &["seed=3"]);
        assert!(e.starts_with("my.toml: invalid config: epochs"), "{e}");
        // A key that only ends like the flag's is not blamed on it.
        let e = err("[eval.distill]\nepochs = 0", &["epochs=2"]);
        assert!(
            e.starts_with("my.toml: invalid config: eval.distill.epochs"),
            "{e}"
        );
        let e = err("", &["eval.distill.epochs=0"]);
        assert!(e.starts_with("--set eval.distill.epochs=0:"), "{e}");
    }

    #[test]
    fn image_size_is_height_then_width_and_checked() {
        let parse = |v: &str| PretrainConfig::from_toml("", "c", &[format!("data.image_size={v}")]);
        let cfg = parse("[32, 48]").unwrap();
        assert_eq!(cfg.data.resize_to().unwrap(), Some((32, 48)));
        assert_eq!(
            PretrainConfig::default().data.resize_to().unwrap(),
            None,
            "default: as stored"
        );
        for bad in ["[32]", "[0, 8]", "[8, 8, 8]"] {
            let err = format!("{:#}", parse(bad).and_then(|c| c.validate()).unwrap_err());
            assert!(err.contains("data.image_size"), "{bad}: {err}");
        }
    }

    #[test]
    fn multi_crop_refuses_learned_vit_positions() {
        let sets = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let err = PretrainConfig::from_toml(
            "",
            "c",
            &sets(&[
                "method=dino",
                "backbone.arch=vit_tiny",
                "backbone.position=learned",
            ]),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("backbone.position = \"sincos\""),
            "{err:#}"
        );
        for ok in [
            &["method=dino", "backbone.arch=vit_tiny"][..],
            &[
                "method=simclr",
                "backbone.arch=vit_tiny",
                "backbone.position=learned",
            ],
        ] {
            PretrainConfig::from_toml("", "c", &sets(ok)).unwrap();
        }
    }

    #[test]
    fn overrides_apply_with_types() {
        let cfg = PretrainConfig::from_toml(
            "epochs = 2\n[optimizer]\nkind = \"sgd\"",
            "x",
            &[
                "optimizer.lr=0.5".into(),
                "method=byol".into(),
                "epochs=4".into(),
            ],
        )
        .unwrap();
        assert_eq!(cfg.epochs, 4);
        assert_eq!(cfg.method, "byol");
        assert_eq!(cfg.optimizer.kind, "sgd");
        assert!((cfg.optimizer.lr - 0.5).abs() < 1e-12);
        let err = PretrainConfig::from_toml("", "x", &["method=mocov9".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("mocov9"));
    }

    #[test]
    fn type_errors_name_the_key_and_where_the_value_came_from() {
        let err = PretrainConfig::from_toml("epochs = \"ten\"", "run.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("run.toml") && err.contains("epochs") && err.contains("usize"),
            "{err}"
        );
        let err = PretrainConfig::from_toml("[optimizer]\nlr = true", "run.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("run.toml: optimizer.lr"), "{err}");
        let err = PretrainConfig::from_toml("epochs = 3", "run.toml", &["epochs=ten".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--set epochs=ten") && !err.contains("run.toml"),
            "{err}"
        );
    }

    #[test]
    fn config_round_trips_through_toml() {
        let cfg = PretrainConfig::default();
        let back = PretrainConfig::from_toml(&cfg.to_toml(), "round trip", &[]).unwrap();
        assert_eq!(cfg, back);
    }
}
