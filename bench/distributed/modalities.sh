#!/usr/bin/env bash
# Data-parallel audio and video pretraining speed on this machine (docs/distributed.md): BYOL-A
# (configs/audio_byol_a.toml, global batch 64) on spoken words and VideoMAE
# (configs/video_videomae.toml, global batch 32) on Moving Fashion-MNIST, STEPS steps each
# (default 40), as 1 process x 1 thread, 2 ranks x 1 thread (mpirun; batch norm synchronised)
# and 1 process x 2 threads. Needs a binary built with `--features mpi` and Open MPI's mpirun,
# and the sets of `pretext data spoken` and `pretext data moving-mnist`. Run by hand:
#   bench/distributed/modalities.sh target/release/pretext DIR/audio/spoken DIR/video/moving_fmnist
set -euo pipefail
bin=${1:?give a pretext binary built with --features mpi}
spoken=${2:?give the folder of pretext data spoken}
videos=${3:?give the folder of pretext data moving-mnist}
steps=${STEPS:-40}
work=${WORK:-/tmp/pretext-distributed-modalities-bench}
rm -rf "$work" && mkdir -p "$work"
lscpu | grep -m1 'Model name' || true
run() { # KIND CONFIG DATA NAME THREADS [mpirun -np N]
  local kind=$1 config=$2 data=$3 name=$4 threads=$5; shift 5
  "$@" "$bin" "$kind" pretrain --config "$config" --data "$data" --threads "$threads" --json \
    --set "train.max_steps=$steps" --set train.sync_batchnorm=true \
    --set "train.out_dir=\"$work/$name-$round\"" > "$work/$name-$round.json" 2> "$work/$name-$round.log"
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["result"]; t=s["time"]; print("%s: %.1f clips/s; forward %.1f s, backward %.1f s, optimizer %.1f s, data wait %.1f s, total %.1f s" % (sys.argv[2], s["images_per_sec"], t["forward"], t["backward"], t["optimizer"], t["data_wait"], t["total"]))' "$work/$name-$round.json" "$name"
}
mpi=(mpirun --allow-run-as-root --oversubscribe -np 2)
for round in 1 2; do
  echo "== round $round"
  run audio configs/audio_byol_a.toml "$spoken" "byol_a-1-process-1-thread" 1
  run audio configs/audio_byol_a.toml "$spoken" "byol_a-2-ranks-1-thread" 1 "${mpi[@]}"
  run audio configs/audio_byol_a.toml "$spoken" "byol_a-1-process-2-threads" 2
  run video configs/video_videomae.toml "$videos" "videomae-1-process-1-thread" 1
  run video configs/video_videomae.toml "$videos" "videomae-2-ranks-1-thread" 1 "${mpi[@]}"
  run video configs/video_videomae.toml "$videos" "videomae-1-process-2-threads" 2
done
