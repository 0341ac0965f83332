#!/usr/bin/env bash
# Train a tiny ELECTRA briefly, export it, and check the export with transformers.
#
#   bench/electra/check_export.sh [WORK_DIR]
#
# Environment: PRETEXT_BIN (default target/release/pretext), VENV (a virtual environment with
# torch and transformers; default bench/mlm/.venv, created if missing).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${1:-$ROOT/target/electra-export}
PRETEXT_BIN=${PRETEXT_BIN:-$ROOT/target/release/pretext}
VENV=${VENV:-$ROOT/bench/mlm/.venv}
mkdir -p "$WORK"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch --index-url https://download.pytorch.org/whl/cpu
  "$VENV/bin/pip" install -q transformers safetensors
fi
python3 - "$WORK/corpus.txt" <<'PY'
import random, sys
random.seed(3)
nouns = ["fox", "dog", "cat", "zebra", "whale", "knight", "queen", "yak"]
adjs = ["lazy", "quick", "brown", "jolly", "fuzzy", "vexed", "wise", "grumpy"]
verbs = ["jumps over", "chases", "watches", "follows", "greets", "admires"]
with open(sys.argv[1], "w") as f:
    for _ in range(600):
        f.write(f"The {random.choice(adjs)} {random.choice(nouns)} {random.choice(verbs)} "
                f"the {random.choice(nouns)}, and the {random.choice(nouns)} sleeps.\n")
PY
"$PRETEXT_BIN" electra train --corpus "$WORK/corpus.txt" --overwrite \
  --set steps=60 --set model.size='"tiny"' --set tokenizer.vocab_size=400 \
  --set data.mode='"line_by_line"' --set data.max_len=48 --set data.holdout_every=10 \
  --set model.dropout=0.0 --set optimizer.lr=2e-3 --set optimizer.warmup_steps=5 \
  --set train.out_dir="\"$WORK/run\"" --set data.cache_dir="\"$WORK/cache\""
"$PRETEXT_BIN" export --checkpoint "$WORK/run" --format hf --out "$WORK/hf"
"$PRETEXT_BIN" electra logits --checkpoint "$WORK/run" --out "$WORK/logits.json" \
  "the quick fox jumps over the lazy dog." "The Wise QUEEN greets the zebra, and the yak sleeps!" \
  "a cat"
"$VENV/bin/python" "$ROOT/bench/electra/check_export.py" "$WORK/hf" "$WORK/logits.json"
