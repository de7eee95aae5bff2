"""The local state: atomic, private, and explicit about which lab is meant."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from labctl.errors import NotFound, UsageError
from labctl.state import LabRecord, RunRecord, StateStore, validate_lab_name


def test_saved_record_round_trips_and_is_private(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    record = LabRecord(name="lab", target="ssh", host="127.0.0.1", jupyter_token="secret")
    record.runs.append(RunRecord(run_id="r1", started_at="2026-01-01T00:00:00+00:00"))
    path = store.save(record)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = store.load("lab")
    assert loaded == record
    assert "jupyter_token" not in loaded.public_json()


def test_resolve_picks_the_only_lab_and_asks_when_several(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with pytest.raises(NotFound):
        store.resolve(None)
    store.save(LabRecord(name="one", target="local"))
    assert store.resolve(None).name == "one"
    store.save(LabRecord(name="two", target="local"))
    with pytest.raises(UsageError, match="several labs"):
        store.resolve(None)
    assert store.resolve("two").name == "two"


@pytest.mark.parametrize("bad", ["", "Lab", "1lab", "lab-", "a" * 25, "lab_1", "lab 1"])
def test_bad_lab_names_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        validate_lab_name(bad)


@pytest.mark.parametrize("good", ["lab", "a", "cifar-gpu", "x1"])
def test_good_lab_names_pass(good: str) -> None:
    assert validate_lab_name(good) == good
