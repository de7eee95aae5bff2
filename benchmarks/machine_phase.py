"""How long `labctl up` takes from the command to a Jupyter URL on a new Azure VM, with the machine phase included.

The whole `up` workflow runs for real: AzureTarget against the fake ARM (real azure-mgmt clients, typical
latencies scaled as in benchmarks/provision.py), then the machine layer over SSH to a simulated VM. The VM is
this computer: once created it "boots" for the scaled boot time, then a real sshd answers with the keys from
its cloud-init. The slow image work is simulated with controlled delays, through labctl's real waiting code:

  * pulling the base image: a ``docker`` on the VM's PATH sleeps the scaled pull time, then tags the local test
    base under the requested name (two pulls of one image share one transfer, as Docker's do);
  * building the dependency image: that ``docker`` sleeps the scaled build time, then tags a dependency image
    built before the clock; labctl's own build of it (when no boot path did it) goes through the same delays;
  * the thin lab image and Jupyter are built and started for real, at this computer's speed.

Contenders (one run each):
  sequential  the VM boots with nothing started: labctl pulls and builds everything after SSH answers;
  pre-pull    the boot starts the base pull (what cloud-init did before the boot path): labctl then builds;
  boot path   cloud-init's document is played: the real prewarm script pulls and builds the dependency image
              from boot, and labctl waits for it, then builds only the thin image.

Modelled Azure time: the VM-side latencies on the dependency chain (provisioning chain, boot, pull, dependency
build) at their real values, plus what labctl itself added here in real seconds (time to the thin build, less
the scaled chain: SSH retries, bootstrap scripts, polling), plus the thin build and Jupyter start at their
typical Azure values.

Usage: python benchmarks/machine_phase.py [--scale 0.1]   (from the repository root, as root, with Docker and sshd;
the test base image is built first if missing: python -m tests.support.docker_images)
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.provision import configure, lower_bound
from labctl.ui import PlainReporter
from tests.fakearm import FakeArm, VmBoot
from tests.fakearm.fixtures import fast_env

# Typical seconds on Azure (a GPU or CPU DSVM in a US region, the default pytorch base image).
MACHINE = {"boot": 40.0, "pull": 180.0, "deps": 60.0, "thin": 5.0, "jupyter": 10.0}
MODES = ("sequential", "pre-pull", "boot path")

SHIM = r"""#!/bin/sh
# docker on the simulated VM: a pull and a dependency build take their scaled time, the rest is the real engine.
case "$1" in
  pull)
    exec flock "$BENCH_LOCK" sh -c '"$0" image inspect "$1" >/dev/null 2>&1 || { sleep "$2" && "$0" tag "$3" "$1"; }' \
      "$BENCH_DOCKER" "$2" "$BENCH_PULL_S" "$BENCH_TEST_BASE"
    ;;
  build)
    tag=""; prev=""
    for arg in "$@"; do [ "$prev" = "-t" ] && tag="$arg"; prev="$arg"; done
    sleep "$BENCH_DEPS_S" && exec "$BENCH_DOCKER" tag "$BENCH_PREBUILT" "$tag"
    ;;
  *) exec "$BENCH_DOCKER" "$@" ;;
esac
"""


class Clock(PlainReporter):
    """A reporter that notes when each step starts and ends, seconds from its creation."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.t0 = time.perf_counter()
        self.marks: list[tuple[float, str, str]] = []

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        self.marks.append((time.perf_counter() - self.t0, "start", label))
        with super().step(label):
            yield
        self.marks.append((time.perf_counter() - self.t0, "end", label))

    def first(self, edge: str, prefix: str) -> float:
        return next(t for t, e, label in self.marks if e == edge and label.startswith(prefix))


def prebuilt_deps(test_base: str) -> str:
    """A real dependency image (pip installs included), built before any clock starts."""
    import docker

    from labctl.container import ensure_deps

    os.environ["LABCTL_BASE_IMAGE"] = test_base
    return ensure_deps(docker.from_env(timeout=900), PlainReporter(sys.stderr))


def boot_vms(fake: FakeArm, work: Path, mode: str, boot_s: float, env: dict[str, str], shim: Path) -> list[Any]:
    """Each VM the fake ARM creates boots for ``boot_s``, then answers SSH and runs what its mode starts at boot."""
    import yaml

    from tests.support.boot_path import run_boot_path
    from tests.support.sshd import KeyPair, make_server

    servers: list[Any] = []

    def boot(vm: VmBoot) -> str:
        def later() -> None:
            time.sleep(boot_s)
            vm_dir = work / f"vm-{len(servers)}"
            vm_dir.mkdir(parents=True)
            (vm_dir / "host").write_text(vm.host_private_key or "")
            (vm_dir / "host").chmod(0o600)
            host_key = KeyPair(vm_dir / "host", vm.host_public_key or "")
            port = int(os.environ["LABCTL_SSH_PORT"])
            server, _ = make_server(vm_dir, port=port, host_key=host_key, authorized_keys=vm.authorized_keys)
            servers.append(server.start())
            doc = yaml.safe_load(vm.custom_data)
            if mode == "boot path":
                run_boot_path(doc, Path(env["LABCTL_PREWARM_DIR"]), env)
            elif mode == "pre-pull":
                base = doc["runcmd"][0][-2]
                subprocess.Popen([str(shim), "pull", base], env=env, start_new_session=True)

        threading.Thread(target=later, daemon=True).start()
        return "127.0.0.1"

    fake.on_vm_created = boot
    return servers


def run_up(name: str) -> Clock:
    from labctl.spec import LabSpec
    from labctl.workflows.lifecycle import up

    stream = sys.stdout if os.environ.get("BENCH_VERBOSE") else io.StringIO()
    clock = Clock(stream)
    up(LabSpec(name=name, allow_ip="127.0.0.1/32"), clock)
    clock.marks.append((time.perf_counter() - clock.t0, "end", "up"))
    return clock


def one(mode: str, scale: float, root: Path, prebuilt: str, test_base: str) -> dict[str, float]:
    """One `up` of a new lab in ``mode``; seconds at the scale, and the parts needed for the Azure model."""
    import pwd

    import docker

    from labctl import container
    from tests.support.sshd import free_port

    work = root / mode.replace(" ", "-")
    work.mkdir()
    fake = FakeArm(work / "arm").start()
    client = docker.from_env(timeout=600)
    lat = configure(fake, scale)
    base = f"labctl-bench/base:{mode.replace(' ', '-')}-{secrets.token_hex(3)}"
    shim = work / "bin" / "docker"
    shim.parent.mkdir()
    shim.write_text(SHIM)
    shim.chmod(0o755)
    env = dict(os.environ)
    env.update(fast_env(fake, work / "home"))
    env.update(
        LABCTL_STATE_DIR=str(work / "state"),
        LABCTL_POLL_INTERVAL="0.02",
        AZURE_SUBSCRIPTION_ID=fake.subscription,
        LABCTL_SSH_PORT=str(free_port()),
        LABCTL_ADMIN_USER=pwd.getpwuid(os.geteuid()).pw_name,
        LABCTL_BASE_IMAGE=base,
        LABCTL_PREWARM_DIR=str(work / "var-lib-labctl"),
        LABCTL_PREWARM_POLL=str(1.0 * scale),
        BENCH_DOCKER=shutil.which("docker") or "docker",
        BENCH_LOCK=str(work / "pull.lock"),
        BENCH_PULL_S=str(MACHINE["pull"] * scale),
        BENCH_DEPS_S=str(MACHINE["deps"] * scale),
        BENCH_TEST_BASE=test_base,
        BENCH_PREBUILT=prebuilt,
    )
    (work / "home").mkdir()
    vm_env = {**env, "PATH": f"{shim.parent}:{env['PATH']}"}
    os.environ.clear()
    os.environ.update(env)
    servers = boot_vms(fake, work, mode, MACHINE["boot"] * scale, vm_env, shim)
    name = f"bench{secrets.token_hex(2)}"
    try:
        clock = run_up(name)
    finally:
        container.remove_lab(client, name)
        for ref in (container.build_context()[1], container.deps_tag(base), base):
            if container.has_image(client, ref):
                client.images.remove(ref)
        for server in servers:
            server.stop()
        fake.stop()
    chain = lower_bound(lat) + (MACHINE["boot"] + MACHINE["pull"] + MACHINE["deps"]) * scale
    return {
        "total": clock.first("end", "up"),
        "thin_start": clock.first("start", "Building the lab image"),
        "chain": chain,
        "provision_real": lower_bound(lat) / scale,
    }


def modelled(run: dict[str, float], scale: float) -> float:
    labctl_added = run["thin_start"] - run["chain"]
    return run["chain"] / scale + labctl_added + MACHINE["thin"] + MACHINE["jupyter"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.1, help="fraction of the real latencies (default 0.1)")
    parser.add_argument("--modes", default=",".join(MODES), help="which contenders, comma-separated")
    args = parser.parse_args()
    import docker

    from tests.support.docker_images import ensure_test_base

    test_base = ensure_test_base(docker.from_env(timeout=900))
    prebuilt = prebuilt_deps(test_base)
    saved = dict(os.environ)
    root = Path(tempfile.mkdtemp(prefix="labctl-bench-machine-"))
    runs: dict[str, dict[str, float]] = {}
    for mode in args.modes.split(","):
        from labctl import container

        container._build = _for_run(mode, root)
        runs[mode] = one(mode, args.scale, root, prebuilt, test_base)
        os.environ.clear()
        os.environ.update(saved)
    report(runs, args.scale)


_REAL_BUILD: Any = None


def _for_run(mode: str, root: Path) -> Any:
    """labctl's own dependency build in this run: the run's simulated pull and build (see the module doc)."""
    from labctl import container

    global _REAL_BUILD
    _REAL_BUILD = _REAL_BUILD or container._build
    shim = root / mode.replace(" ", "-") / "bin" / "docker"

    def build(client: Any, ui: Any, context: bytes, tag: str, buildargs: dict[str, str]) -> None:
        if not tag.startswith(container.DEPS_REPO + ":"):
            return _REAL_BUILD(client, ui, context, tag, buildargs)
        env = dict(os.environ)
        subprocess.run([str(shim), "pull", buildargs["BASE_IMAGE"]], env=env, check=True)
        subprocess.run([str(shim), "build", "-t", tag], env=env, check=True)
        return None

    return build


def report(runs: dict[str, dict[str, float]], scale: float) -> None:
    any_run = next(iter(runs.values()))
    provision = any_run["provision_real"]
    dependency_bound = provision + MACHINE["boot"] + MACHINE["pull"] + MACHINE["deps"] + MACHINE["thin"]
    dependency_bound += MACHINE["jupyter"]
    overlap_bound = provision + MACHINE["boot"] + MACHINE["pull"] + MACHINE["jupyter"]
    print(f"scale {scale} of typical Azure latencies; one run each; modelled Azure seconds from `up` to the URL")
    print()
    print("| order | seconds here | modelled on Azure | vs dependency bound | vs create+boot+pull+start |")
    print("|---|---:|---:|---:|---:|")
    print(f"| bound: dependency chain | | {dependency_bound:.0f} | 1.00 | {dependency_bound / overlap_bound:.2f} |")
    print(f"| bound: deps build overlapped | | {overlap_bound:.0f} | | 1.00 |")
    for mode, run in runs.items():
        azure = modelled(run, scale)
        print(
            f"| {mode} | {run['total']:.1f} | {azure:.0f} | {azure / dependency_bound:.2f} | "
            f"{azure / overlap_bound:.2f} |"
        )


if __name__ == "__main__":
    main()
