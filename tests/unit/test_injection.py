"""No setting can smuggle a command into what runs as root on the machine, whichever way it arrives.

Image references reach cloud-init (run as root at first boot) and the Docker engine; a project's labctl.toml
lies in whatever directory labctl runs from. Each way a value can come in is tried with hostile values.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from labctl.cli import app
from labctl.errors import UsageError
from labctl.keys import generate_ed25519, normalize
from labctl.targets.azure.provision import render_cloud_init
from labctl.validate import check_image_ref

HOSTILE = [
    "x; touch pwned",
    'pytorch/pytorch:2.5"\n  - [touch, /pwned]',
    "$(touch pwned)",
    "`id`",
    "pytorch/pytorch:tag && reboot",
    "img:tag\nruncmd: [[touch, pwned]]",
    "Uppercase/Repo:1",
    "",
    " pytorch/pytorch",
    "-e=x",
]
VALID = [
    "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
    "ubuntu",
    "localhost:5000/team/lab:v1",
    "myregistry.azurecr.io/team/lab_image__x:1.0",
    "[::1]:5000/lab",
    "python@sha256:" + "a" * 64,
    "ghcr.io/org/img:tag@sha256:" + "0" * 64,
]


@pytest.mark.parametrize("value", VALID)
def test_reference_grammar_accepts_real_references(value: str) -> None:
    assert check_image_ref(value, "The image") == value


@pytest.mark.parametrize("value", HOSTILE)
def test_reference_grammar_refuses_anything_else(value: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_image_ref(value, "The base image")
    assert repr(value) in caught.value.message and "image reference" in caught.value.message


def test_cloud_init_refuses_a_hostile_image_even_when_called_directly() -> None:
    host = generate_ed25519("h")
    with pytest.raises(UsageError):
        render_cloud_init(host.private_openssh, normalize(host.public_line), "lab", "x; touch pwned")


def test_cloud_init_keeps_the_image_one_argument_of_a_fixed_script(tmp_path: Path) -> None:
    """Run the runcmd entry as an argv, the way cloud-init does, against a docker that records its arguments."""
    from tests.support.boot_path import boot_env, fake_docker, run_boot_path

    host = generate_ed25519("h")
    image = "localhost:5000/team/lab:v1"
    doc = yaml.safe_load(render_cloud_init(host.private_openssh, normalize(host.public_line), "lab", image))
    [command] = doc["runcmd"]
    assert image in command and image not in command[2]
    calls = tmp_path / "calls"
    fake_docker(tmp_path / "bin", calls)
    assert run_boot_path(doc, tmp_path / "vm", boot_env(tmp_path / "vm", tmp_path / "bin"), wait=120) == "done"
    recorded = [line.split("\t") for line in calls.read_text().splitlines()]
    assert ["pull", image] in recorded
    [build] = [c for c in recorded if c[0] == "build"]
    assert build[1:3] == ["--build-arg", f"BASE_IMAGE={image}"] and build[3] == "-t"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory to run labctl in, with a user config file of its own and no LABCTL_* set."""
    for key in [k for k in os.environ if k.startswith("LABCTL_") and k != "LABCTL_STATE_DIR"]:
        monkeypatch.delenv(key)
    user = tmp_path / "user" / "config.toml"
    user.parent.mkdir()
    monkeypatch.setenv("LABCTL_CONFIG", str(user))
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    return root


def _dry_run(*extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["up", "--dry-run", "--allow-ip", "203.0.113.7", *extra])
    return result.exit_code, result.output


def _refused(code: int, output: str, value: str) -> None:
    assert code == 2, output
    assert value in output and "Traceback" not in output
    assert len([line for line in output.strip().splitlines() if line.strip()]) <= 6  # one paragraph, wrapped


def _no_state_written(isolated_state: Path) -> None:
    assert not list(isolated_state.rglob("*.json"))


def test_hostile_base_image_from_the_environment_is_refused(
    project: Path, monkeypatch: pytest.MonkeyPatch, isolated_state: Path
) -> None:
    monkeypatch.setenv("LABCTL_BASE_IMAGE", "x; touch pwned")
    code, output = _dry_run()
    _refused(code, output, "x; touch pwned")
    assert "LABCTL_BASE_IMAGE" in output
    _no_state_written(isolated_state)


def test_hostile_image_flag_is_refused(project: Path, isolated_state: Path) -> None:
    code, output = _dry_run("--image", "$(touch pwned)")
    _refused(code, output, "$(touch pwned)")
    _no_state_written(isolated_state)


def test_hostile_base_image_in_the_user_file_is_refused(project: Path, isolated_state: Path) -> None:
    user = Path(os.environ["LABCTL_CONFIG"])
    user.write_text('[labctl]\nbase_image = "x; touch pwned"\n')
    code, output = _dry_run()
    _refused(code, output, "x; touch pwned")
    assert str(user) in output


def test_project_file_may_not_set_guarded_settings_until_trusted(project: Path, isolated_state: Path) -> None:
    (project / "labctl.toml").write_text('[labctl]\nbase_image = "registry.example/lab:1"\n')
    code, output = _dry_run()
    _refused(code, output, "registry.example/lab:1")
    assert "labctl config --trust" in output
    trusted = CliRunner().invoke(app, ["config", "--trust"])
    assert trusted.exit_code == 0, trusted.output
    code, output = _dry_run()
    assert code == 0, output
    (project / "labctl.toml").write_text('[labctl]\nbase_image = "x; touch pwned"\n')  # an edit revokes trust
    code, output = _dry_run()
    _refused(code, output, "x; touch pwned")
    assert "labctl config --trust" in output


def test_trusted_project_file_still_cannot_inject(project: Path) -> None:
    (project / "labctl.toml").write_text('[labctl]\nimage = "x\\"; touch /pwned"\n')
    assert CliRunner().invoke(app, ["config", "--trust"]).exit_code == 0
    code, output = _dry_run()
    _refused(code, output, "touch /pwned")


@pytest.mark.parametrize("key", ["allow_ip", "ssh_key", "image"])
def test_project_file_guarded_keys_are_refused(project: Path, key: str) -> None:
    values = {"allow_ip": "198.51.100.0/24", "ssh_key": "/tmp/someone-elses-key", "image": "evil/lab:1"}
    (project / "labctl.toml").write_text(f'[labctl]\n{key} = "{values[key]}"\n')
    code, output = _dry_run() if key != "allow_ip" else _plain_dry_run()
    _refused(code, output, values[key])
    shown = CliRunner().invoke(app, ["config"])
    assert shown.exit_code == 0 and "not trusted" in shown.output


def _plain_dry_run() -> tuple[int, str]:
    result = CliRunner().invoke(app, ["up", "--dry-run"])
    return result.exit_code, result.output


def test_allow_ip_any_comes_from_the_command_line_only(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCTL_ALLOW_IP", "any")
    code, output = _plain_dry_run()
    _refused(code, output, "any")
    assert "--allow-ip any" in output
    monkeypatch.delenv("LABCTL_ALLOW_IP")
    Path(os.environ["LABCTL_CONFIG"]).write_text('[labctl]\nallow_ip = "ANY"\n')
    code, output = _plain_dry_run()
    assert code == 2 and "--allow-ip any" in output
    result = CliRunner().invoke(app, ["up", "--dry-run", "--allow-ip", "any"])
    assert result.exit_code == 0, result.output
