#!/usr/bin/env bash
# Make Docker Engine present and running on this machine, usable by the login user.
# Idempotent: a second run changes nothing and only reports what it found.
# Usage: bootstrap-docker.sh [LOGIN_USER]   (run as the login user with passwordless sudo, or as root)
set -euo pipefail

login_user="${1:-${SUDO_USER:-$(id -un)}}"
# Seconds to wait for a daemon that was just started.
LABCTL_DOCKER_START_WAIT="${LABCTL_DOCKER_START_WAIT:-30}"

can_root() { [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; }

# Only the steps that change something need root; a host where Docker is ready needs no sudo at all.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif sudo -n true 2>/dev/null; then
    sudo -n "$@"
  else
    fail "'$*' needs root, and user $(id -un) has no passwordless sudo; run it once by hand, then labctl up again"
  fi
}

say() { printf 'docker: %s\n' "$*"; }

fail() {
  printf 'docker: ERROR: %s\n' "$*" >&2
  exit 1
}

install_docker() {
  if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q >/dev/null
    # The distribution's engine first; Docker's own repository when the distribution has none.
    if apt-cache show docker.io >/dev/null 2>&1; then
      as_root apt-get install -y -q docker.io >/dev/null
      say "installed (docker.io from the distribution)"
    else
      as_root apt-get install -y -q ca-certificates curl >/dev/null
      # shellcheck disable=SC1091
      . /etc/os-release
      as_root install -m 0755 -d /etc/apt/keyrings
      curl -fsSL "https://download.docker.com/linux/${ID}/gpg" | as_root tee /etc/apt/keyrings/docker.asc >/dev/null
      echo "deb [signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/${ID} ${VERSION_CODENAME} stable" |
        as_root tee /etc/apt/sources.list.d/docker.list >/dev/null
      as_root apt-get update -q >/dev/null
      as_root apt-get install -y -q docker-ce docker-ce-cli containerd.io >/dev/null
      say "installed (docker-ce from Docker's repository)"
    fi
  elif command -v dnf >/dev/null 2>&1; then
    as_root dnf install -y -q moby-engine >/dev/null 2>&1 || as_root dnf install -y -q docker >/dev/null
    say "installed (from the distribution)"
  else
    fail "Docker is missing and this system has neither apt-get nor dnf; install Docker Engine by hand"
  fi
}

if command -v docker >/dev/null 2>&1; then
  say "present ($(docker --version 2>/dev/null | sed 's/^Docker version //'))"
else
  install_docker
fi

if [ "$login_user" = root ]; then
  say "user root can use it"
elif id -nG "$login_user" | tr ' ' '\n' | grep -qx docker; then
  say "user $login_user can use it"
else
  as_root groupadd -f docker
  as_root usermod -aG docker "$login_user"
  # The group applies to new logins; labctl reconnects when it sees this line.
  say "added $login_user to the docker group (new logins)"
fi

daemon_up() { docker info >/dev/null 2>&1 || { can_root && as_root docker info >/dev/null 2>&1; }; }
server_version() {
  docker version --format '{{.Server.Version}}' 2>/dev/null || as_root docker version --format '{{.Server.Version}}'
}

if daemon_up; then
  say "daemon running (engine $(server_version))"
else
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    as_root systemctl enable --now docker >/dev/null 2>&1 || true
  elif command -v service >/dev/null 2>&1; then
    as_root service docker start >/dev/null 2>&1 || true
  fi
  for _ in $(seq 1 "$LABCTL_DOCKER_START_WAIT"); do
    daemon_up && break
    sleep 1
  done
  daemon_up || fail "the Docker daemon does not start; see 'journalctl -u docker'"
  say "daemon started (engine $(server_version))"
fi
