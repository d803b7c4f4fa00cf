"""End to end through HTTP and SSE, exactly as a browser would, with every worker running."""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict

import pytest

from tests.integration.conftest import collect, new_session

STEPS = ["context", "plan", "script", "execute", "chart"]


def _dataset() -> tuple[bytes, dict[str, float]]:
    rows = []
    regions = ["North", "South", "East", "West"]
    for i in range(200):
        rows.append((regions[i % 4], f"P{i % 7}", round(10 + (i * 37 % 101) * 1.25, 2),
                     f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}"))
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["region", "product", "revenue", "order_date"])
    w.writerows(rows)
    by_region: dict[str, list[float]] = defaultdict(list)
    for region, _, revenue, _ in rows:
        by_region[region].append(revenue)
    return out.getvalue().encode(), {r: statistics.fmean(v) for r, v in by_region.items()}


@pytest.fixture
async def full_stack(stack_factory):
    async with stack_factory(workers=True) as stack:
        yield stack


async def _upload(c, sid: str) -> tuple[str, dict[str, float]]:
    data, expected = _dataset()
    r = await c.post(f"/api/sessions/{sid}/datasets", params={"name": "sales"}, content=data)
    assert r.status_code == 201, r.text
    return r.json()["dataset_id"], expected


async def test_a_question_is_answered_step_by_step_with_a_correct_result_and_a_chart(full_stack):
    async with full_stack.client() as c:
        sid = await new_session(c)
        _, expected = await _upload(c, sid)
        r = await c.post(f"/api/sessions/{sid}/analyses",
                         json={"question": "average revenue by region"})
        assert r.status_code == 202, r.text
        sub = r.json()
        mid = sub["message_id"]
        async with c.stream("GET", f"/api/messages/{mid}/events") as stream:
            frames = await collect(stream, lambda f: False, timeout=60)  # ends at settle
        ids = [f.id for f in frames]
        assert ids == sorted(set(ids)), "in stream order, no duplicate"
        types = [f.event for f in frames]
        assert types[0] == "analysis_requested" and types[-1] == "analysis_settled"
        assert frames[-1].data["status"] == "completed", frames[-1].data
        started = [f.data["step"] for f in frames if f.event == "step_started"]
        completed = [f.data["step"] for f in frames if f.event == "step_completed"]
        assert started == STEPS and completed == STEPS
        assert [f.data["index"] for f in frames if f.event == "step_started"] == [1, 2, 3, 4, 5]
        order = {t: types.index(t) for t in ("script_generated", "execution_completed")}
        assert order["script_generated"] < order["execution_completed"]
        assert any(f.event == "log_appended" and f.data["level"] == "success" for f in frames)

        message = (await c.get(f"/api/messages/{mid}", params={"min_seq": ids[-1]})).json()
        assert message["status"] == "completed"
        assert [s["step"] for s in message["steps"]] == STEPS
        assert all(s["status"] == "completed" for s in message["steps"])
        result = message["result"]
        names = [col["name"] for col in result["columns"]]
        got = {row[0]: row[1] for row in result["rows"]}
        assert len(names) == 2 and set(got) == set(expected)
        for region, mean in expected.items():
            assert got[region] == pytest.approx(mean, rel=1e-9)
        assert message["charts"] and message["charts"][0]["kind"] == "bar"
        assert message["charts"][0]["svg"].lstrip().startswith("<svg")
        assert "SELECT" in message["script"]["sql"].upper()
        sentence = "Average of revenue for each region, largest first."
        assert message["script"]["interpretation"] == sentence
        assert result["interpretation"] == sentence, "a result says what was computed"

        csv_text = (await c.get(f"/api/messages/{mid}/result.csv")).text
        parsed = list(csv.reader(io.StringIO(csv_text)))
        assert parsed[0] == names and len(parsed) == 1 + len(expected)
        # The table shows cents; the CSV keeps every digit of the same number.
        shown = {row[0]: row[1] for row in result["display_rows"]}
        assert shown == {region: f"{mean:,.2f}" for region, mean in expected.items()}
        assert [f["kind"] for f in result["formats"]] == ["text", "decimal"]
        for region, value in parsed[1:]:
            assert float(value) == pytest.approx(expected[region], rel=1e-12)
        assert any(value != shown[region] for region, value in parsed[1:])

        # an ad-hoc chart of the same result, with an adjustment, streamed to its end
        task = await c.post(f"/api/messages/{mid}/charts",
                            json={"adjustment_query": "top 2 only", "force_create": True})
        assert task.status_code == 202, task.text
        tid = task.json()["task_id"]
        async with c.stream("GET", f"/api/charts/{tid}/events") as stream:
            chart_frames = await collect(stream, lambda f: False, timeout=30)
        assert chart_frames[-1].event == "chart_completed"
        assert any(f.event == "chart_progressed" for f in chart_frames)
        done = (await c.get(f"/api/charts/{tid}", params={"min_seq": chart_frames[-1].id}))
        assert done.json()["status"] == "completed" and done.json()["progress"] == 100
        listing = (await c.get(f"/api/messages/{mid}/charts")).json()
        assert len(listing["charts"]) == 2 and listing["has_active_tasks"] is False

        # the session is free again and remembers the finished work
        sessions = (await c.get("/api/sessions")).json()["sessions"]
        assert sessions[0]["status"] == "idle" and sessions[0]["has_notification"] is True


async def test_a_refresh_mid_analysis_restores_everything_without_gap_or_duplicate(full_stack):
    async with full_stack.client() as c:
        sid = await new_session(c)
        await _upload(c, sid)
        sub = (await c.post(f"/api/sessions/{sid}/analyses",
                            json={"question": "total revenue by month"})).json()
        mid = sub["message_id"]
        # "refresh": the page asks for the status, then streams from its as_of_seq
        status = (await c.get(f"/api/sessions/{sid}/analysis-status",
                              params={"min_seq": sub["as_of_seq"]})).json()
        assert status["message_id"] == mid
        before = [log["text"] for log in status["logs"]]
        async with c.stream("GET", f"/api/messages/{mid}/events",
                            params={"after_seq": status["as_of_seq"]}) as stream:
            frames = await collect(stream, lambda f: False, timeout=60)
        after = [f.data["text"] for f in frames if f.event == "log_appended"]
        final = (await c.get(f"/api/messages/{mid}", params={"min_seq": frames[-1].id})).json()
    assert final["status"] == "completed"
    assert before + after == [log["text"] for log in final["logs"]]


async def test_an_unanswerable_question_fails_with_a_helpful_message_and_retry_links(full_stack):
    async with full_stack.client() as c:
        sid = await new_session(c)
        await _upload(c, sid)
        sub = (await c.post(f"/api/sessions/{sid}/analyses",
                            json={"question": "what is the meaning of life?"})).json()
        mid = sub["message_id"]
        async with c.stream("GET", f"/api/messages/{mid}/events") as stream:
            frames = await collect(stream, lambda f: False, timeout=60)
        settled = frames[-1].data
        assert settled["status"] == "failed"
        assert "revenue" in settled["error"]["message"], "lists the columns"
        assert settled["error"]["step"] == "plan"
        retry = await c.post(f"/api/messages/{mid}/retry")
        assert retry.status_code == 202
        new = retry.json()
        assert new["retry_of"] == mid and new["message_id"] != mid
        msg = (await c.get(f"/api/messages/{new['message_id']}")).json()
        assert msg["retry_of"] == mid and msg["question"] == "what is the meaning of life?"


async def test_a_new_session_without_a_dataset_says_to_attach_one(full_stack):
    async with full_stack.client() as c:
        sid = await new_session(c)
        r = await c.post(f"/api/sessions/{sid}/analyses", json={"question": "how many rows?"},
                         headers={"Prefer": "wait=30"})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "failed"
        assert "dataset" in r.json()["error"]["message"].lower()
