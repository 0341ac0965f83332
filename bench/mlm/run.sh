#!/usr/bin/env bash
# Side-by-side masked-language-model pretraining: pretext vs Hugging Face transformers
# (PyTorch, CPU) with the same tokenizer, examples, model (BERT 4 layers x 256, 4 heads,
# FFN 1024, vocab 8000), sequence length 128, batch 16, optimizer, schedule and steps on
# text/pretrain_en.txt. Run by hand, never in CI: it installs PyTorch and transformers
# (gigabytes) into a virtual environment.
#
#   bench/mlm/run.sh DATA_DIR [STEPS]
#   RECIPE=1 bench/mlm/run.sh DATA_DIR [STEPS]
#
# RECIPE=1 runs configs/mlm_recipe.toml's recipe (pre-norm, no dropout, 40% masking, lr 1e-3,
# betas 0.9/0.98, clip 0.5; random token and position rows, as transformers starts) on both sides, over STEPS steps instead of its time budget, so the
# loss curves can be laid side by side; transformers trains RobertaPreLayerNormForMaskedLM.
#
# DATA_DIR is the folder ../shared/datasets.sh filled. Both tools use 2 threads. Prints a
# markdown table: training tokens/s, loss curve (mean per 50 steps), held-out masked-token
# accuracy and loss.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${1:?usage: bench/mlm/run.sh DATA_DIR [STEPS]}
STEPS=${2:-300}
WARMUP=${WARMUP:-30}
THREADS=${THREADS:-2}
CORPUS="$DATA/text/pretrain_en.txt"
VENV=${VENV:-$ROOT/bench/mlm/.venv}
OUT=${OUT:-$(mktemp -d /tmp/pretext-mlm-bench-XXXX)}
mkdir -p "$OUT"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "torch==2.9.0" "transformers==5.24.0"
fi
[ -n "${PRETEXT_BIN:-}" ] || (cd "$ROOT" && cargo build --release -q -p pretext-cli)
PRETEXT=${PRETEXT_BIN:-$ROOT/target/release/pretext}

echo "[bench] tokenizer: WordPiece, 8000 ids, on $CORPUS" >&2
"$PRETEXT" tokenizer train --corpus "$CORPUS" --vocab-size 8000 --out "$OUT/tokenizer.json" >&2

if [ -n "${RECIPE:-}" ]; then
  CONFIG="$ROOT/configs/mlm_recipe.toml"
  PT_EXTRA=(--set train.budget_minutes=0 --set model.embedding_init='"random"'
    --set model.position_init='"random"' --set optimizer.lr=1e-3)
  HF_EXTRA=(--norm pre --dropout 0 --mlm-probability 0.4 --lr 1e-3 --beta2 0.98 --eps 1e-12 --grad-clip 0.5)
else
  CONFIG="$ROOT/configs/mlm_mini.toml"
  PT_EXTRA=()
  HF_EXTRA=()
fi

# The machine's measured f32 peak before and after each tool (GFLOP/s): a VM's two vCPUs on one
# physical core halve it, so a sitting where it moved compares unlike machines.
peak() { "$PRETEXT" bench peak --threads "$THREADS" --json | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["peak"]["gflops"], 1))'; }
PEAK_PT_BEFORE=$(peak)
echo "[bench] pretext: $STEPS steps ($CONFIG)" >&2
"$PRETEXT" mlm train --config "$CONFIG" --corpus "$CORPUS" --threads "$THREADS" "${PT_EXTRA[@]}" \
  --set steps="$STEPS" --set optimizer.warmup_steps="$WARMUP" \
  --set tokenizer.path="\"$OUT/tokenizer.json\"" --set train.out_dir="\"$OUT/pretext\"" \
  --json > "$OUT/pretext.json"

PEAK_HF_BEFORE=$(peak)
echo "[bench] transformers: $STEPS steps" >&2
OMP_NUM_THREADS=$THREADS "$VENV/bin/python" "$ROOT/bench/mlm/hf_mlm.py" \
  --tokenizer "$OUT/tokenizer.json" --corpus "$CORPUS" --steps "$STEPS" --warmup "$WARMUP" \
  --threads "$THREADS" "${HF_EXTRA[@]}" > "$OUT/hf.json"

PEAK_HF_AFTER=$(peak)

python3 - "$OUT" "$PEAK_PT_BEFORE" "$PEAK_HF_BEFORE" "$PEAK_HF_AFTER" <<'PY'
import json, sys
out = sys.argv[1]
peaks = sys.argv[2:5]
pt = json.load(open(f"{out}/pretext.json"))["result"]
hf = json.load(open(f"{out}/hf.json"))
pt_losses = [json.loads(l)["loss"] for l in open(f"{out}/pretext/metrics.jsonl")]
hf_losses = hf["losses"]
t = pt["train"]["time"]
pt_total = t["data_wait"] + t["forward"] + t["backward"] + t["optimizer"]
hf_total = sum(hf["time"].values())
share = lambda x, tot: f"{100 * x / tot:.0f}%"
print(f"| | pretext | transformers {hf.get('transformers', '?')} / torch {hf['torch'].split('+')[0]} |")
print("|---|---|---|")
print(f"| training tokens/s | {pt['tokens_per_sec']:.0f} | {hf['tokens_per_sec']:.0f} |")
print(f"| sequences/s | {pt['sequences_per_sec']:.2f} | {hf['sequences_per_sec']:.2f} |")
print(f"| ratio (pretext / transformers) | {pt['tokens_per_sec'] / hf['tokens_per_sec']:.2f}x | 1 |")
print(f"| forward / backward / optimizer / data | {share(t['forward'], pt_total)} / {share(t['backward'], pt_total)} / {share(t['optimizer'], pt_total)} / {share(t['data_wait'], pt_total)} "
      f"| {share(hf['time']['forward'], hf_total)} / {share(hf['time']['backward'], hf_total)} / {share(hf['time']['optimizer'], hf_total)} / {share(hf['time']['data'], hf_total)} |")
print(f"| machine's measured peak before / after, GFLOP/s | {peaks[0]} / {peaks[1]} | {peaks[1]} / {peaks[2]} |")
print(f"| tokenisation before training | {pt['tokenize_secs']:.1f} s | {hf['tokenize_secs']:.1f} s |")
for s in range(0, len(hf_losses), 50):
    a, b = pt_losses[s:s + 50], hf_losses[s:s + 50]
    print(f"| MLM loss, steps {s + 1}-{s + len(b)} | {sum(a) / len(a):.3f} | {sum(b) / len(b):.3f} |")
ph, hh = pt["heldout"], hf["heldout"]
print(f"| held-out masked-token accuracy | {100 * ph['accuracy']:.2f}% | {100 * hh['accuracy']:.2f}% |")
print(f"| held-out MLM loss (perplexity) | {ph['loss']:.3f} ({ph['perplexity']:.0f}) | {hh['loss']:.3f} ({hh['perplexity']:.0f}) |")
PY
echo "[bench] outputs in $OUT" >&2
