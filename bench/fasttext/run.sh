#!/usr/bin/env bash
# fastText benchmark: pretext against gensim's FastText and Debian's fastText program, on the
# same corpus with the same parameters, side by side in one run on one machine.
#
#   bench/fasttext/run.sh [DATA_DIR]
#
# DATA_DIR is where ../shared/datasets.sh put the data (default $PRETEXT_DATA, else
# ~/.cache/pretext-data); it needs text/pretrain_en.txt, eval/questions-words.txt and
# eval/wordsim353.tsv. Environment:
#   PRETEXT_BIN  pretext binary (default target/release/pretext, built if missing)
#   VENV         virtual environment for gensim (default bench/word2vec/.venv, created if missing)
#   GENSIM_VERSION (default 4.4.0)   THREADS (default 2)   EPOCHS (default 5)
#   ARCHS        (default "sg cbow")   SEEDS (default "1": every run is repeated per seed)
#   TOOLS        (default "pretext gensim fasttext"; fasttext = Debian's program, installed by
#                apt-get if missing)
#   OUT          results directory (default target/bench-fasttext)
#   PRETEXT_ARGS extra flags for pretext's trainer (e.g. "--min-alpha 0.0026", the end rate
#                gensim's corpus_file mode reaches, docs/fasttext.md)
# Prints one markdown table (also written to $OUT/table.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/bench/fasttext
DATA=${1:-${PRETEXT_DATA:-$HOME/.cache/pretext-data}}
CORPUS=$DATA/text/pretrain_en.txt
QUESTIONS=$DATA/eval/questions-words.txt
PAIRS=$DATA/eval/wordsim353.tsv
for f in "$CORPUS" "$QUESTIONS" "$PAIRS"; do
  [ -f "$f" ] || { echo "missing $f: run ../shared/datasets.sh $DATA first" >&2; exit 1; }
done
PRETEXT_BIN=${PRETEXT_BIN:-$ROOT/target/release/pretext}
VENV=${VENV:-$ROOT/bench/word2vec/.venv}
GENSIM_VERSION=${GENSIM_VERSION:-4.4.0}
THREADS=${THREADS:-2}
EPOCHS=${EPOCHS:-5}
ARCHS=${ARCHS:-sg cbow}
SEEDS=${SEEDS:-1}
TOOLS=${TOOLS:-pretext gensim fasttext}
OUT=${OUT:-$ROOT/target/bench-fasttext}
read -r -a PRETEXT_ARGS <<< "${PRETEXT_ARGS:-}"
mkdir -p "$OUT"
log() { printf '[bench] %s\n' "$*" >&2; }
install() { apt-get install -y -q "$@" >&2 || sudo -n apt-get install -y -q "$@" >&2; }

[ -x /usr/bin/time ] || { log "installing GNU time"; install time; }
if [[ " $TOOLS " == *" fasttext "* ]] && ! command -v fasttext > /dev/null; then
  log "installing Debian's fasttext"; install fasttext
fi
if [ ! -x "$PRETEXT_BIN" ]; then
  log "building pretext (release)"; (cd "$ROOT" && cargo build --release -p pretext-cli >&2)
fi
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; python3 -m venv "$VENV"; }
if ! "$VENV/bin/python" -c "import gensim, scipy" 2>/dev/null; then
  log "installing gensim $GENSIM_VERSION"; "$VENV/bin/pip" install -q "gensim==$GENSIM_VERSION" scipy >&2
fi
PY=$VENV/bin/python

{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
  echo "corpus: $CORPUS ($(wc -w < "$CORPUS") words, $(wc -l < "$CORPUS") lines)"
  echo "gensim: $("$PY" -c 'import gensim; print(gensim.__version__)'); fasttext: $(dpkg-query -W -f='${Version}' fasttext 2>/dev/null || echo none)"
  echo "threads $THREADS, epochs $EPOCHS, dim 100, window 5, negative 5, sample 1e-3, min_count 5, n-grams 3-6, 2,000,000 buckets, lr 0.025"
  echo "load average at start: $(cut -d" " -f1-3 /proc/loadavg)"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

# The core-to-core round trip before and after each training run, in RUN.placement.
source "$ROOT/bench/word2vec/probe.sh"

for seed in $SEEDS; do
for arch in $ARCHS; do
  for tool in $TOOLS; do
    run=$OUT/$tool-$arch-s$seed
    log "seed $seed: $tool $arch"
    before=$(round_trip)
    case $tool in
      pretext)
        flag=--sg; [ "$arch" = cbow ] && flag=--cbow
        /usr/bin/time -v -o "$run.time" "$PRETEXT_BIN" fasttext train --corpus "$CORPUS" \
          --out "$run.ftm" --vec "$run.vec" "$flag" --dim 100 --window 5 --negative 5 \
          --sample 1e-3 --min-count 5 --epochs "$EPOCHS" --threads "$THREADS" --seed "$seed" \
          "${PRETEXT_ARGS[@]}" --json > "$run.train.json"
        vectors=("$PRETEXT_BIN" fasttext print-vectors --model "$run.ftm") ;;
      gensim)
        sg=1; [ "$arch" = cbow ] && sg=0
        /usr/bin/time -v -o "$run.time" "$PY" "$HERE/peers.py" gensim-train "$CORPUS" "$run" \
          --sg $sg --dim 100 --window 5 --negative 5 --sample 1e-3 --min-count 5 \
          --epochs "$EPOCHS" --workers "$THREADS" --seed "$seed" > "$run.train.json"
        vectors=("$PY" "$HERE/peers.py" gensim-vectors "$run.model") ;;
      fasttext)
        mode=skipgram; [ "$arch" = cbow ] && mode=cbow
        /usr/bin/time -v -o "$run.time" fasttext "$mode" -input "$CORPUS" -output "$run" \
          -dim 100 -ws 5 -neg 5 -t 1e-3 -minCount 5 -epoch "$EPOCHS" -thread "$THREADS" \
          -minn 3 -maxn 6 -bucket 2000000 -lr 0.025 -seed "$seed" 2> "$run.log"
        # The last progress line: fastText's words/sec/thread (its words include one
        # end-of-line token per line).
        tr '\r' '\n' < "$run.log" | grep 'words/sec/thread' | tail -1 > "$run.train.txt"
        vectors=(fasttext print-word-vectors "$run.bin") ;;
    esac
    echo "$before $(round_trip)" > "$run.placement"
    log "evaluating $tool $arch"
    "$PRETEXT_BIN" word2vec eval --vectors "$run.vec" --analogies "$QUESTIONS" \
      --similarity "$PAIRS" --restrict-vocab 30000 --json > "$run.eval.json"
    "$PY" "$HERE/peers.py" oov "$PAIRS" "$run.vec" -- "${vectors[@]}" > "$run.oov.json"
    rm -f "$run.ftm" "$run.bin" "$run.model" "$run".model.*.npy
  done
done
done
"$PY" "$HERE/report.py" "$OUT" | tee "$OUT/table.md"
