#!/usr/bin/env bash
# Side-by-side MAE: pretext vs lightly (its MAE modules on PyTorch) with the same ViT (width 192,
# 6 blocks, 3 heads, 4x4 patches, sin-cos positions, class token), decoder (128 wide, 2 blocks,
# 4 heads), 75% mask ratio, normalised-pixel loss, AdamW schedule, batch, views and epochs
# (configs/mae_fmnist.toml; bench/lightly/mae_lightly.py reads the same file), on the same data;
# then both fine-tune the pretrained encoder + a linear head on a fraction F of the labels with
# pretext's eval.finetune settings. Run by hand, never in CI: it builds pretext in release mode
# and, when bench/lightly/.venv is missing, installs PyTorch and lightly (gigabytes) there.
#
#   bench/masked/mae_lightly.sh [DATA_DIR] [EPOCHS] [FRACTION]
#
# DATA_DIR: a folder in the MNIST layout (default: pretext's embedded Fashion-MNIST subset, which
# lightly reads from data/fashion-mnist-subset: the same 10,000 train / 2,000 test images).
# EPOCHS: pretraining epochs (default 10, the config's). FRACTION: labelled share for
# fine-tuning (default 0.1). Environment: THREADS (2), OUT (a fresh /tmp folder), VENV,
# PRETEXT_BIN. Prints one markdown table: images/s, wall time and loss of each pretraining
# loop, and the test accuracy after fine-tuning.
#
# pretext's fine-tuned accuracy comes from `pretext eval labels --fractions F --seeds 1`, which
# also runs its kNN, linear and supervised-from-scratch arms (their time is in no column here);
# the lightly script fine-tunes only. Each tool draws its own stratified subset of the same size.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${1:-${DATA:-}}
EPOCHS=${2:-${EPOCHS:-10}}
FRACTION=${3:-${FRACTION:-0.1}}
THREADS=${THREADS:-2}
VENV=${VENV:-$ROOT/bench/lightly/.venv}
OUT=${OUT:-$(mktemp -d /tmp/pretext-mae-lightly-XXXX)}
mkdir -p "$OUT"

(cd "$ROOT" && cargo build --release -q -p pretext-cli)
PRETEXT=${PRETEXT_BIN:-$ROOT/target/release/pretext}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "torch==2.9.0" torchvision lightly numpy
fi

if [ -n "$DATA" ]; then
  DATA_FLAG=(--data "$DATA")
  LIGHTLY_DATA=$DATA
  DATA_NAME=$DATA
else
  DATA_FLAG=()
  LIGHTLY_DATA=$ROOT/data/fashion-mnist-subset
  DATA_NAME="the embedded Fashion-MNIST subset"
fi

echo "[bench] pretext: MAE, $EPOCHS epochs on $DATA_NAME ($OUT/pretext)" >&2
"$PRETEXT" pretrain --config "$ROOT/configs/mae_fmnist.toml" ${DATA_FLAG[@]+"${DATA_FLAG[@]}"} \
  --threads "$THREADS" --set epochs="$EPOCHS" --set train.out_dir="\"$OUT/pretext\"" \
  --overwrite --json > "$OUT/pretext_train.json"
echo "[bench] pretext: eval labels at $FRACTION of the labels, 1 seed" >&2
"$PRETEXT" eval labels --checkpoint "$OUT/pretext" ${DATA_FLAG[@]+"${DATA_FLAG[@]}"} \
  --threads "$THREADS" --fractions "$FRACTION" --seeds 1 --json > "$OUT/pretext_labels.json"

echo "[bench] lightly: MAE, $EPOCHS epochs on $DATA_NAME" >&2
OMP_NUM_THREADS=$THREADS "$VENV/bin/python" "$ROOT/bench/lightly/mae_lightly.py" \
  --config "$ROOT/configs/mae_fmnist.toml" --data "$LIGHTLY_DATA" --epochs "$EPOCHS" \
  --threads "$THREADS" --finetune-fraction "$FRACTION" > "$OUT/lightly.json"

"$VENV/bin/python" - "$OUT" "$EPOCHS" "$FRACTION" "$THREADS" "$("$PRETEXT" --version)" <<'PY'
import json, sys
out, epochs, fraction, threads, version = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
pt = json.load(open(f"{out}/pretext_train.json"))["summary"]
study = json.load(open(f"{out}/pretext_labels.json"))["study"]
li = json.load(open(f"{out}/lightly.json"))

by_epoch = {}
for line in open(f"{out}/pretext/metrics.jsonl"):
    if line.strip():
        rec = json.loads(line)
        by_epoch.setdefault(rec["epoch"], []).append(rec["loss"])
pt_losses = [sum(v) / len(v) for _, v in sorted(by_epoch.items())]
row = [s for s in study["summary"] if s["arm"] == "finetune" and abs(s["fraction"] - fraction) < 1e-9]
if not row:
    sys.exit(f"no finetune arm at fraction {fraction} in {out}/pretext_labels.json")
pt_acc = row[0]["mean"]
pt_run = next(r for r in study["runs"] if r["arm"] == "finetune" and abs(r["fraction"] - fraction) < 1e-9)

def curve(losses):
    return f"{losses[0]:.4f} → {losses[-1]:.4f} ({', '.join(f'{x:.4f}' for x in losses)})"

pct = f"{100 * fraction:g}%"
print(f"| tool | epochs | images/s | train wall (s) | loss per epoch: first → last (all) | fine-tuned accuracy at {pct} |")
print("|---|---|---|---|---|---|")
print(f"| {version} (flex, {threads} threads) | {epochs} | {pt['images_per_sec']:.0f} | {pt['time']['total']:.0f} "
      f"| {curve(pt_losses)} | {100 * pt_acc:.2f}% |")
print(f"| lightly {li['lightly_version']} / torch {li['torch_version']} ({threads} threads) | {epochs} "
      f"| {li['images_per_sec']:.0f} | {li['train_seconds']:.0f} | {curve(li['epoch_losses'])} "
      f"| {100 * li['finetune_accuracy']:.2f}% |")
d, lf = pt_run["detail"], li["finetune"]
print(f"\nratio pretext/lightly images/s: {pt['images_per_sec'] / li['images_per_sec']:.2f}")
print(f"fine-tuning, pretext: {pt_run['labelled']} labelled + {pt_run['validation']} validation images, "
      f"epoch {d.get('chosen_epoch')} of {d.get('epochs')} chosen, {pt_run['seconds']:.0f} s; "
      f"lightly: {lf['labelled']} + {lf['validation']}, epoch {lf['chosen_epoch']} of {lf['epochs']}, "
      f"{lf['seconds']:.0f} s")
PY
