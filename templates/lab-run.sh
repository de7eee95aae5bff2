#!/bin/sh
# One lab run inside the lab container, started detached by `labctl run-lab` so that a dropped
# connection loses nothing. Everything the run leaves is in its own directory:
#   train.log     everything the run printed (what `labctl logs` shows)
#   pid           the process id while it runs
#   SHA256SUMS    checksums of every result file, computed here so the copy fetched later can be verified
#   exit_code     written last and atomically: its presence means the run is over
# Usage: sh lab-run.sh RUN_DIR LAB_CODE_DIR ARGV...
#   ARGV is the command itself, never a shell string: `python -m cifarlab train ...` for one process, or
#   `python -m torch.distributed.run ... -m cifarlab train ...` for one process per GPU or node, whose lines
#   carry each rank's prefix.
set -u
run_dir=$1
lab_code=$2
shift 2
cd "$run_dir" || exit 1

PYTHONPATH="$lab_code${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 "$@" >> train.log 2>&1 &
child=$!
# Pass a stop request on to the trainer (torchrun passes it on to every rank), which saves its checkpoint and
# records the run as interrupted. Only then the pid file, by which a stop finds the run: no stop comes too early.
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
echo "$$" > pid
wait "$child"
code=$?
# A trapped signal interrupts the first wait; wait again for the trainer to finish cleanly.
if kill -0 "$child" 2>/dev/null; then
  wait "$child"
  code=$?
fi

find . -type f ! -name 'SHA256SUMS*' ! -name 'exit_code*' ! -name pid | sed 's|^\./||' | LC_ALL=C sort \
  | while IFS= read -r f; do sha256sum "$f"; done > SHA256SUMS.tmp
mv SHA256SUMS.tmp SHA256SUMS
echo "$code" > exit_code.tmp
mv exit_code.tmp exit_code
rm -f pid
exit "$code"
