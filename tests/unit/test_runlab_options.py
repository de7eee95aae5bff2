"""run-lab's options become cifarlab's command line in one place, for the container, --notebook and --here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from labctl.errors import UsageError
from labctl.workflows.runlab_options import RunLabOptions, cifarlab_args, option_pairs, per_class_table


def test_train_arguments_carry_every_given_option_and_nothing_else() -> None:
    opts = RunLabOptions(model="fast", epochs=2.5, lr=0.01, seed=3, extra=["max-steps=7", "width=0.5"])
    args = cifarlab_args(opts, out="/w/runs/r1", data="cifar10", data_root="/w/.labctl/data/cifar10")
    assert args == [
        "train", "--out", "/w/runs/r1", "--data", "cifar10", "--data-root", "/w/.labctl/data/cifar10",
        "--model", "fast", "--seed", "3", "--epochs", "2.5", "--lr", "0.01", "--max-steps", "7", "--width", "0.5",
    ]  # fmt: skip
    pairs = option_pairs(args)
    assert ("max_steps", "7") in pairs and ("data_root", "/w/.labctl/data/cifar10") in pairs
    assert dict(pairs)["out"] == "/w/runs/r1"


def test_notebook_arguments_are_its_flags_and_parameters() -> None:
    opts = RunLabOptions(notebook=True, epochs=1, batch_size=32, lr=0.05, extra=["max_steps=5", "log_every=2"])
    args = cifarlab_args(opts, out="/o", data="synthetic:100", data_root="/root")
    assert args == [
        "notebook", "--out", "/o", "--data", "synthetic:100", "--seed", "0", "--epochs", "1", "--batch-size", "32",
        "--max-steps", "5", "--param", "data_root=/root", "--param", "lr=0.05", "--param", "log_every=2",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "opts", [RunLabOptions(notebook=True, model="fast"), RunLabOptions(notebook=True, optimizer="adamw")]
)
def test_notebook_runs_the_tutorial_as_written(opts: RunLabOptions) -> None:
    with pytest.raises(UsageError, match="tutorial model with SGD"):
        cifarlab_args(opts, out="/o", data="cifar10")


def test_the_arguments_are_what_cifarlab_itself_accepts(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab"))
    main = pytest.importorskip("cifarlab.__main__", reason="the lab's packages are not installed")
    opts = RunLabOptions(epochs=1, batch_size=16, optimizer="adamw", device="cpu", extra=["max_steps=2"])
    parsed = main.parser().parse_args(cifarlab_args(opts, out=str(tmp_path), data="synthetic"))
    assert (parsed.command, parsed.epochs, parsed.batch_size, parsed.max_steps) == ("train", "1", "16", "2")
    notebook = RunLabOptions(notebook=True, epochs=1, lr=0.1, extra=["max_steps=2"])
    parsed = main.parser().parse_args(cifarlab_args(notebook, out=str(tmp_path), data="cifar10", data_root="/d"))
    assert (parsed.command, parsed.max_steps, parsed.param) == ("notebook", "2", ["data_root=/d", "lr=0.1"])


def test_per_class_table_shows_each_class_and_the_overall_accuracy() -> None:
    table = per_class_table({"accuracy": 0.5, "per_class_accuracy": {"cat": 0.25, "airplane": None}})
    assert table.splitlines() == [
        "class     accuracy",
        "cat         25.0%",
        "airplane        -",
        "overall accuracy: 50.0%",
    ]
    assert per_class_table({}) == ""
