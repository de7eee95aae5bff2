"""`labctl run-lab --here` through the real CLI: it trains in this environment and shows the per-class table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labctl.cli import app
from labctl.workflows.runlab_options import results_root

pytest.importorskip("torch", reason="run-lab --here needs the lab's packages (pip install '.[lab]')")

runner = CliRunner()


def test_run_here_on_synthetic_data_prints_the_per_class_table(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [
        "run-lab",
        "--here",
        "--data",
        "synthetic:300",
        "--batch-size",
        "30",
        "--optimizer",
        "adamw",
        "--lr",
        "0.003",
        "--epochs",
        "2",
        "--out",
        str(out),
        "--set",
        "log_every=1",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for k in range(10):
        assert f"class{k}" in result.output
    assert "Overall accuracy:" in result.output and str(out) in result.output
    assert "Accuracy per class" in result.output and "Time: " in result.output
    assert f"Loss curve: {out / 'loss_curve.svg'}" in result.output
    assert f"Confusion matrix: {out / 'confusion_matrix.svg'}" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "succeeded" and metrics["options"]["optimizer"] == "adamw"
    assert metrics["options"]["epochs"] == 2 and metrics["steps"] == 20


def test_run_here_json_output_carries_the_accuracy(tmp_path: Path) -> None:
    out = results_root() / "here" / "r1"  # where `runs --here` finds it
    result = runner.invoke(
        app,
        [
            "run-lab",
            "--here",
            "--data",
            "synthetic:100",
            "--set",
            "max_steps=3",
            "--batch-size",
            "10",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout[result.stdout.index("{") :])
    # The same shape as a run in a lab's container (see test_run_result_has_one_shape).
    assert payload["results"] == str(out) and payload["state"] == "succeeded" and payload["where"] == "here"
    assert 0 <= payload["accuracy"] <= 1
    assert payload["loss_curve"] == str(out / "loss_curve.svg") and payload["files_verified"] is None

    listed = runner.invoke(app, ["runs", "--here", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = [r for r in json.loads(listed.stdout)["runs"] if r["run_id"] == "r1"]  # as a lab container's rows
    assert (row["state"], row["shown"], row["resumes"]) == ("succeeded", "succeeded", False)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--epochs", "-1"], "--epochs must be a positive number, got -1.0"),
        (["--optimizer", "rmsprop"], "'rmsprop' is not one of 'sgd', 'adamw'"),
        (["--set", "nonsense"], "is not KEY=VALUE"),
        (["--set", "wings=2"], "unknown training option 'wings'"),
        (["--model", "resnet50"], "'resnet50' is not one of 'tutorial', 'fast'"),
        (["--detach"], "--detach only applies"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path: Path, args: list[str], expected: str) -> None:
    result = runner.invoke(app, ["run-lab", "--here", "--data", "synthetic", "--out", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "cifar.tar.gz"
    result = runner.invoke(app, ["run-lab", "--here", "--data", str(missing), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2  # a bad input, refused before anything is imported or trained
    assert str(missing) in result.output and "train/<class>/*.jpg" in result.output


@pytest.mark.slow
def test_run_here_notebook_keeps_the_executed_copy(tmp_path: Path) -> None:
    pytest.importorskip("nbclient", reason="executing the notebook needs nbclient (pip install '.[lab]')")
    out = tmp_path / "nb"
    result = runner.invoke(
        app, ["run-lab", "--here", "--notebook", "--data", "synthetic:100", "--set", "max_steps=5", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    executed = out / "first_pytorch_classifier.ipynb"
    assert executed.is_file() and str(executed) in result.output
    assert json.loads((out / "run" / "metrics.json").read_text())["steps"] == 5
