#!/usr/bin/env bash
# Every image method of the masked-image issue, and SimCLR and BYOL, on the full Fashion-MNIST
# (60,000 train / 10,000 test images) at one stated budget: the shipped
# configs/<method>_fmnist.toml recipe for EPOCHS epochs of pretraining, then
# `pretext eval labels --fractions 0.1,1 --seeds 1` (kNN and linear probes on frozen features,
# fine-tuning, and the same architecture trained from scratch) with FT_EPOCHS passes of
# fine-tuning (eval.finetune.min_steps, 300, raises the 10% arm's epochs). The from-scratch runs
# are trained once per architecture and borrowed by the other methods (--baseline-from); the
# random-init probes come from `eval all` on the first run of each architecture.
# Run by hand, never in CI (about 1.5 hours on 2 cores).
#
#   bench/masked/full_fmnist.sh DATA_DIR [METHOD ...]
#
# DATA_DIR: the full Fashion-MNIST in the MNIST layout (../shared/datasets.sh puts it in
# DIR/images/fashion-mnist). Environment: EPOCHS (1), WARMUP (0.1: learning-rate warm-up in
# epochs, instead of the configs' 1, which would fill a 1-epoch run), FT_EPOCHS (1), THREADS (2),
# OUT (runs/full_fmnist), PRETEXT_BIN (a built binary: then nothing is built). One JSON line
# per run goes to $OUT/results.jsonl; a markdown table
# is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:?usage: bench/masked/full_fmnist.sh DATA_DIR [METHOD ...]}
shift
EPOCHS=${EPOCHS:-1}
FT_EPOCHS=${FT_EPOCHS:-1}
WARMUP=${WARMUP:-0.1}
THREADS=${THREADS:-2}
OUT=${OUT:-runs/full_fmnist}
methods=${*:-"simclr byol autoencoder denoising_autoencoder rotation jigsaw mae simmim"}
[ -n "${PRETEXT_BIN:-}" ] || cargo build --release -q -p pretext-cli
PRETEXT=${PRETEXT_BIN:-target/release/pretext}
mkdir -p "$OUT"
declare -A first_of_arch

for m in $methods; do
  run="$OUT/$m"
  if [ ! -f "$run.pretrain.json" ]; then
    echo "[bench] $m: pretraining, $EPOCHS epochs" >&2
    "$PRETEXT" pretrain --config "configs/${m}_fmnist.toml" --data "$DATA" --threads "$THREADS" \
      --set epochs="$EPOCHS" --set optimizer.warmup_epochs="$WARMUP" --set train.out_dir="\"$run\"" --overwrite --json > "$run.pretrain.tmp"
    mv "$run.pretrain.tmp" "$run.pretrain.json"
  fi
  arch=$(grep -m1 '^arch' "configs/${m}_fmnist.toml" | sed 's/.*= *"\(.*\)"/\1/')
  arch=${arch:-small_cnn}
  labels=(eval labels --checkpoint "$run" --data "$DATA" --threads "$THREADS" --fractions 0.1,1
    --seeds 1 --set eval.finetune.epochs="$FT_EPOCHS" --json)
  echo "[bench] $m: eval labels" >&2
  if [ -n "${first_of_arch[$arch]:-}" ] &&
    "$PRETEXT" "${labels[@]}" --baseline-from "${first_of_arch[$arch]}" > "$run.labels.json"; then
    :
  else
    "$PRETEXT" "${labels[@]}" > "$run.labels.json"
  fi
  random=""
  if [ -z "${first_of_arch[$arch]:-}" ]; then
    first_of_arch[$arch]=$run
    echo "[bench] $m: eval all (random-init probes of $arch)" >&2
    "$PRETEXT" eval all --checkpoint "$run" --data "$DATA" --threads "$THREADS" --json > "$run.eval.json"
    random="$run.eval.json"
  fi
  python3 - "$m" "$arch" "$run" "$random" >> "$OUT/results.jsonl" <<'PY'
import json, sys
m, arch, run, random = sys.argv[1:5]
p = json.load(open(run + ".pretrain.json"))["summary"]
study = json.load(open(run + ".labels.json"))["study"]
acc = {(s["arm"], s["fraction"]): s["mean"] for s in study["summary"]}
row = {"method": m, "arch": arch, "images_per_sec": p["images_per_sec"],
       "minutes": p["time"]["total"] / 60, "final_loss": p["last_epoch_loss"],
       "knn": acc[("knn", 1.0)], "linear": acc[("linear", 1.0)],
       "ft10": acc[("finetune", 0.1)], "ft100": acc[("finetune", 1.0)],
       "scratch10": acc[("scratch", 0.1)], "scratch100": acc[("scratch", 1.0)]}
if random:
    r = json.load(open(random))["results"]["random_init"]
    row["random_knn"], row["random_linear"] = r["knn"], r["linear"]
print(json.dumps(row))
PY
done

python3 - "$OUT/results.jsonl" "$EPOCHS" "$FT_EPOCHS" "$WARMUP" <<'PY'
import json, sys
rows = list({r["method"]: r for r in (json.loads(l) for l in open(sys.argv[1]) if l.strip())}.values())
pct = lambda x: f"{100 * x:.2f}%"
print(f"pretraining {sys.argv[2]} epoch(s) of 60,000 images (warm-up {sys.argv[4]}); fine-tuning {sys.argv[3]} epoch(s) "
      "(at least 300 steps of 128); 10,000 test images\n")
print("| method | backbone | kNN | linear | fine-tuned, 10% | fine-tuned, 100% | images/s | pretraining min |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['method']} | {r['arch']} | {pct(r['knn'])} | {pct(r['linear'])} | {pct(r['ft10'])} "
          f"| {pct(r['ft100'])} | {r['images_per_sec']:.0f} | {r['minutes']:.1f} |")
for r in rows:
    if "random_knn" in r:
        print(f"| random init (from scratch) | {r['arch']} | {pct(r['random_knn'])} | {pct(r['random_linear'])} "
              f"| {pct(r['scratch10'])} | {pct(r['scratch100'])} | | |")
PY
