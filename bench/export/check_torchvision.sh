#!/usr/bin/env bash
# Export a ResNet-18 (or -50) pretrained for one short epoch on the embedded subset to torchvision and
# check that PyTorch computes pretext's features of the 2,000 test images (max abs diff < 1e-4).
# Needs the virtual environment of bench/lightly/run.sh (torch, torchvision, safetensors).
#   bench/export/check_torchvision.sh [STEM] [ARCH]   (STEM: cifar, the default, or imagenet;
#                                                     ARCH: resnet18, the default, or resnet50)
set -euo pipefail
cd "$(dirname "$0")/../.."
STEM=${1:-cifar}
ARCH=${2:-resnet18}
VENV=${VENV:-bench/lightly/.venv}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -n "${PRETEXT_BIN:-}" ] || cargo build --release -q -p pretext-cli
PRETEXT=${PRETEXT_BIN:-target/release/pretext}
"$PRETEXT" pretrain --config configs/quickstart.toml --set "backbone.arch=\"$ARCH\"" \
  --set "backbone.stem=\"$STEM\"" --set epochs=1 --set data.train_limit=512 --set batch_size=64 \
  --set "train.out_dir=\"$work/run\"" --json > /dev/null
"$PRETEXT" export --checkpoint "$work/run" --format torchvision --out "$work/$ARCH.safetensors"
"$PRETEXT" embed --checkpoint "$work/run" --split test --out "$work/features.npy"
"$VENV/bin/python" bench/export/check_torchvision.py "$work/$ARCH.safetensors" \
  "$work/features.npy" data/fashion-mnist-subset/t10k-images-idx3-ubyte.gz
