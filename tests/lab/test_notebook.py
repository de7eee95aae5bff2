"""The notebook executes top to bottom, headless, on tiny synthetic data, through `python -m cifarlab notebook`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[2] / "lab"

pytest.importorskip("nbclient", reason="executing the notebook needs nbclient (pip install '.[lab]')")
pytest.importorskip("ipykernel", reason="executing the notebook needs ipykernel (pip install '.[lab]')")


def test_notebook_has_a_tagged_parameters_cell() -> None:
    nb = json.loads((LAB / "first_pytorch_classifier.ipynb").read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    source = "".join(tagged[0]["source"])
    for var in ("LAB_DATA", "LAB_EPOCHS", "LAB_BATCH_SIZE", "LAB_OUT", "LAB_MAX_STEPS", "LAB_DEVICE"):
        assert var in source


@pytest.mark.slow
def test_notebook_executes_headless_on_synthetic_data(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(LAB), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "cifarlab",
        "notebook",
        "--out",
        str(tmp_path),
        "--data",
        "synthetic:200",
        "--max-steps",
        "20",
        "--timeout",
        "120",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    executed = json.loads((tmp_path / "first_pytorch_classifier.ipynb").read_text())
    outputs = [o for c in executed["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert "Accuracy of the network on the 50 test images" in text
    assert "Accuracy for class class9" in text
    assert any(o["output_type"] == "display_data" for o in outputs)  # the image grids and the loss plot
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 20 and metrics["options"]["batch_size"] == 4
