"""Two gateways, one session, 500 concurrent submits: the session lock (a conditional
publish on the session subject) admits exactly one analysis at a time, whichever gateway
a submit reaches, and every refusal names the analysis that holds the lock."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx

from runstream.bus import Bus
from runstream.contracts import AnalysisRequested, StepStarted, decode
from runstream.testing import wait_until
from tests.faults.support import QUESTION, bus_settings, open_sessions, stream_events
from tests.integration.conftest import HIGH_RATE_LIMITS

SUBMITS = 500
# Holds the running analysis in its plan step far longer than the burst takes; the test
# cancels it when done, which ends the hold (the knob watches for a cancel).
HOLD_S = 120.0


async def _fire(stack: Any, sid: str) -> list[httpx.Response]:
    """SUBMITS submits at once, alternating between the two gateways. Fresh clients, with
    enough connections that all of them are really in flight at once (and no idle
    keep-alive connection the server may be closing just then)."""
    limits = httpx.Limits(max_connections=SUBMITS, max_keepalive_connections=SUBMITS)
    clients = [stack.client(index=i, timeout=60, limits=limits) for i in range(2)]
    start = asyncio.Event()

    async def one(i: int) -> httpx.Response:
        await start.wait()
        return await clients[i % 2].post(f"/api/sessions/{sid}/analyses",
                                         json={"question": QUESTION})

    try:
        tasks = [asyncio.create_task(one(i)) for i in range(SUBMITS)]
        await asyncio.sleep(0)  # every task waits on the same start line
        start.set()
        return list(await asyncio.gather(*tasks))
    finally:
        for c in clients:
            await c.aclose()


async def _requested(bus: Bus, sid: str) -> list[str]:
    """The analyses the stream recorded for this session (accepted submits)."""
    return [e.message_id for _, e in await stream_events(bus)
            if isinstance(e, AnalysisRequested) and e.session_id == sid]


async def _plan_started(bus: Bus, sid: str, mid: str) -> bool:
    raw = await bus.get_last_for_subject(bus.subjects.message(sid, mid, "step_started"))
    if raw is None:
        return False
    event = decode(raw.data or b"")
    return isinstance(event, StepStarted) and event.step == "plan"


def _refusals(responses: list[httpx.Response]) -> Counter[Any]:
    """(status, active_message_id) of every answer that is not a 202."""
    return Counter((r.status_code, r.json().get("active_message_id"))
                   for r in responses if r.status_code != 202)


async def _cancel(client: httpx.AsyncClient, mid: str) -> None:
    r = await client.post(f"/api/messages/{mid}/cancel")
    assert r.status_code == 202, r.text


async def test_while_an_analysis_runs_500_submits_on_two_gateways_are_all_refused_naming_it(
    stack_factory: Any,
) -> None:
    async with stack_factory(gateways=2, workers=True, overrides=HIGH_RATE_LIMITS,
                             worker_overrides={"planner_delay_s": HOLD_S}) as stack, \
            stack.client() as c, Bus.connect(bus_settings(stack.settings), name="race") as bus:
        [sid] = await open_sessions(c, 1)
        first = await c.post(f"/api/sessions/{sid}/analyses", json={"question": QUESTION})
        assert first.status_code == 202, first.text
        running = first.json()["message_id"]
        try:
            await wait_until(lambda: _plan_started(bus, sid, running), timeout=30)
            responses = await _fire(stack, sid)
            accepted = [r for r in responses if r.status_code == 202]
            assert not accepted, [r.json() for r in accepted[:3]]
            assert _refusals(responses) == Counter({(409, running): SUBMITS})
            # Still in its plan step: the burst ran inside the hold, as the test claims.
            assert await _plan_started(bus, sid, running)
            assert await _requested(bus, sid) == [running]
        finally:
            await _cancel(c, running)  # ends the hold, so the stack stops at once


async def test_on_an_idle_session_exactly_one_of_500_submits_on_two_gateways_wins(
    stack_factory: Any,
) -> None:
    async with stack_factory(gateways=2, workers=True, overrides=HIGH_RATE_LIMITS,
                             worker_overrides={"planner_delay_s": HOLD_S}) as stack, \
            stack.client() as c, Bus.connect(bus_settings(stack.settings), name="race") as bus:
        [sid] = await open_sessions(c, 1)
        responses = await _fire(stack, sid)
        accepted = [r.json()["message_id"] for r in responses if r.status_code == 202]
        try:
            assert len(accepted) == 1, accepted[:5]
            winner = accepted[0]
            assert _refusals(responses) == Counter({(409, winner): SUBMITS - 1})
            assert await _requested(bus, sid) == [winner]
        finally:
            for mid in accepted:
                await _cancel(c, mid)
