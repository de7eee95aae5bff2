"""ARM timestamps parse on every supported Python, 3.10 included, whose fromisoformat is much stricter."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from labctl.targets.azure.inventory import parse_time

UTC = timezone.utc


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-04T05:06:07Z", datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)),
        ("2026-03-04T05:06:07+00:00", datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)),
        ("2026-03-04T05:06:07.8Z", datetime(2026, 3, 4, 5, 6, 7, 800000, tzinfo=UTC)),
        ("2026-03-04T05:06:07.85Z", datetime(2026, 3, 4, 5, 6, 7, 850000, tzinfo=UTC)),
        ("2026-03-04T05:06:07.123Z", datetime(2026, 3, 4, 5, 6, 7, 123000, tzinfo=UTC)),
        ("2026-03-04T05:06:07.1234+00:00", datetime(2026, 3, 4, 5, 6, 7, 123400, tzinfo=UTC)),
        ("2026-03-04T05:06:07.12345Z", datetime(2026, 3, 4, 5, 6, 7, 123450, tzinfo=UTC)),
        ("2026-03-04T05:06:07.123456Z", datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)),
        ("2026-03-04T05:06:07.8051917+00:00", datetime(2026, 3, 4, 5, 6, 7, 805191, tzinfo=UTC)),
        ("2026-03-04T05:06:07.8051917z", datetime(2026, 3, 4, 5, 6, 7, 805191, tzinfo=UTC)),
        (" 2026-03-04T05:06:07.5 ", datetime(2026, 3, 4, 5, 6, 7, 500000, tzinfo=UTC)),  # no zone: UTC
        (
            "2026-03-04T05:06:07.25-05:00",
            datetime(2026, 3, 4, 5, 6, 7, 250000, tzinfo=timezone(timedelta(hours=-5))),
        ),
        ("2026-03-04T05:06:07+0130", datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=1, minutes=30)))),
    ],
)
def test_arm_timestamps_parse_to_the_same_instant(text: str, expected: datetime) -> None:
    parsed = parse_time(text)
    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize("text", ["", "yesterday", "2026-03-04T25:00:00Z"])
def test_garbage_is_a_value_error_the_callers_already_handle(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)
