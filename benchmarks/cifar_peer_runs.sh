#!/usr/bin/env bash
# The runs behind docs/cifar10-peer.md, in order, each resumable: run this again after any
# interruption and it goes on where it stopped (finished legs are skipped).
#
#   nohup bash benchmarks/cifar_peer_runs.sh > /dev/null 2>&1 &     # progress: runs/cifar-peer/log.txt
#
# It runs from snapshots of the code (git archive of a commit into runs/snapshots/<commit>), not
# from the work tree: a run of hours must not import files that are being edited (autograph
# reads a function's source when it traces). The fix's commit is taken from the first start
# (runs/cifar-peer/FIX_COMMIT) and kept for every resume; BEFORE is the last commit with
# Keras's Glorot-uniform classifier. Low priority (nice 19): other work on the machine goes first.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/cifar-peer
mkdir -p "$out" runs/snapshots
[ -f "$out/FIX_COMMIT" ] || git rev-parse HEAD > "$out/FIX_COMMIT"
FIX=$(cat "$out/FIX_COMMIT")
BEFORE=$(git rev-parse fb98fee)
snapshot() {  # prints the folder holding commit $1's tree
  local folder=runs/snapshots/$1
  if [ ! -f "$folder/.complete" ]; then
    rm -rf "$folder" && mkdir -p "$folder"
    git archive "$1" | tar -x -C "$folder"
    touch "$folder/.complete"
  fi
  echo "$PWD/$folder"
}
fix=$(snapshot "$FIX")
before=$(snapshot "$BEFORE")
data=${DATA:-$(cd .. && pwd)/shared/data/cifar10-jpg.tar.gz}
export KERAS_RESNET_CACHE=$PWD/runs/.cache
peer() {  # peer CODE ARGS...: the fix's benchmark over CODE's keras_resnet
  local code=$1; shift
  echo "$(date -u +%FT%TZ) start: code $(basename "$code") $*" >> "$out/log.txt"
  PYTHONPATH="$code" nice -n 19 "${PYTHON:-python}" "$fix/benchmarks/cifar_peer.py" --data_dir="$data" "$@" \
    >> "$out/log.txt" 2>&1
  echo "$(date -u +%FT%TZ) done: $*" >> "$out/log.txt"
}
seeds=0,1,2,3,4
# 1. The start, over seeds: the first 400 iterations (no evaluation), ours after the fix and
#    the peer; then ours before the fix and the peer with Keras's classifier init, 200 each.
peer "$fix" --model=resnet56 --seeds=$seeds --train_steps=400 --no-evaluate --output=$out/start
peer "$before" --model=resnet56 --seeds=$seeds --train_steps=200 --no-evaluate --legs=ours \
  --output=$out/start-before
peer "$fix" --model=resnet56 --seeds=$seeds --train_steps=200 --no-evaluate --legs=peer \
  --peer_classifier_init=glorot --output=$out/start-peer-glorot
# 2. The 20-epoch protocol on the test set (7,800 iterations, drops at 3,900 and 5,850), the
#    Fig. 6 orderings first: ResNet-20, ResNet-56, ResNet-20's peer, plain-20, plain-56; then
#    ResNet-56's peer over its first 4 epochs (1,600 iterations of the same schedule, so it
#    compares epoch by epoch with ours).
final=(--train_steps=7800 --lr_decay_steps=3900,5850 --final_split=test
       --checkpoint_every_steps=130 --output=$out/final)
peer "$fix" --model=resnet20 --seeds=0 --legs=ours "${final[@]}"
peer "$fix" --model=resnet56 --seeds=0 --legs=ours "${final[@]}"
peer "$fix" --model=resnet20 --seeds=0 --legs=peer "${final[@]}"
peer "$fix" --model=plain20 --seeds=0 --legs=ours "${final[@]}"
peer "$fix" --model=plain56 --seeds=0 --legs=ours "${final[@]}"
peer "$fix" --model=resnet56 --seeds=0 --legs=peer --train_steps=1600 --lr_decay_steps=3900,5850 \
  --final_split=test --output=$out/first4
# 3. At 20 epochs ResNet-56 ends 0.5 points behind ResNet-20 with a higher training error at
#    the end of every stage (under-trained, not over-fitted): the same protocol twice as long
#    (15,600 iterations, drops at 7,800 and 11,700: the paper's 1/2 and 3/4 of the schedule).
long=(--train_steps=15600 --lr_decay_steps=7800,11700 --final_split=test
      --checkpoint_every_steps=130 --output=$out/long)
peer "$fix" --model=resnet20 --seeds=0 --legs=ours "${long[@]}"
peer "$fix" --model=resnet56 --seeds=0 --legs=ours "${long[@]}"
# 4. Second seeds, so that no ordering rests on one; then ResNet-56's peer at 20 epochs.
peer "$fix" --model=resnet20 --seeds=1 --legs=ours "${long[@]}"
peer "$fix" --model=resnet56 --seeds=1 --legs=ours "${long[@]}"
peer "$fix" --model=resnet20 --seeds=1 --legs=ours "${final[@]}"
peer "$fix" --model=resnet56 --seeds=1 --legs=ours "${final[@]}"
peer "$fix" --model=resnet56 --seeds=0 --legs=peer "${final[@]}"
echo "$(date -u +%FT%TZ) all done" >> "$out/log.txt"
