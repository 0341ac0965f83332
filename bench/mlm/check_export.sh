#!/usr/bin/env bash
# Export a pretext masked-language-model run to Hugging Face format and check that
# transformers reproduces pretext's tokenizer and logits.
#
#   bench/mlm/check_export.sh RUN_DIR [SENTENCE ...]
#
# RUN_DIR is a `pretext mlm train` output folder (checkpoint.safetensors, tokenizer.json).
# Writes RUN_DIR/hf (the export) and RUN_DIR/logits.json (pretext's logits), then runs
# check_export.py, which exits non-zero when a logit differs by more than TOL (1e-4).
#
# Environment: VENV (default bench/mlm/.venv; created if missing, torch and transformers
# installed at the pinned versions if absent), PRETEXT (default target/release/pretext),
# TOL, FILL_MASK (fill-mask demo text, "{mask}" marks the masked word).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TORCH_VERSION=2.9.0
TRANSFORMERS_VERSION=5.24.0

if [[ $# -lt 1 ]]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
RUN="$1"
shift
[[ -d "$RUN" ]] || { echo "error: $RUN is not a folder (expected a pretext mlm run)" >&2; exit 2; }

if [[ $# -gt 0 ]]; then
    SENTENCES=("$@")
else
    SENTENCES=(
        "the quick brown fox jumps over the lazy dog."
        "The Committee's REPORT, published on 3 March 2021, ran to 412 pages!"
        "Naïve café owners in Zürich serve crème brûlée."
        "short"
    )
fi

# A variable, because a literal "}" inside ${FILL_MASK:-...} would end the expansion early.
DEFAULT_FILL_MASK='the quick brown {mask} jumps over the lazy dog.'
VENV="${VENV:-$ROOT/bench/mlm/.venv}"
PY="$VENV/bin/python"
if [[ ! -x "$PY" ]]; then
    echo "creating venv $VENV"
    python3 -m venv "$VENV"
fi
if ! "$PY" - "$TORCH_VERSION" "$TRANSFORMERS_VERSION" 2>/dev/null <<'EOF'
import sys, torch, transformers
ok = torch.__version__.split("+")[0] == sys.argv[1] and transformers.__version__ == sys.argv[2]
sys.exit(0 if ok else 1)
EOF
then
    # The CPU wheel index (download.pytorch.org) may be unreachable: PyPI's wheel works.
    "$PY" -m pip install --quiet "torch==$TORCH_VERSION" "transformers==$TRANSFORMERS_VERSION"
fi

PRETEXT="${PRETEXT:-$ROOT/target/release/pretext}"
if [[ ! -x "$PRETEXT" ]]; then
    echo "error: $PRETEXT not found; build it with: cargo build --release -p pretext-cli" >&2
    exit 2
fi

set -x
"$PRETEXT" export --checkpoint "$RUN" --format hf --out "$RUN/hf"
"$PRETEXT" mlm logits --checkpoint "$RUN" --out "$RUN/logits.json" "${SENTENCES[@]}"
"$PY" "$ROOT/bench/mlm/check_export.py" "$RUN/hf" "$RUN/logits.json" \
    --tol "${TOL:-1e-4}" \
    --fill-mask "${FILL_MASK:-$DEFAULT_FILL_MASK}"
