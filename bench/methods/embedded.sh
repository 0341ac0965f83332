#!/usr/bin/env bash
# Every image method at one budget on the embedded Fashion-MNIST subset (10,000 train / 2,000
# test images): the shipped configs/<method>_fmnist.toml recipes, 5 epochs, then kNN and linear
# probes against a random-init backbone of the same architecture. One JSON line per method goes
# to $OUT/results.jsonl (printed as a table at the end).
#   bench/methods/embedded.sh [METHOD ...]      (default: every method)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/embedded}
EPOCHS=${EPOCHS:-5}
methods=${*:-"simclr mocov2 mocov3 nnclr byol simsiam barlowtwins vicreg dino swav autoencoder denoising_autoencoder rotation jigsaw mae simmim"}
cargo build --release -q -p pretext-cli
mkdir -p "$OUT"
for m in $methods; do
  run="$OUT/$m"
  target/release/pretext pretrain --config "configs/${m}_fmnist.toml" --set epochs="$EPOCHS" \
    --set train.out_dir="\"$run\"" --overwrite --json > "$run.pretrain.json"
  target/release/pretext eval all --checkpoint "$run" --json > "$run.eval.json"
  python3 - "$m" "$run" >> "$OUT/results.jsonl" <<'PY'
import json, sys
m, run = sys.argv[1], sys.argv[2]
p = json.load(open(run + ".pretrain.json"))["summary"]
e = json.load(open(run + ".eval.json"))["results"]
print(json.dumps({"method": m, "images_per_sec": p["images_per_sec"], "minutes": p["time"]["total"] / 60,
                  "final_loss": p["last_epoch_loss"], "knn": e["pretrained"]["knn"], "linear": e["pretrained"]["linear"],
                  "random_knn": e["random_init"]["knn"], "random_linear": e["random_init"]["linear"]}))
PY
done
python3 - "$OUT/results.jsonl" <<'PY'
import json, sys
print(f"{'method':<24}{'kNN':>8}{'linear':>8}{'rand kNN':>10}{'rand lin':>10}{'img/s':>8}{'min':>7}")
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"{r['method']:<24}{100*r['knn']:>7.2f}%{100*r['linear']:>7.2f}%{100*r['random_knn']:>9.2f}%"
          f"{100*r['random_linear']:>9.2f}%{r['images_per_sec']:>8.0f}{r['minutes']:>7.1f}")
PY
