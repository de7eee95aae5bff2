"""The fast path: decoded-image cache, batch augmentation, the fast preset, DDP on CPU, the benchmark script."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cifarlab import data as data_module
from cifarlab.config import AIRBENCH, TrainConfig
from cifarlab.data import Data, DataError, load_data
from cifarlab.models import amp_dtype, build_model, count_parameters, model_kwargs, predict_logits
from cifarlab.train import SGD, Batches, Dist, augment, train
from PIL import Image

from .conftest import make_jpeg_folder, make_targz

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "lab"


def test_cache_is_reused_until_the_data_changes(tmp_path: Path, lab_cache_dir: Path) -> None:
    archive = make_targz(make_jpeg_folder(tmp_path / "a"), tmp_path / "data.tar.gz")
    first = load_data(str(archive))
    assert first.cache.startswith("built")
    second = load_data(str(archive))
    assert second.cache.startswith("reused")
    assert torch.equal(first.train.images, second.train.images) and torch.equal(first.test.images, second.test.images)

    # new content (one more image per class) with a new mtime: the cache must be rebuilt, and only one kept
    archive.unlink()
    make_targz(make_jpeg_folder(tmp_path / "b", per_class=8), archive)
    os.utime(archive, ns=(time.time_ns(), time.time_ns() + 10**9))
    third = load_data(str(archive))
    assert third.cache.startswith("built")
    assert len(third.train) + len(third.test) == 24
    assert len(list(lab_cache_dir.glob("data.tar.gz.cache-*.pt"))) == 1


def test_directory_cache_notices_a_changed_file(jpeg_folder: Path) -> None:
    assert load_data(str(jpeg_folder)).cache.startswith("built")
    assert load_data(str(jpeg_folder)).cache.startswith("reused")
    Image.new("RGB", (32, 32), (9, 9, 9)).save(jpeg_folder / "train" / "cat" / "0000.jpg")
    changed = load_data(str(jpeg_folder))
    assert changed.cache.startswith("built")


def test_cache_is_written_next_to_writable_data_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CIFARLAB_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "usercache"))
    folder = tmp_path / "ro"
    folder.mkdir()
    archive = make_targz(make_jpeg_folder(tmp_path / "src"), folder / "d.tar.gz")
    folder.chmod(0o555)  # read-only data folder, as a shared data mount is
    try:
        data = load_data(str(archive))
    finally:
        folder.chmod(0o755)
    assert str(tmp_path / "usercache" / "cifarlab") in data.cache
    assert sorted(p.name for p in folder.iterdir()) == ["d.tar.gz"]


def _plain_loader(folder: Path) -> tuple[list[np.ndarray], list[int]]:
    """What a per-image loader (ImageFolder + PIL) would hand out, file by file."""
    classes = sorted(p.name for p in (folder / "train").iterdir())
    images, labels = [], []
    for k, cls in enumerate(classes):
        for f in sorted((folder / "train" / cls).glob("*.jpg")):
            with Image.open(f) as im:
                images.append(np.asarray(im.convert("RGB")))
            labels.append(k)
    return images, labels


def test_fast_pipeline_yields_the_same_images_and_labels_as_a_plain_loader(jpeg_folder: Path) -> None:
    images, labels = _plain_loader(jpeg_folder)
    for _ in range(2):  # built, then reused from the cache
        data = load_data(str(jpeg_folder), holdout=0.5, seed=1)
        assert data.test is not None
        got_images = torch.cat([data.train.images, data.test.images]).permute(0, 2, 3, 1).numpy()
        got_labels = torch.cat([data.train.labels, data.test.labels]).tolist()
        expected = sorted(zip((im.tobytes() for im in images), labels, strict=True))
        assert sorted(zip((im.tobytes() for im in got_images), got_labels, strict=True)) == expected


def test_augmentation_keeps_shapes_dtype_and_pixel_values() -> None:
    torch.manual_seed(0)
    x = torch.randint(1, 256, (64, 3, 32, 32), dtype=torch.uint8)
    flip = torch.arange(64) % 3 == 0
    y = augment(x, flip)
    assert y.shape == x.shape and y.dtype == torch.uint8
    for a, b in zip(x, y, strict=True):  # every output pixel is an input pixel or the zero padding
        values = set(a.flatten().tolist()) | {0}
        assert set(b.flatten().tolist()) <= values
    assert not torch.equal(x, y)

    flipped = augment(x, flip, pad=0)  # exactly the images marked are mirrored
    assert torch.equal(flipped[flip], x[flip].flip(3)) and torch.equal(flipped[~flip], x[~flip])


def test_augmentation_crops_are_shifted_windows_of_the_padded_image() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.int64).view(2, 3, 8, 8).to(torch.uint8)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    y = augment(x, torch.tensor([False, True]), pad=2)
    for a_pad, b in zip(padded, y, strict=True):
        windows = [a_pad[:, i : i + 8, j : j + 8] for i in range(5) for j in range(5)]
        windows += [w.flip(2) for w in windows]
        assert any(torch.equal(w, b) for w in windows)


def test_flips_alternate_each_image_between_epochs() -> None:
    cfg = TrainConfig(data="synthetic:100", model="fast", batch_size=10).resolved()
    data = load_data("synthetic:100")
    batches = Batches(data, cfg, Dist(), torch.device("cpu"))
    seen: dict[int, list[bool]] = {}
    for step in range(2 * batches.per_epoch):
        _, _, flip = batches.get(step)
        idx = batches.order[step % batches.per_epoch * batches.batch :][: batches.batch]
        for i, f in zip(idx.tolist(), flip.tolist(), strict=True):
            seen.setdefault(i, []).append(f)
    both = [v for v in seen.values() if len(v) == 2]
    assert both and all(a != b for a, b in both)  # each image mirrored in one of two epochs
    assert 0.2 < sum(v[0] for v in seen.values()) / len(seen) < 0.8


def test_sgd_takes_torchs_steps() -> None:
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    groups = [{"params": list(nets[0].parameters()), "lr": 0.1, "weight_decay": 5e-4}]
    ours = SGD([{**groups[0], "params": list(nets[1].parameters())}], 0.9, True)
    theirs = torch.optim.SGD(groups, momentum=0.9, nesterov=True)
    for _ in range(5):
        x = torch.randn(8, 4)
        for net, opt in ((nets[0], theirs), (nets[1], ours)):
            opt.zero_grad()
            net(x).square().sum().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.equal(a, b)


def test_on_cuda_the_fast_preset_is_airbench94() -> None:
    cfg = TrainConfig(model="fast").resolved("cuda")
    assert (cfg.batch_size, cfg.width, cfg.lean, cfg.tta, cfg.lookahead, cfg.bias_lr) == (1024, 1.0, False, 2, True, 64)
    net = build_model("fast", **model_kwargs(cfg))
    assert count_parameters(net) == 1_972_792  # airbench94's network, counted from its make_net94
    assert net.whiten.bias is not None and all(
        not m.weight.requires_grad for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )
    cpu = TrainConfig(model="fast").resolved("cpu")
    assert (cpu.batch_size, cpu.width, cpu.lean, cpu.tta, cpu.lookahead) == (256, 0.25, True, 1, False)


def test_the_cuda_recipe_trains_on_a_cpu_too(tmp_path: Path) -> None:
    knobs = {k: v for k, v in AIRBENCH.items() if k not in ("epochs", "batch_size", "width")}
    cfg = TrainConfig(data="synthetic:1024", model="fast", **knobs, epochs=5, batch_size=128, width=0.125)
    metrics = train(dataclasses.replace(cfg, out=str(tmp_path), eval_each_epoch=False))
    losses = metrics["loss_per_step"]
    assert len(losses) == 40 and sum(losses[-4:]) < 0.6 * sum(losses[:4]) and metrics["accuracy"] > 0.5
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["state_dict"]
    assert state["whiten.bias"].abs().sum() > 0  # the whitening's bias learned (it starts at zero)


def test_time_augmentation_adds_the_mirrored_then_the_shifted_views() -> None:
    torch.manual_seed(0)
    net = build_model("fast", width=0.125, airbench=True).eval()
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    cpu = torch.device("cpu")
    one, two = (predict_logits(net, x, cpu, tta=level) for level in (1, 2))
    assert one.shape == two.shape == (6, 10) and not torch.allclose(one, two)
    torch.testing.assert_close(one, predict_logits(net, x, cpu) + predict_logits(net, x.flip(3), cpu))


def test_fast_preset_trains_a_few_steps_and_lowers_the_loss(tmp_path: Path) -> None:
    cfg = TrainConfig(
        data="synthetic:512", model="fast", width=0.125, epochs=4, batch_size=64, lr=0.2, out=str(tmp_path)
    )
    metrics = train(cfg)
    losses = metrics["loss_per_step"]
    assert metrics["options"]["recipe"] == "fast" and metrics["options"]["augment"] is True
    assert len(losses) == 32 and sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4
    assert metrics["accuracy"] > 0.3
    assert (tmp_path / "checkpoint.pt").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_process_gloo_ddp_run_writes_one_set_of_results(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(LAB), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "cifarlab",
        "train",
        "--data",
        "synthetic:256",
        "--model",
        "fast",
        "--width",
        "0.25",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "succeeded" and metrics["world_size"] == 2
    # 256 images, 2 ranks of 32 per step: 4 steps per epoch, each rank on its own half
    assert metrics["steps"] == 8 and len(metrics["loss_per_step"]) == 8
    # images/s counts both ranks: 8 steps of 64 images (32 on each rank) in the training time
    assert metrics["images_per_s"] == pytest.approx(8 * 64 / metrics["train_s"], rel=0.02)
    assert torch.load(out / "checkpoint.pt", weights_only=False)["world_size"] == 2
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("start") == 1 and events[-1]["event"] == "done"
    assert r.stdout.count("overall") == 1  # only rank 0 reports
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]


@pytest.mark.slow
def test_benchmark_script_smoke_run(tmp_path: Path) -> None:
    archive = make_targz(make_jpeg_folder(tmp_path / "imgs", per_class=20), tmp_path / "tiny.tar.gz")
    result = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "lab_speed.py"), "--data", str(archive), "--holdout", "0.25"]
    cmd += ["--classic-epochs", "1", "--workers", "0", "--tutorial=--epochs 2 --batch-size 8"]
    cmd += ["--fast=--epochs 1 --batch-size 16", "--out", str(tmp_path / "runs"), "--json", str(result)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    [round_] = json.loads(result.read_text())["rounds"]
    assert round_["classic"]["steps"] == 12 and 0 <= round_["classic"]["accuracy"] <= 1
    tutorial, fast = round_["tutorial"], round_["fast"]
    assert tutorial["options"]["epochs"] == 2 and fast["options"]["model"] == "fast"
    # each clock runs from the process's start: it holds the imports that train()'s own clock does not
    assert tutorial["wall_s"] > tutorial["inside_s"] > 0 and fast["wall_s"] > fast["inside_s"] > 0
    assert "summary" in r.stdout


# ------------------------------------------------------------------------------------------------ decoding ahead


def _pixels_and_labels(data: Data) -> list[tuple[bytes, int]]:
    images = torch.cat([data.train.images, data.test.images])
    labels = torch.cat([data.train.labels, data.test.labels]).tolist()
    return sorted(zip((im.numpy().tobytes() for im in images), labels, strict=True))


@pytest.mark.parametrize("workers", [1, 0], ids=["process", "in-process"])
@pytest.mark.parametrize("holdout", [0.25, None], ids=["holdout", "archive-test-split"])
def test_decoding_ahead_yields_the_same_splits_as_the_plain_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int, holdout: float | None
) -> None:
    monkeypatch.setattr(data_module, "CHUNK", 4)  # several chunks even for a few images
    archive = make_targz(make_jpeg_folder(tmp_path / "imgs", per_class=10, with_test=True), tmp_path / "d.tar.gz")
    plain = load_data(str(archive), holdout=holdout, seed=2, cache=False)
    ahead = load_data(str(archive), holdout=holdout, seed=2, cache=False, ahead=True)
    decoding = ahead.decoding
    assert decoding is not None and plain.decoding is None
    decoding.workers = workers
    assert torch.equal(ahead.train.labels, plain.train.labels) and torch.equal(ahead.test.labels, plain.test.labels)

    first = torch.randperm(len(ahead.train), generator=torch.Generator().manual_seed(5))
    decoding.start(first)
    decoding.wait("train", 5)  # the first rows of the training order are there before the rest
    assert torch.equal(ahead.train.images[first[:5]], plain.train.images[first[:5]])
    decoding.finish()
    assert torch.equal(ahead.train.images, plain.train.images)
    assert torch.equal(ahead.test.images, plain.test.images)
    assert _pixels_and_labels(ahead) == _pixels_and_labels(plain)
    assert decoding.done_s is not None


def test_decoding_ahead_builds_the_same_cache_as_the_plain_loader(tmp_path: Path, lab_cache_dir: Path) -> None:
    archive = make_targz(make_jpeg_folder(tmp_path / "imgs", per_class=9), tmp_path / "d.tar.gz")
    ahead = load_data(str(archive), holdout=0.2, seed=0, ahead=True)
    assert ahead.decoding is not None and "once decoded" in ahead.cache
    ahead.decoding.start()
    ahead.decoding.wait("train")
    ahead.decoding.wait("test")
    time.sleep(0.3)
    assert not list(lab_cache_dir.glob("*.pt"))  # decoded, but the cores stay the trainer's until `finish`
    ahead.decoding.finish()
    assert ahead.cache.startswith("built") and len(list(lab_cache_dir.glob("d.tar.gz.cache-*.pt"))) == 1
    reused = load_data(str(archive), holdout=0.2, seed=0, ahead=True)
    assert reused.decoding is None and reused.cache.startswith("reused")
    plain = load_data(str(archive), holdout=0.2, seed=0, cache=False)
    assert _pixels_and_labels(reused) == _pixels_and_labels(plain) == _pixels_and_labels(ahead)
    assert torch.equal(reused.train.images, plain.train.images)


@pytest.mark.parametrize("workers", [1, 0], ids=["process", "in-process"])
def test_decoding_ahead_reports_an_undecodable_image(tmp_path: Path, jpeg_folder: Path, workers: int) -> None:
    (jpeg_folder / "train" / "cat" / "9999.jpg").write_bytes(b"garbage")
    data = load_data(str(jpeg_folder), cache=False, ahead=True)
    assert data.decoding is not None
    data.decoding.workers = workers
    with pytest.raises(DataError, match="could not be decoded"):
        data.decoding.finish()
    data.decoding.close()


def test_a_cold_run_decoding_ahead_trains_exactly_as_a_warm_one(tmp_path: Path, lab_cache_dir: Path) -> None:
    archive = make_targz(make_jpeg_folder(tmp_path / "imgs", per_class=12), tmp_path / "d.tar.gz")

    def run(name: str) -> dict[str, Any]:
        out = str(tmp_path / name)
        return train(TrainConfig(data=str(archive), holdout=0.25, recipe="fast", epochs=2, batch_size=4, out=out))

    cold = run("cold")
    warm = run("warm")
    events = [json.loads(line) for line in (tmp_path / "cold" / "events.jsonl").read_text().splitlines()]
    assert next(e for e in events if e["event"] == "data")["decoding"] == "background"
    assert cold["data"]["decode_s"] is not None and warm["data"]["decode_s"] is None
    assert cold["loss_per_step"] == warm["loss_per_step"] and cold["accuracy"] == warm["accuracy"]


def test_a_cold_run_with_two_threads_gives_one_to_the_decoding_until_it_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = make_targz(make_jpeg_folder(tmp_path / "imgs", per_class=12), tmp_path / "d.tar.gz")
    seen: list[int] = []
    real = data_module.Decoding.wait

    def wait(self: Any, split: str, rows: int | None = None) -> None:
        seen.append(torch.get_num_threads())
        real(self, split, rows)

    monkeypatch.setattr(data_module.Decoding, "wait", wait)
    cfg = TrainConfig(data=str(archive), holdout=0.25, recipe="fast", epochs=1, batch_size=4, threads=2)
    try:
        metrics = train(dataclasses.replace(cfg, out=str(tmp_path / "run")))
        assert seen and seen[0] == 1  # the first step ran on one thread, beside the decoding process
        assert torch.get_num_threads() == 2  # and the run ended on the two it asked for
    finally:
        torch.set_num_threads(1)
    assert metrics["status"] == "succeeded"


def test_a_run_that_fails_on_an_image_leaves_no_decoding_process(tmp_path: Path, lab_cache_dir: Path) -> None:
    """`python -m cifarlab` ends without the interpreter's teardown, which would have stopped the decoding pool."""
    folder = make_jpeg_folder(tmp_path / "imgs", per_class=400)
    (folder / "train" / "cat" / "9999.jpg").write_bytes(b"garbage")
    env = {**os.environ, "PYTHONPATH": str(LAB), "CIFARLAB_CACHE_DIR": str(lab_cache_dir)}
    argv = [sys.executable, "-m", "cifarlab", "train", "--data", str(folder), "--epochs", "1", "--out", str(tmp_path)]
    with (tmp_path / "said.txt").open("wb") as out:  # not a pipe, which a process left behind would keep open
        run = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        run.wait(timeout=300)
    said = (tmp_path / "said.txt").read_text()
    assert run.returncode == 2 and "could not be decoded" in said, said[-2000:]
    time.sleep(0.5)
    try:
        with pytest.raises(ProcessLookupError):  # nothing of its session is left: the run's group id is its pid
            os.killpg(run.pid, 0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)


@pytest.mark.parametrize("amx", [True, False])
def test_on_a_cpu_the_fast_network_alone_takes_bf16_where_the_cpu_has_amx(
    amx: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    cpu = torch.device("cpu")
    fast, tutorial = (TrainConfig(model=m).resolved() for m in ("fast", "tutorial"))
    assert amp_dtype(fast, cpu) == (torch.bfloat16 if amx else None)
    assert amp_dtype(tutorial, cpu) is None
    assert amp_dtype(dataclasses.replace(fast, amp="off"), cpu) is None
    assert amp_dtype(dataclasses.replace(fast, airbench=True), cpu) is None
    assert amp_dtype(dataclasses.replace(tutorial, amp="bf16"), cpu) == torch.bfloat16
