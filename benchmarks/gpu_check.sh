#!/usr/bin/env bash
# The lab on a GPU machine, checked in one go: nothing to type, no network needed, under 8 minutes.
#
#   bash benchmarks/gpu_check.sh            (from the repository root of a checkout)
#
# 1. nvidia-smi on the machine
# 2. the lab image with --gpus all and nvidia-smi inside it (when Docker and a labctl-lab image are here)
# 3. the tutorial network and the fast preset on CUDA, short runs of `python -m cifarlab train`
# 4. a 2-process DDP run with NCCL through labctl.distributed's torchrun argv (when there are 2+ GPUs)
# 5. the fast preset's time to 94% held-out accuracy side by side with airbench94 (when the `airbench`
#    package imports), on the same images and split
# Data: shared/data/cifar10-train-jpeg.tar.gz or ../shared/data/... when present, else synthetic images.
# Packages: nothing is installed from the network. If torch does not import and a .whl/ folder of wheels is at
# the repository root, they are installed from it alone (pip --no-index) into a private virtual environment.
# Every step fails soft: it says what it could not do and why, and the summary at the end (Markdown, for
# benchmarks/RESULTS.md) lists every step with its result. Set GPU_CHECK_OUT to keep the run directories.
# GPU_CHECK_REHEARSE=1 walks every step on the CPU with a few steps each (two CPU processes stand in for two
# GPUs, gloo for NCCL), to check the script itself on a machine without a GPU.
set -u

cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
WORK=${GPU_CHECK_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")}
mkdir -p "$WORK"
SUMMARY="$WORK/summary.md"
: >"$SUMMARY"
PY=${PYTHON:-$(command -v python3 || command -v python || echo python3)}
export PYTHONPATH="$ROOT:$ROOT/lab${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
DATA=""
GPUS=0
REHEARSE=${GPU_CHECK_REHEARSE:-0}
DEVICE=cuda
SHORT=()
if [ "$REHEARSE" = 1 ]; then
  DEVICE=cpu
  SHORT=(--max-steps 3 --batch-size 64)
fi
T0=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-450} # seconds for every step together, to stay under 8 minutes with the set-up

say() { printf '\n== %s\n' "$*"; }
note() { printf '%s\n' "- $*" >>"$SUMMARY"; printf '   -> %s\n' "$*"; }
# run_step SECONDS NAME CMD...: runs with a time limit (cut to what is left of the whole check's budget), its
# output to the console and to $WORK/NAME.log
run_step() {
  local limit=$1 name=$2 left
  shift 2
  left=$((BUDGET - $(date +%s) + T0))
  if [ "$left" -lt 20 ]; then
    echo "   (skipped: the check's ${BUDGET}s budget is spent)" | tee "$WORK/$name.log"
    return 124
  fi
  [ "$limit" -le "$left" ] || limit=$left
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$WORK/$name.log"
  local code=${PIPESTATUS[0]}
  if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then
    echo "   (stopped after ${limit}s)"
  fi
  return "$code"
}

python_env() {
  say "python and torch"
  if ! command -v "$PY" >/dev/null 2>&1; then
    note "python: not found; every training step is skipped"
    return 1
  fi
  if ! "$PY" -c "import torch" >/dev/null 2>&1 && [ -d "$ROOT/.whl" ]; then
    echo "torch does not import; installing the wheels in .whl/ (no network) into $WORK/venv"
    if "$PY" -m venv --system-site-packages "$WORK/venv" \
      && "$WORK/venv/bin/python" -m pip install -q --no-index --find-links "$ROOT/.whl" "$ROOT"/.whl/*.whl; then
      PY="$WORK/venv/bin/python"
    else
      note "wheels: installing from .whl/ failed (see above)"
    fi
  fi
  if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    note "torch: does not import with $PY and no usable .whl/ folder; every training step is skipped"
    return 1
  fi
  local info
  info=$("$PY" -c "import torch; print(torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count())")
  note "torch: $info"
  GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
  if [ "$REHEARSE" = 1 ]; then
    GPUS=2
    note "rehearsal: every run on the CPU, a few steps each; the numbers below mean nothing"
  fi
  return 0
}

check_nvidia_smi() {
  say "nvidia-smi"
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    note "nvidia-smi: not installed on this machine"
    return
  fi
  if run_step 30 nvidia-smi nvidia-smi; then
    local names
    names=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sort | uniq -c)
    note "nvidia-smi: $(echo "$names" | sed 's/^ *//' | paste -sd ';' -)"
  else
    note "nvidia-smi: failed (see $WORK/nvidia-smi.log)"
  fi
}

check_docker() {
  say "the lab image with --gpus all"
  if ! command -v docker >/dev/null 2>&1; then
    note "docker --gpus all: skipped, docker is not installed"
    return
  fi
  if ! timeout 15 docker info >/dev/null 2>&1; then
    note "docker --gpus all: skipped, no Docker engine answers (or no permission to its socket)"
    return
  fi
  local image
  image=$(docker image ls --format '{{.Repository}}:{{.Tag}}' 'labctl-lab' 2>/dev/null | head -n 1)
  if [ -z "$image" ]; then
    note "docker --gpus all: skipped, no labctl-lab image here (labctl up builds it; no registry to pull from)"
    return
  fi
  if run_step 60 docker-gpus docker run --rm --gpus all "$image" nvidia-smi --query-gpu=name --format=csv,noheader; then
    note "docker --gpus all ($image): $(grep -c . "$WORK/docker-gpus.log") GPU(s) seen inside the lab container"
  else
    note "docker --gpus all ($image): failed; is the NVIDIA container toolkit installed? (see $WORK/docker-gpus.log)"
  fi
}

find_data() {
  local candidate
  for candidate in "$ROOT/shared/data/cifar10-train-jpeg.tar.gz" "$ROOT/../shared/data/cifar10-train-jpeg.tar.gz"; do
    if [ -f "$candidate" ]; then
      DATA=$candidate
      note "data: $candidate (held out: 10%, seed 0)"
      return
    fi
  done
  if [ "$REHEARSE" = 1 ]; then
    DATA=synthetic:512
    note "data: synthetic:512 (rehearsal)"
    return
  fi
  note "data: no cifar10-train-jpeg.tar.gz under shared/data or ../shared/data; synthetic images, no accuracy target"
}

# result NAME RUN_DIR: one summary line from a run's metrics.json
result() {
  "$PY" - "$1" "$2/metrics.json" <<'EOF' || note "$1: no metrics.json (see the log above)"
import json, sys
name, path = sys.argv[1], sys.argv[2]
m = json.load(open(path))
acc = "n/a" if m["accuracy"] is None else f"{m['accuracy']:.2%}"
print(f"- {name}: {m['status']}, {m['steps']} steps in {m['train_s']:.1f}s training ({m['wall_s']:.1f}s wall), "
      f"{m['images_per_s']:.0f} img/s, accuracy {acc}, world {m['world_size']} ({m.get('backend') or 'one process'}), "
      f"{m['device_name'] or m['device']}")
EOF
}

train_runs() {
  say "short CUDA runs through python -m cifarlab train"
  local data=${DATA:-synthetic:20000} name
  for name in tutorial fast; do
    local args=(--data "$data" --model "$name" --device "$DEVICE" --out "$WORK/runs/$name" --log-every 5 ${SHORT[@]+"${SHORT[@]}"})
    if [ "$name" = tutorial ]; then args+=(--recipe fast --epochs 1); else args+=(--epochs 2); fi
    if run_step 75 "train-$name" "$PY" -m cifarlab train "${args[@]}"; then
      result "$name on $DEVICE" "$WORK/runs/$name" | tee -a "$SUMMARY"
    else
      note "$name on $DEVICE: did not finish: failed, timed out or no time left (see $WORK/train-$name.log)"
    fi
  done
}

ddp_run() {
  say "2-process DDP with NCCL (torchrun)"
  if [ "$GPUS" -lt 2 ]; then
    note "DDP/NCCL: skipped, $GPUS GPU(s) here and it needs 2"
    return
  fi
  local out="$WORK/runs/ddp"
  if run_step 90 ddp "$PY" - "${DATA:-synthetic:20000}" "$out" "$GPUS" "$DEVICE" ${SHORT[@]+"${SHORT[@]}"} <<'EOF'; then
import os, subprocess, sys
from labctl.distributed import launch_argv, launch_env, merge_rank_output, plan_launch
data, out, gpus, device, short = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:]
plan = plan_launch(run_id="gpu-check", gpus_available=gpus, gpus_requested=2)
train = ["--data", data, "--model", "fast", "--epochs", "2", "--device", device, "--out", out, *short]
argv = launch_argv(plan, train, log_dir=out + "-ranks", torchrun=(sys.executable, "-m", "torch.distributed.run"))
print("argv:", argv, flush=True)
proc = subprocess.Popen(argv, env={**os.environ, **launch_env(plan)}, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True)
assert proc.stdout is not None
seen = []
for line in merge_rank_output(proc.stdout, node_rank=0):
    print(line, flush=True)
    seen.append(line)
code = proc.wait()
# every rank says when it starts and ends (rank/world, local rank, node, device, shard; status, steps, images)
silent = [r for r in (0, 1) if not any(s.startswith(f"[rank {r}] rank {r}/2 ") and " ends " in s for s in seen)]
if silent:
    print(f"rank(s) {silent} printed no end line", flush=True)
sys.exit(code or (1 if silent else 0))
EOF
    result "fast, 2 processes DDP ($DEVICE)" "$out" | tee -a "$SUMMARY"
  else
    note "DDP/NCCL: did not finish: failed, timed out or no time left (see $WORK/ddp.log)"
  fi
}

fast_to_94() {
  say "fast preset: time to 94% held-out accuracy"
  local out="$WORK/runs/fast94"
  if ! run_step 150 fast94 "$PY" -m cifarlab train --data "$DATA" --holdout 0.1 --model fast --device "$DEVICE" \
    --out "$out" --log-every 5 ${SHORT[@]+"${SHORT[@]}"}; then
    note "fast preset to 94%: did not finish: failed, timed out or no time left (see $WORK/fast94.log)"
    return
  fi
  "$PY" - "$out/metrics.json" <<'EOF' | tee -a "$SUMMARY"
import json, sys
m = json.load(open(sys.argv[1]))
hit = next((h for h in m["history"] if h["accuracy"] >= 0.94), None)
best = max(m["history"], key=lambda h: h["accuracy"])
if hit:
    print(f"- fast preset: 94% after {hit['elapsed_s']:.1f}s (epoch {hit['epoch']:g}, data loading included); "
          f"final {m['accuracy']:.2%} after {m['wall_s']:.1f}s")
else:
    print(f"- fast preset: did not reach 94%; best {best['accuracy']:.2%} at {best['elapsed_s']:.1f}s "
          f"(epoch {best['epoch']:g}); final {m['accuracy']:.2%} after {m['wall_s']:.1f}s")
EOF
}

airbench_side_by_side() {
  say "airbench94 on the same images and split"
  if ! "$PY" -c "import airbench" >"$WORK/airbench-import.log" 2>&1; then
    note "airbench94: skipped, the airbench package does not import ($(tail -n 1 "$WORK/airbench-import.log"))"
    return
  fi
  local dir="$WORK/airbench"
  mkdir -p "$dir/cifar10"
  # airbench reads cifar10/{train,test}.pt (uint8 N,32,32,3) from its working directory: the lab's split, so
  # that both contenders see the same images; it would otherwise download CIFAR-10, and there is no network.
  if ! run_step 60 airbench-data "$PY" - "$DATA" "$dir/cifar10" <<'EOF'; then
import sys, torch
from cifarlab.data import load_data
data = load_data(sys.argv[1], holdout=0.1, seed=0)
for name, split in (("train", data.train), ("test", data.test)):
    torch.save({"images": split.images.permute(0, 2, 3, 1).contiguous(), "labels": split.labels,
                "classes": data.classes}, f"{sys.argv[2]}/{name}.pt")
    print(name, tuple(split.images.shape))
EOF
    note "airbench94: could not write its data files (see $WORK/airbench-data.log)"
    return
  fi
  if (cd "$dir" && run_step 150 airbench "$PY" - "$WORK/airbench.line" <<'EOF'); then
import sys, time, torch, airbench
airbench.warmup94()  # its own warm-up (cuDNN autotuning), as in its benchmark
torch.cuda.synchronize()
t0 = time.time()
model = airbench.train94()
torch.cuda.synchronize()
wall = time.time() - t0
acc = airbench.evaluate(model, airbench.CifarLoader("cifar10", train=False, batch_size=2000), tta_level=2)
line = f"- airbench94: {acc:.2%} after {wall:.1f}s (its whole fixed schedule, data already on the GPU)"
print(line)
open(sys.argv[1], "w").write(line + "\n")
EOF
    cat "$WORK/airbench.line" >>"$SUMMARY"
  else
    note "airbench94: did not finish: failed, timed out or no time left (see $WORK/airbench.log)"
  fi
}

main() {
  printf 'GPU check of the lab, %s, in %s\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$WORK"
  {
    echo "### GPU check, $(date -u +%Y-%m-%d), $(hostname)"
    echo
  } >>"$SUMMARY"
  check_nvidia_smi
  check_docker
  if python_env; then
    find_data
    if [ "$GPUS" -lt 1 ]; then
      note "CUDA runs: skipped, torch sees no GPU"
    else
      train_runs
      ddp_run
      if [ -n "$DATA" ]; then
        fast_to_94
        airbench_side_by_side
      else
        note "time to 94%: skipped, it needs the real images (no cifar10-train-jpeg.tar.gz found)"
      fi
    fi
  fi
  note "total: $(($(date +%s) - T0))s"
  printf '\n==================== summary (for benchmarks/RESULTS.md) ====================\n'
  cat "$SUMMARY"
  printf '==============================================================================\n'
}

main "$@"
