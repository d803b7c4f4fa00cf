"""A planner for any OpenAI-compatible chat-completions endpoint.

The model sees the table's schema, the values of its category columns, a few sample rows
and the session's earlier questions, and must answer with one JSON object
{"sql": ..., "interpretation": ...} (or {"sql": null, "explanation": why} when the table
cannot answer all of the question). The same honesty contract as the rules planner holds:
the SQL is checked against the schema (one read-only SELECT over the table, columns that
exist) and the plan carries the model's one-sentence interpretation, or it is refused.
Transport trouble, 429 and 5xx are transient; anything else that goes wrong is permanent.
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
from runstream.analysis_worker.planner.rules import refusal
from runstream.analysis_worker.planner.validate import validate_sql

MAX_SAMPLE_ROWS = 5
MAX_HISTORY = 6
MAX_VALUES = 30  # per column, in the prompt
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)

SYSTEM_PROMPT = """You write one DuckDB SQL query that answers a question about one table.
Rules:
- Use only the table and columns listed; quote identifiers with double quotes.
- Write exactly one read-only SELECT (WITH is fine). No DDL, no COPY, no file or URL access.
- Order the result sensibly and keep it small (aggregate, or LIMIT 500 at most).
- Answer the whole question or none of it: never answer a simpler question than the one
  asked. If any word of it cannot be honoured with these columns (a column that does not
  exist, a forecast, a cause), decline and name that word.
Answer with a JSON object and nothing else:
{"sql": "<the query>",
 "interpretation": "<one plain sentence of what the query computes, e.g. 'Sum of revenue
   for each region, 2024 only, as a share of the total, largest first.'>",
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
        explanation = _text(answer.get("explanation"))
        if sql is None:
            reason = explanation or _text(answer.get("interpretation")) or "no reason given"
            raise UnanswerableQuestion(refusal(ctx, f"the language model declined: {reason}"))
        if not isinstance(sql, str) or not sql.strip():
            raise PlannerResponseInvalid("the planner's answer has no SQL")
        # Older prompts asked for "explanation" only; it is the same one sentence.
        interpretation = _text(answer.get("interpretation")) or explanation
        if not interpretation:
            raise PlannerResponseInvalid(
                "the planner's answer does not say what its SQL computes (no interpretation)"
            )
        sql = sql.strip().rstrip(";").strip()
        validate_sql(sql, ctx.columns, ctx.table_name)
        chart = answer.get("chart")
        return Plan(
            sql=sql,
            interpretation=interpretation,
            explanation=explanation or interpretation,
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
    values = "\n".join(
        f'- "{name}": ' + ", ".join(json.dumps(v, ensure_ascii=False) for v in vs[:MAX_VALUES])
        + (", …" if len(vs) > MAX_VALUES else "")
        for name, vs in ctx.values.items()
        if vs
    )
    if values:
        user += f"\nValues of the category columns:\n{values}\n"
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


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
