#!/usr/bin/env bash
# Data-parallel image pretraining speed on this machine (docs/distributed.md): `pretext pretrain`
# SimCLR with the small CNN (configs/quickstart.toml: width 32, global batch 256) on the embedded
# Fashion-MNIST subset, 20 steps, as 1 process x 1 thread, 2 ranks x 1 thread (mpirun; batch norm
# synchronised, then per rank) and 1 process x 2 threads. Needs a binary built with `--features mpi` and Open
# MPI's mpirun. Run by hand:
#   bench/distributed/pretrain.sh target/release/pretext
set -euo pipefail
bin=${1:?give a pretext binary built with --features mpi}
work=${WORK:-/tmp/pretext-distributed-pretrain-bench}
rm -rf "$work" && mkdir -p "$work"
run() { # NAME THREADS SYNC_BATCHNORM [mpirun -np N]
  local name=$1 threads=$2 sync=$3; shift 3
  "$@" "$bin" pretrain --config configs/quickstart.toml --threads "$threads" --json \
    --set train.max_steps=20 --set train.online_knn=0 --set "train.sync_batchnorm=$sync" \
    --set "train.out_dir=\"$work/$name\"" > "$work/$name.json" 2> "$work/$name.log"
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["summary"]; t=s["time"]; print("%s: %.0f images/s; forward %.1f s, backward %.1f s, optimizer %.1f s, data wait %.1f s, total %.1f s" % (sys.argv[2], s["images_per_sec"], t["forward"], t["backward"], t["optimizer"], t["data_wait"], t["total"]))' "$work/$name.json" "$name"
}
run "1-process-1-thread" 1 true
run "2-ranks-1-thread-synchronised-bn" 1 true mpirun --allow-run-as-root --oversubscribe -np 2
run "2-ranks-1-thread-per-rank-bn" 1 false mpirun --allow-run-as-root --oversubscribe -np 2
run "1-process-2-threads" 2 true
