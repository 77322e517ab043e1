#!/usr/bin/env bash
# The results runs of docs/results.md: each recipe in turn on the full data set, at low priority, resumable.
#
#   tools/run_recipes.sh RUNS_DIR DATA_ROOT RUN...
#
# A RUN is a recipe name (its folder is RUNS_DIR/RECIPE) or NAME=RECIPE,KEY=VALUE,... for a variant
# with its own folder and settings, e.g. resnet9-onecycle-lr0027=resnet9-onecycle,sched.max_lr=0.0027.
# Run it from a checkout of the commit to measure, with its .venv (`make test` builds one), in the
# background: `nohup tools/run_recipes.sh ../results/runs ../shared/data/cifar10-jpeg
# resnet9-onecycle resnet18-bn resnet18-ln-plateau resnet18-sgd-plateau > ../results/driver.log 2>&1 &`.
# Where the kernel has autogroup scheduling it moves itself into a session of its own at the lowest
# priority (below), so Ctrl-C or killing `$!` does not stop it: stop the queue and its training with
# `pkill -s SID`, SID from `ps -o sid= -p "$(pgrep -f 'vislab train')"` (training saves a checkpoint
# on SIGTERM). Run it again after an interruption: a finished run is skipped, a started one is resumed
# from its latest checkpoint (a mid-epoch one, saved every 10 minutes, included), the others start.
# Record progress with tools/results.py.
set -u
# Linux's autogroup scheduling (on by default in most distributions) shares the CPU between sessions first and
# applies nice only inside one, so `nice -n 19` alone does not yield to a test suite started from another terminal.
# Measured on the 2-core development machine: a foreground 2-thread matmul ran at 33 GFLOP/s beside a results run at
# nice 19 and at 66 once the run's session group was set to nice 19 (67 with no run). So: a session of our own, at
# the lowest priority (where /proc/self/autogroup can be written; otherwise only nice applies).
if [ -e /proc/self/autogroup ] && [ -z "${VISLAB_RUNS_OWN_SESSION:-}" ]; then
  VISLAB_RUNS_OWN_SESSION=1 exec setsid -w bash "$0" "$@"
fi
if [ -w /proc/self/autogroup ]; then echo 19 > /proc/self/autogroup; fi
runs=$1; data=$2; shift 2
here=$(cd "$(dirname "$0")/.." && pwd)
vislab=$here/.venv/bin/vislab
mkdir -p "$runs"
for run in "$@"; do
  name=$run; spec=$run
  if [[ $run == *=* ]]; then name=${run%%=*}; spec=${run#*=}; fi
  IFS=, read -ra parts <<< "$spec"
  recipe=${parts[0]}; sets=()
  for kv in "${parts[@]:1}"; do sets+=(--set "$kv"); done
  out=$runs/$name
  if [ -f "$out/summary.json" ] && grep -q '"status": "finished"' "$out/summary.json"; then
    echo "$(date -Is) $name already finished"
    continue
  fi
  echo "$(date -Is) $name ($recipe ${sets[*]}) from commit $(git -C "$here" rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg)"
  # Any checkpoint means "resume": a run killed inside its first epoch has only checkpoints/partial.
  if [ -n "$(ls -A "$out/checkpoints" 2>/dev/null)" ]; then
    nice -n 19 "$vislab" train --resume "$out" --set trainer.checkpoint_minutes=10
  else
    nice -n 19 "$vislab" train "$recipe" --set data.name=imagefolder --set "data.root=$data" "${sets[@]}" --out "$out" \
      --overwrite --set trainer.checkpoint_minutes=10
  fi
  rc=$?  # before the echo: a $(...) inside it would reset $?
  echo "$(date -Is) $name exit $rc"
done
