#!/usr/bin/env bash
# Side-by-side SimCLR: pretext vs lightly (PyTorch) with the same small CNN, augmentations,
# batch size, optimizer, schedule and epochs on the same data. Run by hand, never in CI:
# it installs PyTorch and lightly (gigabytes) into a virtual environment.
#
#   bench/lightly/run.sh [DATA_DIR] [EPOCHS]
#
# DATA_DIR is a folder in the MNIST layout (default: the embedded Fashion-MNIST subset,
# data/fashion-mnist-subset). Both tools use 2 threads. Prints one markdown table.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${1:-$ROOT/data/fashion-mnist-subset}
EPOCHS=${2:-5}
VENV=${VENV:-$ROOT/bench/lightly/.venv}
OUT=${OUT:-$(mktemp -d /tmp/pretext-lightly-XXXX)}
THREADS=${THREADS:-2}
mkdir -p "$OUT"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "torch==2.9.0" torchvision lightly numpy
fi
[ -n "${PRETEXT_BIN:-}" ] || (cd "$ROOT" && cargo build --release -q -p pretext-cli)
PRETEXT=${PRETEXT_BIN:-$ROOT/target/release/pretext}

echo "[bench] pretext: SimCLR, $EPOCHS epochs on $DATA" >&2
"$PRETEXT" pretrain --config "$ROOT/configs/quickstart.toml" --data "$DATA" --threads "$THREADS" \
  --set epochs="$EPOCHS" --set train.out_dir="\"$OUT/pretext\"" --json > "$OUT/pretext_train.json"
"$PRETEXT" eval knn --checkpoint "$OUT/pretext/checkpoint.safetensors" --data "$DATA" --no-baseline \
  --threads "$THREADS" --json > "$OUT/pretext_eval.json"

echo "[bench] lightly: SimCLR, $EPOCHS epochs on $DATA" >&2
OMP_NUM_THREADS=$THREADS "$VENV/bin/python" "$ROOT/bench/lightly/simclr_lightly.py" \
  --data "$DATA" --epochs "$EPOCHS" --threads "$THREADS" > "$OUT/lightly.json"

python3 - "$OUT" "$EPOCHS" <<'PY'
import json, sys
out, epochs = sys.argv[1], sys.argv[2]
pt = json.load(open(f"{out}/pretext_train.json"))["summary"]
pe = json.load(open(f"{out}/pretext_eval.json"))["results"]["pretrained"]
li = json.load(open(f"{out}/lightly.json"))
print(f"| tool | epochs | images/s (end to end) | train wall (s) | kNN top-1 (k=200) |")
print(f"|---|---|---|---|---|")
print(f"| pretext (flex, 2 threads) | {epochs} | {pt['images_per_sec']:.0f} | {pt['time']['total']:.0f} | {100*pe['knn']:.2f}% |")
print(f"| lightly {li['lightly_version']} / torch {li['torch_version']} (2 threads) | {epochs} | {li['images_per_sec']:.0f} | {li['train_seconds']:.0f} | {100*li['knn']:.2f}% |")
print(f"\nratio pretext/lightly images/s: {pt['images_per_sec']/li['images_per_sec']:.2f}")
PY
