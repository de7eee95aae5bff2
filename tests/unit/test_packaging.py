"""The wheel carries what `run-lab` and `up` upload to the machine: the lab and the templates."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_contains_lab_and_templates(tmp_path: Path) -> None:
    pytest.importorskip("hatchling")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*pip_wheel, "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("labctl-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "labctl/cli.py" in names
    assert "cifarlab/__init__.py" in names  # the training core, importable for `run-lab --here`
    assert "labctl/_bundled/lab/cifarlab/__init__.py" in names  # and uploadable to the machine
    assert "labctl/_bundled/templates/lab-run.sh" in names
    assert not [n for n in names if "__pycache__" in n]
