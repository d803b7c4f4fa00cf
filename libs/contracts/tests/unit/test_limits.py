"""The size limits publishers and the projector share."""

from runstream.contracts import (
    EVENT_MAX_BYTES,
    LOG_TEXT_MAX_BYTES,
    STREAM_MAX_MSG_BYTES,
    LogAppended,
    decode,
    encode,
    json_schema,
    new_id,
    truncate_text,
    utcnow,
    utf8_size,
)


def test_a_text_within_the_limit_is_left_as_it_is() -> None:
    text = "é" * (LOG_TEXT_MAX_BYTES // 2)  # exactly the limit in UTF-8
    assert truncate_text(text) == (text, False)


def test_a_text_over_the_limit_is_cut_to_the_limit_with_a_marker_giving_its_size() -> None:
    text = "x" * 900_000
    cut, truncated = truncate_text(text)
    assert truncated
    assert utf8_size(cut) <= LOG_TEXT_MAX_BYTES
    assert cut.startswith("x" * 16_000)
    assert cut.endswith(" … [truncated: 900000 bytes in all]")


def test_a_cut_never_splits_a_multibyte_character() -> None:
    # 3-byte characters: no cut position in bytes is likely to fall on a boundary.
    text = "€" * 10_000
    for limit in (100, 101, 102, 1000):
        cut, truncated = truncate_text(text, limit)
        assert truncated
        assert utf8_size(cut) <= limit
        head = cut.split(" … [truncated")[0]
        assert set(head) == {"€"} and len(head) > 0


def test_truncating_is_deterministic() -> None:
    text = "line\n" * 10_000
    assert truncate_text(text) == truncate_text(text)


def test_a_log_longer_than_the_limit_still_decodes_so_the_projector_can_cut_it() -> None:
    event = LogAppended(
        event_id=new_id(), at=utcnow(), session_id="s", message_id="m", text="y" * 900_000
    )
    assert decode(encode(event)) == event


def test_the_limits_leave_room_for_headers_and_are_published_in_the_schema() -> None:
    assert LOG_TEXT_MAX_BYTES < EVENT_MAX_BYTES < STREAM_MAX_MSG_BYTES
    text = json_schema()["$defs"]["LogAppended"]["properties"]["text"]
    assert str(LOG_TEXT_MAX_BYTES) in text["description"]
