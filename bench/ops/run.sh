#!/usr/bin/env bash
# `pretext bench ops` beside the same op shapes in PyTorch, one after the other on the same
# machine and threads; prints one markdown table. Run by hand, never in CI: it installs
# PyTorch into a virtual environment (the one bench/lightly/run.sh makes).
#
#   bench/ops/run.sh [REPEATS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
REPEATS=${1:-10}
THREADS=${THREADS:-2}
VENV=${VENV:-$ROOT/bench/lightly/.venv}
OUT=$(mktemp -d /tmp/pretext-ops-XXXX)
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "torch==2.9.0" numpy
fi
[ -n "${PRETEXT_BIN:-}" ] || (cd "$ROOT" && cargo build --release -q -p pretext-cli)
"${PRETEXT_BIN:-$ROOT/target/release/pretext}" bench ops --repeats "$REPEATS" --threads "$THREADS" --json > "$OUT/pretext.json"
OMP_NUM_THREADS=$THREADS "$VENV/bin/python" "$ROOT/bench/ops/torch_ops.py" --repeats "$REPEATS" \
  --threads "$THREADS" > "$OUT/torch.json"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
pt = json.load(open(f"{out}/pretext.json"))
th = json.load(open(f"{out}/torch.json"))
torch_ops = {(r["model"], r["op"], r["shape"]): r for r in th["ops"]}
peak = pt["peak"]
print(f"peak {peak['gflops']:.0f} GFLOP/s = {peak['how']}; torch {th['torch_version']}, {th['threads']} threads\n")
print("| model | op | shape | impl | fwd ms | fwd GFLOP/s (% peak) | fwd+bwd ms | fwd+bwd GFLOP/s (% peak) | torch fwd ms | torch fwd+bwd ms | fwd+bwd vs torch |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in pt["ops"]:
    t = torch_ops.get((r["model"], r["op"], r["shape"]))
    def rate(flops, ms):
        if flops == 0:
            return "-"
        g = flops / ms / 1e6
        return f"{g:.1f} ({100 * g / peak['gflops']:.0f}%)"
    tf = f"{t['forward_ms']:.2f}" if t else "-"
    tb = f"{t['forward_backward_ms']:.2f}" if t else "-"
    ratio = f"{t['forward_backward_ms'] / r['forward_backward_ms']:.2f}x" if t else "-"
    print(f"| {r['model']} | {r['op']} | {r['shape']} | {r['implementation']} | {r['forward_ms']:.2f} | "
          f"{rate(r['forward_flops'], r['forward_ms'])} | {r['forward_backward_ms']:.2f} | "
          f"{rate(r['forward_backward_flops'], r['forward_backward_ms'])} | {tf} | {tb} | {ratio} |")
PY
