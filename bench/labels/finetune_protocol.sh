#!/usr/bin/env bash
# Which fine-tuning protocol keeps what pretraining learned? `eval labels --arms finetune` on
# one checkpoint with each protocol of [eval.finetune] (encoder learning rate, LP-FT's probe
# stage, frozen batch-norm statistics, layer-wise decay), plus the linear probe's step floor,
# at 1% and 10% of the labels over SEEDS seeds. Each protocol runs on its own copy of the
# checkpoint (a study's journal is keyed by its settings). The epoch-choice protocols run the
# supervised arm too, since the choice applies to both. Prints one table with the mean
# validation accuracy (what a user can choose by) next to the test accuracy.
#   bench/labels/finetune_protocol.sh RUN DATA [--set key=value ...]   (the sets apply to all)
#   PROTOCOLS="default lp300" SEEDS=1 bench/labels/finetune_protocol.sh runs/vicreg_digits DIR/images/digits
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${1:?usage: bench/labels/finetune_protocol.sh RUN DATA [--set ...]}
DATA=${2:?usage: bench/labels/finetune_protocol.sh RUN DATA [--set ...]}
shift 2
SEEDS=${SEEDS:-3}
FRACTIONS=${FRACTIONS:-0.01,0.1}
OUT=${OUT:-runs/protocols/$(basename "$RUN")}
cargo build --release -q -p pretext-cli
declare -A SET=(
  [default]=""
  [ratio_0.1]="--set eval.finetune.encoder_lr_ratio=0.1"
  [lp300]="--set eval.finetune.probe_steps=300"
  [lp300_ratio_0.1]="--set eval.finetune.probe_steps=300 --set eval.finetune.encoder_lr_ratio=0.1"
  [bn_frozen]="--set eval.finetune.batch_norm=\"frozen\""
  [lp300_bn_frozen]="--set eval.finetune.probe_steps=300 --set eval.finetune.batch_norm=\"frozen\""
  [decay_0.5]="--set eval.finetune.layer_decay=0.5"
  [proj1]="--set eval.finetune.projection_layers=1"
  [choose_last]="--set eval.finetune.choose_epoch=\"last\""
  [choose_loss]="--set eval.finetune.choose_epoch=\"loss\""
  [linear_1000]="--set eval.linear_min_steps=1000"
)
ORDER=(${PROTOCOLS:-default ratio_0.1 lp300 lp300_ratio_0.1 bn_frozen lp300_bn_frozen decay_0.5 proj1 choose_last choose_loss linear_1000})
mkdir -p "$OUT"
for name in "${ORDER[@]}"; do
  dir="$OUT/$name"
  mkdir -p "$dir"
  cp "$RUN/checkpoint.safetensors" "$dir/"
  arms=finetune
  [[ $name == linear_* ]] && arms=linear
  [[ $name == default || $name == choose_* ]] && arms=linear,finetune,scratch
  # shellcheck disable=SC2086
  target/release/pretext eval labels --checkpoint "$dir" --data "$DATA" --fractions "$FRACTIONS" \
    --seeds "$SEEDS" --arms "$arms" ${SET[$name]} "$@" --json > "$dir/labels.out.json"
done
python3 - "$OUT" "${ORDER[@]}" <<'PY'
import json, sys, statistics as st
out, names = sys.argv[1], sys.argv[2:]
def cell(runs, arm, f):
    rs = [r for r in runs if r["arm"] == arm and r["fraction"] == f]
    if not rs: return "", ""
    test = st.mean(r["accuracy"] for r in rs)
    val = [r["detail"].get("validation_accuracy") for r in rs]
    val = f"{100*st.mean(val):.2f}%" if all(v is not None for v in val) and val else "n/a"
    return val, f"{100*test:.2f} ± {100*(st.stdev([r['accuracy'] for r in rs]) if len(rs) > 1 else 0):.2f}%"
study = lambda n: json.load(open(f"{out}/{n}/labels.out.json"))["study"]
fractions = study(names[0])["fractions"]
head = " | ".join(f"validation {100*f:g}% | test {100*f:g}%" for f in fractions)
print(f"| protocol | arm | {head} |")
print("|---|---|" + "---|---|" * len(fractions))
for n in names:
    s = study(n)
    for arm in s["arms"]:
        cells = " | ".join(" | ".join(cell(s["runs"], arm, f)) for f in fractions)
        print(f"| {n} | {arm} | {cells} |")
PY
