"""Issue 3 figures: step-transition latency and end-to-end time over 100 analyses.

The gateway, the projector and the three workers run as subprocesses (rules planner).
Sessions with a small CSV ask "average revenue by region": BENCH_PIPELINE_SESSIONS
sessions in parallel, each asking its share of BENCH_PIPELINE_ANALYSES one after the
other (a session runs one analysis at a time). The benchmark reads the stream with an
ordered consumer and times everything with the JetStream timestamps of the events:

- hand-offs (a stage's last event -> the next stage's `step_started`):
  `analysis_requested` -> `step_started(context)` (gateway -> analysis worker),
  `script_generated` -> `step_started(execute)` (analysis -> execution worker),
  `execution_completed` -> `step_started(chart)` (execution -> chart worker);
- end to end: `analysis_requested` -> `analysis_settled`.

Every analysis must complete with the right averages and a chart.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import nats
import pytest

from tests.bench.support import BenchEnv, percentile, run_services, summary_ms

ANALYSES = int(os.environ.get("BENCH_PIPELINE_ANALYSES", "100"))
SESSIONS = int(os.environ.get("BENCH_PIPELINE_SESSIONS", "1"))
QUESTION = "average revenue by region"
STEPS = ["context", "plan", "script", "execute", "chart"]
HANDOFFS = {
    "gateway -> analysis (analysis_requested -> step_started(context))": (
        "analysis_requested", "context"),
    "analysis -> execution (script_generated -> step_started(execute))": (
        "script_generated", "execute"),
    "execution -> chart (execution_completed -> step_started(chart))": (
        "execution_completed", "chart"),
}  # fmt: skip


def _dataset() -> tuple[bytes, dict[str, float]]:
    regions = ["North", "South", "East", "West"]
    rows = [(regions[i % 4], round(10 + (i * 37 % 101) * 1.25, 2)) for i in range(500)]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["region", "revenue"])
    writer.writerows(rows)
    by_region: dict[str, list[float]] = defaultdict(list)
    for region, revenue in rows:
        by_region[region].append(revenue)
    return out.getvalue().encode(), {r: statistics.fmean(v) for r, v in by_region.items()}


class StreamLog:
    """Every event of the run with its JetStream timestamp, grouped by message."""

    def __init__(self) -> None:
        self.by_message: dict[str, list[tuple[int, str, dict[str, Any], float]]] = defaultdict(list)
        self.settled: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def future(self, mid: str) -> asyncio.Future[dict[str, Any]]:
        return self.settled.setdefault(mid, asyncio.get_running_loop().create_future())

    async def on_msg(self, msg: Any) -> None:
        data = json.loads(msg.data)
        mid = data.get("message_id")
        if mid is None:
            return
        meta = msg.metadata
        self.by_message[mid].append(
            (meta.sequence.stream, data["type"], data, meta.timestamp.timestamp())
        )
        if data["type"] == "analysis_settled":
            fut = self.future(mid)
            if not fut.done():
                fut.set_result(data)

    def first(self, mid: str, type_: str, step: str | None = None) -> float:
        for _, t, data, ts in sorted(self.by_message[mid], key=lambda e: e[0]):
            if t == type_ and (step is None or data.get("step") == step):
                return ts
        raise AssertionError(f"{mid}: no {type_} {step or ''} in the stream")


@pytest.mark.timeout(900)
async def test_bench_pipeline_step_transitions_and_end_to_end(
    bench_env: BenchEnv, tmp_path: Path
) -> None:
    data, expected = _dataset()
    log = StreamLog()
    nc = await nats.connect(bench_env.nats_url, name="bench-pipeline")
    try:
        async with run_services(bench_env, tmp_path, workers=True) as stack:
            sub = await nc.jetstream().subscribe(
                f"{bench_env.prefix}.>", stream=bench_env.stream, ordered_consumer=True,
                cb=log.on_msg,
            )  # fmt: skip
            async with stack.client(timeout=60) as http:
                sessions = []
                for _ in range(SESSIONS):
                    r = await http.post("/api/sessions", json={"title": "bench"})
                    assert r.status_code == 201, r.text
                    sid = r.json()["session_id"]
                    r = await http.post(
                        f"/api/sessions/{sid}/datasets", params={"name": "sales"}, content=data
                    )
                    assert r.status_code == 201, r.text
                    sessions.append((sid, r.json()["dataset_id"]))

                client_s: list[float] = []
                mids: list[str] = []

                async def run_session(sid: str, dataset_id: str, count: int) -> None:
                    for _ in range(count):
                        t0 = time.perf_counter()
                        r = await http.post(
                            f"/api/sessions/{sid}/analyses",
                            json={"question": QUESTION, "dataset_id": dataset_id},
                        )
                        assert r.status_code == 202, r.text
                        mid = r.json()["message_id"]
                        mids.append(mid)
                        settled = await asyncio.wait_for(log.future(mid), 60)
                        client_s.append(time.perf_counter() - t0)
                        assert settled["status"] == "completed", settled

                shares = [ANALYSES // SESSIONS + (i < ANALYSES % SESSIONS) for i in
                          range(SESSIONS)]  # fmt: skip
                began = time.perf_counter()
                await asyncio.gather(
                    *(run_session(sid, ds, n) for (sid, ds), n in zip(sessions, shares,
                                                                      strict=True))
                )  # fmt: skip
                wall_s = time.perf_counter() - began

                # Correctness: every analysis completed with the right result and a chart.
                last_seq = max(seq for evs in log.by_message.values() for seq, *_ in evs)
                for mid in mids:
                    r = await http.get(f"/api/messages/{mid}", params={"min_seq": last_seq})
                    assert r.status_code == 200, r.text
                    message = r.json()
                    assert message["status"] == "completed", message
                    assert [s["step"] for s in message["steps"]] == STEPS
                    got = {row[0]: row[1] for row in message["result"]["rows"]}
                    assert set(got) == set(expected)
                    for region, mean in expected.items():
                        assert got[region] == pytest.approx(mean, rel=1e-9)
                    assert message["charts"], message
            await sub.unsubscribe()
    finally:
        await nc.close()

    assert len(mids) == ANALYSES == len(set(mids))
    lines = [
        f"\n[bench pipeline] {ANALYSES} analyses ('{QUESTION}', rules planner, 500-row CSV), "
        f"{SESSIONS} session(s) in parallel, each one analysis at a time; "
        f"wall {wall_s:.1f} s ({ANALYSES / wall_s:.2f} analyses/s); all {ANALYSES} completed"
    ]
    all_handoffs: list[float] = []
    for label, (after, step) in HANDOFFS.items():
        gaps = [log.first(m, "step_started", step) - log.first(m, after) for m in mids]
        if after != "analysis_requested":
            all_handoffs += gaps
        lines.append(f"  hand-off {label}: {summary_ms(gaps)}")
    lines.append(f"  hand-off between workers (both kinds above): {summary_ms(all_handoffs)}")
    e2e = [log.first(m, "analysis_settled") - log.first(m, "analysis_requested") for m in mids]
    lines.append(f"  end to end (analysis_requested -> analysis_settled): {summary_ms(e2e)}")
    lines.append(f"  client view (POST -> analysis_settled received): {summary_ms(client_s)}")
    for step in STEPS:
        durations = [
            (log.first(m, "step_completed", step) - log.first(m, "step_started", step))
            for m in mids
        ]
        lines.append(f"  step {step} (step_started -> step_completed): {summary_ms(durations)}")
    target = percentile(e2e, 50) < 2.0
    lines.append(
        f"  target 'completes in under 2 s end to end': p50 {'met' if target else 'NOT met'}, "
        f"p99 {'met' if percentile(e2e, 99) < 2.0 else 'NOT met'}"
    )
    print("\n".join(lines))
