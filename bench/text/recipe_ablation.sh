#!/usr/bin/env bash
# The small-compute MLM recipe (configs/mlm_recipe.toml), one option at a time: BERT-mini on
# text/pretrain_en.txt for BUDGET minutes each (default 5), in sequence, then a table of steps,
# tokens/s and held-out masked-token accuracy (always scored at 15% masking). docs/text.md
# has the results. Run by hand (about 10 x BUDGET minutes), on an otherwise idle machine.
#
#   bench/text/recipe_ablation.sh DATA_DIR [OUT_DIR]
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${1:?usage: bench/text/recipe_ablation.sh DATA_DIR [OUT_DIR]}
OUT=${2:-/tmp/pretext-recipe-ablation}
B=${BUDGET:-5}
P=${PRETEXT_BIN:-$ROOT/target/release/pretext}
C="$DATA/text/pretrain_en.txt"
mkdir -p "$OUT"
base=(--config "$ROOT/configs/mlm_mini.toml" --set steps=0 --set epochs=100 --set train.budget_minutes=$B)
# The recipe as the table in docs/text.md measured it: lr 1e-3, random token and position rows.
recipe=(--config "$ROOT/configs/mlm_recipe.toml" --set train.budget_minutes=$B --set model.embedding_init='"random"'
  --set model.position_init='"random"' --set optimizer.lr=1e-3)
opt=(--set optimizer.lr=1e-3 --set optimizer.beta2=0.98 --set optimizer.eps=1e-12 --set optimizer.grad_clip=0.5)
run() {
  name=$1; shift
  echo "== $name $(date +%T)" >&2
  "$P" mlm train --corpus "$C" "$@" --set train.out_dir="\"$OUT/$name\"" --overwrite --json > "$OUT/$name.json" 2> "$OUT/$name.err" || { echo "| $name | failed: $OUT/$name.err |"; return; }
  python3 - "$OUT/$name.json" "$name" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["result"]
h = d["heldout"]
print(f"| {sys.argv[2]} | {d['train']['steps']} | {d['tokens_per_sec']:.0f} | {100 * h['accuracy']:.2f}% | {h['loss']:.3f} |")
PY
}
echo "| run | steps | tokens/s | held-out accuracy | held-out loss |"
echo "|---|---|---|---|---|"
run baseline "${base[@]}"
run optimizer "${base[@]}" "${opt[@]}"
run no_dropout "${base[@]}" --set model.dropout=0.0
run mask40 "${base[@]}" --set masking.probability=0.4
run pre_norm "${base[@]}" --set model.norm='"pre"'
run recipe "${recipe[@]}"
run recipe_mask15 "${recipe[@]}" --set masking.probability=0.15
run recipe_mask_only "${recipe[@]}" --set masking.mask_fraction=1.0 --set masking.random_fraction=0.0
run recipe_word2vec "${recipe[@]}" --set model.embedding_init='"word2vec"'
run recipe_lr2e3 "${recipe[@]}" --set optimizer.lr=2e-3
run recipe_sinusoid "${recipe[@]}" --set model.position_init='"sinusoid"'
