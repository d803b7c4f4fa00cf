"""The default planner: offline, deterministic, and honest about what it cannot read.

A question is parsed into a `QuerySpec` (parser.py), which is rendered to SQL
(render.py) and to one sentence (interpret.py). A question with any word the parse did
not use is refused, naming that word, with the table's columns and three example
questions that this planner answers on this very table.
"""

from __future__ import annotations

from runstream.analysis_worker.planner.base import Plan, PlanningContext
from runstream.analysis_worker.planner.errors import UnanswerableQuestion
from runstream.analysis_worker.planner.interpret import interpret
from runstream.analysis_worker.planner.lexicon import ColumnRef, Unreadable, column_refs
from runstream.analysis_worker.planner.parser import Parser
from runstream.analysis_worker.planner.render import render_sql
from runstream.analysis_worker.planner.schema import Schema, sample_values
from runstream.analysis_worker.planner.shape import result_shape
from runstream.analysis_worker.planner.spec import QuerySpec

EXAMPLES = 3


class RulesPlanner:
    name = "rules"

    async def plan(self, ctx: PlanningContext) -> Plan:
        return plan_question(ctx)


def _schema(ctx: PlanningContext) -> Schema:
    cols = column_refs(ctx.columns)
    values = ctx.values or sample_values(cols, ctx.sample_rows)
    return Schema(cols, values, ctx.dataset_name)


def read_question(question: str, ctx: PlanningContext) -> tuple[QuerySpec, list[str]]:
    """The structured plan of a question and the assumptions made reading it."""
    schema = _schema(ctx)
    if not schema.cols:
        raise Unreadable("the table has no columns")
    spec = Parser(question, schema).parse()
    return spec, schema.notes


def plan_question(ctx: PlanningContext) -> Plan:
    try:
        spec, notes = read_question(ctx.question, ctx)
    except Unreadable as exc:
        raise UnanswerableQuestion(refusal(ctx, str(exc))) from None
    sentence = interpret(spec)
    explanation = sentence
    if notes:
        explanation += " (" + "; ".join(dict.fromkeys(notes)) + ")"
    return Plan(
        sql=render_sql(spec, ctx.table_name),
        interpretation=sentence,
        explanation=explanation,
        planner="rules",
        chart_hint="line" if spec.time_dim is not None else "bar" if spec.dims else None,
        shape=result_shape(spec),
    )


def refusal(ctx: PlanningContext, reason: str) -> str:
    cols = column_refs(ctx.columns)
    listed = ", ".join(f"{c.name} ({c.kind})" for c in cols) or "none"
    examples = "; ".join(f"'{q}'" for q in example_questions(ctx))
    return (
        f"I could not answer {ctx.question!r}: {reason}. The table has the columns {listed}. "
        f"Questions that work on this table: {examples}."
    )


def example_questions(ctx: PlanningContext) -> list[str]:
    """Three questions built from this table's own columns, each one checked to plan."""
    schema = _schema(ctx)
    measure = schema.primary or next(iter(schema.measures), None)
    category = _category(schema)
    date = next(iter(schema.date_cols), None)
    candidates: list[str] = []
    if measure is not None and category is not None:
        candidates.append(f"total {measure.label} by {category.label}")
    if measure is not None and date is not None:
        candidates.append(f"total {measure.label} by month")
    if measure is not None and category is not None:
        candidates.append(f"top 5 {plural(category.label)} by {measure.label}")
    if category is not None:
        candidates.append(f"number of rows by {category.label}")
    if measure is not None:
        candidates.append(f"average {measure.label}")
    candidates.append("how many rows are there")
    out: list[str] = []
    for question in candidates:
        try:
            Parser(question, _schema(ctx)).parse()
        except Unreadable:
            continue
        out.append(question)
        if len(out) == EXAMPLES:
            break
    return out


def plural(label: str) -> str:
    if label.endswith("y") and label[-2:-1] not in "aeiou":
        return label[:-1] + "ies"
    return label + ("es" if label.endswith(("s", "x", "ch", "sh")) else "s")


# Text columns that label single rows, which make poor groupings ("total salary by name").
_LABELS = frozenset({"name", "email", "description", "comment", "note", "address", "title",
                     "url", "phone"})  # fmt: skip


def _category(schema: Schema) -> ColumnRef | None:
    """A text column to group by: profiled values first, row labels last, never an id."""
    texts = [c for c in schema.cols if c.kind == "text" and not c.is_id]
    texts.sort(key=lambda c: (not schema.values.get(c.name), bool(set(c.words) & _LABELS)))
    return next(iter(texts), None)
