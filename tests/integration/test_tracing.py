"""One OpenTelemetry trace per analysis, carried in NATS headers across every service."""

from __future__ import annotations

import nats
from nats.js.errors import NotFoundError

from runstream.telemetry import configure_tracing
from tests.integration.conftest import collect, new_session
from tests.integration.pipeline_support import sales_csv


def _trace_id(headers: dict[str, str] | None) -> str | None:
    parent = (headers or {}).get("traceparent")
    return parent.split("-")[1] if parent else None


async def test_an_analysis_is_one_trace_from_the_submit_to_the_settle(stack_factory):
    configure_tracing("tests")  # an SDK provider in this process: spans are real
    async with stack_factory(workers=True) as stack, stack.client() as c:
        sid = await new_session(c)
        await c.post(f"/api/sessions/{sid}/datasets", params={"name": "s"}, content=sales_csv())
        mid = (await c.post(f"/api/sessions/{sid}/analyses",
                            json={"question": "average revenue by region"})).json()["message_id"]
        async with c.stream("GET", f"/api/messages/{mid}/events") as r:
            frames = await collect(r, lambda f: False, timeout=60)
        assert frames[-1].data["status"] == "completed"
        s = stack.settings
        nc = await nats.connect(s.nats_url)
        try:
            js = nc.jetstream()
            traces: dict[str, set[str | None]] = {}
            seq = frames[0].id
            while True:  # every stored event of this session from the submit on
                try:
                    raw = await js.get_msg(s.stream, seq=seq, subject=f"{s.prefix}.{sid}.>",
                                           direct=True, next=True)
                except NotFoundError:
                    break
                traces.setdefault(raw.headers.get("Rs-Type", "?"), set()).add(
                    _trace_id(raw.headers))
                seq = int(raw.seq) + 1
        finally:
            await nc.close()
    ids = set().union(*traces.values())
    assert None not in ids, f"an event without trace context: {traces}"
    assert len(ids) == 1, f"one trace per analysis, got {traces}"
    assert {"analysis_requested", "script_generated", "execution_completed",
            "chart_completed", "analysis_settled"} <= set(traces)
