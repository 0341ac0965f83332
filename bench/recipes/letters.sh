#!/usr/bin/env bash
# Does the Fashion-MNIST SimCLR recipe hold on another data set? The quick-start recipe (5
# epochs, small CNN) on the first 10,000 training images of the letters set (`pretext data
# letters`; the size of the embedded Fashion-MNIST subset), as shipped and with the views'
# horizontal flip turned off (a flipped letter is another letter or none), each scored by kNN
# and linear probes on the whole letters set against a random-init backbone. Prints one table.
#   bench/recipes/letters.sh DIR/images/letters
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:?usage: bench/recipes/letters.sh LETTERS_DIR}
OUT=${OUT:-runs/recipes}
cargo build --release -q -p pretext-cli
mkdir -p "$OUT"
declare -A RECIPES=(
  [fmnist_default]=""
  [no_flip]='--set views=[{flip_p=0.0},{flip_p=0.0}]'
)
for name in fmnist_default no_flip; do
  run="$OUT/letters_$name"
  # shellcheck disable=SC2086
  target/release/pretext pretrain --config configs/quickstart.toml --data "$DATA" ${RECIPES[$name]} \
    --set data.train_limit=10000 --set train.out_dir="\"$run\"" --overwrite --json > "$run.pretrain.json"
  target/release/pretext eval all --checkpoint "$run" --data "$DATA" --set data.train_limit=0 \
    --json > "$run.eval.json"
done
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
print(f"{'recipe':<16}{'kNN':>8}{'linear':>8}{'rand kNN':>10}{'rand lin':>10}{'img/s':>8}")
for name in ["fmnist_default", "no_flip"]:
    p = json.load(open(f"{out}/letters_{name}.pretrain.json"))["summary"]
    e = json.load(open(f"{out}/letters_{name}.eval.json"))["results"]
    print(f"{name:<16}{100*e['pretrained']['knn']:>7.2f}%{100*e['pretrained']['linear']:>7.2f}%"
          f"{100*e['random_init']['knn']:>9.2f}%{100*e['random_init']['linear']:>9.2f}%{p['images_per_sec']:>8.0f}")
PY
