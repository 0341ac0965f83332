#!/usr/bin/env bash
# Does two-thread Word2Vec speed follow where the host puts the two vCPUs? Alternates the
# core-to-core round trip (core_to_core.c) with one-epoch skip-gram runs: one thread; two threads
# with every row shared (--hot-rows 0) and with private copies of the HOT most frequent words'
# rows (--hot-rows HOT, default 4096, the CLI's default); both again with --shared-negatives
# (docs/word2vec.md, "vCPU placement" and "Hot rows").
#   [HOT=N] bench/word2vec/placement.sh DATA_DIR [ROUNDS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${1:?DATA_DIR}
ROUNDS=${2:-6}
BIN=${PRETEXT_BIN:-$ROOT/target/release/pretext}
source "$ROOT/bench/word2vec/probe.sh"
FLAGS=(--sg --dim 100 --window 5 --negative 5 --sample 1e-3 --min-count 5 --epochs 1 --seed 1 --json)
words_per_sec() {
  "$BIN" word2vec train --corpus "$DATA/text/pretrain_en.txt" --out "${TMPDIR:-/tmp}/placement.bin" \
    "${FLAGS[@]}" "$@" 2>/dev/null |
    python3 -c "import json, sys; print('%.0fk' % (json.load(sys.stdin)['raw_words_per_sec'] / 1e3))"
}
HOT=${HOT:-4096}
for round in $(seq "$ROUNDS"); do
  echo "round $round ($(date +%T)): before $(round_trip) ns," \
    "1 thread $(words_per_sec --threads 1)," \
    "2 threads shared rows $(words_per_sec --threads 2 --hot-rows 0)," \
    "hot $(words_per_sec --threads 2 --hot-rows "$HOT")," \
    "2 threads --shared-negatives, shared rows $(words_per_sec --threads 2 --shared-negatives --hot-rows 0)," \
    "hot $(words_per_sec --threads 2 --shared-negatives --hot-rows "$HOT")," \
    "after $(round_trip) ns"
done
