#!/usr/bin/env bash
# Pretext's joint-embedding methods beside lightly (PyTorch) under the same recipe: for each
# method, pretext trains configs/<method>_fmnist.toml for $EPOCHS epochs on the embedded
# Fashion-MNIST subset and `pretext eval all` scores it (kNN k=200 and the linear probe, no
# random-init baseline); then bench/lightly/methods_lightly.py trains the same small CNN, heads,
# loss, views, optimizer and schedule with lightly on the same images (data/fashion-mnist-subset)
# and scores it the same way (what matches and what differs: that script's docstring). Run by
# hand, never in CI: it needs the virtual environment bench/lightly/run.sh installs (PyTorch and
# lightly, gigabytes) and takes a while (ten methods, two tools, $SEEDS seeds).
#
#   bench/methods/lightly.sh [METHOD ...]      (default: all ten)
#
# Environment: EPOCHS (5), SEEDS (1) and FIRST_SEED (0): seeds FIRST_SEED .. FIRST_SEED+SEEDS-1,
# as --seed for both tools; THREADS (2, for both tools), OUT (runs/lightly_methods), DATA (a
# folder in the MNIST layout for both tools; default: pretext's embedded subset and its copy
# data/fashion-mnist-subset), VENV (bench/lightly/.venv), PRETEXT_BIN (a built binary: then
# nothing is built; default target/release/pretext), LIGHTLY_VIEWS (matched | lightly,
# methods_lightly.py --views), ALL_RUNS (0; 1: the table covers every line of the JSONL file,
# the latest per method, tool and seed, so seeds added by a later invocation join earlier ones).
# One JSON line per tool, method and seed is appended to $OUT/lightly_methods.jsonl; at the end
# one markdown table (mean ± std over seeds when there are several). Wall: pretext's summary
# time.total (the whole training run, its checkpoint writes included), lightly's train_seconds
# (the training loop); images/s of both count the training loop only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-runs/lightly_methods}
EPOCHS=${EPOCHS:-5}
SEEDS=${SEEDS:-1}
FIRST_SEED=${FIRST_SEED:-0}
ALL_RUNS=${ALL_RUNS:-0}
THREADS=${THREADS:-2}
VENV=${VENV:-$ROOT/bench/lightly/.venv}
LIGHTLY_VIEWS=${LIGHTLY_VIEWS:-matched}
methods=${*:-"simclr mocov2 mocov3 nnclr byol simsiam barlowtwins vicreg dino swav"}

if [ -n "${DATA:-}" ]; then
  pretext_data=(--data "$DATA")
  lightly_data=$DATA
else
  pretext_data=()  # the embedded subset
  lightly_data=$ROOT/data/fashion-mnist-subset
fi
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  if [ ! -f "$lightly_data/$f.gz" ] && [ ! -f "$lightly_data/$f" ]; then
    echo "lightly.sh: $lightly_data has no $f(.gz) (MNIST IDX layout expected)" >&2
    exit 1
  fi
done
if [ ! -x "$VENV/bin/python" ]; then
  echo "lightly.sh: no virtual environment at $VENV; run bench/lightly/run.sh once (it installs torch and lightly)" >&2
  exit 1
fi

[ -n "${PRETEXT_BIN:-}" ] || cargo build --release -q -p pretext-cli
PRETEXT=${PRETEXT_BIN:-$ROOT/target/release/pretext}
mkdir -p "$OUT"
RUN_ID=$(date +%Y%m%d-%H%M%S)-$$

for m in $methods; do
  config="configs/${m}_fmnist.toml"
  [ -f "$config" ] || { echo "lightly.sh: no $config" >&2; exit 1; }
  batch=$(sed -n 's/^batch_size *= *\([0-9]*\).*/\1/p' "$config")
  for s in $(seq "$FIRST_SEED" $((FIRST_SEED + SEEDS - 1))); do
    run="$OUT/$m-seed$s"
    echo "[bench] pretext $m, seed $s, $EPOCHS epochs" >&2
    "$PRETEXT" pretrain --config "$config" ${pretext_data[@]+"${pretext_data[@]}"} --seed "$s" \
      --threads "$THREADS" --set epochs="$EPOCHS" --set train.out_dir="\"$run\"" --overwrite --json \
      > "$run.pretrain.json"
    "$PRETEXT" eval all --checkpoint "$run" ${pretext_data[@]+"${pretext_data[@]}"} --seed "$s" \
      --threads "$THREADS" --no-baseline --json > "$run.eval.json"
    echo "[bench] lightly $m, seed $s, $EPOCHS epochs" >&2
    OMP_NUM_THREADS=$THREADS PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/python" bench/lightly/methods_lightly.py --method "$m" \
      --data "$lightly_data" --epochs "$EPOCHS" --threads "$THREADS" --batch "$batch" --seed "$s" \
      --views "$LIGHTLY_VIEWS" > "$run.lightly.json"
    python3 - "$m" "$s" "$EPOCHS" "$RUN_ID" "$run" >> "$OUT/lightly_methods.jsonl" <<'PY'
import json, sys
m, seed, epochs, run_id, run = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
p = json.load(open(run + ".pretrain.json"))["summary"]
e = json.load(open(run + ".eval.json"))["results"]["pretrained"]
li = json.load(open(run + ".lightly.json"))
common = {"run": run_id, "method": m, "seed": seed, "epochs": epochs}
print(json.dumps({**common, "tool": "pretext", "knn": e["knn"], "linear": e["linear"],
                  "images_per_sec": p["images_per_sec"], "wall_seconds": p["time"]["total"],
                  "first_loss": p["first_loss"], "final_loss": p["final_loss"],
                  "last_epoch_loss": p["last_epoch_loss"]}))
print(json.dumps({**common, "tool": "lightly", "knn": li["knn"], "linear": li["linear"],
                  "images_per_sec": li["images_per_sec"], "wall_seconds": li["train_seconds"],
                  "first_loss": li["first_loss"], "final_loss": li["final_loss"],
                  "last_epoch_loss": li["last_epoch_loss"], "views": li["views"],
                  "lightly_version": li["lightly_version"], "torch_version": li["torch_version"]}))
PY
  done
done

python3 - "$OUT/lightly_methods.jsonl" "$RUN_ID" "$EPOCHS" "$THREADS" "$ALL_RUNS" "$methods" <<'PY'
import json, statistics, sys
path, run_id, epochs, threads, all_runs, wanted = sys.argv[1:7]
rows = [r for r in map(json.loads, open(path)) if r["run"] == run_id or all_runs == "1"]
if all_runs == "1":  # the latest line of each method, tool and seed, for the methods asked for
    rows = list({(r["method"], r["tool"], r["seed"]): r for r in rows if r["method"] in wanted.split()}.values())
methods = list(dict.fromkeys(r["method"] for r in rows))
versions = next((f"lightly {r['lightly_version']} / torch {r['torch_version']}" for r in rows if r["tool"] == "lightly"), "lightly")

def cell(method, tool, key, scale=1.0, digits=2):
    v = [scale * r[key] for r in rows if r["method"] == method and r["tool"] == tool]
    if not v:
        return "-"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{statistics.mean(v):.{digits}f} ± {statistics.stdev(v):.{digits}f}"

seeds = len({r["seed"] for r in rows})
print(f"{epochs} epochs, {threads} threads, {seeds} seed(s); pretext vs {versions}; kNN k=200 and linear "
      f"probe on frozen backbone features (%); images/s of the training loop; wall (s) of training\n")
print("| method | pretext kNN | lightly kNN | pretext linear | lightly linear | pretext img/s | lightly img/s "
      "| pretext wall | lightly wall |")
print("|---|---|---|---|---|---|---|---|---|")
for m in methods:
    print(f"| {m} | {cell(m, 'pretext', 'knn', 100)} | {cell(m, 'lightly', 'knn', 100)} "
          f"| {cell(m, 'pretext', 'linear', 100)} | {cell(m, 'lightly', 'linear', 100)} "
          f"| {cell(m, 'pretext', 'images_per_sec', digits=0)} | {cell(m, 'lightly', 'images_per_sec', digits=0)} "
          f"| {cell(m, 'pretext', 'wall_seconds', digits=0)} | {cell(m, 'lightly', 'wall_seconds', digits=0)} |")
PY
