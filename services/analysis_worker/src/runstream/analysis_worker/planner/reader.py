"""What every pass of the rules planner shares, and the first passes: refusals and
comparisons of two periods.

Each pass looks at the words no earlier pass has used (`live()`), and marks the words it
reads with the role they play (`use()`), so the last pass can prove that every word of
the question was read — or refuse, naming the one that was not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from runstream.analysis_worker.planner.dates import (
    bare_part,
    in_year,
    is_year,
    period_at,
)
from runstream.analysis_worker.planner.lexicon import ColumnRef, Tok, Unreadable, tokenize
from runstream.analysis_worker.planner.schema import Schema
from runstream.analysis_worker.planner.spec import (
    Comparison,
    Filter,
    Grain,
    Measure,
    Order,
    Period,
)
from runstream.analysis_worker.planner.words import (
    CAUSAL,
    CHANGE_WORDS,
    FALLING_WORDS,
    FORECAST,
    GRAINS,
    RELATIVE,
)

RankBy = Literal["measure", "count", "primary", "date", "age"]


@dataclass
class Rank:
    desc: bool
    limit: int
    target: Literal["dim", "rows"]
    word: str  # the word that asked for a ranking, named if it cannot be honoured
    col: ColumnRef | None = None  # dim: the column ranked
    grain: Grain | None = None  # dim: a time grain ranked ("top 5 days")
    by: RankBy = "measure"


@dataclass
class PendingDim:
    pos: int
    col: ColumnRef | None  # None: a time grain over the date column chosen at the end
    grain: Grain | None = None


class Reader:
    """The question's tokens, which of them are used, and what the passes read so far."""

    def __init__(self, question: str, schema: Schema) -> None:
        self.schema = schema
        marked = schema.mark(tokenize(question))
        self.toks = [replace(t, pos=i) for i, t in enumerate(marked)]
        self.used: dict[int, str] = {}  # token position -> the role it plays in the plan
        self.notes = schema.notes  # assumptions made on the way, for the explanation
        self.filters: list[Filter] = []
        self.comparison: Comparison | None = None
        self.measures: list[Measure] = []
        self.dims: list[PendingDim] = []
        self.rank: Rank | None = None
        self.order: Order | None = None
        self.limit: int | None = None
        self.rows = False
        self.share_word: Tok | None = None
        self.share_of_part = False  # "percentage of X ...", not "as a share of the total"
        self.distinct = False  # "list all products": the distinct values of a column
        self.ratio_split: int | None = None  # position of the verb in "what % of X are Y"
        self.within: PendingDim | None = None
        self.per_row = False  # "revenue per order": a mean over rows
        self.noun: Tok | None = None
        self.entity_dates: list[ColumnRef] = []
        self.date_ref: ColumnRef | None = None

    # --- bookkeeping ----------------------------------------------------------------
    def add_measure(self, m: Measure) -> None:
        if m not in self.measures:
            self.measures.append(m)

    def live(self) -> list[Tok]:
        return [t for t in self.toks if t.pos not in self.used]

    def use(self, role: str, *toks: Tok) -> None:
        for t in toks:
            self.used[t.pos] = role

    @staticmethod
    def words_at(live: list[Tok], k: int, *words: str) -> bool:
        return all(
            k + n < len(live) and live[k + n].is_word(w) for n, w in enumerate(words)
        )

    # --- refusals ---------------------------------------------------------------------
    def refusals(self) -> None:
        """Forecasts, causes and relative dates are refused before anything is read."""
        live = self.live()
        for k, t in enumerate(live):
            if t.kind != "word":
                continue
            if t.norm in FORECAST:
                raise Unreadable(
                    f"'{t.raw}' asks about the future, and a query only shows what the data "
                    "already holds: forecasts are out of scope"
                )
            if t.norm in CAUSAL:
                raise Unreadable(
                    f"'{t.raw}' asks for a cause, and a query can show what happened, not why"
                )
            if t.norm in RELATIVE and period_at(live, k) is None:
                j = k + 1 + (1 if k + 1 < len(live) and live[k + 1].kind == "number" else 0)
                grain = live[j] if j < len(live) and live[j].kind == "word" else None
                # "the last 3 months of 2024" names its year, so it is not relative to today.
                named = self.words_at(live, j + 1, "of") and is_year(
                    live[j + 2] if j + 2 < len(live) else None
                )
                if grain is not None and grain.norm in GRAINS and not named:
                    said = " ".join(x.raw for x in live[k : j + 1])
                    raise Unreadable(
                        f"'{said}' depends on today's date; name the period instead, e.g. "
                        "'in 2024' or 'since March 2024'"
                    )

    # --- comparisons of two periods -----------------------------------------------------
    def comparisons(self) -> None:
        live = self.live()
        changes = [t for t in live if t.kind == "word" and t.norm in CHANGE_WORDS]
        if not changes:
            return
        periods: list[tuple[Period, list[Tok]]] = []
        k = 0
        while k < len(live):
            found = period_at(live, k)
            if found is None:
                k += 1
                continue
            period, width = found
            periods.append((period, live[k : k + width]))
            k += width
        if len(periods) == 1 and periods[0][0].grain in ("quarter", "half", "month"):
            y = periods[0][0].start.year
            spans = {t.pos for t in periods[0][1]}
            for t in live:
                part = bare_part(t) if t.pos not in spans else None
                if part is not None and part[0] == periods[0][0].grain:
                    periods.append((in_year(part[0], part[1], y), [t]))  # "Q1 vs Q2 2024"
                    break
        if len(periods) != 2 or periods[0][0] == periods[1][0]:
            raise Unreadable(
                f"'{changes[0].raw}' compares two periods, and I need exactly two of them "
                "named, e.g. 'from 2023 to 2024' or 'Q1 2023 vs Q1 2024'"
            )
        by_percent = False
        for t in changes:
            for n in (-1, 1):
                i = live.index(t) + n
                if 0 <= i < len(live) and live[i].is_word("percentage", "percent", "pct", "rate"):
                    by_percent = True
                    self.use("comparison", live[i])
        falling = any(t.norm in FALLING_WORDS for t in changes)
        self.use("comparison", *changes)
        for _, span in periods:
            self.use("comparison", *span)
        first, second = sorted((p for p, _ in periods), key=lambda p: p.start)
        self.comparison = Comparison(first, second, by_percent=by_percent, falling=falling)


def int_of(t: Tok) -> int | None:
    """A small whole number ("top 5"), not a year or an amount."""
    if t.kind == "number" and t.norm.isdigit() and len(t.norm) < 5:
        return int(t.norm)
    return None


def plural_of(t: Tok) -> str:
    """How the user called the rows, as a plural: 'employee' -> 'employees'."""
    raw = t.raw.lower()
    if raw != t.norm or raw in ("people", "staff"):
        return raw
    if raw.endswith("y") and raw[-2:-1] not in "aeiou":
        return raw[:-1] + "ies"
    return raw + ("es" if raw.endswith(("s", "x", "ch", "sh")) else "s")

