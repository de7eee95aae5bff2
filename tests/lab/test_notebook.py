"""The notebook teaches the tutorial in its order and executes headless, through `python -m cifarlab notebook`."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

LAB = Path(__file__).resolve().parents[2] / "lab"
NOTEBOOK = LAB / "first_pytorch_classifier.ipynb"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PLOTS = ("sample_images.png", "loss_curve.png", "test_images.png", "confusion_matrix.png")

pytest.importorskip("nbclient", reason="executing the notebook needs nbclient (pip install '.[lab]')")
pytest.importorskip("ipykernel", reason="executing the notebook needs ipykernel (pip install '.[lab]')")


def code_cells() -> list[str]:
    nb = json.loads(NOTEBOOK.read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_notebook_has_a_tagged_parameters_cell() -> None:
    nb = json.loads(NOTEBOOK.read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    source = "".join(tagged[0]["source"])
    for var in (
        "LAB_DATA",
        "LAB_DATA_ROOT",
        "LAB_EPOCHS",
        "LAB_BATCH_SIZE",
        "LAB_LR",
        "LAB_MOMENTUM",
        "LAB_MAX_STEPS",
        "LAB_DEVICE",
        "LAB_SEED",
        "LAB_OUT",
        "LAB_TRAIN_SIZE",
        "LAB_TEST_SIZE",
        "LAB_PRINT_EVERY",
        "LAB_WORKERS",
    ):
        assert f'"{var}"' in source, var
    # by hand, it is the tutorial as published: 2 epochs of batches of 4, SGD 0.001 / 0.9, on every image
    assert '"LAB_EPOCHS", 2.0' in source and '"LAB_BATCH_SIZE", 4,' in source
    assert '"LAB_LR", 0.001,' in source and '"LAB_MOMENTUM", 0.9,' in source
    assert '"LAB_TRAIN_SIZE", None,' in source and '"LAB_MAX_STEPS", None,' in source


def test_notebook_follows_the_tutorial_in_order() -> None:
    cells = code_cells()
    steps = [
        "transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))",
        "DataLoader(trainset",
        "torchvision.utils.make_grid",
        "class Net(nn.Module)",
        "criterion = nn.CrossEntropyLoss()",
        "optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)",
        "optimizer.zero_grad()",
        "torch.save(net.state_dict(), PATH)",
        "net.load_state_dict(torch.load(PATH",
        "Accuracy of the network on the",
        "Accuracy for class:",
        "device = torch.device(",
        "net.to(device)",
        "inputs, labels = inputs.to(device), labels.to(device)",
        'recipe="classic"',
        'recipe="fast"',
    ]
    where = []
    for text in steps:
        found = [i for i, cell in enumerate(cells) if text in cell]
        assert found, f"no code cell holds {text!r}"
        where.append(found[0])
    assert where == sorted(where), list(zip(steps, where, strict=True))
    # the training loop is a cell of its own, in view: forward, loss, backward, step and the running loss
    loop = cells[where[6]]
    for text in ("outputs = net(inputs)", "loss = criterion(outputs, labels)", "loss.backward()", "optimizer.step()"):
        assert text in loop
    assert "running_loss" in loop and "PRINT_EVERY" in loop


def execute(out: Path, *args: str) -> tuple[str, list[dict[str, Any]]]:
    """Run the notebook headless; the text of its outputs and the outputs themselves."""
    env = {**os.environ, "PYTHONPATH": str(LAB), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "cifarlab", "notebook", "--out", str(out), *args, "--timeout", "300"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    executed = json.loads((out / NOTEBOOK.name).read_text())
    outputs = [o for c in executed["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    return "".join("".join(o.get("text", "")) for o in outputs), outputs


def per_class_lines(text: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"^Accuracy for class: (\S+)\s+is (\d+\.\d) %$", text, re.M)}


def overall_accuracy(text: str, n_test: int) -> float:
    m = re.search(rf"^Accuracy of the network on the {n_test} test images: (\d+\.\d) %$", text, re.M)
    assert m, text[-3000:]
    return float(m[1]) / 100


def assert_pngs(out: Path) -> None:
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.slow
def test_notebook_executes_headless_on_synthetic_data(tmp_path: Path) -> None:
    text, outputs = execute(tmp_path, "--data", "synthetic:200", "--max-steps", "20", "--param", "print_every=5")
    overall_accuracy(text, 50)
    assert set(per_class_lines(text)) == {f"class{i}" for i in range(10)}
    assert "[1,    20] loss:" in text  # the running loss, every PRINT_EVERY mini-batches
    assert any(o["output_type"] == "display_data" for o in outputs)  # the image grids and the plots
    assert_pngs(tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 20 and metrics["options"]["batch_size"] == 4
    fast_path = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert fast_path["steps"] == 20 and fast_path["options"]["batch_size"] == 4
    assert fast_path["options"]["recipe"] == "classic"
    assert json.loads((tmp_path / "run-fast" / "metrics.json").read_text())["options"]["recipe"] == "fast"


@pytest.mark.slow
def test_notebook_trains_the_tutorial_on_a_slice_of_real_images(tmp_path: Path, cifar10_archive: Path) -> None:
    # 2,000 training and 500 test images; 2 epochs of 16 images a step: 250 steps in each of the batch-16 runs
    text, _ = execute(
        tmp_path,
        "--data",
        str(cifar10_archive),
        "--epochs",
        "2",
        "--batch-size",
        "16",
        *("--param", "lr=0.01", "--param", "train_size=2000", "--param", "test_size=500"),
        *("--param", "print_every=25", "--param", "workers=1"),
    )
    per_class = per_class_lines(text)
    assert list(per_class) == CIFAR10_CLASSES
    assert all(0 <= acc <= 100 for acc in per_class.values())
    accuracy = overall_accuracy(text, 500)
    assert accuracy > 0.15  # chance is 0.10; this run gets about 0.22
    assert_pngs(tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=0.001)
    assert list(metrics["per_class_accuracy"]) == CIFAR10_CLASSES and metrics["steps"] == 250
    assert metrics["data"] == {"source": str(cifar10_archive), "n_train": 2000, "n_test": 500}
    assert [row["run"] for row in metrics["comparison"]][2:] == ["cifarlab fast path", "cifarlab fast preset"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 250


def tiny_notebook(path: Path, *sources: str) -> Path:
    """A notebook of a markdown cell, then one code cell per source (an empty one is not run)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"), *(nbformat.v4.new_code_cell(s) for s in sources)]
    nbformat.write(nb, path)
    return path


def test_each_cell_says_when_it_starts_and_how_long_it_took(tmp_path: Path) -> None:
    long_line = "total = sum(range(10)) + sum(range(20)) + sum(range(30)) + sum(range(40)) + sum(range(50))"
    sleeper = "\nimport time\n\ntime.sleep(0.3)  # sleeps a little\nprint(x)"
    source = tiny_notebook(tmp_path / "tiny.ipynb", "x = 6 * 7", "", sleeper, long_line)
    env = {**os.environ, "PYTHONPATH": str(LAB)}
    cmd = [sys.executable, "-m", "cifarlab", "notebook", "--out", str(tmp_path / "out"), "--path", str(source)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    cells = [line for line in lines if line.startswith("cell ")]
    assert cells[0] == "cell 1/3: x = 6 * 7 ..."  # numbered as Jupyter numbers them: code cells that run
    assert cells[2] == "cell 2/3: time.sleep(0.3)  # sleeps a little ..."  # the first line past the imports
    assert cells[4] == f"cell 3/3: {long_line[:59]}\u2026 ..."
    times = [float(m[1]) for line in cells if (m := re.fullmatch(r"cell \d/3 done in (\d+\.\d)s", line))]
    assert [cells[k].split(" done")[0] for k in (1, 3, 5)] == ["cell 1/3", "cell 2/3", "cell 3/3"]
    assert len(times) == 3 and times[1] >= 0.3
    assert lines[-1] == f"executed notebook: {tmp_path / 'out' / 'tiny.ipynb'}"
    executed = json.loads((tmp_path / "out" / "tiny.ipynb").read_text())
    assert "".join(executed["cells"][3]["outputs"][0]["text"]) == "42\n"


def test_a_failing_cell_is_named_and_its_copy_kept(tmp_path: Path) -> None:
    from cifarlab.config import LabError
    from cifarlab.notebook import run_notebook

    source = tiny_notebook(tmp_path / "bad.ipynb", "x = 1", "raise ValueError('no such column: price')", "print(x)")
    said = io.StringIO()
    with pytest.raises(LabError) as caught:
        run_notebook(tmp_path / "out", source=source, stream=said, timeout=120)
    message = str(caught.value)
    assert "in cell 2/3 (raise ValueError('no such column: price'))" in message, message
    assert "ValueError: no such column: price" in message and str(tmp_path / "out" / "bad.ipynb") in message
    lines = said.getvalue().splitlines()
    assert lines[:3] == ["cell 1/3: x = 1 ...", lines[1], "cell 2/3: raise ValueError('no such column: price') ..."]
    assert re.fullmatch(r"cell 2/3 failed after \d+\.\ds", lines[3]) and len(lines) == 4  # cell 3 never ran
    kept = json.loads((tmp_path / "out" / "bad.ipynb").read_text())
    assert kept["cells"][2]["outputs"][0]["ename"] == "ValueError"


def test_a_cell_past_its_time_limit_is_named(tmp_path: Path) -> None:
    from cifarlab.config import LabError
    from cifarlab.notebook import run_notebook

    source = tiny_notebook(tmp_path / "slow.ipynb", "x = 1", "import time\ntime.sleep(30)")
    with pytest.raises(LabError, match=r"in cell 2/2 \(time.sleep\(30\)\).*past the limit of 2s per cell"):
        run_notebook(tmp_path / "out", source=source, timeout=2)
    assert (tmp_path / "out" / "slow.ipynb").is_file()
