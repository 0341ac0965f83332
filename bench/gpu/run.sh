#!/usr/bin/env bash
# pretext on a GPU against PyTorch eager, side by side, in one go (docs/gpu.md). On a machine with
# one NVIDIA GPU and only the driver installed: installs torch into a virtual environment, builds
# pretext with `--features tch,wgpu` against that torch (or takes PRETEXT_BIN), then trains
#   SimCLR, small CNN, batch 256 of 28x28        (configs/quickstart.toml)
#   SimCLR, ResNet-18 with the CIFAR stem, 32x32  (the same, backbone.arch = "resnet18")
#   BERT-mini MLM, batch 16 x 128 tokens          (configs/mlm_mini.toml)
# on tch-cuda:0, on wgpu and on PyTorch eager CUDA (bench/gpu/torch_eager.py), and prints one
# table: images/s or tokens/s over the steps after the first few, and peak GPU memory.
#
#   bench/gpu/run.sh            # on the GPU machine
#   CPU=1 bench/gpu/run.sh      # without a GPU: tch and torch on the CPU, wgpu on whatever Vulkan
#                               # driver there is (Mesa's lavapipe: apt-get install mesa-vulkan-drivers)
#
# Environment: VENV (default bench/gpu/.venv), PRETEXT_BIN (a binary built with tch and wgpu:
# skips the build), STEPS (default 30 on a GPU, 4 on a CPU), OUT (work folder). Run by hand,
# never in CI: torch is gigabytes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV=${VENV:-$ROOT/bench/gpu/.venv}
OUT=${OUT:-$(mktemp -d /tmp/pretext-gpu-XXXX)}
mkdir -p "$OUT"
TORCH=2.9.0 # the version burn-tch 0.22's torch-sys builds against
started=$(date +%s)
say() { echo "[gpu bench $(($(date +%s) - started)) s] $*" >&2; }

if [ -n "${CPU:-}" ] || ! command -v nvidia-smi >/dev/null 2>&1; then
  [ -n "${CPU:-}" ] || say "no nvidia-smi: running on the CPU (tch and torch on CPU, wgpu on the Vulkan driver there is)"
  MODE=cpu TCH=tch TORCH_DEVICE=cpu STEPS=${STEPS:-4} WARMUP=1
else
  MODE=gpu TCH=tch-cuda:0 TORCH_DEVICE=cuda STEPS=${STEPS:-30} WARMUP=5
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2
fi

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch; assert torch.__version__.startswith('$TORCH')" 2>/dev/null; then
  say "installing torch $TORCH into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "torch==$TORCH" numpy
fi
export PATH="$VENV/bin:$PATH"

if [ -z "${PRETEXT_BIN:-}" ]; then
  say "building pretext with tch and wgpu against the venv's torch"
  # torch-sys finds libtorch in the venv's torch (LIBTORCH_USE_PYTORCH); its own target folder
  # keeps the default build's cache intact.
  (cd "$ROOT" && LIBTORCH_USE_PYTORCH=1 CARGO_TARGET_DIR="$ROOT/target/gpu" \
    cargo build --release -q -p pretext-cli --features tch,wgpu)
  PRETEXT_BIN=$ROOT/target/gpu/release/pretext
fi
# The binary loads libtorch from the venv at run time.
TORCH_LIB=$("$VENV/bin/python" -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
export LD_LIBRARY_PATH="$TORCH_LIB:${LD_LIBRARY_PATH:-}"
say "binary: $PRETEXT_BIN"

# A corpus for the MLM rows: the repository's own prose, repeated (speed does not depend on it).
CORPUS=$OUT/corpus.txt
for _ in $(seq 40); do cat "$ROOT"/docs/*.md "$ROOT"/README.md; done | grep -v '^\s*$' > "$CORPUS"
"$PRETEXT_BIN" tokenizer train --corpus "$CORPUS" --out "$OUT/tokenizer.json" --vocab-size 8000 >/dev/null

# Peak GPU memory in MiB while "$@" runs, from nvidia-smi every 100 ms (above what was in use
# before); "-" on the CPU.
with_memory() { # NAME COMMAND...
  local name=$1; shift
  if [ "$MODE" = gpu ]; then
    local before
    before=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$OUT/$name.mem" &
    local sampler=$!
    "$@" || { kill $sampler; return 1; }
    kill $sampler
    sort -n "$OUT/$name.mem" | tail -1 | awk -v b="$before" '{print $1 - b}' > "$OUT/$name.peak"
  else
    "$@"
    echo "-" > "$OUT/$name.peak"
  fi
}

# Steady-state rate of a pretext run from metrics.jsonl: each record holds the rate since the
# start, so the time to step k is k x batch / rate_k; the rate between the warm-up's end and
# the last step excludes start-up (kernel compilation, autotuning, allocation).
steady() { # RUN_DIR BATCH
  python3 - "$1/metrics.jsonl" "$2" "$WARMUP" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
batch, warm = int(sys.argv[2]), int(sys.argv[3])
t = lambda r: r["step"] * batch / r["images_per_sec"]
a, b = rows[min(warm, len(rows) - 2)], rows[-1]
print((b["step"] - a["step"]) * batch / (t(b) - t(a)))
PY
}

pretrain() { # NAME DEVICE EXTRA...
  local name=$1 device=$2; shift 2
  with_memory "$name" "$PRETEXT_BIN" pretrain --config "$ROOT/configs/quickstart.toml" --device "$device" \
    --set train.max_steps=$((STEPS + WARMUP)) --set train.online_knn=0 --set epochs=100 \
    --set "train.out_dir=\"$OUT/$name\"" --json "$@" > "$OUT/$name.json" 2> "$OUT/$name.log"
  steady "$OUT/$name" 256
}

mlm() { # NAME DEVICE
  local name=$1 device=$2
  with_memory "$name" "$PRETEXT_BIN" mlm train --config "$ROOT/configs/mlm_mini.toml" --corpus "$CORPUS" \
    --device "$device" --set steps=$((STEPS + WARMUP)) --set eval.max_sequences=0 \
    --set "tokenizer.path=\"$OUT/tokenizer.json\"" --set "train.out_dir=\"$OUT/$name\"" \
    --set "data.cache_dir=\"$OUT/cache\"" --json > "$OUT/$name.json" 2> "$OUT/$name.log"
  # Sequences/s at steady state times the mean real tokens per sequence.
  python3 - "$OUT/$name.json" "$(steady "$OUT/$name" 16)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["result"]
print(float(sys.argv[2]) * r["tokens_per_sec"] / r["sequences_per_sec"])
PY
}

torch_eager() { # NAME WORKLOAD
  local name=$1
  "$VENV/bin/python" "$ROOT/bench/gpu/torch_eager.py" --workload "$2" --device "$TORCH_DEVICE" \
    --steps "$STEPS" --warmup "$WARMUP" > "$OUT/$name.json" 2> "$OUT/$name.log"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["items_per_sec"]); open(sys.argv[2],"w").write("-" if r["peak_mib"] is None else "%.0f" % r["peak_mib"])' \
    "$OUT/$name.json" "$OUT/$name.peak"
}

RESNET=(--set 'backbone.arch="resnet18"' --set 'backbone.stem="cifar"' --set 'data.image_size=[32,32]'
  --set projection.hidden=2048)
backends=("tch:$TCH" "wgpu:wgpu")
rows=()
row() { # WORKLOAD UNIT BACKEND RATE PEAK_FILE
  rows+=("| $1 | $3 | $(printf '%.0f' "$4") $2 | $(cat "$5") |")
}
for workload in simclr_cnn simclr_resnet18 bert_mini; do
  for b in "${backends[@]}"; do
    kind=${b%%:*} device=${b#*:} name="$workload-$kind"
    if [ "$MODE" = cpu ] && [ "$kind" = wgpu ] && [ "$workload" = simclr_resnet18 ]; then
      # Measured: Mesa's software Vulkan had not finished one step after 7 minutes.
      rows+=("| $workload | pretext wgpu | skipped on the CPU (software Vulkan: minutes a step) | |")
      continue
    fi
    say "$workload on pretext $device"
    case $workload in
      simclr_cnn) rate=$(pretrain "$name" "$device") ;;
      simclr_resnet18) rate=$(pretrain "$name" "$device" "${RESNET[@]}") ;;
      bert_mini) rate=$(mlm "$name" "$device") ;;
    esac || { say "$name failed: see $OUT/$name.log"; rows+=("| $workload | pretext $device | failed ($OUT/$name.log) | |"); continue; }
    unit=images/s; [ "$workload" = bert_mini ] && unit=tokens/s
    row "$workload" "$unit" "pretext $device" "$rate" "$OUT/$name.peak"
  done
  say "$workload on PyTorch eager $TORCH_DEVICE"
  rate=$(torch_eager "$workload-torch" "$workload")
  unit=images/s; [ "$workload" = bert_mini ] && unit=tokens/s
  row "$workload" "$unit" "PyTorch $TORCH eager $TORCH_DEVICE" "$rate" "$OUT/$workload-torch.peak"
done

echo
echo "$(date -u +%F), $MODE mode, $STEPS steps after $WARMUP warm-up, $(nproc) cores$([ "$MODE" = gpu ] && nvidia-smi --query-gpu=name --format=csv,noheader | sed 's/^/, /')"
echo
echo "| workload | backend | speed | peak GPU memory (MiB) |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
say "done in $(($(date +%s) - started)) s; logs in $OUT"
