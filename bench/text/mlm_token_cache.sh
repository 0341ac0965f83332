#!/usr/bin/env bash
# Memory and speed of `pretext mlm train` as the corpus grows: the corpus (DIR/text/pretrain_en.txt
# of ../shared/datasets.sh DIR) repeated 1x and 10x, each trained 20 steps of configs/mlm_mini.toml twice (the first
# run builds the token cache, the second reuses it), with a tokenizer trained once beforehand so
# that its training is not what is measured; tokenisation throughput is the corpus's bytes over
# the build's "tokenisation" seconds. Run by hand:
#   bench/text/mlm_token_cache.sh PRETEXT_BINARY CORPUS
set -euo pipefail
bin=${1:?give the pretext binary, e.g. target/release/pretext}
corpus=${2:?give the corpus: DIR/text/pretrain_en.txt from ../shared/datasets.sh DIR}
work=${WORK:-/tmp/mlm_token_cache}
rm -rf "$work" && mkdir -p "$work"
cp "$corpus" "$work/corpus1.txt"
for _ in $(seq 10); do cat "$corpus"; done > "$work/corpus10.txt"
# Peak anonymous memory (the heap: what grows if the corpus is held in memory) and peak
# file-backed memory (mapped cache pages: page cache the kernel reclaims under pressure),
# sampled from /proc every 0.1 s.
run() { # NAME CORPUS EXTRA...
  local name=$1 corpus=$2; shift 2
  local start anon=0 file=0 a f
  start=$(date +%s.%N)
  "$bin" mlm train --config configs/mlm_mini.toml --corpus "$corpus" --set steps=20 \
    --set eval.max_sequences=64 --set "train.out_dir=\"$work/run-$name\"" \
    --set "data.cache_dir=\"$work/cache\"" "$@" > "$work/$name.log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    read -r a f < <(awk '/RssAnon/{a=$2} /RssFile/{f=$2} END{print a+0, f+0}' \
      "/proc/$pid/status" 2>/dev/null || echo "0 0")
    ((a > anon)) && anon=$a
    ((f > file)) && file=$f
    sleep 0.1
  done
  wait "$pid"
  grep -E "^(speed|mlm:)" "$work/$name.log"
  echo "$name: $(echo "$(date +%s.%N) - $start" | bc) s wall, peak RssAnon $((anon / 1024)) MB, peak RssFile $((file / 1024)) MB"
}
run tokenizer "$work/corpus1.txt" --set steps=1
tok="tokenizer.path=\"$work/run-tokenizer/tokenizer.json\""
rm -rf "$work/cache"
for n in 1 10; do
  run "${n}x-build" "$work/corpus$n.txt" --set "$tok"
  run "${n}x-reuse" "$work/corpus$n.txt" --set "$tok"
done
du -sh "$work"/cache/tokens/*
