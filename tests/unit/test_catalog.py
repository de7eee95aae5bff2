"""The size catalog: what `up` accepts, what it refuses and how it says so."""

from __future__ import annotations

import pytest

from labctl.errors import UsageError
from labctl.pricing import DEFAULT_CPU_SIZE, DEFAULT_GPU_SIZE, SIZES, choose_sizes, lookup


def test_defaults_are_a_cpu_and_a_t4_size() -> None:
    assert choose_sizes([], gpu=False)[0].name == DEFAULT_CPU_SIZE == "Standard_D4s_v5"
    gpu = choose_sizes([], gpu=True)[0]
    assert gpu.name == DEFAULT_GPU_SIZE == "Standard_NC4as_T4_v3"
    assert gpu.gpu_count == 1 and gpu.gpu_model == "NVIDIA T4"


def test_lookup_is_case_insensitive_and_accepts_the_short_form() -> None:
    assert lookup("standard_nc4as_t4_v3").name == "Standard_NC4as_T4_v3"
    assert lookup("D8s_v5").name == "Standard_D8s_v5"


@pytest.mark.parametrize("size", ["Standard_NC6", "Standard_NC12s_v2", "Standard_NC6s_v3", "Standard_NC24rs_v3"])
def test_retired_sizes_name_current_alternatives(size: str) -> None:
    with pytest.raises(UsageError) as info:
        lookup(size)
    text = info.value.render()
    assert "retired" in text
    assert "Standard_NC4as_T4_v3" in text and "Standard_NC24ads_A100_v4" in text


def test_a_malformed_size_suggests_the_closest() -> None:
    with pytest.raises(UsageError) as info:
        lookup("Standard_D4s-v5")
    assert "Did you mean" in info.value.render()
    assert "Standard_D4s_v5" in info.value.render()


def test_gpu_flag_refuses_cpu_sizes() -> None:
    with pytest.raises(UsageError, match="no GPU"):
        choose_sizes(["Standard_D4s_v5"], gpu=True)


def test_repeated_sizes_keep_order_without_duplicates() -> None:
    names = [s.name for s in choose_sizes(["NC8as_T4_v3", "Standard_NC4as_T4_v3", "nc8as_t4_v3"], gpu=True)]
    assert names == ["Standard_NC8as_T4_v3", "Standard_NC4as_T4_v3"]


def test_every_entry_is_consistent() -> None:
    for key, size in SIZES.items():
        assert key == size.name.lower()
        assert size.vcpus > 0 and size.memory_gib > 0 and size.usd_per_hour > 0
        assert (size.gpu_model is None) == (size.gpu_count == 0)
        assert size.hourly(spot=True) < size.hourly(spot=False)
        assert size.family.lower().endswith("family")


def test_a_size_the_catalog_lacks_is_taken_as_typed_for_the_preflight_to_check() -> None:
    size = lookup("NC8ads_A10_v4")
    assert size.name == "Standard_NC8ads_A10_v4" and not size.catalogued and size.vcpus == 0
    assert "shape and price come from Azure" in size.describe()
