#!/usr/bin/env bash
# Word2Vec benchmark: pretext vs gensim on the same corpus, same parameters, same machine.
#
#   bench/word2vec/run.sh [DATA_DIR]
#
# DATA_DIR is where ../shared/datasets.sh put the data (default $PRETEXT_DATA, else
# ~/.cache/pretext-data); it needs text/pretrain_en.txt, eval/questions-words.txt and
# eval/wordsim353.tsv. Environment:
#   PRETEXT_BIN     pretext binary (default target/release/pretext, built if missing)
#   PRETEXT_SUBCMD  subcommand prefix (default "word2vec"; empty for the crate's `w2v` example)
#   VENV            virtual environment for gensim (default bench/word2vec/.venv, created if missing)
#   GENSIM_VERSION  (default 4.4.0)   THREADS (default 2)   EPOCHS (default 5)
#   ARCHS           (default "sg cbow"; skip-gram also runs with --shared-negatives)   GENSIM_MODES (default "lines corpus_file")
#   SEEDS           (default "1 2 3": every run is repeated per seed; the table shows means)
#   OUT             results directory (default target/bench-word2vec)
# Prints one markdown table (also written to $OUT/table.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/bench/word2vec
DATA=${1:-${PRETEXT_DATA:-$HOME/.cache/pretext-data}}
CORPUS=$DATA/text/pretrain_en.txt
QUESTIONS=$DATA/eval/questions-words.txt
PAIRS=$DATA/eval/wordsim353.tsv
for f in "$CORPUS" "$QUESTIONS" "$PAIRS"; do
  [ -f "$f" ] || { echo "missing $f: run ../shared/datasets.sh $DATA first" >&2; exit 1; }
done
PRETEXT_BIN=${PRETEXT_BIN:-$ROOT/target/release/pretext}
PRETEXT_SUBCMD=${PRETEXT_SUBCMD-word2vec}
VENV=${VENV:-$HERE/.venv}
GENSIM_VERSION=${GENSIM_VERSION:-4.4.0}
THREADS=${THREADS:-2}
EPOCHS=${EPOCHS:-5}
ARCHS=${ARCHS:-sg cbow}
GENSIM_MODES=${GENSIM_MODES:-lines corpus_file}
SEEDS=${SEEDS:-1 2 3}
OUT=${OUT:-$ROOT/target/bench-word2vec}
mkdir -p "$OUT"
log() { printf '[bench] %s\n' "$*" >&2; }

# Tools.
if [ ! -x /usr/bin/time ]; then
  log "installing GNU time"; apt-get install -y -q time >&2 || sudo -n apt-get install -y -q time >&2
fi
if [ ! -x "$PRETEXT_BIN" ]; then
  log "building pretext (release)"; (cd "$ROOT" && cargo build --release -p pretext-cli >&2)
fi
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"; python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import gensim" 2>/dev/null; then
  log "installing gensim $GENSIM_VERSION"; "$VENV/bin/pip" install -q "gensim==$GENSIM_VERSION" >&2
fi
PY=$VENV/bin/python
W2V=("$PRETEXT_BIN")
[ -n "$PRETEXT_SUBCMD" ] && W2V+=($PRETEXT_SUBCMD)

# Where the host put the vCPUs (docs/word2vec.md, "vCPU placement"): the core-to-core round
# trip before and after each training run, in $OUT/NAME.placement.
source "$HERE/probe.sh"
# timed NAME CMD...: runs a training command under GNU time, probing placement around it.
timed() {
  local name=$1; shift
  local before; before=$(round_trip)
  /usr/bin/time -v -o "$OUT/$name.time" "$@" > "$OUT/$name.train.json"
  echo "$before $(round_trip)" > "$OUT/$name.placement"
}

COMMON=(--dim 100 --window 5 --negative 5 --sample 1e-3 --min-count 5 --epochs "$EPOCHS")
{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
  echo "corpus: $CORPUS ($(wc -w < "$CORPUS") words)"
  echo "gensim: $("$PY" -c 'import gensim; print(gensim.__version__)'), threads $THREADS, epochs $EPOCHS"
  echo "load average at start: $(cut -d" " -f1-3 /proc/loadavg)"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

for seed in $SEEDS; do
for arch in $ARCHS; do
  flag=--sg; sg=1
  [ "$arch" = cbow ] && { flag=--cbow; sg=0; }
  log "seed $seed: pretext $arch"
  timed "pretext-$arch-s$seed" "${W2V[@]}" train --corpus "$CORPUS" \
    --out "$OUT/pretext-$arch-s$seed.bin" "$flag" "${COMMON[@]}" --threads "$THREADS" --seed "$seed" \
    --json
  if [ "$arch" = sg ]; then
    log "seed $seed: pretext $arch --shared-negatives"
    timed "pretext_shared-$arch-s$seed" "${W2V[@]}" train --corpus "$CORPUS" \
      --out "$OUT/pretext_shared-$arch-s$seed.bin" "$flag" "${COMMON[@]}" --threads "$THREADS" \
      --seed "$seed" --shared-negatives --json
  fi
  for mode in $GENSIM_MODES; do
    log "seed $seed: gensim $arch ($mode)"
    timed "gensim_$mode-$arch-s$seed" "$PY" "$HERE/gensim_w2v.py" train \
      "$CORPUS" "$OUT/gensim_$mode-$arch-s$seed.bin" --sg $sg --dim 100 --window 5 --negative 5 \
      --sample 1e-3 --min-count 5 --epochs "$EPOCHS" --workers "$THREADS" --mode "$mode" \
      --seed "$seed"
  done
  for v in "$OUT"/pretext-$arch-s$seed.bin "$OUT"/pretext_shared-$arch-s$seed.bin "$OUT"/gensim_*-$arch-s$seed.bin; do
    [ -f "$v" ] || continue
    name=$(basename "$v" .bin)
    log "evaluating $name with pretext and with gensim"
    "${W2V[@]}" eval --vectors "$v" --analogies "$QUESTIONS" --similarity "$PAIRS" \
      --restrict-vocab 30000 --json > "$OUT/$name.eval-pretext.json"
    "$PY" "$HERE/gensim_w2v.py" eval "$v" --binary 1 --analogies "$QUESTIONS" --pairs "$PAIRS" \
      > "$OUT/$name.eval-gensim.json"
    rm -f "$v"
  done
done
done
python3 "$HERE/report.py" "$OUT" | tee "$OUT/table.md"
