"""The boot path: what cloud-init carries to start the dependency image's build, the script that does it, and
labctl's wait for it. The script runs for real (bash) against a ``docker`` that records its calls."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
import yaml

from labctl.container import deps_tag
from labctl.files import template
from labctl.keys import generate_ed25519, normalize
from labctl.labhost import LAUNCH, PREWARM_DIR, await_prewarm, read_state
from labctl.machine.base import LocalMachine
from labctl.targets.azure.provision import render_cloud_init
from labctl.ui import PlainReporter
from tests.support.boot_path import boot_env, fake_docker, run_boot_path

BASE = "registry.example:5000/team/pytorch:2.13.0-cuda12.6"


def _doc(base: str = BASE) -> dict[str, object]:
    host = generate_ed25519("h")
    return dict(yaml.safe_load(render_cloud_init(host.private_openssh, normalize(host.public_line), "lab", base)))


def test_cloud_init_carries_the_deps_dockerfile_as_data_and_starts_the_script_with_arguments() -> None:
    doc = _doc()
    files = {f["path"]: f for f in doc["write_files"]}  # type: ignore[attr-defined]
    assert files[f"{PREWARM_DIR}/deps/Dockerfile"]["content"] == template("Dockerfile.deps").read_text()
    assert files[f"{PREWARM_DIR}/labctl-prewarm.sh"]["content"] == template("labctl-prewarm.sh").read_text()
    assert files[f"{PREWARM_DIR}/prewarm.state"]["content"].strip() == "pending"
    [command] = doc["runcmd"]  # type: ignore[misc]
    assert command == ["sh", "-c", LAUNCH, "labctl-prewarm", f"{PREWARM_DIR}/labctl-prewarm.sh", BASE, deps_tag(BASE)]
    assert all(isinstance(arg, str) for arg in command)


def test_deps_tag_is_a_hash_of_the_dockerfile_content_and_the_base() -> None:
    content = template("Dockerfile.deps").read_bytes()
    expected = hashlib.sha256(content + b"|base=" + BASE.encode()).hexdigest()[:16]
    assert deps_tag(BASE) == f"labctl-lab-deps:{expected}"
    assert deps_tag("pytorch/pytorch:other") != deps_tag(BASE)


def test_custom_data_stays_well_under_azures_64_kb() -> None:
    host = generate_ed25519("h")
    text = render_cloud_init(host.private_openssh, normalize(host.public_line), "lab", BASE)
    assert len(base64.b64encode(text.encode())) < 16 * 1024


def test_the_script_pulls_builds_and_says_done(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    fake_docker(tmp_path / "bin", calls)
    root = tmp_path / "vm"
    assert run_boot_path(_doc(), root, boot_env(root, tmp_path / "bin"), wait=120) == "done"
    recorded = [line.split("\t") for line in calls.read_text().splitlines()]
    assert ["pull", BASE] in recorded
    assert ["build", "--build-arg", f"BASE_IMAGE={BASE}", "-t", deps_tag(BASE), str(root / "deps")] in recorded
    assert "prewarm: done" in (root / "prewarm.log").read_text()


def test_the_script_retries_a_build_that_docker_broke_off(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    fake_docker(tmp_path / "bin", calls, failing_builds=1)  # as when the NVIDIA setup restarts Docker
    root = tmp_path / "vm"
    assert run_boot_path(_doc(), root, boot_env(root, tmp_path / "bin"), wait=120) == "done"
    recorded = [line.split("\t") for line in calls.read_text().splitlines()]
    assert [call[0] for call in recorded].count("build") == 2 and ["sleep", "5"] in recorded  # a pause between
    assert "attempt 1 of 5 failed" in (root / "prewarm.log").read_text()


def test_the_script_gives_up_and_says_failed(tmp_path: Path) -> None:
    fake_docker(tmp_path / "bin", tmp_path / "calls", failing_builds=99)
    root = tmp_path / "vm"
    env = boot_env(root, tmp_path / "bin", LABCTL_PREWARM_TRIES="1")
    assert run_boot_path(_doc(), root, env, wait=120) == "failed"


@pytest.fixture
def prewarm_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LABCTL_PREWARM_DIR", str(tmp_path))
    monkeypatch.setenv("LABCTL_PREWARM_POLL", "0.05")
    return tmp_path


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def test_state_reads_absent_pending_running_stale(prewarm_dir: Path) -> None:
    machine, state = LocalMachine(), prewarm_dir / "prewarm.state"
    assert read_state(machine) == ("absent", "")
    state.write_text("pending\n")
    assert read_state(machine)[0] == "pending"
    state.write_text(f"running {os.getpid()} {_boot_id()}\n")
    (prewarm_dir / "prewarm.log").write_text("prewarm: pulling x\n")
    assert read_state(machine) == ("running", "prewarm: pulling x")
    state.write_text(f"running {os.getpid()} another-boot\n")
    assert read_state(machine)[0] == "stale"  # the machine rebooted since
    state.write_text(f"running 999999999 {_boot_id()}\n")
    assert read_state(machine)[0] == "stale"  # the script is gone


def test_labctl_waits_for_a_running_prewarm_and_shows_its_progress(prewarm_dir: Path) -> None:
    import io

    (prewarm_dir / "prewarm.state").write_text(f"running {os.getpid()} {_boot_id()}\n")
    (prewarm_dir / "prewarm.log").write_text("prewarm: pulling base\n")

    def finish() -> None:
        time.sleep(0.5)
        (prewarm_dir / "prewarm.log").write_text("prewarm: building deps\n")
        time.sleep(0.5)
        (prewarm_dir / "prewarm.state").write_text("done\n")

    worker = threading.Thread(target=finish)
    worker.start()
    out = io.StringIO()
    started = time.monotonic()
    assert await_prewarm(LocalMachine(), PlainReporter(out)) == "done"
    worker.join()
    assert time.monotonic() - started >= 0.9
    assert "pulling base" in out.getvalue() and "building deps" in out.getvalue()


def test_labctl_does_not_wait_for_a_failed_or_absent_prewarm(prewarm_dir: Path) -> None:
    import io

    assert await_prewarm(LocalMachine(), PlainReporter(io.StringIO())) == "absent"
    (prewarm_dir / "prewarm.state").write_text("failed\n")
    assert await_prewarm(LocalMachine(), PlainReporter(io.StringIO())) == "failed"


def test_labctl_stops_waiting_at_its_deadline(prewarm_dir: Path) -> None:
    import io

    (prewarm_dir / "prewarm.state").write_text(f"running {os.getpid()} {_boot_id()}\n")
    out = io.StringIO()
    assert await_prewarm(LocalMachine(), PlainReporter(out), timeout=0.3) == "timeout"
    assert "labctl builds it" in out.getvalue()
