#!/usr/bin/env bash
# The data benchmarks of docs/data.md, by hand (never in CI):
#   bench/data/run.sh FASHION_MNIST_IDX_DIR [OUT_DIR]
# 1. makes the image folders (20,000 and 200,000 JPEGs of 48-256 px, bench/data/make_folder.py);
# 2. the loader alone, pretext against torchvision's ImageFolder + DataLoader, the same folder,
#    workers and views (SimCLR's two at 64x64), side by side;
# 3. pretext pretrain (quick-start recipe, views at 64x64) on both folders and on the 200,000
#    images written as WebDataset shards (pretext data shards): peak RSS and images/s.
# Installs Pillow, torch 2.9.0 and torchvision into bench/data/.venv (TORCH=0: Pillow only, and
# no loader comparison). Set PRETEXT to a built binary.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
IDX=${1:?usage: bench/data/run.sh FASHION_MNIST_IDX_DIR [OUT_DIR]}
OUT=${2:-$ROOT/runs/bench_data}
PRETEXT=${PRETEXT:-$ROOT/target/release/pretext}
VENV=${VENV:-$ROOT/bench/data/.venv}
WORKERS=${WORKERS:-2}
TORCH=${TORCH:-1}
STEPS=${STEPS:-40}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q pillow numpy
fi
if [ "$TORCH" = 1 ] && ! "$VENV/bin/python" -c 'import torchvision' 2>/dev/null; then
  "$VENV/bin/pip" install -q "torch==2.9.0" torchvision
fi
PY="$VENV/bin/python"
mkdir -p "$OUT"
for n in 20000 200000; do
  [ -d "$OUT/f$n/train" ] || "$PY" "$ROOT/bench/data/make_folder.py" --idx "$IDX" --out "$OUT/f$n" --count $n --test 2000
done
[ -f "$OUT/s200000/train-000000.tar" ] || /usr/bin/time -f "shards written in %e s" \
  "$PRETEXT" data shards --from "$OUT/f200000" --out "$OUT/s200000" --shard-size 2000
echo "== CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "== the loader alone, $WORKERS workers, SimCLR views at 64x64, batch 256"
for n in 20000 200000; do
  [ "$TORCH" = 1 ] || continue
  "$PRETEXT" bench loader --data "$OUT/f$n" --batches 20 --set 'data.image_size=[64,64]' \
    --set data.workers=$WORKERS --json
  "$PY" "$ROOT/bench/data/loader_torch.py" --data "$OUT/f$n/train" --workers $WORKERS --batches 20
done
echo "== the loader alone on the 200,000 images as shards"
"$PRETEXT" bench loader --data "$OUT/s200000" --batches 20 --set 'data.image_size=[64,64]' \
  --set data.workers=$WORKERS --json
echo "== pretext pretrain, quick-start recipe at 64x64, $STEPS steps: peak RSS and images/s"
for n in f20000 f200000 s200000; do
  /usr/bin/time -f "$n peak RSS %M KB, %e s" "$PRETEXT" pretrain --config "$ROOT/configs/quickstart.toml" \
    --data "$OUT/$n" --set 'data.image_size=[64,64]' --set train.max_steps=$STEPS \
    --set train.out_dir="\"$OUT/run_$n\"" --overwrite --json | "$PY" -c \
    'import json,sys; s=json.load(sys.stdin)["summary"]; t=s["time"]; print(json.dumps({"images_per_sec": s["images_per_sec"], "data_wait_share": t["data_wait"]/t["total"], "steps": s["steps"]}))'
done
echo "== the file index of 1,000,000 files (1,000 class folders of 1,000 one-byte .jpg files)"
if [ ! -d "$OUT/m1/c999" ]; then
  "$PY" - "$OUT/m1" <<'PY'
import os, sys
root = sys.argv[1]
for c in range(1000):
    d = os.path.join(root, f"c{c:03d}")
    os.makedirs(d, exist_ok=True)
    for i in range(1000):
        with open(os.path.join(d, f"{i:04d}.jpg"), "wb") as f:
            f.write(b"x")
PY
  sleep 3
fi
export PRETEXT_CACHE_DIR="$OUT/index_cache"
rm -rf "$PRETEXT_CACHE_DIR"
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || echo "(page cache not dropped: not root)"
"$PRETEXT" data index "$OUT/m1"   # cold: built (and cached)
"$PRETEXT" data index "$OUT/m1"   # re-opened: from the cache
rm -rf "$PRETEXT_CACHE_DIR"
"$PRETEXT" data index "$OUT/m1"   # built with the listing in the page cache
"$PRETEXT" data index "$OUT/m1"   # cached
