"""Measures and what is counted: "total revenue", "median order value", "90th percentile
of fare", "how many employees", "number of distinct products", and listings of rows.
"""

from __future__ import annotations

import re

from runstream.analysis_worker.planner.grouping import GroupReader
from runstream.analysis_worker.planner.lexicon import ColumnRef, Tok, Unreadable, singular
from runstream.analysis_worker.planner.reader import PendingDim, int_of, plural_of
from runstream.analysis_worker.planner.spec import (
    Agg,
    Measure,
    Order,
    PeriodFilter,
)
from runstream.analysis_worker.planner.words import (
    AGG_WORDS,
    EXTREME_WORDS,
    FILLER,
    INTENSIVE,
    KEYWORDS,
)

_REQUEST = frozenset({"show", "list", "display", "give", "get", "find"})
_PERCENTILE = re.compile(r"^p(\d{1,2})$")
_ORDINAL = re.compile(r"^\d+(st|nd|rd|th)$")


class MeasureReader(GroupReader):
    # --- measures --------------------------------------------------------------------
    def measure_words(self) -> None:
        k = 0
        while k < len(live := self.live()):
            t = live[k]
            if t.kind != "word":
                k += 1
                continue
            end = (
                self._correlation(live, k)
                or self._percentile(live, k)
                or self._count(live, k)
                or self._aggregate(live, k)
            )
            k = 0 if end else k + 1
        for t in self.live():
            if t.kind == "col" and t.col is not None and t.col.is_measure:
                self.add_measure(Measure(self._default_agg(t.col), t.col))
                self.use("measure", t)
            elif t.kind == "col" and t.col is not None and t.col.is_id and self.rank is None:
                raise Unreadable(
                    f"{t.col.name} is an identifier: it can be counted ('how many distinct "
                    f"{t.col.label}'), not summed or averaged"
                )

    def _default_agg(self, col: ColumnRef) -> Agg:
        if self.per_row or set(col.words) & INTENSIVE:
            self.notes.append(f"{col.name} is averaged, since a sum of it would mean nothing")
            return "avg"
        return "sum"

    def _correlation(self, live: list[Tok], k: int) -> bool:
        if not live[k].is_word("correlation", "correlate", "correlated"):
            return False
        cols = [
            t for t in live[k + 1 : k + 6]
            if t.kind == "col" and t.col is not None and t.col.is_measure
        ]  # fmt: skip
        if len(cols) != 2:
            raise Unreadable(f"'{live[k].raw}' needs two numeric columns")
        span = live[k : live.index(cols[1]) + 1]
        self.add_measure(Measure("corr", cols[0].col, other=cols[1].col))
        self.use("measure", *span)
        return True

    def _percentile(self, live: list[Tok], k: int) -> bool:
        t = live[k]
        q: int | None = None
        span = 1
        if (n := is_ordinal(t)) is not None and self.words_at(live, k + 1, "percentile"):
            q, span = n, 2
        elif m := _PERCENTILE.match(t.norm):
            q = int(m.group(1))
        elif t.is_word("percentile") and k + 1 < len(live) and (n := int_of(live[k + 1])):
            q, span = n, 2
        elif t.is_word("standard") and self.words_at(live, k + 1, "deviation"):
            span = 2
        else:
            return False
        j = k + span
        while j < len(live) and live[j].is_word("of", "the"):
            j += 1
        col = self._measure_col(live, j, live[k].raw)
        if q is not None and not 0 < q < 100:
            raise Unreadable(f"a percentile is between 1 and 99, not {q}")
        quantile = Measure("quantile", col, q=q / 100) if q is not None else None
        self.add_measure(quantile or Measure("stddev", col))
        self.use("measure", *live[k : j + 1])
        return True

    def _measure_col(self, live: list[Tok], j: int, word: str) -> ColumnRef:
        t = live[j] if j < len(live) else None
        if t is None or t.kind != "col" or t.col is None:
            if t is not None and t.kind == "word" and t.norm not in FILLER:
                raise Unreadable(f"there is no column called '{t.raw}'")
            raise Unreadable(f"'{word}' needs a numeric column after it")
        if t.col.is_id:
            raise Unreadable(f"{t.col.name} is an identifier, so it has no {word}")
        if not t.col.is_measure:
            raise Unreadable(f"{t.col.name} is not numeric, so it has no {word}")
        return t.col

    def _count(self, live: list[Tok], k: int) -> bool:
        t = live[k]
        start = k
        if (t.is_word("how") and self.words_at(live, k + 1, "many")) or self.words_at(
            live, k, "how", "much"
        ):
            j = k + 2
        elif t.is_word("number") and self.words_at(live, k + 1, "of"):
            j = k + 2
            if k > 0 and live[k - 1].is_word("total"):
                start = k - 1
        elif t.is_word("count"):
            j = k + 1 + (1 if self.words_at(live, k + 1, "of") else 0)
            if k > 0 and live[k - 1].kind in ("entity", "col") and not (
                j < len(live) and live[j].kind in ("entity", "col")
            ):
                return self._counted(live, start, k - 1, k + 1, distinct=False)
        elif t.is_word("headcount"):
            self.add_measure(Measure("count"))
            self.use("measure", t)
            return True
        elif t.is_word("distinct", "unique") and self.words_at(live, k + 1, "count"):
            j = k + 2 + (1 if self.words_at(live, k + 2, "of") else 0)
            return self._counted(live, k, j, j + 1, distinct=True)
        else:
            return False
        distinct = False
        while j < len(live) and live[j].kind == "word" and live[j].norm in (
            "distinct", "unique", "different", "the", "of"
        ):
            distinct = distinct or live[j].norm in ("distinct", "unique", "different")
            j += 1
        return self._counted(live, start, j, j + 1, distinct=distinct, much=t.is_word("how")
                             and self.words_at(live, k + 1, "much"))

    def _counted(
        self, live: list[Tok], start: int, j: int, end: int, *, distinct: bool,
        much: bool = False,
    ) -> bool:
        """The thing counted is at live[j]; the count construct spans live[start:end]."""
        x = live[j] if j < len(live) else None
        span = live[start:end] if x is not None else live[start:j]
        if x is not None and x.kind == "entity":
            self.noun = self.noun or x
            self._entity_date(x)
            self.add_measure(Measure("count", noun=plural_of(x)))
        elif x is not None and x.kind == "col" and x.col is not None:
            col = x.col
            if col.is_measure and not distinct:
                if singular(x.raw.split()[-1]) not in col.words:
                    raise Unreadable(
                        f"'{x.raw}' could mean a number of rows or a sum of {col.name}; "
                        f"ask for 'number of rows' or 'total {col.label}'"
                    )
                self.add_measure(Measure("sum", col))
            else:
                self.add_measure(Measure("count_distinct", col))
        elif x is None or x.kind in ("op", "number", "value") or (x.kind == "word" and (
            x.norm in FILLER or x.norm in KEYWORDS
        )):
            if much:
                return False
            self.add_measure(Measure("count"))
            span = live[start:j]
        else:
            return False  # an unknown word: left for word accounting to name
        self.use("measure", *span)
        return True

    def _aggregate(self, live: list[Tok], k: int) -> bool:
        t = live[k]
        agg = AGG_WORDS.get(t.norm) or EXTREME_WORDS.get(t.norm)
        if agg is None:
            return False
        j = k + 1
        while j < len(live) and live[j].is_word("of", "the"):
            j += 1
        if self.words_at(live, j, "amount", "of"):
            j += 2
        if self.words_at(live, j, "number", "of") or self.words_at(live, j, "count"):
            if agg == "sum":
                return False  # "total number of": the count reads it
            raise Unreadable(
                f"'{t.raw} number of …' is an average of counts, which I cannot compute yet; "
                "ask for the count per period or group instead"
            )
        x = live[j] if j < len(live) else None
        if x is not None and x.kind == "entity" and j + 1 < len(live) and live[j + 1].kind == "col":
            j += 1  # "median trip duration": the entity only qualifies the column
            x = live[j]
        if x is not None and x.kind == "entity":
            if self.words_at(live, j + 1, "value") and self.schema.primary is not None:
                col = self.schema.primary
                self.notes.append(f"'{x.raw} value' read as {col.name}")
                self.add_measure(Measure(agg, col))
                self.noun = self.noun or x
                self.use("measure", t, live[j + 1])
                return True
            if agg == "sum":
                self.noun = self.noun or x
                self.add_measure(Measure("count", noun=plural_of(x)))
                self.use("measure", t, x)
                return True
            raise Unreadable(f"'{t.raw} {x.raw}' is not something I can compute")
        if x is None or x.kind != "col" or x.col is None:
            if t.norm in EXTREME_WORDS:
                return False  # "highest" with nothing to apply to: word accounting names it
            if x is not None and x.kind == "word" and x.norm not in FILLER | KEYWORDS:
                raise Unreadable(f"there is no column called '{x.raw}'")
            raise Unreadable(f"'{t.raw}' needs a column: {t.raw} of what?")
        col = x.col
        if col.is_id:
            raise Unreadable(f"{col.name} is an identifier, so it has no {t.raw}")
        if self.per_row and agg == "sum":
            raise Unreadable(
                f"'{t.raw} {x.raw} per …' reads two ways: ask for 'average {col.label} per …' "
                f"(one value per row, averaged) or 'total {col.label}'"
            )
        if agg in ("min", "max"):
            if not (col.is_measure or col.kind == "date"):
                raise Unreadable(f"{col.name} is not a number or a date, so it has no {t.raw}")
        elif not col.is_measure:
            raise Unreadable(f"{col.name} is not numeric, so it has no {t.raw}")
        self.add_measure(Measure(agg, col))
        self.use("measure", *(x for x in live[k : j + 1] if x.kind != "entity"))
        return True

    # --- entities, dates and listings -----------------------------------------------------
    def entities(self) -> None:
        for t in self.live():
            if t.kind == "entity":
                self.noun = self.noun or t
                self._entity_date(t)
                self.use("entity", t)
        for t in self.toks:  # entities read by other passes ("hires per year") stamp dates too
            if t.kind == "entity":
                self._entity_date(t)
                self.noun = self.noun or t

    def _entity_date(self, t: Tok) -> None:
        col = self.schema.entities.get(t.norm)
        if col is not None and col not in self.entity_dates:
            self.entity_dates.append(col)

    def date_refs(self) -> None:
        needed = (
            any(d.grain and d.col is None for d in self.dims)
            or any(isinstance(f, PeriodFilter) and f.col is None for f in self.filters)
            or self.comparison is not None
            or (self.rank is not None and self.rank.by == "date")
        )
        for t in self.live():
            if needed and t.kind == "col" and t.col is not None and t.col.kind == "date":
                self.date_ref = self.date_ref or t.col
                self.use("date", t)

    def listing(self) -> None:
        if self.measures or self.dims or self.rank or self.share_word or self.comparison:
            return
        live = self.live()
        for k, t in enumerate(live):
            if t.is_word("first") and k + 1 < len(live) and (n := int_of(live[k + 1])):
                self.rows, self.limit = True, n
                self.use("listing", t, live[k + 1])
                return
        cols = [t for t in live if t.kind == "col" and t.col is not None and not t.col.is_measure]
        asked = any(t.kind == "word" and t.norm in _REQUEST | {"which", "what"} for t in live)
        if asked and len(cols) == 1 and cols[0].col is not None and cols[0].col.kind != "date":
            self.dims.append(PendingDim(cols[0].pos, cols[0].col))
            self.distinct, self.order = True, self.order or Order("label", desc=False)
            self.use("dimension", cols[0])
            return
        if any(t.kind == "word" and t.norm in _REQUEST for t in live) and (
            self.filters or self.noun is not None
        ):
            self.rows = True  # "show orders in the North in December 2024"


def is_ordinal(t: Tok) -> int | None:
    m = _ORDINAL.match(t.norm) if t.kind == "word" else None
    return int(t.norm[: -2]) if m else None

