#!/usr/bin/env bash
# Export a ViT pretrained by MAE for one short epoch on the embedded subset to timm and check
# that PyTorch computes pretext's features of the 2,000 test images (max abs diff < 1e-4).
# Needs the virtual environment of bench/lightly/run.sh with timm (`pip install timm`).
#   bench/export/check_timm.sh [POOL] [POSITION]     (cls or mean; sincos or learned)
set -euo pipefail
cd "$(dirname "$0")/../.."
POOL=${1:-cls}
POSITION=${2:-sincos}
VENV=${VENV:-bench/lightly/.venv}
"$VENV/bin/python" -c "import timm" 2>/dev/null || "$VENV/bin/pip" install -q timm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release -q -p pretext-cli
target/release/pretext pretrain --config configs/mae_fmnist.toml --set backbone.depth=2 \
  --set "backbone.pool=\"$POOL\"" --set "backbone.position=\"$POSITION\"" --set epochs=1 \
  --set data.train_limit=512 --set batch_size=64 --set "train.out_dir=\"$work/run\"" --json > /dev/null
target/release/pretext export --checkpoint "$work/run" --format timm --out "$work/vit.safetensors"
target/release/pretext embed --checkpoint "$work/run" --split test --out "$work/features.npy"
"$VENV/bin/python" bench/export/check_timm.py "$work/vit.safetensors" "$work/features.npy" \
  data/fashion-mnist-subset/t10k-images-idx3-ubyte.gz
