"""`up --requirements`: the user's packages in a layer of their own over the lab image, installed by the real pip
in it from wheels built here and served on the Docker bridge's gateway (no internet), and found again by its tag."""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labctl.cli import app
from labctl.container import PACKAGES_REPO, container_name, has_image
from labctl.state import StateStore

pytestmark = pytest.mark.integration

runner = CliRunner()


def _wheel(folder: Path, version: str) -> None:
    """A pure-Python wheel of the module ``labtiny``, which knows its version (PEP 427, with its RECORD)."""
    dist = f"labtiny-{version}.dist-info"
    files = {
        "labtiny.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: labtiny\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    digest = {p: base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b"=") for p, t in files.items()}
    record = "".join(f"{p},sha256={digest[p].decode()},{len(t.encode())}\n" for p, t in files.items())
    with zipfile.ZipFile(folder / f"labtiny-{version}-py3-none-any.whl", "w") as wheel:
        for path, text in {**files, f"{dist}/RECORD": record + f"{dist}/RECORD,,\n"}.items():
            wheel.writestr(path, text)


def _bridge_gateway(docker_client: Any, wait: float = 15.0) -> str:
    """An engine that has just started lists its bridge's gateway a moment after it answers."""
    deadline = time.monotonic() + wait
    while True:
        config = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]
        if "Gateway" in config or time.monotonic() > deadline:
            return str(config["Gateway"])
        time.sleep(0.2)


@pytest.fixture
def wheels(docker_client: Any, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder of wheels served over HTTP where a build's container reaches this computer, and the lines of a
    requirements file that make pip look there only."""
    gateway = _bridge_gateway(docker_client)
    folder = tmp_path / "wheels"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer((gateway, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield folder, f"--no-index\n--find-links http://{gateway}:{server.server_port}/\n--trusted-host {gateway}\n"
    finally:
        server.shutdown()
        server.server_close()


def _up(lab: str, *more: str) -> Any:
    return runner.invoke(app, ["up", "--target", "local", "-n", lab, *more])


def test_packages_layer_is_built_found_again_kept_on_failure_and_rebuilt_alone(
    lab_image: str, lab_name: str, docker_client: Any, wheels: tuple[Path, str], tmp_path: Path
) -> None:
    folder, index = wheels
    _wheel(folder, "0.1")
    _wheel(folder, "0.2")
    requirements = tmp_path / "requirements.txt"
    secret = "--extra-index-url http://lab:s3cret-71f4e9@127.0.0.1:9/simple\n"  # ignored by pip: --no-index
    requirements.write_text(index + secret + "labtiny==0.1\n")
    script = tmp_path / "which.py"
    script.write_text("import labtiny\nprint('labtiny', labtiny.VERSION)\n")
    built: set[str] = set()
    plan = _up(lab_name, "--dry-run", "--requirements", str(requirements))
    assert plan.exit_code == 0 and f"packages:       from {requirements}" in plan.output, plan.output
    assert not StateStore().exists(lab_name)
    try:
        first = _up(lab_name, "--requirements", str(requirements))
        assert first.exit_code == 0, first.output
        record = StateStore().load(lab_name)
        built.add(str(record.image))
        assert str(record.image).startswith(f"{PACKAGES_REPO}:") and record.requirements == requirements.read_text()
        _nowhere_in(docker_client, str(record.image), "s3cret-71f4e9")
        ran = runner.invoke(app, ["run", "-n", lab_name, str(script)])
        assert ran.exit_code == 0 and "labtiny 0.1" in ran.output, ran.output
        box = docker_client.containers.get(container_name(lab_name))

        # Without the file: the recorded requirements find the same layer, and the container stays.
        requirements.unlink()
        again = _up(lab_name)
        assert again.exit_code == 0 and "Your packages are installed already" in again.output, again.output
        assert docker_client.containers.get(container_name(lab_name)).id == box.id
        assert StateStore().load(lab_name).image == record.image

        # A package pip cannot find is named, and the lab keeps its image, container and requirements.
        requirements.write_text(index + "labtiny==0.1\nlabnothere==1.0\n")
        failed = _up(lab_name, "--requirements", str(requirements))
        assert failed.exit_code == 1, failed.output
        error = failed.output[failed.output.index("Error: ") :]
        assert "ERROR: No matching distribution found for labnothere==1.0" in error, failed.output
        assert "keeps its image and container" in error and "Traceback" not in error and "\x1b" not in error
        assert docker_client.containers.get(container_name(lab_name)).id == box.id
        kept = StateStore().load(lab_name)
        assert (kept.image, kept.requirements, kept.status) == (record.image, record.requirements, "ready")

        # A changed file: only the packages' layer is built again, over the same lab image.
        requirements.write_text(index + "labtiny==0.2\n")
        changed = _up(lab_name, "--requirements", str(requirements))
        assert changed.exit_code == 0, changed.output
        assert f"Lab image {lab_image} is already built" in changed.output
        newer = StateStore().load(lab_name).image
        built.add(str(newer))
        assert newer != record.image and str(newer).startswith(f"{PACKAGES_REPO}:")
        ran = runner.invoke(app, ["run", "-n", lab_name, str(script)])
        assert ran.exit_code == 0 and "labtiny 0.2" in ran.output, ran.output

        # An empty file: no packages, the lab image itself again.
        requirements.write_text("")
        plain = _up(lab_name, "--requirements", str(requirements))
        assert plain.exit_code == 0, plain.output
        assert (StateStore().load(lab_name).image, StateStore().load(lab_name).requirements) == (lab_image, None)

        # down removes the packages layers the lab made, those it no longer runs too, and keeps the lab image.
        gone = runner.invoke(app, ["down", "-n", lab_name, "--yes", "--no-save"])
        assert gone.exit_code == 0, gone.output
        assert [tag for tag in sorted(built) if has_image(docker_client, tag)] == [], gone.output
        assert has_image(docker_client, lab_image)
    finally:
        for tag in built:
            if has_image(docker_client, tag):
                docker_client.images.remove(tag, force=True)


def _nowhere_in(client: Any, image: str, text: str) -> None:
    """Neither the image's history nor any file of its filesystem holds ``text``."""
    assert text not in json.dumps(client.api.history(image))
    search = f"grep -rlsF {text} / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev; echo searched"
    found = client.containers.run(image, ["sh", "-c", search], remove=True, network_disabled=True).decode()
    assert found.strip() == "searched", found


def test_a_failed_build_says_its_steps_errors_and_end_with_no_index_password(
    docker_client: Any, test_base_image: str
) -> None:
    from labctl.container import _build, tar_of
    from labctl.errors import LabctlError
    from labctl.ui import PlainReporter

    script = "echo 'ERROR: cannot reach http://me:s3cret@index.example/simple'; seq 30; echo 'no compiler'; exit 1"
    dockerfile = f'FROM {test_base_image}\nRUN echo an earlier step\nRUN sh -c "{script}"\n'
    with pytest.raises(LabctlError) as failed:
        _build(docker_client, PlainReporter(), tar_of({"Dockerfile": dockerfile.encode()}), "labctl-test/fails:1", {})
    said = failed.value.message
    assert "ERROR: cannot reach http://****@index.example/simple" in said and "s3cret" not in said
    assert "no compiler" in said and "an earlier step" not in said  # the failing step's end, not another's


def test_a_scripts_requirements_join_the_labs_layer_unless_a_run_is_training(
    lab_image: str, lab_name: str, docker_client: Any, wheels: tuple[Path, str], tmp_path: Path
) -> None:
    folder, index = wheels
    _wheel(folder, "0.1")
    project = tmp_path / "project"
    project.mkdir()
    script = project / "which.py"
    script.write_text("import labtiny\nprint('labtiny', labtiny.VERSION)\n")
    (project / "requirements.txt").write_bytes(b"\xff\xfe not text")
    made: set[str] = set()
    try:
        assert _up(lab_name).exit_code == 0
        box = docker_client.containers.get(container_name(lab_name))
        refused = runner.invoke(app, ["run", "-n", lab_name, str(script)])
        assert refused.exit_code == 2 and "requirements.txt is not UTF-8 text" in refused.output, refused.output
        assert "Traceback" not in refused.output and not StateStore().load(lab_name).runs

        sleeper = tmp_path / "sleeper.py"
        sleeper.write_text("import time\ntime.sleep(120)\n")
        started = runner.invoke(app, ["run", "-n", lab_name, "--detach", str(sleeper)])
        assert started.exit_code == 0, started.output
        (project / "requirements.txt").write_text(index + "labtiny==0.1\n")
        busy = runner.invoke(app, ["run", "-n", lab_name, str(script)])
        assert busy.exit_code == 2 and "is training in lab" in busy.output, busy.output
        assert docker_client.containers.get(container_name(lab_name)).id == box.id
        assert StateStore().load(lab_name).requirements is None
        assert runner.invoke(app, ["cancel", "-n", lab_name]).exit_code == 0

        ran = runner.invoke(app, ["run", "-n", lab_name, str(script)])
        assert ran.exit_code == 0 and "labtiny 0.1" in ran.output, ran.output
        record = StateStore().load(lab_name)
        made.add(str(record.image))
        assert str(record.image).startswith(f"{PACKAGES_REPO}:") and "labtiny==0.1" in str(record.requirements)
        box = docker_client.containers.get(container_name(lab_name))
        again = runner.invoke(app, ["run", "-n", lab_name, str(script)])  # the lab has them: nothing is rebuilt
        assert again.exit_code == 0 and "labtiny 0.1" in again.output, again.output
        assert docker_client.containers.get(container_name(lab_name)).id == box.id
    finally:
        for tag in made:
            docker_client.images.remove(tag, force=True)
