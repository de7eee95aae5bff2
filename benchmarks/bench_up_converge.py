"""`labctl up` on an SSH host: a first run (image already built) against a second run that only converges.

The second run should do nothing and take seconds: bootstrap finds Docker ready, the image tag exists, the
healthy container is kept. One run each, on a real sshd on 127.0.0.1 whose Docker engine is this computer's.
Needs root, a Docker engine and the lab image built FROM the test base (the integration tests build it).

    python -m benchmarks.bench_up_converge
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from pathlib import Path

import docker
from typer.testing import CliRunner

from labctl.cli import app
from labctl.container import remove_lab
from tests.support.docker_images import ensure_lab_image
from tests.support.sshd import make_server


def main() -> None:
    client = docker.from_env(timeout=600)
    ensure_lab_image(client)  # sets LABCTL_BASE_IMAGE so that `up` finds the image
    runner = CliRunner()
    name = f"b{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(prefix="labctl-bench-") as tmp:
        os.environ["LABCTL_STATE_DIR"] = str(Path(tmp) / "state")
        os.environ["HOME"] = str(Path(tmp) / "home")
        (Path(tmp) / "home" / ".ssh").mkdir(parents=True)
        server, key = make_server(Path(tmp) / "sshd")
        server.start()
        (Path(tmp) / "home" / ".ssh" / "known_hosts").write_text(
            f"[{server.host}]:{server.port} {server.host_key.public}\n"
        )
        args = ["up", "--target", "ssh", "--host", f"{server.user}@{server.host}:{server.port}"]
        args += ["--ssh-key", str(key.private_path), "-n", name]
        try:
            timings = []
            for _ in range(2):
                start = time.perf_counter()
                result = runner.invoke(app, args)
                timings.append(time.perf_counter() - start)
                assert result.exit_code == 0, result.output
        finally:
            remove_lab(client, name)
            server.stop()
    first, second = timings
    print("| run | seconds |")
    print("|---|---:|")
    print(f"| first `up` (image cached, container started) | {first:.1f} |")
    print(f"| second `up` (converge, nothing to do) | {second:.1f} |")
    print(f"| ratio second/first | {second / first:.2f}x |")


if __name__ == "__main__":
    main()
