#!/usr/bin/env bash
# Build the lab's dependency image while the machine boots, so that `labctl up` only builds the thin lab image.
# cloud-init writes this file and Dockerfile.deps, and starts it in the background at first boot (as root).
# Usage: labctl-prewarm.sh BASE_IMAGE DEPS_TAG
#   Waits for Docker, pulls BASE_IMAGE unless present, builds DEPS_TAG from deps/Dockerfile. A failed step (Docker
#   restarted by the NVIDIA runtime setup, a network blip) is retried. Its state, for labctl to read, is the file
#   prewarm.state: "pending" (written by cloud-init), "running PID BOOT_ID", "done" or "failed"; its output is
#   prewarm.log. Both live in LABCTL_PREWARM_DIR (default /var/lib/labctl).
set -uo pipefail

base="$1"
deps="$2"
dir="${LABCTL_PREWARM_DIR:-/var/lib/labctl}"
tries="${LABCTL_PREWARM_TRIES:-5}"
docker_wait="${LABCTL_PREWARM_DOCKER_WAIT:-1800}"  # seconds; labctl's bootstrap may be what installs Docker

say() { printf 'prewarm: %s\n' "$*"; }

set_state() {
  printf '%s\n' "$*" >"$dir/prewarm.state.tmp" && mv -f "$dir/prewarm.state.tmp" "$dir/prewarm.state"
}

docker_ready() {
  local waited=0
  until docker info >/dev/null 2>&1; do
    [ "$waited" -ge "$docker_wait" ] && return 1
    sleep 2
    waited=$((waited + 2))
  done
}

attempt() {
  docker_ready || { say "Docker did not answer within ${docker_wait}s"; return 1; }
  if docker image inspect "$deps" >/dev/null 2>&1; then
    say "dependency image $deps is present"
    return 0
  fi
  if docker image inspect "$base" >/dev/null 2>&1; then
    say "base image $base is present"
  else
    say "pulling $base"
    docker pull "$base" || return 1
  fi
  say "building $deps"
  docker build --build-arg "BASE_IMAGE=$base" -t "$deps" "$dir/deps" || return 1
}

mkdir -p "$dir"
exec >>"$dir/prewarm.log" 2>&1
set_state running "$$" "$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown)"
for try in $(seq 1 "$tries"); do
  if attempt; then
    say "done"  # logged first: whoever reads the state done finds the whole log
    set_state "done"
    exit 0
  fi
  say "attempt $try of $tries failed"
  [ "$try" -lt "$tries" ] && sleep $((try * 5))
done
say "failed; labctl builds the image itself"
set_state "failed"
exit 1
