from datetime import timedelta

import pytest

from runstream.cli.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("90s", timedelta(seconds=90)),
        ("1w", timedelta(days=7)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1.5h", timedelta(minutes=90)),
        (" 2H ", timedelta(hours=2)),
    ],
)
def test_durations_people_write_are_understood(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "24", "h", "24x", "-1h", "0m", "1h 30m", "1h30", "d7"])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text", ["7d", "1h30m", "1m30s", "1d12h", "45m"])
def test_a_formatted_duration_reads_back_as_itself(text: str) -> None:
    from runstream.cli.durations import format_duration

    assert format_duration(parse_duration(text)) == text
