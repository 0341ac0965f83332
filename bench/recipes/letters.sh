#!/usr/bin/env bash
# Does the Fashion-MNIST SimCLR recipe hold on another data set? The quick-start recipe (5
# epochs, small CNN) on the first 10,000 training images of the letters set (`pretext data
# letters`; the size of the embedded Fashion-MNIST subset), as shipped and with one change at a
# time, each scored on the whole letters set (18,928 train / 4,680 test from other fonts):
# kNN and linear probes against a random-init backbone (`eval all`), then `eval labels` at 1%
# and 10% of the labels (fine-tuning against supervised training from scratch). Every recipe
# but the shipped one turns the horizontal flip off, in the views and in fine-tuning (a flipped
# letter is another letter or none), so all of those share one supervised baseline: it is
# trained once, for the first, and taken by the others (`--baseline-from`). Prints one table.
#   bench/recipes/letters.sh DIR/images/letters
#   RECIPES="no_flip crop_half" SEEDS=1 bench/recipes/letters.sh DIR/images/letters   # a subset
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:?usage: bench/recipes/letters.sh LETTERS_DIR}
OUT=${OUT:-runs/recipes}
SEEDS=${SEEDS:-3}
cargo build --release -q -p pretext-cli
mkdir -p "$OUT"
NO_FLIP='--set views=[{flip_p=0.0}] --set finetune_view.flip_p=0.0'
declare -A CHANGE=(
  [fmnist_default]=""
  [no_flip]="$NO_FLIP"
  [crop_half]="--set views=[{flip_p=0.0,crop_scale=[0.5,1.0]}] --set finetune_view.flip_p=0.0"
  [no_jitter]="--set views=[{flip_p=0.0,jitter_p=0.0}] --set finetune_view.flip_p=0.0"
  [temperature_0.2]="$NO_FLIP --set simclr.temperature=0.2"
  [epochs_10]="$NO_FLIP --set epochs=10"
)
ORDER=(${RECIPES:-fmnist_default no_flip crop_half no_jitter temperature_0.2 epochs_10})
lender=""
for name in "${ORDER[@]}"; do
  run="$OUT/letters_$name"
  # shellcheck disable=SC2086
  target/release/pretext pretrain --config configs/quickstart.toml --data "$DATA" ${CHANGE[$name]} \
    --set data.train_limit=10000 --set train.out_dir="\"$run\"" --overwrite --json > "$run.pretrain.json"
  target/release/pretext eval all --checkpoint "$run" --data "$DATA" --set data.train_limit=0 \
    --json > "$run.eval.json"
  borrow=()
  if [[ $name != fmnist_default ]]; then
    if [[ -n $lender ]]; then borrow=(--baseline-from "$lender"); else lender=$run; fi
  fi
  target/release/pretext eval labels --checkpoint "$run" --data "$DATA" --set data.train_limit=0 \
    --fractions 0.01,0.1 --seeds "$SEEDS" "${borrow[@]}" --json > "$run.labels.json"
done
python3 - "$OUT" "${ORDER[@]}" <<'PY'
import json, sys
out, names = sys.argv[1], sys.argv[2:]
cell = lambda s, arm, f: next(f"{100*x['mean']:.2f} ± {100*x['std']:.2f}" for x in s["summary"]
                              if x["arm"] == arm and x["fraction"] == f)
print("| recipe | kNN | linear | fine-tuned 1% | fine-tuned 10% | scratch 1% | scratch 10% | images/s |")
print("|---|---|---|---|---|---|---|---|")
for name in names:
    p = json.load(open(f"{out}/letters_{name}.pretrain.json"))["summary"]
    e = json.load(open(f"{out}/letters_{name}.eval.json"))["results"]
    s = json.load(open(f"{out}/letters_{name}.labels.json"))["study"]
    print(f"| {name} | {100*e['pretrained']['knn']:.2f}% | {100*e['pretrained']['linear']:.2f}% | "
          f"{cell(s, 'finetune', 0.01)}% | {cell(s, 'finetune', 0.1)}% | "
          f"{cell(s, 'scratch', 0.01)}% | {cell(s, 'scratch', 0.1)}% | {p['images_per_sec']:.0f} |")
e = json.load(open(f"{out}/letters_{names[0]}.eval.json"))["results"]["random_init"]
print(f"| random init | {100*e['knn']:.2f}% | {100*e['linear']:.2f}% | | | | | |")
PY
