#!/usr/bin/env bash
# BYOL-A pretraining speed, pretext against PyTorch + torchaudio, side by side in one run
# (docs/audio.md): the same model (AudioNTT2020 at width 32, 512 features), heads, views
# (mixup + random resize crop), batch 64 and optimizer on the same clips, 2 threads each;
# clips/s over steps 11-70 (the first 10 warm up). Installs torch 2.9.0 and torchaudio into a
# virtual environment (run by hand, never in CI):
#   bench/audio/run.sh target/release/pretext DATA/spoken
set -euo pipefail
bin=${1:?give a pretext binary}
data=${2:?give a clip folder with train/ (pretext data spoken --out DIR)}
VENV=${VENV:-/tmp/audiovenv}
work=${WORK:-/tmp/pretext-audio-bench}
rm -rf "$work" && mkdir -p "$work"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "torch==2.9.0" "torchaudio==2.9.0" numpy soundfile
fi
lscpu | grep -E "Model name|^CPU\(s\)" | sed 's/  */ /g'
warmup=10 steps=60
# The machine's measured f32 peak before each tool: a VM's two vCPUs on one physical core halve
# it, so a sitting where it moved between the tools compares unlike machines.
peak() { "$bin" bench peak --json | python3 -c 'import json,sys; print(json.dumps({"machine_peak_gflops": round(json.load(sys.stdin)["peak"]["gflops"], 1)}))'; }
peak
"$bin" audio pretrain --config configs/audio_byol_a.toml --data "$data" --threads 2 --json \
  --set train.max_steps=$((warmup + steps)) --set "train.out_dir=\"$work/pretext\"" \
  > "$work/pretext.json" 2> "$work/pretext.log"
python3 - "$work/pretext/metrics.jsonl" "$warmup" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
w = int(sys.argv[2]); a, b = rows[w - 1], rows[-1]
# images_per_sec is the mean since the start: step s ended at s * batch / rate.
rate = (b["step"] - a["step"]) / (b["step"] / b["images_per_sec"] - a["step"] / a["images_per_sec"])
print(json.dumps({"framework": "pretext", "steps": b["step"] - a["step"], "clips_per_sec": rate * 1.0}))
PY
# PyTorch with one DataLoader worker making the views beside the training process (as BYOL-A's
# code runs), and with the views made inline (no worker): both, the faster one is the peer.
for workers in 1 0; do
  peak
  "$VENV/bin/python" bench/audio/byol_a_torch.py --data "$data" --steps "$steps" --warmup "$warmup" \
    --threads 2 --workers "$workers"
done
peak
