"""One OpenTelemetry trace per analysis, carried in NATS headers across every service."""

from __future__ import annotations

import nats
from nats.js.errors import NotFoundError
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

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


async def test_a_submit_is_one_server_span_named_by_its_route_and_its_event_carries_it(stack):
    """The gateway's server span continues the caller's trace, is named "{method}
    {route}" with the status it answered, and is the parent the event names."""
    configure_tracing("tests")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    try:
        async with stack.client() as c:
            sid = await new_session(c)
            r = await c.post(f"/api/sessions/{sid}/analyses", json={"question": "rows?"},
                             headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"})
            assert r.status_code == 202, r.text
        s = stack.settings
        nc = await nats.connect(s.nats_url)
        try:
            raw = await nc.jetstream().get_last_msg(s.stream, f"{s.prefix}.{sid}.session",
                                                    direct=True)
        finally:
            await nc.close()
        submits = [span for span in spans.get_finished_spans()
                   if span.name == "POST /api/sessions/{session_id}/analyses"]
    finally:
        spans.shutdown()
    assert len(submits) == 1, [span.name for span in spans.get_finished_spans()]
    span = submits[0]
    assert span.kind == trace.SpanKind.SERVER
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 202
    assert span.attributes["http.route"] == "/api/sessions/{session_id}/analyses"
    assert span.attributes["http.request.method"] == "POST"
    assert span.parent is not None and format(span.parent.span_id, "016x") == caller_span
    assert format(span.context.trace_id, "032x") == caller_trace
    assert raw.headers is not None and raw.headers["Rs-Type"] == "analysis_requested"
    assert raw.headers["traceparent"].split("-")[1:3] == [
        caller_trace, format(span.context.span_id, "016x")]
