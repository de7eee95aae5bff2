"""The local state: atomic, private, and explicit about which lab is meant."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from labctl.errors import NotFound, UsageError
from labctl.state import LabRecord, NodeRecord, RunRecord, StateStore, validate_lab_name


def test_saved_record_round_trips_and_is_private(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    record = LabRecord(name="lab", target="ssh", jupyter_token="secret", nodes=[NodeRecord(host="127.0.0.1")])
    record.requirements = "--index-url https://me:token@pypi.example/simple\nnumpy\n"  # may hold a credential
    record.runs.append(RunRecord(run_id="r1", started_at="2026-01-01T00:00:00+00:00"))
    path = store.save(record)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = store.load("lab")
    assert loaded == record
    assert "jupyter_token" not in loaded.public_json() and "requirements" not in loaded.public_json()


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


def test_a_suggested_command_names_the_lab_unless_every_command_would_pick_it(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(LabRecord(name="lab", target="local"))
    assert store.name_flag("lab") == ""  # `up` means the default lab, the others the only one: both this one
    store.save(LabRecord(name="other", target="local"))
    assert store.name_flag("lab") == " --name lab"  # 'labctl start' alone would now ask which lab
    store.delete("lab")
    assert store.name_flag("other") == " --name other"  # the only lab, but `up` alone means 'lab'


@pytest.mark.parametrize("bad", ["", "Lab", "1lab", "lab-", "a" * 25, "lab_1", "lab 1"])
def test_bad_lab_names_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        validate_lab_name(bad)


@pytest.mark.parametrize("good", ["lab", "a", "cifar-gpu", "x1"])
def test_good_lab_names_pass(good: str) -> None:
    assert validate_lab_name(good) == good


def _write_state(store: StateStore, name: str, text: str) -> Path:
    path = store.labs_dir / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "Expecting property name"),
        ("[]", "JSON list, not an object"),
        ('{"target": "ssh"}', "has no 'name'"),
        ('{"name": "lab", "target": "ssh", "port": "22"}', "'port'"),
        ('{"name": "lab", "target": "ssh", "gpu": 1}', "'gpu'"),
        ('{"name": "lab", "target": "ssh", "host": 7}', "which is not a str | None"),
        ('{"name": "lab", "target": "ssh", "target_data": []}', "'target_data'"),
        ('{"name": "lab", "target": "ssh", "runs": {}}', "'runs' in the lab record is {}, which is not a list"),
        ('{"name": "lab", "target": "ssh", "runs": [1]}', "run 1 is a JSON int"),
        ('{"name": "lab", "target": "ssh", "runs": [{"run_id": "r1"}]}', "run 1 has no 'started_at'"),
    ],
)
def test_unreadable_or_misshapen_state_file_is_one_clear_error(tmp_path: Path, text: str, why: str) -> None:
    store = StateStore(tmp_path)
    path = _write_state(store, "lab", text)
    with pytest.raises(UsageError) as caught:
        store.load("lab")
    message = caught.value.render()
    assert f"The state file {path} could not be read" in message and why in message
    assert "Move it aside" in message


def test_state_written_by_a_newer_labctl_still_loads(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    _write_state(
        store,
        "lab",
        '{"name": "lab", "target": "azure", "future_field": 1, "port": 2222,'
        ' "runs": [{"run_id": "r1", "started_at": "x", "accuracy": 1, "future": true}]}',
    )
    record = store.load("lab")
    assert record.nodes[0].port == 2222 and record.runs[0].accuracy == 1


def test_list_skips_unreadable_files_and_resolve_names_them(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    broken = _write_state(store, "broken", "{")
    with pytest.raises(UsageError) as caught:
        store.resolve(None)
    assert str(broken) in caught.value.render() and "Move it aside" in caught.value.render()

    store.save(LabRecord(name="one", target="local"))
    records, unreadable = store.scan()
    assert [r.name for r in records] == ["one"] and list(unreadable) == [broken]
    with pytest.raises(UsageError) as caught:  # the broken file may be the lab meant: never guess past it
        store.resolve(None)
    message = caught.value.render()
    assert "one" in message and str(broken) in message and "--name NAME" in message
    assert store.resolve("one").name == "one"

    broken.unlink()
    assert store.resolve(None).name == "one"
