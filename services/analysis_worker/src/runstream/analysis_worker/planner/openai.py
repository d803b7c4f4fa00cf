"""A planner for any OpenAI-compatible chat-completions endpoint.

The model sees the table's schema, a few sample rows and the session's earlier
questions, and must answer with one JSON object {"sql": ..., "explanation": ...}
(or {"sql": null, "explanation": why} when the table cannot answer). Transport
trouble, 429 and 5xx are transient; anything else that goes wrong is permanent.
The API key only ever travels in the Authorization header: it is never logged,
never put in an error, never shown by repr().
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx

from runstream.analysis_worker.planner.base import Plan, PlanningContext
from runstream.analysis_worker.planner.errors import (
    PlannerRequestRejected,
    PlannerResponseInvalid,
    PlannerUnavailable,
    UnanswerableQuestion,
)

MAX_SAMPLE_ROWS = 5
MAX_HISTORY = 6
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)

SYSTEM_PROMPT = """You write one DuckDB SQL query that answers a question about one table.
Rules:
- Use only the table and columns listed; quote identifiers with double quotes.
- Write exactly one read-only SELECT (WITH is fine). No DDL, no COPY, no file or URL access.
- Order the result sensibly and keep it small (aggregate, or LIMIT 500 at most).
Answer with a JSON object and nothing else:
{"sql": "<the query>", "explanation": "<one sentence on what it computes>",
 "chart": "bar" | "line" | "scatter" | null}
If the table cannot answer the question, answer {"sql": null, "explanation": "<why>"}."""


class OpenAIPlanner:
    name = "openai"

    def __init__(
        self, *, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 30.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._api_key = api_key
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"OpenAIPlanner(base_url={self.base_url!r}, model={self.model!r})"

    async def plan(self, ctx: PlanningContext) -> Plan:
        body = {
            "model": self.model,
            "temperature": 0,
            "response_format": {"type": "json_object"},
            "messages": build_messages(ctx),
        }
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        url = f"{self.base_url}/chat/completions"
        try:
            async with (
                asyncio.timeout(self.timeout_s),
                httpx.AsyncClient(timeout=self.timeout_s) as client,
            ):
                response = await client.post(url, json=body, headers=headers)
        except (TimeoutError, httpx.TimeoutException):
            raise PlannerUnavailable(
                f"the planner at {self.base_url} did not answer within {self.timeout_s:g} s"
            ) from None
        except httpx.TransportError as exc:
            raise PlannerUnavailable(
                f"the planner at {self.base_url} is unreachable: {type(exc).__name__}"
            ) from None
        return self._read(response, ctx)

    def _read(self, response: httpx.Response, ctx: PlanningContext) -> Plan:
        status = response.status_code
        if status == 429 or status >= 500:
            raise PlannerUnavailable(f"the planner answered HTTP {status}; will retry")
        if status >= 400:
            raise PlannerRequestRejected(
                f"the planner refused the request with HTTP {status}: {_short(response.text)}"
            )
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise PlannerResponseInvalid(
                f"the planner's reply is not a chat completion: {_short(response.text)}"
            ) from None
        answer = parse_answer(content)
        if "sql" not in answer:
            raise PlannerResponseInvalid(f"the planner's answer has no sql: {_short(str(answer))}")
        sql = answer["sql"]
        explanation = answer.get("explanation")
        explanation = explanation.strip() if isinstance(explanation, str) else ""
        if sql is None:
            columns = ", ".join(c.name for c in ctx.columns)
            raise UnanswerableQuestion(
                f"The planner could not answer {ctx.question!r} from this table "
                f"({explanation or 'no reason given'}). The table has the columns {columns}."
            )
        if not isinstance(sql, str) or not sql.strip():
            raise PlannerResponseInvalid("the planner's answer has no SQL")
        chart = answer.get("chart")
        return Plan(
            sql=sql.strip().rstrip(";").strip(),
            explanation=explanation or "Query written by the language model.",
            planner="openai",
            chart_hint=chart if chart in ("bar", "line", "scatter") else None,
        )


def build_messages(ctx: PlanningContext) -> list[dict[str, str]]:
    schema = "\n".join(f'- "{c.name}" {c.type}' for c in ctx.columns)
    samples = "\n".join(
        json.dumps(row, default=str, ensure_ascii=False)
        for row in ctx.sample_rows[:MAX_SAMPLE_ROWS]
    )
    user = f'Table "{ctx.table_name}" has these columns:\n{schema}\n'
    if samples:
        user += f"\nSample rows (in column order):\n{samples}\n"
    history = ctx.history[-MAX_HISTORY:]
    if history:
        earlier = "\n".join(f"- Q: {q}\n  A: {a}" for q, a in history)
        user += f"\nEarlier in this conversation:\n{earlier}\n"
    user += f"\nQuestion: {ctx.question}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_answer(content: Any) -> dict[str, Any]:
    """The JSON object in a model's answer, tolerating ```json fences and stray prose."""
    if not isinstance(content, str):
        raise PlannerResponseInvalid("the planner's answer has no text content")
    candidates = [content.strip()]
    candidates += [m.strip() for m in _FENCE.findall(content)]
    start, end = content.find("{"), content.rfind("}")
    if 0 <= start < end:
        candidates.append(content[start : end + 1])
    for text in candidates:
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise PlannerResponseInvalid(f"the planner's answer is not a JSON object: {_short(content)}")


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
