"""Settings resolve flag > environment > project file > user file > default, and say where each came from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labctl.cli import app
from labctl.errors import UsageError
from labctl.spec import Settings, trust_project


@pytest.fixture
def user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "user" / "config.toml"
    path.parent.mkdir()
    monkeypatch.setenv("LABCTL_CONFIG", str(path))
    for key in ("LABCTL_REGION", "LABCTL_NAME", "LABCTL_SHUTDOWN_AT"):
        monkeypatch.delenv(key, raising=False)
    return path


def test_precedence(tmp_path: Path, user_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABCTL_RESULTS_DIR", raising=False)
    project = tmp_path / "project"
    project.mkdir()
    user_config.write_text('[labctl]\nregion = "westus2"\nname = "mine"\nshutdown_at = "18:00"\n')
    (project / "labctl.toml").write_text('[labctl]\nregion = "northeurope"\n')
    trust_project(project)  # a project file decides the region only once trusted (see below)
    settings = Settings(project)
    assert settings.lookup("region").value == "northeurope"
    assert settings.lookup("region").source.endswith("labctl.toml")
    assert settings.lookup("name").value == "mine"
    assert settings.lookup("results_dir").source == "default"
    monkeypatch.setenv("LABCTL_REGION", "uksouth")
    assert Settings(project).lookup("region").value == "uksouth"
    assert Settings(project).lookup("region", "japaneast").value == "japaneast"


def test_unknown_setting_is_refused(tmp_path: Path, user_config: Path) -> None:
    user_config.write_text('[labctl]\nregoin = "westus2"\n')
    with pytest.raises(UsageError, match="regoin"):
        Settings(tmp_path)


def test_config_command_shows_sources(tmp_path: Path, user_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user_config.write_text('[labctl]\nregion = "westus2"\n')
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["region"] == {"value": "westus2", "source": str(user_config)}
    assert data["target"]["source"] == "default"


def test_broken_config_is_one_paragraph(tmp_path: Path, user_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user_config.write_text("[labctl\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 2
    assert "could not be read" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("line", "key", "found"),
    [
        ("shutdown_at = 1900", "shutdown_at", "integer"),
        ("name = 5", "name", "integer"),
        ("region = true", "region", "boolean"),
        ('size = ["a"]', "size", "array"),
        ("shutdown_at = 19:00:00", "shutdown_at", "date/time"),
    ],
)
def test_setting_of_wrong_type_names_file_key_and_type(
    tmp_path: Path, user_config: Path, line: str, key: str, found: str
) -> None:
    (tmp_path / "labctl.toml").write_text(f"[labctl]\n{line}\n")
    with pytest.raises(UsageError) as caught:
        Settings(tmp_path)
    text = caught.value.render()
    assert str(tmp_path / "labctl.toml") in text
    assert f"{key} must be a string" in text
    assert found in text


def test_wrong_type_in_config_is_a_usage_error_on_the_cli(
    tmp_path: Path, user_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "labctl.toml").write_text("[labctl]\nshutdown_at = 1900\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 2
    assert "shutdown_at must be a string" in result.output
    assert "TypeError" not in result.output


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("size", "Standard_NC24ads_A100_v4"),
        ("subscription", "00000000-0000-0000-0000-000000000001"),
        ("region", "westeurope"),
        ("target", "local"),
        ("idle_stop", "off"),
        ("shutdown_at", "23:59"),
        ("budget", "100000"),
        ("results_dir", "/tmp/elsewhere"),
    ],
)
def test_a_project_file_decides_nothing_billed_or_written_until_trusted(
    tmp_path: Path, user_config: Path, monkeypatch: pytest.MonkeyPatch, key: str, value: str
) -> None:
    monkeypatch.delenv(f"LABCTL_{key.upper()}", raising=False)
    (tmp_path / "labctl.toml").write_text(f'[labctl]\nname = "from-project"\n{key} = "{value}"\n')
    settings = Settings(tmp_path)
    assert settings.get("name") == "from-project"  # the one thing it sets alone
    with pytest.raises(UsageError, match=f"sets {key} = '{value}'.*told to trust"):
        settings.get(key)
    assert not next(s for s in settings.all() if s.key == key).trusted  # `labctl config` still shows it
    trust_project(tmp_path)
    assert Settings(tmp_path).get(key) == value


def test_a_retired_size_in_a_file_blocks_up_but_not_the_commands_that_end_a_lab(
    tmp_path: Path, user_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_config.write_text('[labctl]\nsize = "NC6"\n')
    monkeypatch.chdir(tmp_path)
    shown = CliRunner().invoke(app, ["config"])
    assert shown.exit_code == 0 and "NC6" in shown.output, shown.output
    status = CliRunner().invoke(app, ["status"])
    assert status.exit_code != 2 and "retired" not in status.output, status.output
    up = CliRunner().invoke(app, ["up", "--dry-run"])
    assert up.exit_code == 2 and "retired" in up.output, up.output
    user_config.write_text('[labctl]\nsize = ""\n')
    assert "size in " in CliRunner().invoke(app, ["config"]).output
