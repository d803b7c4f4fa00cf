"""The served OpenAPI document is true: schemathesis, every check, against the real gateway.

The stack is the projector and one gateway on real NATS and Postgres. A completed analysis
with a result and a chart task are seeded first (the result published as the execution
worker would), and schemathesis uses their ids half of the time, so the routes that need
one answer 2xx too, not only 404. The run is deterministic (a fixed seed and example
budget) and must find no server error and no mismatch of any kind.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from runstream.bus import Bus, SessionAggregate
from runstream.contracts import Column, ExecutionCompleted, new_id, utcnow
from tests.integration.conftest import HIGH_RATE_LIMITS

SEED = 20261130
MAX_EXAMPLES = 10
RUN_TIMEOUT_S = 170

OVERRIDES = {
    **HIGH_RATE_LIMITS,  # schemathesis sends hundreds of writes as one owner
    "sse_max_s": 0.3,  # streams end by themselves (clients resume), so each read finishes
    "read_wait_s": 0.2,  # a generated min_seq beyond the stream waits this long, not 2 s
    "prefer_wait_max_s": 0.5,  # likewise a generated `Prefer: wait=N`
    "dev_token": "conformance-dev-token",  # so /dev-token answers 200 too (loopback)
}

CONFIG = """\
# Written by tests/contracts/test_openapi_conformance.py for one run.

[dictionaries.sessions]
values = {sessions}
[dictionaries.messages]
values = {messages}
[dictionaries.tasks]
values = {tasks}

[parameters]
"path.session_id" = {{ dictionary = "sessions", probability = 0.5 }}
"path.message_id" = {{ dictionary = "messages", probability = 0.5 }}
"path.task_id" = {{ dictionary = "tasks", probability = 0.5 }}

# What a file holds is beyond a schema: random bytes are a schema-valid body that neither
# a CSV nor a Parquet reader takes, answered 422 `unreadable_dataset` (or `empty_dataset`).
[[operations]]
include-path = "/api/sessions/{{session_id}}/datasets"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx",
]
"""


async def _seed(stack: Any) -> dict[str, list[str]]:
    """A session with a completed analysis (with a result) and a chart task for it."""
    async with stack.client() as c:
        sid = (await c.post("/api/sessions", json={"title": "seeded"})).json()["session_id"]
        submitted = await c.post(f"/api/sessions/{sid}/analyses",
                                 json={"question": "revenue by region"})
        assert submitted.status_code == 202, submitted.text
        mid = submitted.json()["message_id"]
        async with Bus.connect(stack.settings.bus(), name="seed") as bus:
            await bus.publish(ExecutionCompleted(
                event_id=new_id(), at=utcnow(), session_id=sid, message_id=mid,
                columns=[Column(name="region", type="VARCHAR"),
                         Column(name="revenue", type="DOUBLE")],
                rows=[["North", 10.5], ["South", 20.0]], row_count=2,
                markdown="| region | revenue |", duration_ms=3))
            settled = await SessionAggregate(bus).settle(sid, mid, "completed", summary="2 rows")
        message = await c.get(f"/api/messages/{mid}", params={"min_seq": settled.seq})
        assert message.json()["status"] == "completed", message.text
        chart = await c.post(f"/api/messages/{mid}/charts", json={})
        assert chart.status_code == 202, chart.text
        return {"sessions": [sid], "messages": [mid], "tasks": [chart.json()["task_id"]]}


async def test_the_served_openapi_document_holds_for_every_request_schemathesis_sends(
    stack_factory, tmp_path: Path,
):
    async with stack_factory(overrides=OVERRIDES) as stack:
        ids = await _seed(stack)
        config = tmp_path / "schemathesis.toml"
        config.write_text(CONFIG.format(**{k: json.dumps(v) for k, v in ids.items()}))
        har = tmp_path / "requests.har"
        st = Path(sys.executable).with_name("st")
        # A child process: the gateway keeps serving from this event loop meanwhile.
        proc = await asyncio.create_subprocess_exec(
            str(st), "--config-file", str(config), "--no-color", "run",
            f"{stack.url}/schema/openapi.json", "--checks", "all",
            "--header", f"Authorization: Bearer {stack.token()}",
            "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--workers", "1",
            "--report", "har", "--report-har-path", str(har),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    report = out.decode(errors="replace")
    statuses = _status_table(har)
    summary = [report.find(mark) for mark in ("WARNINGS", "Test Phases") if mark in report]
    print(report[min(summary, default=0):])
    print(f"schemathesis: {sum(statuses.values())} requests\n" + "\n".join(
        f"  {status}: {count}" for status, count in sorted(statuses.items())))
    assert proc.returncode == 0, report[-6000:]
    assert not [s for s in statuses if s >= 500], statuses
    assert sum(statuses.values()) > 500, "the run sent too little to mean anything"
    assert 200 in statuses and 404 in statuses and 422 in statuses


def _status_table(har: Path) -> Counter[int]:
    entries = json.loads(har.read_text())["log"]["entries"]
    return Counter(int(e["response"]["status"]) for e in entries)
