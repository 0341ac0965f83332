//! Every shipped config parses and validates, so the README's commands cannot rot silently.

use pretext::text::config::MlmConfig;
use pretext::vision::config::PretrainConfig;

#[test]
fn shipped_configs_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let (mut images, mut text) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        // `mlm_*.toml` configure `pretext mlm train`; the others `pretext pretrain`.
        let is_mlm = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("mlm_"));
        let loaded = if is_mlm {
            text += 1;
            MlmConfig::load(Some(&path), &[]).map(|_| ())
        } else {
            images += 1;
            PretrainConfig::load(Some(&path), &[]).map(|_| ())
        };
        loaded.unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    }
    assert!(
        images >= 3 && text >= 1,
        "found {images} image and {text} MLM configs in {}",
        dir.display()
    );
}
