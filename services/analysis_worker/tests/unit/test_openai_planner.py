"""The OpenAI-compatible planner against a real local HTTP server speaking chat-completions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from runstream.analysis_worker.planner import (
    PlannerRequestRejected,
    PlannerResponseInvalid,
    PlannerUnavailable,
    PlanningContext,
    UnanswerableQuestion,
    build_planner,
)
from runstream.contracts import Column

API_KEY = "sk-test-very-secret-key"
Reply = tuple[int, bytes]
Handler = Callable[[dict[str, Any]], Awaitable[Reply]]

CTX = PlanningContext(
    question="total revenue by region",
    columns=[Column(name="region", type="VARCHAR"), Column(name="revenue", type="DOUBLE")],
    sample_rows=[["North", 10.5], ["South", 3.0]],
    values={"region": ["North", "South", "East", "West"]},
    history=[("how many rows", "There are 2 rows.")],
)


def completion(content: str) -> Reply:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
    }
    return 200, json.dumps(body).encode()


class ChatServer:
    """A tiny HTTP/1.1 server on 127.0.0.1: one request per connection, real sockets."""

    def __init__(self) -> None:
        self.handler: Handler = self._default
        self.requests: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def _default(self, request: dict[str, Any]) -> Reply:
        return completion('{"sql": "SELECT 1", "interpretation": "The number one."}')

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {
                k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = {"method": method, "path": path, "headers": headers, "json": json.loads(body)}
            self.requests.append(request)
            status, payload = await self.handler(request)
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        finally:
            self._tasks.discard(task)
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[ChatServer]:
    srv = ChatServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def _planner(url: str, timeout_s: float = 5.0) -> Any:
    return build_planner(
        "openai", openai_base_url=url, openai_model="fake-model", openai_api_key=API_KEY,
        timeout_s=timeout_s,
    )  # fmt: skip


def answering(**answer: Any) -> Handler:
    async def handler(request: dict[str, Any]) -> Reply:
        return completion(json.dumps(answer))

    return handler


async def test_a_json_answer_becomes_a_plan_with_its_interpretation(server: ChatServer) -> None:
    server.handler = answering(
        sql='SELECT "region", sum("revenue") AS total FROM "data" GROUP BY 1 ORDER BY 2 DESC;',
        interpretation="Sum of revenue for each region, largest first.",
        chart="bar",
    )
    plan = await _planner(server.url).plan(CTX)
    assert plan.sql.endswith("ORDER BY 2 DESC")
    assert plan.interpretation == "Sum of revenue for each region, largest first."
    assert (plan.planner, plan.chart_hint) == ("openai", "bar")


async def test_an_older_answer_with_only_an_explanation_uses_it_as_the_interpretation(
    server: ChatServer,
) -> None:
    server.handler = answering(sql='SELECT "region" FROM "data"', explanation="Regions.")
    plan = await _planner(server.url).plan(CTX)
    assert (plan.interpretation, plan.explanation) == ("Regions.", "Regions.")


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ('SELECT "colour", sum("revenue") FROM "data" GROUP BY 1', "colour"),
        ('SELECT * FROM "orders"', "orders"),
        ('SELECT "region" FROM "data"; DROP TABLE "data"', "one statement"),
        ('DELETE FROM "data"', "read-only SELECT"),
        ("COPY data TO '/tmp/leak.csv'", "read-only SELECT"),
        ("SELECT * FROM read_csv('/etc/passwd')", "/etc/passwd"),
        ("SELEKT region FROM data", "does not parse"),
    ],
)
async def test_sql_that_does_not_fit_the_table_is_refused_as_an_invalid_plan(
    server: ChatServer, sql: str, why: str
) -> None:
    server.handler = answering(sql=sql, interpretation="Looks plausible.")
    with pytest.raises(PlannerResponseInvalid) as info:
        await _planner(server.url).plan(CTX)
    assert why in str(info.value) and not info.value.retryable


async def test_a_plan_that_does_not_say_what_it_computes_is_refused(server: ChatServer) -> None:
    server.handler = answering(sql='SELECT "region" FROM "data"')
    with pytest.raises(PlannerResponseInvalid, match="interpretation"):
        await _planner(server.url).plan(CTX)


async def test_the_request_speaks_chat_completions_with_schema_samples_and_history(
    server: ChatServer,
) -> None:
    await _planner(server.url).plan(CTX)
    (request,) = server.requests
    assert (request["method"], request["path"]) == ("POST", "/v1/chat/completions")
    assert request["headers"]["authorization"] == f"Bearer {API_KEY}"
    body = request["json"]
    assert body["model"] == "fake-model"
    assert body["response_format"] == {"type": "json_object"}
    system, user = body["messages"]
    assert system["role"] == "system" and '"interpretation"' in system["content"]
    assert "never answer a simpler question" in system["content"]
    content = user["content"]
    assert '"region" VARCHAR' in content and '"revenue" DOUBLE' in content
    assert '["North", 10.5]' in content
    assert '- "region": "North", "South", "East", "West"' in content
    assert "how many rows" in content and "There are 2 rows." in content
    assert content.endswith("Question: total revenue by region")


async def test_a_fenced_json_answer_is_accepted(server: ChatServer) -> None:
    async def answer(request: dict[str, Any]) -> Reply:
        return completion(
            'Here you go:\n```json\n{"sql": "SELECT 2", "interpretation": "Two."}\n```'
        )

    server.handler = answer
    assert (await _planner(server.url).plan(CTX)).sql == "SELECT 2"


async def test_a_server_that_never_answers_is_unavailable(server: ChatServer) -> None:
    async def hang(request: dict[str, Any]) -> Reply:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    server.handler = hang
    with pytest.raises(PlannerUnavailable) as info:
        await _planner(server.url, timeout_s=0.5).plan(CTX)
    assert info.value.retryable and API_KEY not in str(info.value)


async def test_a_closed_port_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PlannerUnavailable) as info:
        await _planner(f"http://127.0.0.1:{port}/v1").plan(CTX)
    assert info.value.retryable


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_rate_limits_and_server_errors_are_unavailable(
    server: ChatServer, status: int
) -> None:
    async def fail(request: dict[str, Any]) -> Reply:
        return status, b'{"error": {"message": "busy"}}'

    server.handler = fail
    with pytest.raises(PlannerUnavailable):
        await _planner(server.url).plan(CTX)


async def test_a_rejected_key_is_a_permanent_error_that_does_not_echo_the_key(
    server: ChatServer,
) -> None:
    async def reject(request: dict[str, Any]) -> Reply:
        return 401, b'{"error": {"message": "invalid api key"}}'

    server.handler = reject
    planner = _planner(server.url)
    with pytest.raises(PlannerRequestRejected) as info:
        await planner.plan(CTX)
    assert not info.value.retryable and "401" in str(info.value)
    assert API_KEY not in str(info.value) and API_KEY not in repr(planner)


@pytest.mark.parametrize(
    "reply",
    [
        (200, b"<html>garbage</html>"),
        (200, b'{"choices": []}'),
        completion("I think you should use SQL."),
        completion('{"explanation": "no sql here"}'),
        completion('{"sql": "", "explanation": "empty"}'),
        completion('["SELECT 1"]'),
    ],
)
async def test_garbage_answers_are_invalid_responses(server: ChatServer, reply: Reply) -> None:
    async def garbage(request: dict[str, Any]) -> Reply:
        return reply

    server.handler = garbage
    with pytest.raises(PlannerResponseInvalid) as info:
        await _planner(server.url).plan(CTX)
    assert not info.value.retryable


async def test_a_model_that_declines_refuses_with_the_columns_and_three_examples(
    server: ChatServer,
) -> None:
    server.handler = answering(sql=None, explanation="there is no weather column")
    with pytest.raises(UnanswerableQuestion) as info:
        await _planner(server.url).plan(CTX)
    message = str(info.value)
    assert "no weather column" in message
    assert "region (text), revenue (number)" in message
    examples = message.split("work on this table: ")[1].rstrip(".").split("; ")
    assert examples == ["'total revenue by region'", "'top 5 regions by revenue'",
                        "'number of rows by region'"]  # fmt: skip


def test_an_unknown_planner_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown planner"):
        build_planner("magic")
