"""Training end to end on synthetic data: the loss falls, every result file appears, checkpoints reload."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest
import torch
from cifarlab import runlog
from cifarlab.config import ConfigError, TrainConfig
from cifarlab.data import load_data
from cifarlab.models import load_checkpoint, predict_logits
from cifarlab.train import train
from PIL import Image

LAB = Path(__file__).resolve().parents[2] / "lab"

SVG = "{http://www.w3.org/2000/svg}"


def quick_config(out: Path, **overrides: object) -> TrainConfig:
    base: dict[str, object] = dict(
        data="synthetic:480", model="tutorial", epochs=3, batch_size=32, lr=0.003, optimizer="adamw", out=str(out)
    )
    base.update(overrides)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    train(quick_config(out))
    return out


def test_short_run_lowers_the_loss_and_learns(trained_run: Path) -> None:
    metrics = json.loads((trained_run / "metrics.json").read_text())
    losses = metrics["loss_per_step"]
    assert metrics["status"] == "succeeded" and metrics["steps"] == len(losses) == 45
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert metrics["accuracy"] > 0.5  # chance is 0.1
    assert set(metrics["per_class_accuracy"]) == set(metrics["classes"]) and len(metrics["classes"]) == 10
    cm = metrics["confusion_matrix"]
    assert len(cm) == 10 and sum(map(sum, cm)) == metrics["data"]["n_test"] == 120
    assert metrics["images_per_s"] > 0 and metrics["device"] == "cpu"
    assert metrics["torch_version"] == torch.__version__ and metrics["python_version"]
    assert metrics["options"]["batch_size"] == 32 and metrics["wall_s"] > 0
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]


def test_run_directory_holds_every_result_file(trained_run: Path) -> None:
    for name in ("metrics.json", "events.jsonl", "checkpoint.pt", "loss_curve.svg", "confusion_matrix.svg"):
        assert (trained_run / name).stat().st_size > 0, name
    metrics = json.loads((trained_run / "metrics.json").read_text())
    curve = ElementTree.parse(trained_run / "loss_curve.svg").getroot()
    lines = curve.findall(f"{SVG}polyline")
    assert len(lines) == 2 and all(len(line.get("points", "").split()) == metrics["steps"] for line in lines)
    labels = [t.text for t in curve.iter(f"{SVG}text")]
    assert {"loss", "training step", "1", str(metrics["steps"])} <= set(labels)
    cm = ElementTree.parse(trained_run / "confusion_matrix.svg").getroot()
    texts = [t.text for t in cm.iter(f"{SVG}text")]
    assert set(metrics["classes"]) <= set(texts)  # every class named, on both axes
    counts = metrics["confusion_matrix"]
    cells = cm.findall(f"{SVG}rect")[1:]  # after the background, one per pair of classes, row by row
    assert len(cells) == 100 and texts[:100] == [str(n) for row in counts for n in row]
    share = counts[1][1] / sum(counts[1])  # row-normalised: white (0) to (8, 48, 107) (1)
    assert cells[11].get("fill") == f"rgb({','.join(str(round(255 - share * (255 - c))) for c in (8, 48, 107))})"


def test_class_names_are_text_in_the_plots_never_markup() -> None:
    names = {
        "<b>cat</b>": 1.0,
        "a&b": 1.0,
        "bell\x07": 1.0,
        "bytes\udcff": 1.0,
    }  # the last: a folder's undecodable name
    scores = {"confusion_matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "per_class_accuracy": names}
    root = ElementTree.fromstring(runlog.confusion_svg(scores).encode())
    said = {t.text for t in root.iter(f"{SVG}text")}
    assert {"<b>cat</b>", "a&b", "bell?", "bytes?"} <= said and not root.findall(f".//{SVG}b")


def test_a_diverged_loss_leaves_the_finite_points_drawn() -> None:
    root = ElementTree.fromstring(runlog.loss_svg([2.3, float("nan"), 0.5, float("inf")]))
    [raw, _] = root.findall(f"{SVG}polyline")
    assert len(raw.get("points", "").split()) == 2 and "nan" not in ElementTree.tostring(root).decode()


def test_events_follow_the_documented_schema(trained_run: Path) -> None:
    events = [json.loads(line) for line in (trained_run / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("epoch") == 3
    progress = [e for e in events if e["event"] == "progress"]
    assert progress, "at least one progress event"
    for e in progress:
        assert {"epoch", "step", "steps_total", "loss", "images_per_s", "eta_s"} <= e.keys()
        assert e["steps_total"] == 45
    assert events[-1]["status"] == "succeeded" and 0 <= events[-1]["accuracy"] <= 1


def test_checkpoint_reloads_and_predicts_the_same(trained_run: Path) -> None:
    data = load_data("synthetic:480")
    assert data.test is not None
    model, ckpt = load_checkpoint(trained_run)
    assert ckpt["classes"] == data.classes and ckpt["model"] == "tutorial" and ckpt["world_size"] == 1
    again, _ = load_checkpoint(trained_run / "checkpoint.pt")
    a = predict_logits(model, data.test.images, torch.device("cpu"))
    b = predict_logits(again, data.test.images, torch.device("cpu"))
    torch.testing.assert_close(a, b)
    metrics = json.loads((trained_run / "metrics.json").read_text())
    accuracy = (a.argmax(1) == data.test.labels).float().mean().item()
    assert accuracy == pytest.approx(metrics["accuracy"])


def test_evaluate_and_predict_commands_use_the_checkpoint(trained_run: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(LAB)}
    ev = subprocess.run(
        [sys.executable, "-m", "cifarlab", "evaluate", "--checkpoint", str(trained_run), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert ev.returncode == 0, ev.stderr
    assert "overall" in ev.stdout
    evaluation = json.loads((tmp_path / "evaluation.json").read_text())
    assert evaluation["accuracy"] == pytest.approx(json.loads((trained_run / "metrics.json").read_text())["accuracy"])


def test_predict_command_classifies_image_files_like_the_model(trained_run: Path, tmp_path: Path) -> None:
    data = load_data("synthetic:480")
    assert data.test is not None
    model, _ = load_checkpoint(trained_run)
    images = data.test.images[:3]
    paths = []
    for i, img in enumerate(images):
        path = tmp_path / f"img{i}.png"  # lossless, so the file holds exactly these pixels
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(path)
        paths.append(str(path))
    expected = predict_logits(model, images, torch.device("cpu")).argmax(1).tolist()
    env = {**os.environ, "PYTHONPATH": str(LAB)}
    r = subprocess.run(
        [sys.executable, "-m", "cifarlab", "predict", "--checkpoint", str(trained_run), "--json", *paths],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    answers = [json.loads(line) for line in r.stdout.splitlines()]
    assert [a["class"] for a in answers] == [data.classes[k] for k in expected]
    assert all(0 < a["probability"] <= 1 for a in answers)


def test_bad_options_are_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--optimizer must be sgd or adamw"):
        train(quick_config(tmp_path, optimizer="lbfgs"))
    with pytest.raises(ConfigError, match="unknown training option 'bogus'"):
        TrainConfig().with_strings({"bogus": "1"})
    with pytest.raises(ConfigError, match="not a valid int"):
        TrainConfig().with_strings({"batch_size": "lots"})
    with pytest.raises(ConfigError, match=r"^--bias-lr must be a positive number, got 0\.0\.$"):
        train(quick_config(tmp_path, bias_lr=0.0))
    with pytest.raises(ConfigError, match=r"^--lr must be a positive number, got 0\.0\.$"):  # not the bias-lr
        train(quick_config(tmp_path, lr=0.0))


def test_cli_reports_a_bad_dataset_without_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(LAB)}
    missing = tmp_path / "missing.tar.gz"
    r = subprocess.run(
        [sys.executable, "-m", "cifarlab", "train", "--data", str(missing), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2
    assert str(missing) in r.stderr and "Traceback" not in r.stderr
    done = json.loads((tmp_path / "o" / "events.jsonl").read_text().splitlines()[-1])
    assert done["event"] == "done" and done["status"] == "failed"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is a POSIX signal")
def test_sigterm_stops_cleanly_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(LAB)}
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "cifarlab",
        "train",
        "--data",
        "synthetic:400",
        "--batch-size",
        "4",
        "--epochs",
        "1000",
        "--out",
        str(out),
        "--log-every",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    events = out / "events.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and not (events.exists() and '"epoch"' in events.read_text()):
        time.sleep(0.2)  # wait for the first epoch end, then for some training past it
    assert proc.poll() is None, proc.communicate()[0]
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["interrupted_by"] == "SIGTERM"
    assert (out / "checkpoint.pt").is_file()
    _, ckpt = load_checkpoint(out)
    assert ckpt["step"] == metrics["steps"] > 0
    assert json.loads(events.read_text().splitlines()[-1])["status"] == "interrupted"
