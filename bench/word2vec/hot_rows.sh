#!/usr/bin/env bash
# Do private copies of the hot rows cost accuracy? Five-epoch skip-gram runs on two threads with
# --shared-negatives, every row shared (--hot-rows 0) against the default (4,096 hot rows),
# per seed: words/s, the vCPU round trip before and after (core_to_core.c), analogy accuracy and
# WordSim-353 (docs/word2vec.md, "Hot rows").
#   bench/word2vec/hot_rows.sh DATA_DIR [SEEDS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${1:?DATA_DIR}
SEEDS=${2:-1 2 3 4}
BIN=${PRETEXT_BIN:-$ROOT/target/release/pretext}
TMP=${TMPDIR:-/tmp}
source "$ROOT/bench/word2vec/probe.sh"
FLAGS=(--sg --dim 100 --window 5 --negative 5 --sample 1e-3 --min-count 5 --epochs 5 --threads 2
  --shared-negatives --json)
echo "| seed | hot rows | words/s | round trip ns before/after | analogy % | WS353 ρ |"
echo "|---|---|---|---|---|---|"
for seed in $SEEDS; do
  for hot in 0 4096; do
    before=$(round_trip)
    wps=$("$BIN" word2vec train --corpus "$DATA/text/pretrain_en.txt" --out "$TMP/hot_rows.bin" \
      "${FLAGS[@]}" --seed "$seed" --hot-rows "$hot" 2>/dev/null |
      python3 -c "import json, sys; print('%.0fk' % (json.load(sys.stdin)['raw_words_per_sec'] / 1e3))")
    after=$(round_trip)
    scores=$("$BIN" word2vec eval --vectors "$TMP/hot_rows.bin" \
      --analogies "$DATA/eval/questions-words.txt" --similarity "$DATA/eval/wordsim353.tsv" \
      --restrict-vocab 30000 --json 2>/dev/null |
      python3 -c "import json, sys; d = json.load(sys.stdin)
print('%.2f | %.3f' % (100 * d['analogies']['accuracy'], d['similarity']['spearman']))")
    echo "| $seed | $hot | $wps | $before/$after | $scores |"
  done
done
