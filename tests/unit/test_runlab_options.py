"""run-lab's options become cifarlab's command line in one place, for the container, --notebook and --here."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from labctl.errors import UsageError
from labctl.workflows.runlab_options import (
    LAB_OPTIONS,
    Launch,
    RunLabOptions,
    cifarlab_args,
    lab_values,
    launch,
)


def test_train_arguments_carry_every_given_option_and_nothing_else() -> None:
    opts = RunLabOptions(
        training={"model": "fast", "epochs": 2.5, "lr": 0.01, "seed": 3}, extra=["max-steps=7", "width=0.5"]
    )
    args = cifarlab_args(opts, out="/w/runs/r1", data="cifar10", data_root="/w/.labctl/data/cifar10")
    assert args == [
        "train", "--out", "/w/runs/r1", "--data", "cifar10", "--data-root", "/w/.labctl/data/cifar10",
        "--model", "fast", "--seed", "3", "--epochs", "2.5", "--lr", "0.01", "--max-steps", "7", "--width", "0.5",
    ]  # fmt: skip
    values = lab_values(opts, out="/w/runs/r1", data="cifar10", data_root="/w/.labctl/data/cifar10")
    assert values["max_steps"] == "7" and values["data_root"] == "/w/.labctl/data/cifar10"
    assert values["out"] == "/w/runs/r1"  # what --here hands the training core as text


def test_notebook_arguments_are_its_flags_and_parameters() -> None:
    opts = RunLabOptions(
        notebook=True, training={"epochs": 1, "batch_size": 32, "lr": 0.05}, extra=["max_steps=5", "log_every=2"]
    )
    args = cifarlab_args(opts, out="/o", data="synthetic:100", data_root="/root")
    assert args == [
        "notebook", "--out", "/o", "--data", "synthetic:100", "--seed", "0", "--epochs", "1", "--batch-size", "32",
        "--max-steps", "5", "--param", "data_root=/root", "--param", "lr=0.05", "--param", "log_every=2",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "opts",
    [
        RunLabOptions(notebook=True, training={"model": "fast"}),
        RunLabOptions(notebook=True, training={"optimizer": "adamw"}),
    ],
)
def test_notebook_runs_the_tutorial_as_written(opts: RunLabOptions) -> None:
    with pytest.raises(UsageError, match="tutorial model with SGD"):
        opts.check()


def test_the_arguments_are_what_cifarlab_itself_accepts(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab"))
    main = pytest.importorskip("cifarlab.__main__", reason="the lab's packages are not installed")
    opts = RunLabOptions(
        training={"epochs": 1, "batch_size": 16, "optimizer": "adamw", "device": "cpu"}, extra=["max_steps=2"]
    )
    parsed = main.parser().parse_args(cifarlab_args(opts, out=str(tmp_path), data="synthetic"))
    assert (parsed.command, parsed.epochs, parsed.batch_size, parsed.max_steps) == ("train", "1", "16", "2")
    notebook = RunLabOptions(notebook=True, training={"epochs": 1, "lr": 0.1}, extra=["max_steps=2"])
    parsed = main.parser().parse_args(cifarlab_args(notebook, out=str(tmp_path), data="cifar10", data_root="/d"))
    assert (parsed.command, parsed.max_steps, parsed.param) == ("notebook", "2", ["data_root=/d", "lr=0.1"])


def test_run_lab_offers_the_lab_tables_options_and_each_is_a_training_option() -> None:
    from typer.testing import CliRunner

    from labctl.cli import app

    config = pytest.importorskip("cifarlab.config", reason="the lab's packages are not installed")
    assert set(LAB_OPTIONS) <= {f.name for f in dataclasses.fields(config.TrainConfig)}
    shown = CliRunner().invoke(app, ["run-lab", "--help"]).stdout
    for key, option in LAB_OPTIONS.items():
        if option.run_lab:
            assert f"--{key.replace('_', '-')} {option.run_lab}" in shown and option.help[:20] in shown


def test_holdout_and_an_own_notebook_reach_cifarlab(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab"))
    main = pytest.importorskip("cifarlab.__main__", reason="the lab's packages are not installed")
    parsed = main.parser().parse_args(
        cifarlab_args(RunLabOptions(training={"holdout": 0.2}), out=str(tmp_path), data="synthetic")
    )
    assert float(parsed.holdout) == 0.2
    notebook = RunLabOptions(notebook=True, training={"holdout": 0.3})
    args = [*cifarlab_args(notebook, out=str(tmp_path), data="cifar10"), "--path", "/workspace/mine.ipynb"]
    parsed = main.parser().parse_args(args)
    assert parsed.path == "/workspace/mine.ipynb" and "holdout=0.3" in parsed.param


def test_a_run_result_has_one_shape_and_reads_well(tmp_path: Path) -> None:
    from labctl.workflows.runlab_options import result_text, run_result

    (tmp_path / "loss_curve.svg").write_bytes(b"png")
    metrics = {"accuracy": 0.5, "per_class_accuracy": {"cat": 0.25, "dog": 0.75}, "wall_s": 3725.0}
    here = run_result("r1", "here", "succeeded", tmp_path, metrics, files_verified=None)
    remote = run_result("r2", "lab gpu", "succeeded", tmp_path, metrics, files_verified=7)
    assert here.keys() == remote.keys()
    assert (here["loss_curve"], here["confusion_matrix"]) == (str(tmp_path / "loss_curve.svg"), None)
    text = result_text(remote)
    assert "Accuracy per class" in text and "│ cat   │    25.0% │" in text
    assert "Overall accuracy: 50.0%" in text and "Time: 1:02:05" in text
    assert f"Loss curve: {tmp_path / 'loss_curve.svg'}" in text and "Confusion matrix" not in text
    assert text.endswith("7 files verified")


# ------------------------------------------------------------------------------------------------ launch


def _launch(gpus_available: int, **options: object) -> Launch:
    training = {key: options.pop(key) for key in ("model", "device") if key in options}
    opts = RunLabOptions(training=training, **options)  # type: ignore[arg-type]
    args = cifarlab_args(opts, out="/w/runs/r1", data="synthetic:64")
    [start] = launch(
        opts,
        [args],
        run_id="r1",
        gpus_per_node=[gpus_available],
        addresses=["127.0.0.1"],
        rdzv_port=29400,
        log_dir="/w/runs/r1/ranks",
    )
    return start


def test_a_machine_with_four_gpus_trains_on_all_four_under_torchrun() -> None:
    start = _launch(4, model="fast", extra=["max_steps=5"])
    assert start.argv[:3] == ["python", "-m", "torch.distributed.run"]
    argv = start.argv
    assert argv[argv.index("--nproc-per-node") + 1] == "4" and argv[argv.index("--nnodes") + 1] == "1"
    assert "--standalone" in argv and argv[argv.index("--log-dir") + 1] == "/w/runs/r1/ranks"
    # the lab's own arguments follow unchanged, after "-m cifarlab train"
    tail = argv[argv.index("-m", 3) :]
    assert tail[:3] == ["-m", "cifarlab", "train"]
    assert tail[3:] == [
        "--out", "/w/runs/r1", "--data", "synthetic:64", "--model", "fast", "--seed", "0", "--max-steps", "5",
    ]  # fmt: skip
    assert start.env["TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"] == "[rank ${rank}]:"
    assert start.summary == "torchrun: 4 processes (4 GPUs on this machine, nccl)"


def test_gpus_asks_for_fewer_and_one_gpu_is_one_plain_process() -> None:
    two = _launch(4, gpus=2)
    assert two.argv[two.argv.index("--nproc-per-node") + 1] == "2"
    one = _launch(4, gpus=1)
    assert one.argv[:4] == ["python", "-m", "cifarlab", "train"] and one.plan is not None and one.plan.device == "cuda"
    assert _launch(1).argv[:4] == ["python", "-m", "cifarlab", "train"]


def test_a_cpu_machine_and_device_cpu_stay_one_process() -> None:
    cpu = _launch(0)
    assert cpu.argv[:4] == ["python", "-m", "cifarlab", "train"] and cpu.summary.startswith("one process on the CPU")
    assert "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE" not in cpu.env
    forced = _launch(8, device="cpu")
    assert forced.argv[:4] == ["python", "-m", "cifarlab", "train"] and forced.argv[-2:] == ["--device", "cpu"]


@pytest.mark.parametrize(
    ("gpus_available", "options", "message"),
    [
        (2, {"gpus": 3}, "more GPUs than this machine has"),
        (0, {"gpus": 2}, "it has no GPU"),
        (4, {"gpus": 2, "device": "cpu"}, "contradict"),
        (4, {"device": "cuda:1"}, "4 processes would share it"),
    ],
)
def test_impossible_gpu_requests_are_refused(gpus_available: int, options: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        _launch(gpus_available, **options)
    with pytest.raises(UsageError, match="the notebook runs in one process"):
        RunLabOptions(notebook=True, gpus=2).check()
    with pytest.raises(UsageError, match="--gpus 0 is not a number of GPUs"):
        RunLabOptions(gpus=0).check()


def test_the_notebook_is_one_process_whatever_the_gpus() -> None:
    start = _launch(4, notebook=True)
    assert start.plan is None and start.argv[:4] == ["python", "-m", "cifarlab", "notebook"]
    assert "one process" in start.summary


def test_a_failed_run_that_kept_its_checkpoint_says_where_it_stopped(tmp_path: Path) -> None:
    from labctl.workflows.runlab_options import result_text, run_result

    def text(metrics: dict[str, object]) -> str:
        return result_text(run_result("r1", "lab", "failed", tmp_path, metrics, files_verified=None))

    lost = {"status": "failed", "steps": 120, "error": "RuntimeError: Connection reset by peer\nmore detail"}
    assert text(lost).startswith(
        "The run stopped at step 120: RuntimeError: Connection reset by peer\nThe checkpoint of that step was kept.\n"
    )
    assert "stopped at step" not in text({"status": "succeeded", "steps": 5, "error": "x"})
    assert "stopped at step" not in text({"status": "failed"})  # nothing saved to speak of


def test_set_keys_of_a_training_run_are_the_lab_s_options_and_the_notebook_s_are_its_parameters() -> None:
    with pytest.raises(UsageError, match="unknown training option 'workers'"):
        RunLabOptions(extra=["workers=0"]).check()
    with pytest.raises(UsageError, match="run-lab sets out itself"):
        RunLabOptions(extra=["out=/elsewhere"]).check()
    RunLabOptions(extra=["warmup=0.1", "max-steps=5"]).check()  # every TrainConfig field, in either spelling
    RunLabOptions(notebook=True, extra=["workers=0", "print_every=1"]).check()  # the notebook's LAB_* parameters


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"resume": "r1", "training": {"epochs": 3}}, "--epochs"),
        ({"resume": "r1", "no_resume": "r1"}, "--no-resume"),
        ({"no_resume": "r1", "here": True}, "--here"),
        ({"resume": "r1", "data": "synthetic", "extra": ["max_steps=3"]}, "--data, --set"),
    ],
)
def test_resume_goes_on_with_the_runs_own_options_only(options: dict[str, object], named: str) -> None:
    with pytest.raises(UsageError, match="goes on with the run's own options") as refused:
        RunLabOptions(**options).check()  # type: ignore[arg-type]
    assert named in refused.value.message
    assert RunLabOptions(resume="r1", detach=True).check().resume == "r1"
