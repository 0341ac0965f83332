#!/usr/bin/env bash
# Video files decoded into memory against streamed from disk (docs/video.md): builds a folder
# of N clips with ffmpeg's test sources (two classes, 3 to 6 s at 25 frames/s, 160x120, MP4),
# then pretrains VideoMAE (configs/video_videomae.toml, 64x64 grey, up to data.max_frames = 64
# frames a video) for STEPS steps (default 30) both ways: clips/s, wall time, peak RSS; then
# evaluates each checkpoint (`video eval`, which reads as its pretraining did) with the folder
# as both train/ and test/: wall time, peak RSS. Needs Debian's ffmpeg. Run by hand:
#   bench/video/stream.sh target/release/pretext [N]
set -euo pipefail
bin=${1:?give a pretext binary}
n=${2:-400}
steps=${STEPS:-30}
work=${WORK:-/tmp/pretext-video-stream-bench}
lscpu | grep -m1 'Model name' || true
data="$work/clips-$n"
if [ ! -f "$data/.done" ]; then
  rm -rf "$data"
  start=$(date +%s.%N)
  for i in $(seq 0 $((n - 1))); do
    if (( i % 2 )); then class=fractal; src="mandelbrot=size=160x120:rate=25"
    else class=bars; src="testsrc2=size=160x120:rate=25"; fi
    mkdir -p "$data/$class"
    ffmpeg -v error -y -f lavfi -i "$src" -t $((3 + i % 4)) -pix_fmt yuv420p "$data/$class/$i.mp4"
  done
  touch "$data/.done"
  echo "built $n clips in $(echo "$(date +%s.%N) - $start" | bc) s ($(du -sh "$data" | cut -f1))"
fi
for mode in false true; do
  out="$work/run-stream-$mode"
  rm -rf "$out"
  /usr/bin/time -f "data.stream=$mode: peak RSS %M KB, wall %e s" "$bin" video pretrain \
    --config configs/video_videomae.toml --data "$data" --json --set "data.stream=$mode" \
    --set "train.max_steps=$steps" --set "train.out_dir=\"$out\"" > "$out.json" 2> "$out.log" \
    || { tail -5 "$out.log"; exit 1; }
  tail -1 "$out.log"
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["result"]; t=s["time"]; print("  %.1f clips/s over %d steps; forward %.1f s, backward %.1f s, data wait %.1f s, loop %.1f s" % (s["images_per_sec"], s["steps"], t["forward"], t["backward"], t["data_wait"], t["total"]))' "$out.json"
done
split="$work/split-$n"
mkdir -p "$split" && ln -sfn "$data" "$split/train" && ln -sfn "$data" "$split/test"
for mode in false true; do
  out="$work/run-stream-$mode"
  /usr/bin/time -f "video eval, data.stream=$mode: peak RSS %M KB, wall %e s" "$bin" video eval \
    --checkpoint "$out" --data "$split" --fractions 1 --json > "$out.eval.json" 2> "$out.eval.log" \
    || { tail -5 "$out.eval.log"; exit 1; }
  tail -1 "$out.eval.log"
  python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))["result"]["tasks"][0]; print("  %s: linear %.1f%% (random init %.1f%%)" % (t[0], 100*t[1]["by_fraction"][-1][2], 100*t[2]["by_fraction"][-1][2]))' "$out.eval.json"
done
