#!/usr/bin/env bash
# VideoMAE pretraining speed, pretext against PyTorch + Hugging Face transformers, side by side
# in one run (docs/video.md): the same tiny space-time ViT, decoder, tubelets, mask ratio,
# batch 32 and optimizer on clips of the same Moving Fashion-MNIST file, 2 threads each;
# clips/s over steps 11-70 (the first 10 warm up). pretext trains as two in-process replicas
# of one thread each (`train.replicas`; REPLICAS=1: one process splitting every op over its two
# threads; REPLICAS="2 1": both in every round; ROUNDS=N rounds, 2 by default); PyTorch splits
# every op over its two threads, as it does by default. Installs torch
# 2.9.0 and transformers into a virtual environment (run by hand, never in CI):
#   bench/video/run.sh target/release/pretext DATA/video/moving_fmnist
set -euo pipefail
bin=${1:?give a pretext binary}
data=${2:?give a Moving MNIST folder (pretext data moving-mnist --out DIR)}
VENV=${VENV:-/tmp/audiovenv}
work=${WORK:-/tmp/pretext-video-bench}
rm -rf "$work" && mkdir -p "$work"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "torch==2.9.0" numpy
fi
"$VENV/bin/python" -c "import transformers" 2>/dev/null || "$VENV/bin/pip" install -q transformers
lscpu | grep -E "Model name|^CPU\(s\)" | sed 's/  */ /g'
# The machine's measured f32 peak before each tool: a VM's two vCPUs on one physical core halve
# it, so a sitting where it moved between the tools compares unlike machines.
peak() { "$bin" bench peak --json | python3 -c 'import json,sys; print(json.dumps({"machine_peak_gflops": round(json.load(sys.stdin)["peak"]["gflops"], 1)}))'; }
warmup=10 steps=60
# REPLICAS may list several counts, each run in every round ("2 1": both, side by side).
replicas_list=${REPLICAS:-2}
for round in $(seq "${ROUNDS:-2}"); do
  for replicas in $replicas_list; do
    peak
    "$bin" video pretrain --config configs/video_videomae.toml --data "$data" --threads 2 --json \
      --set train.max_steps=$((warmup + steps)) --set train.replicas=$replicas \
      --set "train.out_dir=\"$work/pretext\"" \
      --overwrite > "$work/pretext.json" 2> "$work/pretext.log"
    python3 - "$work/pretext/metrics.jsonl" "$warmup" "$replicas" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
w = int(sys.argv[2]); a, b = rows[w - 1], rows[-1]
# images_per_sec is the mean since the start: step s ended at s * batch / rate.
rate = (b["step"] - a["step"]) / (b["step"] / b["images_per_sec"] - a["step"] / a["images_per_sec"])
print(json.dumps({"framework": "pretext", "replicas": int(sys.argv[3]), "steps": b["step"] - a["step"], "clips_per_sec": rate}))
PY
  done
  peak
  "$VENV/bin/python" bench/video/videomae_torch.py --data "$data/train-videos-idx4-ubyte.gz" \
    --steps "$steps" --warmup "$warmup" --threads 2
done
peak
