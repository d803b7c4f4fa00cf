import asyncio
from datetime import timedelta

import pytest

from runstream.bus import (
    Bus,
    LockHeld,
    NotLockHolder,
    SessionAggregate,
    SessionNotFound,
)
from runstream.contracts import AnalysisSettled, decode, new_id


async def _session(agg: SessionAggregate) -> str:
    sid = new_id()
    await agg.create(sid, owner="alice", title="t")
    return sid


async def _submit(agg: SessionAggregate, sid: str, mid: str | None = None):
    return await agg.request_analysis(
        sid, owner="alice", question="how many rows?", message_id=mid or new_id(),
        user_message_id=new_id(),
    )


async def test_a_submit_takes_the_lock_and_records_the_question(bus: Bus):
    agg = SessionAggregate(bus, lock_ttl_s=60)
    sid = await _session(agg)
    mid = new_id()
    committed = await _submit(agg, sid, mid)
    state = await agg.load(sid)
    assert state.seq == committed.seq
    assert state.lock is not None and state.lock.message_id == mid
    assert state.lock.expires_at - state.lock.acquired_at == timedelta(seconds=60)


async def test_second_submit_in_a_session_is_refused_naming_the_holder(bus: Bus):
    agg = SessionAggregate(bus, lock_ttl_s=60)
    sid = await _session(agg)
    first = new_id()
    await _submit(agg, sid, first)
    before = await bus.last_seq()
    with pytest.raises(LockHeld) as err:
        await _submit(agg, sid)
    assert err.value.holder == first
    assert await bus.last_seq() == before, "a refused submit writes nothing"


async def test_many_concurrent_submits_across_two_connections_have_exactly_one_winner(
    bus: Bus, bus_settings
):
    async with Bus.connect(bus_settings, name="other-pod") as other:
        aggs = [SessionAggregate(bus, lock_ttl_s=60), SessionAggregate(other, lock_ttl_s=60)]
        sid = await _session(aggs[0])
        results = await asyncio.gather(
            *(_submit(aggs[i % 2], sid) for i in range(100)), return_exceptions=True
        )
    winners = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, LockHeld)]
    assert len(winners) == 1
    assert len(refused) == 99
    assert {r.holder for r in refused} == {winners[0].event.message_id}


async def test_an_expired_lock_lets_the_next_submit_in(bus: Bus):
    short = SessionAggregate(bus, lock_ttl_s=0.05)
    sid = await _session(short)
    await _submit(short, sid)

    async def expired() -> bool:
        state = await short.load(sid)
        from runstream.contracts import utcnow

        return state.active_lock(utcnow()) is None

    from runstream.testing import wait_until

    await wait_until(expired, timeout=5)
    second = new_id()
    await _submit(SessionAggregate(bus, lock_ttl_s=60), sid, second)
    assert (await short.load(sid)).lock.message_id == second


async def test_a_settle_by_a_message_that_lost_the_lock_keeps_the_new_holder(bus: Bus):
    agg = SessionAggregate(bus, lock_ttl_s=0.01)
    sid = await _session(agg)
    old = new_id()
    await _submit(agg, sid, old)
    from runstream.contracts import utcnow
    from runstream.testing import wait_until

    async def expired() -> bool:
        return (await agg.load(sid)).active_lock(utcnow()) is None

    await wait_until(expired, timeout=5)
    new = new_id()
    await _submit(SessionAggregate(bus, lock_ttl_s=60), sid, new)
    committed = await agg.settle(sid, old, "expired")
    assert isinstance(committed.event, AnalysisSettled)
    assert committed.event.lock is not None and committed.event.lock.message_id == new
    with pytest.raises(NotLockHolder):
        await agg.renew(sid, old)


async def test_settle_by_the_holder_frees_the_lock_and_is_stored_once(bus: Bus):
    agg = SessionAggregate(bus, lock_ttl_s=60)
    sid = await _session(agg)
    mid = new_id()
    await _submit(agg, sid, mid)
    first = await agg.settle(sid, mid, "completed", summary="42 rows")
    again = await agg.settle(sid, mid, "completed", summary="42 rows")
    assert first.event.lock is None
    assert again.duplicate, "the derived Nats-Msg-Id makes a repeated settle a duplicate"
    raw = await bus.get_last_for_subject(bus.subjects.session(sid))
    assert raw.seq == first.seq
    assert decode(raw.data).status == "completed"
    await _submit(agg, sid)  # the lock is free


async def test_renew_extends_the_holders_lock(bus: Bus):
    agg = SessionAggregate(bus, lock_ttl_s=60)
    sid = await _session(agg)
    mid = new_id()
    first = await _submit(agg, sid, mid)
    renewed = await agg.renew(sid, mid, stage="plan")
    assert renewed.event.lock.expires_at > first.event.lock.expires_at
    assert renewed.event.lock.acquired_at == first.event.lock.acquired_at


async def test_submitting_to_a_session_that_does_not_exist_writes_nothing(bus: Bus):
    agg = SessionAggregate(bus)
    before = await bus.last_seq()
    with pytest.raises(SessionNotFound):
        await _submit(agg, new_id())
    assert await bus.last_seq() == before
