"""Docker API calls over SSH: labctl's bridge (pinned host key) against the docker SDK's own ssh:// transport.

The SDK's transport is the baseline labctl does not use because it trusts ~/.ssh/known_hosts instead of the
key labctl pinned. This measures what the safer path costs per call, one run, on a real sshd on 127.0.0.1
whose Docker engine is this computer's. Needs root (sshd), a Docker engine and an image with ``true`` in it.

    python -m benchmarks.bench_docker_over_ssh [--calls 30] [--image IMAGE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker

from labctl.machine.ssh import SSHMachine
from tests.support.sshd import make_server


def _timed(label: str, fn: Callable[[], Any], calls: int) -> dict[str, float]:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return {"median_ms": statistics.median(samples) * 1000, "total_s": sum(samples)}


def bench(client: Any, image: str, calls: int) -> dict[str, dict[str, float]]:
    container = client.containers.run(image, ["sleep", "600"], detach=True, labels={"labctl.bench": "1"})
    try:
        return {
            "ping": _timed("ping", client.ping, calls),
            "containers.list": _timed("list", client.containers.list, calls),
            "exec_run(true)": _timed("exec", lambda: container.exec_run(["true"]), max(calls // 3, 5)),
        }
    finally:
        container.remove(force=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--image", default="labctl-test/base:bookworm-torch2.13-vision0.28-v2")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="labctl-bench-") as tmp:
        home = Path(tmp) / "home"
        (home / ".ssh").mkdir(parents=True)
        server, key = make_server(Path(tmp) / "sshd")
        server.start()
        try:
            machine = SSHMachine(server.host, server.port, server.user, key.private_path, server.host_key.public)
            machine.connect()
            ours = bench(machine.docker(), args.image, args.calls)
            machine.close()

            # The baseline reads ~/.ssh: give it a HOME whose known_hosts and config hold the same keys.
            (home / ".ssh" / "known_hosts").write_text(f"[{server.host}]:{server.port} {server.host_key.public}\n")
            (home / ".ssh" / "config").write_text(f"Host {server.host}\n  IdentityFile {key.private_path}\n")
            os.environ["HOME"] = str(home)
            base_url = f"ssh://{server.user}@{server.host}:{server.port}"
            baseline_client = docker.DockerClient(base_url=base_url, use_ssh_client=False, timeout=120)
            baseline = bench(baseline_client, args.image, args.calls)
            baseline_client.close()
        finally:
            server.stop()

    print("| call | labctl bridge (median ms) | docker SDK ssh:// (median ms) | ratio |")
    print("|---|---:|---:|---:|")
    for name, result in ours.items():
        base = baseline[name]["median_ms"]
        print(f"| {name} | {result['median_ms']:.1f} | {base:.1f} | {result['median_ms'] / base:.2f}x |")


if __name__ == "__main__":
    main()
