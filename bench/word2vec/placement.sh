#!/usr/bin/env bash
# Does two-thread Word2Vec speed follow where the host puts the two vCPUs? Alternates the
# core-to-core round trip (core_to_core.c) with one-epoch skip-gram runs: one thread, two
# threads, two threads with --shared-negatives (docs/word2vec.md, "vCPU placement").
#   bench/word2vec/placement.sh DATA_DIR [ROUNDS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${1:?DATA_DIR}
ROUNDS=${2:-6}
BIN=${PRETEXT_BIN:-$ROOT/target/release/pretext}
PROBE=${TMPDIR:-/tmp}/pretext_core_to_core
gcc -O2 -pthread "$ROOT/bench/word2vec/core_to_core.c" -o "$PROBE"
FLAGS=(--sg --dim 100 --window 5 --negative 5 --sample 1e-3 --min-count 5 --epochs 1 --seed 1 --json)
words_per_sec() {
  "$BIN" word2vec train --corpus "$DATA/text/pretrain_en.txt" --out "${TMPDIR:-/tmp}/placement.bin" \
    "${FLAGS[@]}" "$@" 2>/dev/null |
    python3 -c "import json, sys; print('%.0fk' % (json.load(sys.stdin)['raw_words_per_sec'] / 1e3))"
}
for round in $(seq "$ROUNDS"); do
  echo "round $round ($(date +%T)): before $("$PROBE")," \
    "1 thread $(words_per_sec --threads 1), 2 threads $(words_per_sec --threads 2)," \
    "2 threads shared $(words_per_sec --threads 2 --shared-negatives), after $("$PROBE")"
done
