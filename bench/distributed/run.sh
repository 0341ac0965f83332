#!/usr/bin/env bash
# Data-parallel speed on this machine (docs/distributed.md): `pretext mlm train` (BERT-mini,
# configs/mlm_mini.toml, 30 steps of global batch 16) as 1 process x 1 thread, 2 ranks x 1 thread
# (mpirun) and 1 process x 2 threads, on the same corpus with one tokenizer. Needs a binary
# built with `--features mpi` and Open MPI's mpirun. Run by hand:
#   bench/distributed/run.sh target/release/pretext DIR/text/pretrain_en.txt
set -euo pipefail
bin=${1:?give a pretext binary built with --features mpi}
corpus=${2:?give the corpus: DIR/text/pretrain_en.txt from ../shared/datasets.sh DIR}
work=${WORK:-/tmp/pretext-distributed-bench}
rm -rf "$work" && mkdir -p "$work"
"$bin" tokenizer train --corpus "$corpus" --out "$work/tokenizer.json" >/dev/null
run() { # NAME THREADS [mpirun -np N]
  local name=$1 threads=$2; shift 2
  "$@" "$bin" mlm train --config configs/mlm_mini.toml --corpus "$corpus" --threads "$threads" \
    --set steps=30 --set eval.max_sequences=64 --set "tokenizer.path=\"$work/tokenizer.json\"" \
    --set "train.out_dir=\"$work/$name\"" --set "data.cache_dir=\"$work/cache\"" \
    > "$work/$name.log" 2>&1
  echo "$name: $(grep -E '^(speed|time):' "$work/$name.log" | tr '\n' ' ')"
}
run warm-cache 1 # builds the token cache once, so that no timed run pays for it
run "1-process-1-thread" 1
run "2-ranks-1-thread" 1 mpirun --allow-run-as-root --oversubscribe -np 2
run "1-process-2-threads" 2
