"""An environment.yml as the lab's packages: its `pip:` lines are pip's, and a package only conda would install is
refused by name before anything is reached, since the lab image installs with pip."""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl.errors import UsageError
from labctl.validate import read_requirements
from labctl.workflows.runlab import _beside


def _env(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "environment.yml"
    path.write_text(text)
    return path


def test_its_pip_lines_are_the_packages_and_python_and_pip_are_the_images_own(tmp_path: Path) -> None:
    text = "name: proj\nchannels: [conda-forge]\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n"
    text += "    - --find-links ./wheels\n    - labtiny==0.1\n"
    assert read_requirements(_env(tmp_path, text)) == "--find-links ./wheels\nlabtiny==0.1\n"
    assert read_requirements(_env(tmp_path, "name: empty\n")) == ""


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "dependencies:\n  - numpy=1.26\n  - conda-forge::pandas\n  - pip\n",
            "conda (numpy=1.26, conda-forge::pandas)",
        ),
        ("dependencies:\n  - pip: [3]\n", "conda (an entry that is not text)"),
        ("dependencies: numpy\n", "'dependencies' are not a list"),
        ("- just\n- a list\n", "is not an environment.yml"),
        ("dependencies: [unclosed\n", "is not an environment.yml"),
        ("a: &x [1, *x]\nb: [*x, *x, *x, *x, *x, *x, *x, *x]\ndependencies:\n  - *x\n", "not text"),
    ],
)
def test_what_pip_cannot_install_is_refused_by_name(tmp_path: Path, text: str, said: str) -> None:
    with pytest.raises(UsageError) as refused:
        read_requirements(_env(tmp_path, text))
    assert said in refused.value.message and str(tmp_path / "environment.yml") in refused.value.message
    assert "pip:" in refused.value.hint


def test_a_scripts_project_files_are_read_together_and_only_beside_a_local_script(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("print(1)\n")
    assert _beside(str(script)) is None
    (tmp_path / "requirements.txt").write_text("labtiny==0.1\n")
    _env(tmp_path, "dependencies:\n  - pip:\n    - labother\n")
    assert _beside(str(script)) == "labtiny==0.1\nlabother\n"
    assert _beside(str(tmp_path / "in-the-workspace.py")) is None
