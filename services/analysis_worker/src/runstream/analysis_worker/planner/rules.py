"""The default planner: offline, deterministic, and honest about what it cannot read.

It reads a question in passes over a token list, each pass taking the words it
understands: column names → filters → time grain → ranking → grouping → measures.
Anything left that names a column it could not place, or an unknown column after
"by", makes the question unanswerable rather than answered wrongly.
"""

from __future__ import annotations

from runstream.analysis_worker.planner.base import Plan, PlanningContext
from runstream.analysis_worker.planner.errors import UnanswerableQuestion
from runstream.analysis_worker.planner.filters import STOP, FilterReader, col_at
from runstream.analysis_worker.planner.lexicon import (
    GROUP_WORDS,
    ColumnRef,
    Tok,
    Unreadable,
    column_refs,
)
from runstream.analysis_worker.planner.query import (
    Agg,
    Grain,
    Intent,
    Measure,
    example_questions,
    explain,
    render_sql,
)

AGG_WORDS: dict[str, Agg] = {
    "total": "sum", "sum": "sum", "average": "avg", "avg": "avg", "mean": "avg",
    "median": "median", "minimum": "min", "min": "min", "maximum": "max", "max": "max",
    "highest": "max", "largest": "max", "biggest": "max", "greatest": "max",
    "lowest": "min", "smallest": "min", "earliest": "min", "latest": "max",
}  # fmt: skip
RANK_DESC = {"top", "best", "highest", "largest", "biggest", "greatest", "most"}
RANK_ASC = {"bottom", "worst", "lowest", "smallest", "least", "fewest"}
GRAINS: dict[str, Grain] = {
    "day": "day", "daily": "day", "week": "week", "weekly": "week", "month": "month",
    "monthly": "month", "quarter": "quarter", "quarterly": "quarter", "year": "year",
    "yearly": "year", "annual": "year", "annually": "year",
}  # fmt: skip
TREND_WORDS = {"trend", "timeline", "time"}
RELATIVE = {"this", "last", "next", "previous", "past", "current"}
ROW_WORDS = {"row", "record", "entry", "transaction", "order", "line", "observation"}
FILLER = {"of", "the", "a", "an", "all", "are", "is", "there", "were", "was", "do", "does"}
DISTINCT = {"distinct", "unique", "different"}
# Columns whose sum means nothing: "price by region" is an average.
INTENSIVE = {"price", "rate", "ratio", "percent", "pct", "percentage", "score", "age", "avg",
             "mean", "temperature", "rating", "margin", "discount"}  # fmt: skip


class RulesPlanner:
    name = "rules"

    async def plan(self, ctx: PlanningContext) -> Plan:
        return plan_question(ctx)


def plan_question(ctx: PlanningContext) -> Plan:
    cols = column_refs(ctx.columns)
    try:
        intent = _Reader(ctx.question, cols, ctx.sample_rows).read()
    except Unreadable as exc:
        raise UnanswerableQuestion(_unanswerable(ctx, cols, str(exc))) from None
    return Plan(
        sql=render_sql(intent, ctx.table_name),
        explanation=explain(intent),
        planner="rules",
        chart_hint=intent.chart_hint,
    )


def _unanswerable(ctx: PlanningContext, cols: list[ColumnRef], reason: str) -> str:
    listed = ", ".join(f"{c.name} ({c.kind})" for c in cols) or "none"
    examples = "; ".join(f"'{q}'" for q in example_questions(cols, ctx.sample_rows))
    return (
        f"I could not turn {ctx.question!r} into a query: {reason}. "
        f"The table has the columns {listed}. Try, for example: {examples}."
    )


class _Reader(FilterReader):
    toks: list[Tok]

    def read(self) -> Intent:
        if not self.cols:
            raise Unreadable("the table has no columns")
        self._filters()
        self._grain()
        self._ranking()
        self._groups()
        self._measures()
        self._listing()
        return self._finish()

    # --- time grain --------------------------------------------------------------------
    def _grain(self) -> None:
        grain: Grain | None = None
        out: list[Tok] = []
        for i, t in enumerate(self.toks):
            if t.kind == "word" and (t.norm in GRAINS or t.norm in TREND_WORDS):
                if i > 0 and self.toks[i - 1].is_word(*RELATIVE):
                    raise Unreadable(f"relative dates like '{self.toks[i - 1].raw} {t.raw}' are "
                                   "not supported; name the year, e.g. 'in 2024'")  # fmt: skip
                if t.norm in GRAINS:
                    grain = GRAINS[t.norm]
                elif grain is None:
                    grain = "month"
                if out and out[-1].is_word(*GROUP_WORDS, "over", "a"):
                    out.pop()
                continue
            out.append(t)
        if grain is None:
            return
        date = self._date_column()
        if date is None:
            raise Unreadable(f"a trend by {grain} needs a date column, and there is none")
        self.intent.grain, self.intent.date_col = grain, date
        self.toks = [t for t in out if t.col != date]

    # --- ranking -----------------------------------------------------------------------
    def _ranking(self) -> None:
        toks = self.toks
        for i, t in enumerate(toks):
            if t.is_word("top", "bottom"):
                self._explicit_rank(i, desc=t.norm == "top")
                return
        for i, t in enumerate(toks):
            if t.is_word("which", "what") and i + 1 < len(toks):
                k = i + 1
                n = 1
                if toks[k].kind == "number" and toks[k].norm.isdigit():
                    n, k = int(toks[k].norm), k + 1
                if not col_at(toks, k):
                    continue
                sup = next(
                    (j for j in range(k + 1, len(toks)) if toks[j].is_word(*RANK_DESC, *RANK_ASC)),
                    None,
                )
                if sup is None:
                    continue
                self._rank(toks[k].col, n, desc=toks[sup].norm in RANK_DESC)
                self.toks = toks[:i] + toks[k + 1 : sup] + toks[sup + 1 :]
                return

    def _explicit_rank(self, i: int, *, desc: bool) -> None:
        toks = self.toks
        k, n = i + 1, 10
        if k < len(toks) and toks[k].kind == "number" and toks[k].norm.isdigit():
            n, k = int(toks[k].norm), k + 1
        if k < len(toks) and toks[k].kind == "col":
            self._rank(toks[k].col, n, desc=desc)
        elif k < len(toks) and (toks[k].is_word(*ROW_WORDS) or toks[k].is_word("by")):
            self._rank(None, n, desc=desc)
            k -= toks[k].norm == "by"
        else:
            shown = toks[k].raw if k < len(toks) else "nothing"
            raise Unreadable(f"I do not know what 'top {n} {shown}' ranks: no such column")
        k += 1
        if k < len(toks) and toks[k].is_word("by", "in", "for", "with", "on"):
            k += 1
        self.toks = toks[:i] + toks[k:]

    def _rank(self, col: ColumnRef | None, n: int, *, desc: bool) -> None:
        if n <= 0:
            raise Unreadable("the number of results to keep must be positive")
        self.intent.ranked, self.intent.limit, self.intent.rank_desc = True, n, desc
        if col is None:
            self.intent.rows = True
        else:
            self.intent.groups.append(col)

    # --- grouping ----------------------------------------------------------------------
    def _groups(self) -> None:
        toks, i = self.toks, 0
        out: list[Tok] = []
        while i < len(toks):
            t = toks[i]
            if t.is_word(*GROUP_WORDS) and i + 1 < len(toks):
                if not col_at(toks, i + 1):
                    nxt = toks[i + 1]
                    if nxt.kind == "word" and nxt.norm not in FILLER | DISTINCT | ROW_WORDS:
                        raise Unreadable(f"there is no column called {nxt.raw!r}")
                    out.append(t)
                    i += 1
                    continue
                i += 1
                while col_at(toks, i):
                    col = toks[i].col
                    assert col is not None
                    if col not in self.intent.groups:
                        self.intent.groups.append(col)
                    if (
                        i + 2 < len(toks)
                        and toks[i + 1].is_word("and", "then")
                        and col_at(toks, i + 2)
                    ):
                        i += 2
                    else:
                        i += 1
                continue
            out.append(t)
            i += 1
        self.toks = out

    # --- measures ----------------------------------------------------------------------
    def _measures(self) -> None:
        toks, i = self.toks, 0
        used: set[int] = set()
        while i < len(toks):
            t = toks[i]
            if _counting(toks, i):
                i = self._count(i + (0 if t.norm == "count" else 1), used)
                continue
            if t.kind == "word" and t.norm in AGG_WORDS:
                i = self._aggregate(i, AGG_WORDS[t.norm], used)
                continue
            i += 1
        for k, t in enumerate(toks):
            if k in used or t.col is None:
                continue
            if t.col.kind != "number":
                raise Unreadable(f"I saw the column {t.col.name} but could not tell how to use it")
            agg: Agg = "avg" if set(t.col.words) & INTENSIVE else "sum"
            self.intent.add_measure(Measure(agg, t.col))

    def _count(self, i: int, used: set[int]) -> int:
        toks, k, distinct = self.toks, i + 1, False
        while k < len(toks) and toks[k].kind == "word" and toks[k].norm in FILLER | DISTINCT:
            distinct = distinct or toks[k].norm in DISTINCT
            k += 1
        nxt = toks[k] if k < len(toks) else None
        if nxt is not None and nxt.col is not None:
            used.add(k)
            if nxt.col.kind == "number" and not distinct:
                self.intent.add_measure(Measure("sum", nxt.col))
            else:
                self.intent.add_measure(Measure("count_distinct", nxt.col))
            return k + 1
        if nxt is None or nxt.is_word(*ROW_WORDS, *STOP) or nxt.kind == "op":
            self.intent.add_measure(Measure("count"))
            return k + (nxt is not None and nxt.is_word(*ROW_WORDS))
        raise Unreadable(f"I do not know how to count {nxt.raw!r}: no column has that name")

    def _aggregate(self, i: int, agg: Agg, used: set[int]) -> int:
        toks, k = self.toks, i + 1
        while k < len(toks) and toks[k].is_word(*FILLER):
            k += 1
        if k < len(toks) and toks[k].is_word("number", "count", "how"):
            return i + 1  # "total number of ..." is a count
        if k < len(toks) and toks[k].kind == "word":
            raise Unreadable(f"there is no column called {toks[k].raw!r}")
        if k >= len(toks) or toks[k].col is None:
            raise Unreadable(f"I could not tell which column '{toks[i].raw}' applies to")
        col = toks[k].col
        assert col is not None
        if col.kind != "number" and agg not in ("min", "max"):
            raise Unreadable(f"{col.name} is not numeric, so it has no {toks[i].raw}")
        used.add(k)
        self.intent.add_measure(Measure(agg, col))
        return k + 1

    # --- listing and the final check ---------------------------------------------------
    def _listing(self) -> None:
        intent = self.intent
        if intent.measures or intent.ranked or intent.grain or intent.groups:
            return
        for i, t in enumerate(self.toks):
            if t.is_word("first") and i + 1 < len(self.toks) and self.toks[i + 1].kind == "number":
                intent.rows, intent.limit = True, int(float(self.toks[i + 1].norm))
                return
        if intent.filters and any(t.is_word("show", "list", "display", "row") for t in self.toks):
            intent.rows = True

    def _finish(self) -> Intent:
        intent = self.intent
        if intent.rows:
            if intent.ranked:
                numeric = [m for m in intent.measures if m.col is not None]
                if len(numeric) != 1:
                    raise Unreadable("ranking rows needs exactly one numeric column to rank by")
                intent.measures = numeric
            return intent
        if not intent.measures:
            if (intent.groups or intent.grain) and any(t.is_word(*ROW_WORDS) for t in self.toks):
                intent.add_measure(Measure("count"))  # "orders by region"
            else:
                raise Unreadable("I found nothing to count, sum, average or rank")
        return intent


def _counting(toks: list[Tok], i: int) -> bool:
    """'count', 'number of', 'how many' / 'how much' start a count (or a sum)."""
    t = toks[i]
    if t.is_word("count"):
        return True
    nxt = toks[i + 1] if i + 1 < len(toks) else None
    if nxt is None:
        return False
    return (t.is_word("number") and nxt.is_word("of")) or (
        t.is_word("how") and nxt.is_word("many", "much")
    )
