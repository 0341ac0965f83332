#!/usr/bin/env bash
# The bad-input probe of docs/reliability.md, as a script anyone can rerun: each case gives one
# command a wrong, damaged or dangerous input, as a new user would, and judges what happens.
#
#   bench/reliability/probe.sh [PATH/TO/pretext]      (default target/release/pretext)
#
# A case is handled well when the command
#   - ends with the exit status it should (an error for what cannot work, success with a
#     warning for what can),
#   - says what is wrong: its output matches the case's pattern (the file, line, flag or key),
#   - does not panic and ends within the time limit,
#   - leaves every input and every earlier output byte for byte as it was (checksums of the
#     run folders, data and files made below, taken before and after each case).
# It prints one line per case and a table by class of fault; exit status 1 when a case failed.
# VERBOSE=1 prints the line of each case's output that matched. Needs python3 (standard library only) to make the small data. Run by hand, not in CI (the
# test suite holds a test for each defect; this counts them as a user meets them).
set -uo pipefail
BIN=$(realpath "${1:-target/release/pretext}")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W" || exit 1
chmod 755 "$W"  # the permission case reads the run as another user
export RUST_BACKTRACE=0

# ---- small data, made here -------------------------------------------------------------
python3 - <<'EOF'
import os, random, struct, zlib
random.seed(0)
def idx(path, n, labels, classes=10):
    os.makedirs(path, exist_ok=True)
    for split, count in (("train", n), ("t10k", n // 2)):
        pixels = bytearray()
        labs = bytearray()
        for i in range(count):
            c = i % classes
            # a class is a bright square at its own place: learnable, tiny
            img = [random.randrange(30) for _ in range(28 * 28)]
            r, col = 2 + (c // 4) * 8, 2 + (c % 4) * 6
            for y in range(r, r + 7):
                for x in range(col, col + 6):
                    img[y * 28 + x] = 200 + random.randrange(55)
            pixels += bytes(img)
            labs.append(c)
        with open(f"{path}/{split}-images-idx3-ubyte", "wb") as f:
            f.write(struct.pack(">IIII", 2051, count, 28, 28) + pixels)
        if labels:
            with open(f"{path}/{split}-labels-idx1-ubyte", "wb") as f:
                f.write(struct.pack(">II", 2049, count) + labs)
idx("idx", 400, True)
idx("idx_nolabels", 400, False)
def png(path, w, h, grey):
    raw = b"".join(b"\0" + bytes(((x * 7 + y * 3) % 256 if grey else (x % 256, y % 256, 90)[0]) for x in range(w)) if grey
                   else b"\0" + bytes(v for x in range(w) for v in ((x * 5) % 256, (y * 5) % 256, 90)) for y in range(h))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    head = struct.pack(">IIBBBBB", w, h, 8, 0 if grey else 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
for cls in ("cat", "dog"):
    os.makedirs(f"folder/{cls}", exist_ok=True)
    for i in range(12):
        png(f"folder/{cls}/{i}.png", 20 + i, 24, cls == "cat" and i == 0)
os.makedirs("folder/empty", exist_ok=True)
os.makedirs("flat", exist_ok=True)
for i in range(40):
    png(f"flat/{i}.png", 28, 28, False)
words = "the cat sat on a mat while the dog ran in the park and a bird sang over the old green tree".split()
with open("corpus.txt", "w") as f:
    for i in range(2000):
        random.shuffle(words)
        f.write(" ".join(words[: 8 + i % 9]) + "\n")
with open("corpus16.txt", "wb") as f:
    f.write(open("corpus.txt").read()[:4000].encode("utf-16"))
with open("texts.tsv", "w") as f:
    f.write("source\tlabel\ttext\n")
    good, bad = "good fine great nice lovely".split(), "bad awful poor dull ugly".split()
    for i in range(160):
        pos = i % 2 == 0
        pick = good if pos else bad
        f.write(f"{'web' if i % 3 else 'paper'}\t{'pos' if pos else 'neg'}\ta {random.choice(pick)} and {random.choice(pick)} film {i}\n")
EOF

cat > small.toml <<'EOF'
method = "simclr"
epochs = 1
batch_size = 32
[backbone]
arch = "small_cnn"
width = 8
[projection]
hidden = 32
output = 16
[train]
out_dir = "run"
EOF
"$BIN" pretrain --config small.toml --data idx >/dev/null 2>&1 || { echo "setup: pretrain failed"; exit 1; }
"$BIN" pretrain --config small.toml --data idx --set method='"mae"' --set backbone.arch='"vit_tiny"' \
  --set backbone.patch_size=7 --set backbone.dim=32 --set backbone.depth=1 --set backbone.heads=2 \
  --set mae.decoder_dim=32 --set mae.decoder_depth=1 --set mae.decoder_heads=2 \
  --set train.out_dir='"mae"' >/dev/null 2>&1 || { echo "setup: MAE pretrain failed"; exit 1; }
"$BIN" word2vec train --corpus corpus.txt --out vectors.bin --dim 16 --epochs 1 >/dev/null 2>&1 \
  || { echo "setup: word2vec failed"; exit 1; }
"$BIN" tokenizer train --corpus corpus.txt --out tok.json --vocab-size 200 >/dev/null 2>&1 \
  || { echo "setup: tokenizer failed"; exit 1; }
cat > mlm.toml <<'EOF'
steps = 20
batch_size = 8
[tokenizer]
path = "tok.json"
[model]
size = "tiny"
hidden = 32
layers = 1
heads = 2
ffn = 64
[data]
max_len = 32
[train]
out_dir = "mlm"
EOF
"$BIN" mlm train --config mlm.toml --corpus corpus.txt >/dev/null 2>&1 || { echo "setup: mlm failed"; exit 1; }
"$BIN" eval labels --checkpoint run --data idx --fractions 0.1 --seeds 1 --arms knn,linear \
  >/dev/null 2>&1 || { echo "setup: eval labels failed"; exit 1; }

checksums() { find run mae mlm idx idx_nolabels folder flat corpus.txt texts.tsv vectors.bin tok.json \
  small.toml -type f ! -name '.pretext.lock' -print0 2>/dev/null | sort -z | xargs -0 sha256sum; }

declare -A tried well
failed=0
# probe CLASS NAME WANT PATTERN -- COMMAND...   (WANT: fail | ok)
probe() {
  local class=$1 name=$2 want=$3 pattern=$4; shift 5
  local before after out rc why=""
  before=$(checksums)
  out=$(timeout 180 "$@" 2>&1); rc=$?
  after=$(checksums)
  if [ "$rc" = 124 ]; then why="no end within 180 s"
  elif grep -q "panicked" <<<"$out"; then why="panic"
  elif [ "$want" = fail ] && [ "$rc" = 0 ]; then why="exit 0"
  elif [ "$want" = ok ] && [ "$rc" != 0 ]; then why="exit $rc"
  elif ! grep -qiE "$pattern" <<<"$out"; then why="message lacks /$pattern/"
  elif [ "$before" != "$after" ]; then why="changed: $(diff <(echo "$before") <(echo "$after") | grep '^<' | awk '{print $3}' | head -3 | tr '\n' ' ')"
  fi
  tried[$class]=$(( ${tried[$class]:-0} + 1 ))
  if [ -z "$why" ]; then
    well[$class]=$(( ${well[$class]:-0} + 1 ))
    printf 'ok    %-9s %s\n' "$class" "$name"
    [ -n "${VERBOSE:-}" ] && printf '      %s\n' "$(grep -iE "$pattern" <<<"$out" | head -n 1 | cut -c1-240)"
  else
    failed=1
    printf 'FAIL  %-9s %s: %s\n      %s\n' "$class" "$name" "$why" "$(tail -n 3 <<<"$out" | tr '\n' ' ' | cut -c1-300)"
  fi
}

# ---- silently wrong or lost: outputs onto inputs, reused journals, NaN, bad labels ------
probe lost "export onto the run's checkpoint" fail "checkpoint|input|run" -- "$BIN" export --checkpoint mlm --out mlm/checkpoint.safetensors
probe lost "embed onto the run's checkpoint" fail "checkpoint|input|run" -- "$BIN" embed --checkpoint run --data idx --out run/checkpoint.safetensors
probe lost "embed onto the data" fail "input|data" -- "$BIN" embed --checkpoint run --data idx --out idx/train-images-idx3-ubyte
probe lost "report onto the checkpoint" fail "checkpoint|input|run" -- "$BIN" report run --data idx --out run/checkpoint.safetensors
probe lost "report onto the journal" fail "journal|run|input" -- "$BIN" report run --data idx --out run/labels.runs.jsonl
probe lost "report onto the run folder's config" fail "config|run|input" -- "$BIN" report run --data idx --out run/config.toml
probe lost "word2vec --out = --corpus" fail "corpus" -- "$BIN" word2vec train --corpus corpus.txt --out corpus.txt --dim 8
probe lost "word2vec --out through ../" fail "corpus" -- "$BIN" word2vec train --corpus corpus.txt --out idx/../corpus.txt --dim 8
probe lost "tokenizer --out = --corpus" fail "corpus" -- "$BIN" tokenizer train --corpus corpus.txt --out corpus.txt
probe lost "mlm logits onto the checkpoint" fail "checkpoint|input|run" -- "$BIN" mlm logits --checkpoint mlm --out mlm/checkpoint.safetensors "the cat sat"
probe lost "export onto the run folder" fail "run|folder|input" -- "$BIN" export --checkpoint mlm --out mlm
cp -r idx idx_changed
printf '\x03' | dd of=idx_changed/train-labels-idx1-ubyte bs=1 seek=8 conv=notrunc 2>/dev/null
cp -r run run_changed && rm -f run_changed/.pretext.lock
probe lost "study on data with one label changed reuses nothing" ok "afresh|kept in" -- "$BIN" eval labels --checkpoint run_changed --data idx_changed --fractions 0.1 --seeds 1 --arms knn
cp texts.tsv texts2.tsv
probe lost "text study, first columns" ok "bag_of_words" -- "$BIN" eval labels --vectors vectors.bin --data texts2.tsv --fractions 0.5 --seeds 1
probe lost "text study, other columns: no reuse" ok "afresh" -- "$BIN" eval labels --vectors vectors.bin --data texts2.tsv --fractions 0.5 --seeds 1 --label-column 0
cp -r run run_stale && rm -f run_stale/.pretext.lock
"$BIN" eval labels --checkpoint run_stale --data idx --fractions 0.1 --seeds 1 --arms knn --set eval.knn_k=5 >/dev/null 2>&1
probe lost "a third study keeps the second's stale runs" ok "stale-2" -- "$BIN" eval labels --checkpoint run_stale --data idx --fractions 0.1 --seeds 1 --arms knn --set eval.knn_k=7
cp vectors.bin vectors_keep.bin
probe lost "word2vec at alpha 1e9: no NaN vectors written" ok "finite-or-refused" -- bash -c "'$BIN' word2vec train --corpus corpus.txt --out vectors_keep.bin --dim 300 --alpha 1e9 --epochs 3; '$BIN' word2vec similar --vectors vectors_keep.bin the | grep -i nan && exit 3; echo finite-or-refused"
python3 -c "
import struct
d=open('vectors.bin','rb').read(); h=d.index(b'\n')+1; w=d.index(b' ',h)+1
open('vectors_nan.bin','wb').write(d[:w]+struct.pack('<f',float('nan'))+d[w+4:])"
probe lost "NaN row in a vectors file" fail "nan|finite" -- "$BIN" word2vec similar --vectors vectors_nan.bin cat
probe lost "NaN vectors in a label study" fail "nan|finite" -- "$BIN" eval labels --vectors vectors_nan.bin --data texts.tsv --fractions 0.5 --seeds 1
probe lost "MLM at lr 1e9 stops and claims no checkpoint" fail "finite|NaN|diverg" -- "$BIN" mlm train --config mlm.toml --corpus corpus.txt --set train.out_dir='"mlm_nan"' --set optimizer.lr=1e9 --set optimizer.warmup_epochs=0
probe lost "UTF-16 corpus to word2vec" fail "NUL|line" -- "$BIN" word2vec train --corpus corpus16.txt --out v16.bin --dim 8
probe lost "UTF-16 corpus to mlm" fail "NUL|line" -- "$BIN" mlm train --config mlm.toml --corpus corpus16.txt --set train.out_dir='"mlm16"'
cp -r idx idx_label200
printf '\xc8' | dd of=idx_label200/train-labels-idx1-ubyte bs=1 seek=20 conv=notrunc 2>/dev/null
probe lost "IDX label 200 in a 10-class set" fail "train-labels-idx1-ubyte|index" -- "$BIN" eval linear --checkpoint run --data idx_label200
probe lost "SimMIM with one patch masks nothing" fail "patch" -- "$BIN" pretrain --config small.toml --data idx --set method='"simmim"' --set backbone.arch='"vit_tiny"' --set backbone.dim=32 --set backbone.depth=1 --set backbone.heads=2 --set backbone.patch_size=28 --set train.out_dir='"simmim28"'
probe lost "SimMIM mask ratio 0" fail "mask|ratio" -- "$BIN" pretrain --config small.toml --data idx --set method='"simmim"' --set backbone.arch='"vit_tiny"' --set backbone.dim=32 --set backbone.depth=1 --set backbone.heads=2 --set backbone.patch_size=7 --set simmim.mask_ratio=0.0 --set train.out_dir='"simmim0"'
probe lost "fresh pretrain onto a finished run" fail "resume|overwrite" -- "$BIN" pretrain --config small.toml --data idx
probe lost "resume on other data" fail "trained on other data" -- "$BIN" pretrain --config small.toml --data idx_changed --resume
probe lost "resume with a changed config" fail "config differs" -- "$BIN" pretrain --config small.toml --data idx --resume --set optimizer.lr=0.5

# ---- crashes and hangs ------------------------------------------------------------------
probe crash "MAE with one patch" fail "patch" -- "$BIN" pretrain --config small.toml --data idx --set method='"mae"' --set backbone.arch='"vit_tiny"' --set backbone.dim=32 --set backbone.depth=1 --set backbone.heads=2 --set backbone.patch_size=28 --set train.out_dir='"mae28"'
probe crash "MAE patch larger than the image" fail "patch" -- "$BIN" pretrain --config small.toml --data idx --set method='"mae"' --set backbone.arch='"vit_tiny"' --set backbone.dim=32 --set backbone.depth=1 --set backbone.heads=2 --set backbone.patch_size=32 --set train.out_dir='"mae32"'
probe crash "jigsaw with 100,000 permutations" fail "permutations|1,?000" -- "$BIN" pretrain --config small.toml --data idx --set method='"jigsaw"' --set jigsaw.permutations=100000 --set train.out_dir='"jig"'
probe crash "batch size 0" fail "batch_size" -- "$BIN" pretrain --config small.toml --data idx --set batch_size=0 --set train.out_dir='"b0"'
probe crash "batch larger than the data" fail "batch|images" -- "$BIN" pretrain --config small.toml --data idx --set batch_size=100000 --set train.out_dir='"bbig"'
probe crash "truncated checkpoint" fail "checkpoint" -- bash -c "head -c 5000 run/checkpoint.safetensors > trunc.safetensors && '$BIN' eval knn --checkpoint trunc.safetensors --data idx"
probe crash "empty checkpoint file" fail "checkpoint|empty" -- bash -c ": > empty.safetensors && '$BIN' eval knn --checkpoint empty.safetensors --data idx"
probe crash "truncated IDX images" fail "train-images" -- bash -c "cp -r idx idx_trunc && head -c 9000 idx/train-images-idx3-ubyte > idx_trunc/train-images-idx3-ubyte && '$BIN' eval knn --checkpoint run --data idx_trunc"
probe crash "IDX header claiming 2^31 images" fail "train-images" -- bash -c "cp -r idx idx_huge && printf '\x7f\xff\xff\xff' | dd of=idx_huge/train-images-idx3-ubyte bs=1 seek=4 conv=notrunc 2>/dev/null && '$BIN' eval knn --checkpoint run --data idx_huge"
probe crash "corrupt PNG in a folder" fail "dog/1.png" -- bash -c "cp -r folder folder_bad && head -c 30 folder/dog/1.png > folder_bad/dog/1.png && '$BIN' pretrain --config small.toml --data folder_bad --set train.out_dir='\"fbad\"' --set batch_size=8"
probe crash "word2vec --dim 0" fail "dim" -- "$BIN" word2vec train --corpus corpus.txt --out v0.bin --dim 0
probe crash "word2vec empty corpus" fail "empty|no words|corpus" -- bash -c ": > empty.txt && '$BIN' word2vec train --corpus empty.txt --out ve.bin --dim 8"
probe crash "mlm on an empty corpus" fail "empty|no |corpus" -- bash -c ": > empty2.txt && '$BIN' mlm train --config mlm.toml --corpus empty2.txt --set train.out_dir='\"mlme\"'"
probe crash "fill-mask without a mask" fail "mask" -- "$BIN" fill-mask --checkpoint mlm "the cat sat"
probe crash "tokenizer.json damaged" fail "tokbad.json" -- bash -c "head -c 300 tok.json > tokbad.json && '$BIN' mlm train --config mlm.toml --corpus corpus.txt --set tokenizer.path='\"tokbad.json\"' --set train.out_dir='\"mlmt\"'"
probe crash "report on a run with torn metrics" ok "could not be read|unread" -- bash -c "cp -r run run_torn && rm -f run_torn/.pretext.lock && echo '{\"step\": 3, \"loss\": Na' >> run_torn/metrics.jsonl && '$BIN' report run_torn --data idx --set data.test_limit=100 && grep -o 'line(s) of metrics.jsonl could not be read' run_torn/report.html"
probe crash "eval labels, fraction above 1" fail "fraction" -- "$BIN" eval labels --checkpoint run --data idx --fractions 1.5
probe crash "eval labels, fractions -1" fail "fraction" -- "$BIN" eval labels --checkpoint run --data idx --fractions -1
probe crash "eval labels, 0 seeds" fail "seed" -- "$BIN" eval labels --checkpoint run --data idx --seeds 0
probe crash "eval labels, unknown arm" fail "arm" -- "$BIN" eval labels --checkpoint run --data idx --arms knn,magic
probe crash "reconstruct with a SimCLR run" fail "reconstruct|mae|simmim|autoencoder" -- "$BIN" reconstruct --checkpoint run --data idx --out r.png

# ---- unclear or misleading ----------------------------------------------------------------
probe unclear "eval knn --set eval.knn_k=5 prints k=5" ok "k=5" -- "$BIN" eval knn --checkpoint run --data idx --set eval.knn_k=5 --no-baseline
probe unclear "embed with an unknown --set key" fail "no_such_key" -- "$BIN" embed --checkpoint run --data idx --out e.npy --set data.no_such_key=3
probe unclear "embed applies data.test_limit" ok "\b50\b" -- "$BIN" embed --checkpoint run --data idx --out e50.npy --split test --set data.test_limit=50
probe unclear "range error from --set names the flag" fail "[-]-set optimizer" -- "$BIN" pretrain --config small.toml --data idx --set optimizer.lr=-1 --set train.out_dir='"neg"'
probe unclear "type error from --set names the flag" fail "[-]-set epochs" -- "$BIN" pretrain --config small.toml --data idx --set epochs='"ten"' --set train.out_dir='"ten"'
probe unclear "unknown config key" fail "no_such" -- "$BIN" pretrain --config small.toml --data idx --set no_such=1 --set train.out_dir='"unk"'
probe unclear "empty metrics.jsonl" ok "no training step" -- bash -c "cp -r run run_empty && rm -f run_empty/.pretext.lock && : > run_empty/metrics.jsonl && '$BIN' report run_empty --data idx --set data.test_limit=100 && grep -o 'holds no training step' run_empty/report.html"
probe unclear "TSV header read as a class" ok "header" -- "$BIN" eval labels --vectors vectors.bin --data texts.tsv --fractions 0.5 --seeds 1 --label-column 0
probe unclear "--vectors at a checkpoint" fail "safetensors" -- "$BIN" word2vec similar --vectors run/checkpoint.safetensors cat
probe unclear "--data that does not exist" fail "no such folder" -- "$BIN" eval knn --checkpoint run --data nowhere
probe unclear "--data that is a file" fail "not a folder" -- "$BIN" eval knn --checkpoint run --data corpus.txt
probe unclear "--data without permission" fail "denied" -- bash -c "cp -r idx idx_locked && chmod 000 idx_locked && setpriv --reuid=65534 --regid=65534 --clear-groups '$BIN' eval knn --checkpoint '$W/run' --data '$W/idx_locked'; rc=\$?; chmod 755 idx_locked; exit \$rc"
probe unclear "empty class folder named" ok "empty" -- "$BIN" pretrain --config small.toml --data folder --set train.out_dir='"ffold"' --set batch_size=8
probe unclear "train.out_dir is a file" fail "a file, not a folder" -- "$BIN" pretrain --config small.toml --data idx --set train.out_dir='"corpus.txt"'
probe unclear "train.out_dir empty" fail "out_dir" -- "$BIN" pretrain --config small.toml --data idx --set train.out_dir='""'
probe unclear "report --out a folder, before the work" fail "folder|directory" -- "$BIN" report run --data idx --out idx
probe unclear "reconstruct --out x.jpg" fail "png" -- "$BIN" reconstruct --checkpoint mae --data idx --out x.jpg
probe unclear "warm-up longer than the run" ok "warm" -- "$BIN" pretrain --config small.toml --data idx --set optimizer.warmup_epochs=5 --set train.out_dir='"warm"'
probe unclear "fill-mask with [mask]" fail "case|\[MASK\]" -- "$BIN" fill-mask --checkpoint mlm "the [mask] sat"
probe unclear "MLM with one line: no held-out" ok "held-out|held out" -- bash -c "head -c 3000 corpus.txt | tr '\\n' ' ' > one.txt && '$BIN' mlm train --config mlm.toml --corpus one.txt --set train.out_dir='\"mlm1\"'"
probe unclear "grey and RGB mixed named" ok "grey|gray" -- "$BIN" pretrain --config small.toml --data folder --set train.out_dir='"fgrey"' --set batch_size=8
probe unclear "flat unlabelled folder pretrains" ok "unlabel|no label" -- "$BIN" pretrain --config small.toml --data flat --set train.out_dir='"flat_run"' --set batch_size=8
probe unclear "IDX without labels pretrains" ok "unlabel|no label" -- "$BIN" pretrain --config small.toml --data idx_nolabels --set train.out_dir='"nolab"'
probe unclear "evaluation on unlabelled data asks for labels" fail "label" -- "$BIN" eval knn --checkpoint run --data idx_nolabels
probe unclear "evaluation at another image size noted" ok "pretrained on 28x28" -- "$BIN" eval knn --checkpoint run --data idx --no-baseline --set data.image_size=[20,20]
probe unclear "flag a protocol does not take" fail "fractions" -- "$BIN" eval knn --checkpoint run --data idx --fractions 0.1
probe unclear "checkpoints byte-stable" ok "same" -- bash -c "'$BIN' export --checkpoint mlm --out hf1 >/dev/null && '$BIN' export --checkpoint mlm --out hf2 >/dev/null && cmp hf1/model.safetensors hf2/model.safetensors && echo same"
probe unclear "two runs on one folder" fail "PID|in use|lock" -- bash -c "'$BIN' pretrain --config small.toml --data idx --set train.out_dir='\"busy\"' --set epochs=500 >/dev/null 2>&1 & sleep 3; '$BIN' pretrain --config small.toml --data idx --set train.out_dir='\"busy\"' --overwrite; rc=\$?; kill %1; wait; exit \$rc"
probe unclear "--device that is not compiled in" fail "cuda|device" -- "$BIN" eval knn --checkpoint run --data idx --device cuda
probe unclear "--threads 0" fail "threads" -- "$BIN" eval knn --checkpoint run --data idx --threads 0
probe unclear "--config that does not exist" fail "missing.toml" -- "$BIN" pretrain --config missing.toml --data idx
probe unclear "config with a TOML syntax error" fail "bad.toml.*line|line.*bad.toml" -- bash -c "printf 'epochs = \n[backbone\n' > bad.toml && '$BIN' pretrain --config bad.toml --data idx"
probe unclear "torchvision export of a small CNN" fail "resnet|torchvision" -- "$BIN" export --checkpoint run --format torchvision --out tv.safetensors
probe unclear "--baseline-from a study on other data" fail "baseline|data" -- "$BIN" eval labels --checkpoint run_changed --data idx_changed --fractions 0.1 --seeds 1 --arms scratch --baseline-from run
probe unclear "similar: a word not in the vocabulary" fail "zebra" -- "$BIN" word2vec similar --vectors vectors.bin zebra
probe unclear "fill-mask on an image run" fail "mlm|masked-language|text" -- "$BIN" fill-mask --checkpoint run "the [MASK] sat"
probe unclear "text-probe on an image run" fail "mlm|text|image" -- "$BIN" eval text-probe --checkpoint run --data texts.tsv
probe unclear "eval labels on an MLM run without --data" fail "data|tsv" -- "$BIN" eval labels --checkpoint mlm

# ---- the table --------------------------------------------------------------------------
echo
echo "| class | inputs tried | handled well |"
echo "|---|---|---|"
total=0; total_well=0
for class in lost crash unclear; do
  echo "| $class | ${tried[$class]:-0} | ${well[$class]:-0} |"
  total=$(( total + ${tried[$class]:-0} )); total_well=$(( total_well + ${well[$class]:-0} ))
done
echo "| all | $total | $total_well |"
exit $failed
