"""Publishers keep events within the contract's size limits."""

import pytest

from runstream.bus import Bus, EventTooLarge, LogTextTooLarge
from runstream.contracts import (
    EVENT_MAX_BYTES,
    LOG_TEXT_MAX_BYTES,
    STREAM_MAX_MSG_BYTES,
    Column,
    ExecutionCompleted,
    LogAppended,
    decode,
    new_id,
    utcnow,
)


def _log(text: str) -> LogAppended:
    return LogAppended(
        event_id=new_id(), at=utcnow(), session_id=new_id(), message_id=new_id(), text=text
    )


async def test_publishing_a_log_over_the_text_limit_is_refused_and_stores_nothing(
    bus: Bus,
) -> None:
    before = await bus.last_seq()
    with pytest.raises(LogTextTooLarge) as refused:
        await bus.publish(_log("x" * 900_000))
    assert refused.value.code == "log_text_too_large"
    assert (refused.value.size, refused.value.limit) == (900_000, LOG_TEXT_MAX_BYTES)
    assert "900000 bytes" in refused.value.detail
    assert await bus.last_seq() == before


async def test_a_log_at_exactly_the_limit_in_utf8_bytes_is_published(bus: Bus) -> None:
    text = "é" * (LOG_TEXT_MAX_BYTES // 2)  # 2 bytes each: as many characters as half
    published = await bus.publish(_log(text))
    stored = decode((await bus.get_msg(published.seq)).data or b"")
    assert isinstance(stored, LogAppended) and stored.text == text
    with pytest.raises(LogTextTooLarge):
        await bus.publish(_log(text + "e"))


async def test_publishing_an_event_over_the_event_limit_is_refused(bus: Bus) -> None:
    before = await bus.last_seq()
    huge = ExecutionCompleted(
        event_id=new_id(), at=utcnow(), session_id=new_id(), message_id=new_id(),
        columns=[Column(name="x", type="VARCHAR")], rows=[["y" * 1000]] * 1100, row_count=1100,
    )  # fmt: skip
    with pytest.raises(EventTooLarge) as refused:
        await bus.publish(huge)
    assert refused.value.code == "event_too_large"
    assert refused.value.size > EVENT_MAX_BYTES == refused.value.limit
    assert await bus.last_seq() == before


async def test_the_provisioned_stream_refuses_messages_over_the_size_limit(bus: Bus) -> None:
    info = await bus.js.stream_info(bus.stream)
    assert info.config.max_msg_size == STREAM_MAX_MSG_BYTES
