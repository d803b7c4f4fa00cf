"""The step reporter publishes what a step says, within the contract's limits."""

from runstream.bus import Bus
from runstream.contracts import LOG_TEXT_MAX_BYTES, LogAppended, decode, new_id, utf8_size
from runstream.pipeline import StepReporter


async def test_the_step_reporter_truncates_an_oversize_log_line_instead_of_failing(
    bus: Bus,
) -> None:
    sid, mid = new_id(), new_id()
    steps = StepReporter(bus, session_id=sid, message_id=mid)
    await steps.log("execute", "boom " * 200_000, level="error")  # ~1 MB of error text

    stored = decode((await bus.get_msg(await bus.last_seq())).data or b"")
    assert isinstance(stored, LogAppended)
    assert (stored.message_id, stored.step, stored.level) == (mid, "execute", "error")
    assert utf8_size(stored.text) <= LOG_TEXT_MAX_BYTES
    assert stored.text.startswith("boom boom ")
    assert stored.text.endswith(" … [truncated: 1000000 bytes in all]")
