"""A `down` that cannot save the user's work first is refused (exit 2) before anything is deleted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from labctl.state import StateStore
from tests.fakearm.fixtures import provision
from tests.fakearm.server import FakeArm
from tests.reliability.checks import before, error_paragraph, invoke
from tests.reliability.conftest import World


@pytest.fixture(scope="module")
def arm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeArm]:
    """A fake ARM that takes writes: the lab must exist in it for `down` to find it by its tags."""
    fake = FakeArm(tmp_path_factory.mktemp("fakearm")).start()
    yield fake
    fake.stop()


def test_down_of_a_lab_found_only_by_its_tags_needs_no_save(world: World) -> None:
    provision("lost")  # then this computer loses its record: Azure's tags know no address, user or host key
    StateStore().delete("lost")
    was = before(world)
    refused = invoke(world, ("down", "--name", "lost", "--yes"), {})
    assert refused.exit_code == 2 and "Traceback" not in refused.output, refused.output
    text = error_paragraph(refused)
    assert "'lost'" in text and "pinned host key" in text and "labctl down --name lost --no-save" in text
    assert world.arm_writes(was.requests) == [] and world.tripwire.hits == was.hits
    assert world.snapshot() - was.files == set()

    gone = invoke(world, ("down", "--name", "lost", "--yes", "--no-save"), {})
    assert gone.exit_code == 0, gone.output
    assert world.arm.group_names() == []
