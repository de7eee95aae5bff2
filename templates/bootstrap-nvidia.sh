#!/usr/bin/env bash
# Make a GPU machine ready for GPU containers: the NVIDIA driver, the NVIDIA Container Toolkit configured
# for Docker, proven by a CUDA check inside a container. Idempotent.
# Usage: bootstrap-nvidia.sh CHECK_IMAGE   (any image: the NVIDIA runtime mounts nvidia-smi into it; labctl
#        passes the lab's base image, which cloud-init has already started pulling)
set -euo pipefail

check_image="${1:-}"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  else
    sudo -n "$@"
  fi
}

say() { printf 'nvidia: %s\n' "$*"; }

fail() {
  printf 'nvidia: ERROR: %s\n' "$*" >&2
  exit "${2:-1}"
}

# 0. A VM that has just booted is still running cloud-init, and the image's first apt run (unattended
#    upgrades) holds the package lock for minutes: wait for cloud-init, and let apt wait for its lock.
if command -v cloud-init >/dev/null 2>&1; then
  say "waiting for cloud-init to finish"
  status="$(cloud-init status --wait 2>&1 | tail -n 1)" || true
  say "cloud-init ${status:-finished}"
fi
apt_get() { as_root apt-get -o DPkg::Lock::Timeout=600 "$@"; }

# 1. The driver. labctl does not install one: a driver install needs a reboot and the right kernel headers,
#    and the Data Science VM image ships a working driver.
if ! command -v nvidia-smi >/dev/null 2>&1; then
  if ls /dev/nvidia0 >/dev/null 2>&1 || { command -v lspci >/dev/null 2>&1 && lspci | grep -qi nvidia; }; then
    fail "this machine has an NVIDIA GPU but no NVIDIA driver (nvidia-smi is missing); use a GPU image that ships the driver (the Azure Data Science VM does) or install it (ubuntu-drivers install) and reboot" 3
  fi
  fail "no NVIDIA driver (nvidia-smi is missing) and no NVIDIA GPU visible; this size has no GPU, or the driver is not installed" 3
fi
if ! driver="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1)"; then
  fail "nvidia-smi is installed but does not reach the GPU ($driver); the driver may need a reboot to load" 3
fi
say "driver present ($(printf '%s' "$driver" | head -n 1))"

# 2. The container toolkit.
if command -v nvidia-ctk >/dev/null 2>&1; then
  say "container toolkit present ($(nvidia-ctk --version 2>/dev/null | head -n 1))"
else
  command -v apt-get >/dev/null 2>&1 || fail "the NVIDIA Container Toolkit is missing and only apt-based systems are handled"
  export DEBIAN_FRONTEND=noninteractive
  apt_get update -q >/dev/null
  apt_get install -y -q ca-certificates curl gpg >/dev/null
  curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey |
    as_root gpg --dearmor --yes -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
  curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list |
    sed 's#deb https://#deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://#g' |
    as_root tee /etc/apt/sources.list.d/nvidia-container-toolkit.list >/dev/null
  apt_get update -q >/dev/null
  apt_get install -y -q nvidia-container-toolkit >/dev/null
  say "container toolkit installed"
fi

# 3. Docker knows the nvidia runtime.
if as_root docker info --format '{{json .Runtimes}}' | grep -q '"nvidia"'; then
  say "docker runtime configured"
else
  as_root nvidia-ctk runtime configure --runtime=docker >/dev/null
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    as_root systemctl restart docker
  else
    as_root service docker restart >/dev/null
  fi
  say "docker runtime configured (docker restarted)"
fi

# 4. Proof: a container sees the GPU.
if [ -n "$check_image" ]; then
  if ! seen="$(as_root docker run --rm --gpus all "$check_image" nvidia-smi -L 2>&1)"; then
    fail "a container with --gpus all could not use the GPU: $seen"
  fi
  say "CUDA check in a container passed ($(printf '%s' "$seen" | head -n 1))"
fi
