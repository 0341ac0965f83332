//! Every shipped config parses and validates, so the README's commands cannot rot silently.

use pretext::audio::config::AudioConfig;
use pretext::core::config::load_validated;
use pretext::text::config::MlmConfig;
use pretext::text::electra::ElectraConfig;
use pretext::text::simcse::SimcseConfig;
use pretext::video::config::VideoConfig;
use pretext::vision::config::PretrainConfig;

#[test]
fn shipped_configs_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let (mut images, mut text, mut audio, mut video) = (0, 0, 0, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        // `mlm_*.toml` configure `pretext mlm train`, `electra.toml` and `simcse.toml` their
        // jobs, `audio_*.toml` `pretext audio pretrain`, `video_*.toml` `pretext video
        // pretrain`; the others `pretext pretrain`.
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let loaded = if name.starts_with("mlm_") {
            text += 1;
            MlmConfig::load(Some(&path), &[]).map(|_| ())
        } else if name == "electra.toml" {
            text += 1;
            load_validated(Some(&path), &[], ElectraConfig::validate).map(|_: ElectraConfig| ())
        } else if name == "simcse.toml" {
            text += 1;
            load_validated(Some(&path), &[], SimcseConfig::validate).map(|_: SimcseConfig| ())
        } else if name.starts_with("audio_") {
            audio += 1;
            AudioConfig::load(Some(&path), &[]).map(|_| ())
        } else if name.starts_with("video_") {
            video += 1;
            VideoConfig::load(Some(&path), &[]).map(|_| ())
        } else {
            images += 1;
            PretrainConfig::load(Some(&path), &[]).map(|_| ())
        };
        loaded.unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    }
    assert!(
        images >= 3 && text >= 3 && audio >= 3 && video >= 4,
        "found {images} image, {text} text, {audio} audio and {video} video configs in {}",
        dir.display()
    );
}

/// A `views` entry changes only the keys it sets: turning the flip off keeps BYOL's blur and
/// solarisation and DINO's local crops; one entry applies to every view.
#[test]
fn view_entries_change_only_their_keys_of_the_method_presets() {
    use pretext::vision::methods::{Byol, Dino, view_configs};
    let config = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        PretrainConfig::from_toml("", "test", &sets).unwrap()
    };
    let byol = view_configs::<Byol>(&config(&["method=byol", "views=[{flip_p=0.0}]"])).unwrap();
    assert_eq!(byol.len(), 2);
    assert!(byol.iter().all(|v| v.flip_p == 0.0));
    assert_eq!((byol[0].blur_p, byol[0].solarize_p), (1.0, 0.0));
    assert_eq!((byol[1].blur_p, byol[1].solarize_p), (0.1, 0.2));
    let per_view = config(&["method=byol", "views=[{flip_p=0.0},{blur_p=0.5}]"]);
    let byol = view_configs::<Byol>(&per_view).unwrap();
    assert_eq!((byol[0].flip_p, byol[0].blur_p), (0.0, 1.0));
    assert_eq!((byol[1].flip_p, byol[1].blur_p), (0.5, 0.5));

    let dino = view_configs::<Dino>(&config(&["method=dino", "views=[{flip_p=0.0}]"])).unwrap();
    assert_eq!(dino.len(), 8, "2 global + 6 local views");
    assert!(dino.iter().all(|v| v.flip_p == 0.0));
    assert_eq!(dino[0].crop_size, 0);
    assert_eq!((dino[2].crop_size, dino[2].crop_scale), (12, (0.05, 0.4)));

    let three = config(&["method=byol", "views=[{},{},{}]"]);
    let err = format!("{:#}", view_configs::<Byol>(&three).unwrap_err());
    assert!(
        err.contains("takes 2 views") && err.contains("lists 3"),
        "{err}"
    );
    let bad = PretrainConfig::from_toml("", "t", &["views=[{crop_scale=[0.5,0.2]}]".into()]);
    assert!(format!("{:#}", bad.unwrap_err()).contains("views[0].crop_scale"));
}
