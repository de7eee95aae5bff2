#!/usr/bin/env bash
# The lab on a GPU machine, checked in one go: nothing to type, no network needed, about 5 minutes.
#
#   bash benchmarks/gpu_check.sh            (from the repository root; benchmarks/README.md has the exact call)
#
# 1. nvidia-smi on the machine
# 2. the lab image with --gpus all and nvidia-smi inside it (when Docker and a labctl-lab image are here)
# 3. the tutorial network and the fast preset on CUDA, short runs of `python -m cifarlab train`
# 4. a 2-process DDP run with NCCL through labctl.distributed's torchrun argv (when there are 2+ GPUs)
# 5. airbench94 and the fast preset timed to one target accuracy on one clock (benchmarks/gpu_race.py)
#
# Settings (environment):
#   GPU_CHECK_DATA     the CIFAR-10 JPEG archive or its folder (default: data/cifar10-train-jpeg.tar.gz at the
#                      repository root); without it the short runs use synthetic images and step 5 is skipped
#   GPU_CHECK_WHEELS   a folder of wheels for what the machine's Python lacks, airbench (default: .whl/); they are
#                      installed with pip --no-index --no-deps --target into a folder put on PYTHONPATH, so the
#                      machine's own torch stays the one in use
#   GPU_CHECK_OUT      where the logs and summary.md go (default: a new folder under $TMPDIR); only small files
#                      are written there: run directories, checkpoints and airbench's data files go to a scratch
#                      folder that is removed at the end
#   GPU_CHECK_BUDGET   seconds for every step together (default 300)
#   GPU_CHECK_REHEARSE=1  every step on the CPU, a few training steps each (two CPU processes stand in for two
#                      GPUs, gloo for NCCL; airbench, which trains on CUDA only, is imported and its loader read),
#                      to check the script itself on a machine without a GPU; Docker is left alone
#   PYTHON             the Python with torch (default: python3)
# Every step fails soft: it says what it could not do and why, and the summary at the end (Markdown, for
# benchmarks/RESULTS.md) lists every step with its result.
set -u

usage_error() {
  printf 'gpu_check: %s\n' "$*" >&2
  exit 2
}
if [ -d "${GPU_CHECK_DATA:-}" ]; then GPU_CHECK_DATA="$GPU_CHECK_DATA/cifar10-train-jpeg.tar.gz"; fi
if [ -n "${GPU_CHECK_DATA:-}" ]; then
  [ -f "$GPU_CHECK_DATA" ] || usage_error "GPU_CHECK_DATA=$GPU_CHECK_DATA is not a file. Point it at" \
    "cifar10-train-jpeg.tar.gz or its folder, or leave it unset to use data/cifar10-train-jpeg.tar.gz at the" \
    "repository root."
  GPU_CHECK_DATA=$(realpath "$GPU_CHECK_DATA")
fi
if [ -n "${GPU_CHECK_WHEELS:-}" ]; then
  [ -d "$GPU_CHECK_WHEELS" ] || usage_error "GPU_CHECK_WHEELS=$GPU_CHECK_WHEELS is not a folder. Build the wheels" \
    "into one first (pip wheel --no-deps airbench==0.1.8 -w .whl), or leave it unset to use .whl/ at the" \
    "repository root."
  GPU_CHECK_WHEELS=$(realpath "$GPU_CHECK_WHEELS")
fi
BUDGET=${GPU_CHECK_BUDGET:-300}
case $BUDGET in
  '' | *[!0-9]*) usage_error "GPU_CHECK_BUDGET=$BUDGET is not a whole number of seconds; 300 fits the check." ;;
esac

cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
DATA_FILE=${GPU_CHECK_DATA:-$ROOT/data/cifar10-train-jpeg.tar.gz}
WHEELS=${GPU_CHECK_WHEELS:-$ROOT/.whl}
REHEARSE=${GPU_CHECK_REHEARSE:-0}
PY=${PYTHON:-$(command -v python3 || command -v python || echo python3)}

OUT=${GPU_CHECK_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")}
mkdir -p "$OUT" || exit 1
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-scratch.XXXXXX") || exit 1
trap 'rm -rf "$SCRATCH"' EXIT
SUMMARY="$OUT/summary.md"
: >"$SUMMARY"
export PYTHONPATH="$ROOT:$ROOT/lab${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export CIFARLAB_CACHE_DIR="$SCRATCH/cache" # the decoded images' cache: never beside the data, which travels
DATA=""
GPUS=0
DEVICE=cuda
HOLDOUT=0.1 # of the archive's 50,000 images, held out for scoring (seed 0)
SHORT=()
if [ "$REHEARSE" = 1 ]; then
  DEVICE=cpu
  HOLDOUT=0.02 # 1,000 images to score, not 5,000
  SHORT=(--max-steps 3 --batch-size 64)
  export OMP_NUM_THREADS=1 # it checks the script, not the speed: one thread each, no contention
fi
T0=$(date +%s)

say() { printf '\n== [%ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
note() { printf '%s\n' "- $*" >>"$SUMMARY"; printf '   -> %s\n' "$*"; }
# run_step SECONDS NAME CMD...: runs with a time limit (cut to what is left of the whole check's budget), its
# output to the console and to $OUT/NAME.log
run_step() {
  local limit=$1 name=$2 left
  shift 2
  left=$((BUDGET - $(date +%s) + T0))
  if [ "$left" -lt 20 ]; then
    echo "   (skipped: the check's ${BUDGET}s budget is spent)" | tee "$OUT/$name.log"
    return 124
  fi
  [ "$limit" -le "$left" ] || limit=$left
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local code=${PIPESTATUS[0]}
  if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then
    echo "   (stopped after ${limit}s)"
  fi
  return "$code"
}

check_nvidia_smi() {
  say "nvidia-smi"
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    note "nvidia-smi: not installed on this machine"
    return
  fi
  if run_step 30 nvidia-smi nvidia-smi; then
    local names
    names=$(timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sort | uniq -c)
    note "nvidia-smi: $(echo "$names" | sed 's/^ *//' | paste -sd ';' -)"
  else
    note "nvidia-smi: failed (see $OUT/nvidia-smi.log)"
  fi
}

check_docker() {
  say "the lab image with --gpus all"
  if [ "$REHEARSE" = 1 ]; then
    note "docker --gpus all: not rehearsed (the rehearsal leaves Docker alone)"
    return
  fi
  if ! command -v docker >/dev/null 2>&1; then
    note "docker --gpus all: skipped, docker is not installed"
    return
  fi
  if ! timeout 15 docker info >/dev/null 2>&1; then
    note "docker --gpus all: skipped, no Docker engine answers (or no permission to its socket)"
    return
  fi
  local image
  image=$(timeout 15 docker image ls --format '{{.Repository}}:{{.Tag}}' 'labctl-lab' 2>/dev/null | head -n 1)
  if [ -z "$image" ]; then
    note "docker --gpus all: skipped, no labctl-lab image here (labctl up builds it; no registry to pull from)"
    return
  fi
  if run_step 60 docker-gpus docker run --rm --gpus all "$image" nvidia-smi --query-gpu=name --format=csv,noheader; then
    note "docker --gpus all ($image): $(grep -c . "$OUT/docker-gpus.log") GPU(s) seen inside the lab container"
  else
    note "docker --gpus all ($image): failed; is the NVIDIA container toolkit installed? (see $OUT/docker-gpus.log)"
  fi
}

python_env() {
  say "python, torch and the wheels"
  if ! command -v "$PY" >/dev/null 2>&1; then
    note "python: not found; every training step is skipped"
    return 1
  fi
  local info version cuda probe="import torch; print(torch.__version__, torch.version.cuda, torch.cuda.device_count())"
  if ! info=$(timeout 120 "$PY" -c "$probe" 2>"$OUT/torch.log"); then
    note "torch: does not import with $PY ($(tail -n 1 "$OUT/torch.log")); every training step is skipped"
    return 1
  fi
  read -r version cuda GPUS <<<"${info##*$'\n'}"
  note "torch $version (CUDA $cuda) in $PY: $GPUS GPU(s)"
  install_wheels
  if [ "$REHEARSE" = 1 ]; then
    GPUS=2
    note "rehearsal: every run on the CPU, a few steps each; the numbers below mean nothing"
  fi
}

install_wheels() {
  local wheels=("$WHEELS"/*.whl)
  if [ ! -f "${wheels[0]}" ]; then
    note "wheels: none in $WHEELS; airbench runs only if $PY has it already"
    return
  fi
  if run_step 120 wheels "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps \
    --target "$SCRATCH/site" "${wheels[@]}"; then
    export PYTHONPATH="$PYTHONPATH:$SCRATCH/site"
    note "wheels: $(cd "$WHEELS" && echo ./*.whl) installed from $WHEELS (no network) into a folder on PYTHONPATH"
  else
    note "wheels: pip could not install them (see $OUT/wheels.log)"
  fi
}

find_data() {
  if [ -f "$DATA_FILE" ]; then
    DATA=$DATA_FILE
    note "data: $DATA (held out: $HOLDOUT, seed 0)"
  else
    note "data: no $DATA_FILE (set GPU_CHECK_DATA); synthetic images for the short runs, no race"
  fi
}

# result NAME RUN_DIR: one summary line from a run's metrics.json
result() {
  timeout 60 "$PY" - "$1" "$2/metrics.json" <<'EOF' || note "$1: no metrics.json (see the log above)"
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
  say "short runs through python -m cifarlab train"
  local data=${DATA:-synthetic:20000} name
  for name in tutorial fast; do
    local args=(--data "$data" --holdout "$HOLDOUT" --model "$name" --device "$DEVICE" --out "$SCRATCH/runs/$name"
      --log-every 5 ${SHORT[@]+"${SHORT[@]}"})
    if [ "$name" = tutorial ]; then args+=(--recipe fast --epochs 1); else args+=(--epochs 2); fi
    if run_step 90 "train-$name" "$PY" -m cifarlab train "${args[@]}"; then
      result "$name on $DEVICE" "$SCRATCH/runs/$name" | tee -a "$SUMMARY"
    else
      note "$name on $DEVICE: did not finish: failed, timed out or no time left (see $OUT/train-$name.log)"
    fi
  done
}

ddp_run() {
  say "2-process DDP with NCCL (torchrun)"
  if [ "$GPUS" -lt 2 ]; then
    note "DDP/NCCL: skipped, $GPUS GPU(s) here and it needs 2"
    return
  fi
  local out="$SCRATCH/runs/ddp"
  if run_step 90 ddp "$PY" - "${DATA:-synthetic:20000}" "$out" "$GPUS" "$DEVICE" --holdout "$HOLDOUT" \
    ${SHORT[@]+"${SHORT[@]}"} <<'EOF'; then
import os, subprocess, sys
from labctl.distributed import launch_argv, launch_env, merge_rank_output, plan_launch
data, out, gpus, device, short = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:]
[plan] = plan_launch(run_id="gpu-check", gpus_per_node=[gpus], addresses=["127.0.0.1"], gpus_requested=2)
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
    note "DDP/NCCL: did not finish: failed, timed out or no time left (see $OUT/ddp.log)"
  fi
}

race() {
  say "airbench94 and the fast preset: time to one target accuracy"
  if [ -z "$DATA" ]; then
    note "race: skipped, it needs the real images (GPU_CHECK_DATA)"
    return
  fi
  local left=$((BUDGET - $(date +%s) + T0)) ladder=()
  local schedules=$((left > 90 ? left - 60 : 30))
  if [ "$REHEARSE" = 1 ]; then ladder=(--epochs "1,2" --max-steps 3 --warmup-steps 2); fi
  # the cifarlab schedules get what is left once the data, airbench and the warm-up are done (about a minute)
  if ! run_step "$left" race "$PY" benchmarks/gpu_race.py --data "$DATA" --holdout "$HOLDOUT" --device "$DEVICE" \
    --scratch "$SCRATCH/race" --summary "$SUMMARY" --budget "$schedules" ${ladder[@]+"${ladder[@]}"}; then
    note "race: did not finish: failed, timed out or no time left (see $OUT/race.log)"
  fi
}

# nothing over 16 MiB where the results come back: a log that grew so far keeps its last MiB
trim_out() {
  local big
  while IFS= read -r big; do
    tail -c 1048576 "$big" >"$big.tail" && mv "$big.tail" "$big"
    note "$big was over 16 MiB: its last MiB is kept"
  done < <(find "$OUT" -type f -size +16M)
}

main() {
  printf 'GPU check of the lab, %s: results in %s\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$OUT"
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
      race
    fi
  fi
  note "total: $(($(date +%s) - T0))s"
  trim_out
  printf '\n==================== summary (for benchmarks/RESULTS.md) ====================\n'
  cat "$SUMMARY"
  printf '==============================================================================\n'
}

main "$@"
