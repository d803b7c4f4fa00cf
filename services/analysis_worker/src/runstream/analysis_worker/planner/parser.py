"""Question -> `QuerySpec`: the rules planner's grammar, and the proof that it read it all.

Passes run in a fixed order, each reading the words no earlier pass used (reader.py,
filters.py, grouping.py, measures.py):

refusals → period comparisons → order words → explicit conditions → dates → values →
shares → ranking → dimensions → booleans → measures → entities → date references →
listings → word accounting → assembly.

Word accounting is the honesty rule: a word left over that is not filler means part of
the question was not understood, and the planner refuses, naming that word, rather than
answering a simpler question.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

from runstream.analysis_worker.planner.lexicon import ColumnRef, Unreadable
from runstream.analysis_worker.planner.measures import MeasureReader
from runstream.analysis_worker.planner.reader import PendingDim, Rank, plural_of
from runstream.analysis_worker.planner.spec import (
    RECURRING,
    Dimension,
    Measure,
    Order,
    PeriodFilter,
    QuerySpec,
    Share,
    ValueFilter,
)
from runstream.analysis_worker.planner.words import (
    FILLER,
)


class Parser(MeasureReader):
    def parse(self) -> QuerySpec:
        self.refusals()
        self.comparisons()
        self.order_words()
        self.conditions()
        self.periods()
        self.values()
        self.share_words()
        self.ranking()
        self.dimensions()
        self.booleans()
        self.measure_words()
        self.entities()
        self.date_refs()
        self.listing()
        self.account()
        return self.assemble()

    # --- the honesty rule ---------------------------------------------------------------
    def account(self) -> None:
        left = [t for t in self.live() if not (t.kind == "word" and t.norm in FILLER)]
        if not left:
            return
        t = left[0]
        if t.kind == "col" and t.col is not None:
            raise Unreadable(f"I saw the column {t.col.name} but could not tell how to use it")
        if t.kind == "value" and t.col is not None:
            raise Unreadable(
                f"I saw '{t.raw}' (a value of {t.col.name}) but could not tell how to use it"
            )
        if t.kind == "number":
            raise Unreadable(f"I could not tell what the number {t.raw} stands for")
        owners = [c.name for c in self.schema.cols if t.kind == "word" and t.norm in c.words]
        if len(owners) > 1:
            raise Unreadable(f"'{t.raw}' could be any of {', '.join(owners)}; name one")
        words = ", ".join(f"'{x.raw}'" for x in left if x.kind in ("word", "quoted", "op"))
        plural = "s" if "," in words else ""
        raise Unreadable(
            f"I could not use the word{plural} {words}: not a column, a value or a word I "
            "know, and I answer only questions I read completely"
        )

    # --- assembly ---------------------------------------------------------------------
    def assemble(self) -> QuerySpec:
        spec = QuerySpec(
            noun=plural_of(self.noun) if self.noun is not None else "rows",
            single_date_col=len(self.schema.date_cols) <= 1,
        )
        spec.dims = [self._dimension(d) for d in sorted(self.dims, key=lambda d: d.pos)]
        spec.filters = [self._resolve(f) for f in sorted(self.filters, key=lambda f: f.pos)]
        _refuse_contradictions(spec.filters)
        spec.measures = list(self.measures)
        if self.comparison is not None:
            col = self._date_col(self.comparison.first.label, years=True)
            if col.kind != "date" and self.comparison.first.grain != "year":
                raise Unreadable(f"{col.name} holds years, so it cannot compare "
                                 f"{self.comparison.first.label}")  # fmt: skip
            spec.comparison = replace(self.comparison, col=col)
            if spec.time_dim is not None:
                raise Unreadable("a comparison of two periods cannot also be grouped by "
                                 f"{dim_word(spec.time_dim)}")  # fmt: skip
            if len(spec.measures) > 1:
                raise Unreadable("a comparison of two periods takes one measure at a time")
        if self.rank is not None:
            self._assemble_rank(spec, self.rank)
        elif not spec.measures and not self.rows and not self.distinct:
            if self.noun is not None or (self.share_word is not None and spec.dims):
                spec.measures = [Measure("count", noun=spec.noun)]
            else:
                raise Unreadable("I found nothing to count, sum, average or rank")
        if self.rows and self.rank is None:
            spec.rows, spec.limit = True, self.limit
            if spec.dims or spec.measures:
                raise Unreadable("a listing of rows cannot also be grouped or aggregated")
        for m in spec.measures:
            if m.agg == "count" and m.noun == "rows":
                spec.measures[spec.measures.index(m)] = replace(m, noun=spec.noun)
        self._assemble_share(spec)
        self._assemble_order(spec)
        return spec

    def _assemble_rank(self, spec: QuerySpec, rank: Rank) -> None:
        spec.limit = rank.limit
        if rank.target == "rows":
            if spec.dims or spec.comparison is not None or self.share_word is not None:
                raise Unreadable(f"'{rank.word}' ranks single rows, which cannot also be grouped")
            spec.rows = True
            spec.rank_col = self._rank_column(spec, rank)
            spec.measures = []
            spec.order = Order("measure", rank.desc)
            return
        col = rank.col
        if col is None:
            assert rank.grain is not None
            col = self._date_col(rank.word, years=rank.grain == "year")
        dim = Dimension(col, rank.grain if col.kind in ("date", "number") else None)
        if col.kind == "date" and rank.grain is None:
            dim = Dimension(col, "day")
        if dim not in spec.dims:
            spec.dims.insert(0, dim)
        if not spec.measures:
            if rank.by == "count":
                spec.measures = [Measure("count", noun=spec.noun)]
            elif rank.by == "age":
                age = next(c for c in self.schema.cols if c.words == ("age",))
                spec.measures = [Measure("avg", age)]
            elif rank.by == "primary" and self.schema.primary is not None:
                spec.measures = [Measure("sum", self.schema.primary)]
                self.notes.append(f"'{rank.word}' ranked by the total {self.schema.primary.name}")
            else:
                raise Unreadable(
                    f"'{rank.word}' needs something to rank by, e.g. '{rank.word} … by "
                    f"{self.schema.measures[0].label if self.schema.measures else 'count'}'"
                )
        desc = rank.desc
        if spec.comparison is not None and spec.comparison.falling:
            desc = not desc
        spec.order = Order("measure", desc)

    def _rank_column(self, spec: QuerySpec, rank: Rank) -> ColumnRef:
        if rank.by == "date":
            return self._date_col(rank.word)
        if rank.by == "age":
            col = next(c for c in self.schema.cols if c.words == ("age",))
            return col
        cols = [m.col for m in spec.measures if m.col is not None]
        if rank.by == "primary" and not cols and self.schema.primary is not None:
            return self.schema.primary
        if len(cols) != 1 or any(m.agg not in ("sum", "avg") for m in spec.measures):
            raise Unreadable(
                f"'{rank.word}' ranks rows, so it needs exactly one column to rank them by, "
                "e.g. 'top 5 orders by revenue'"
            )
        assert cols[0] is not None
        return cols[0]

    def _assemble_share(self, spec: QuerySpec) -> None:
        if self.share_word is None or spec.comparison is not None:
            if self.share_word is not None:
                raise Unreadable(f"'{self.share_word.raw}' and a comparison of periods cannot "
                                 "be combined")  # fmt: skip
            return
        word = self.share_word.raw
        if spec.rows:
            raise Unreadable(f"'{word}' needs a total to divide by, and rows have none")
        if len(spec.measures) != 1 or spec.measures[0].agg not in (
            "sum", "count", "count_distinct"
        ):
            raise Unreadable(f"'{word}' applies to one count or one sum, not to "
                             f"{len(spec.measures)} measures or an average")  # fmt: skip
        split = self.ratio_split
        if split is not None and self._grouping_after(split):
            split = None  # "what % of revenue comes from each region": a split across groups
        cond = [f for f in spec.filters if split is not None and f.pos > split]
        if cond:
            spec.ratio = cond
            spec.filters = [f for f in spec.filters if f not in cond]
        elif spec.dims:
            if self.share_of_part and split is None and self.within is None and any(
                isinstance(f, ValueFilter) for f in spec.filters
            ):
                raise Unreadable(
                    f"'{word}' with a condition and a grouping can mean two things: ask "
                    f"'what percentage of {spec.noun} are <condition> by <group>' for the share "
                    f"within each group, or '<condition> {spec.noun} by <group> as a share of "
                    "the total' for how they split across the groups"
                )
            within = None
            if self.within is not None:
                within = self._dimension(self.within)
                if len(spec.dims) < 2:
                    raise Unreadable(f"a share within {within.col.name} needs a second grouping")
                spec.dims.remove(within)
                spec.dims.insert(0, within)
            spec.share = Share(within)
        elif spec.filters:
            spec.ratio, spec.filters = spec.filters, []
        else:
            raise Unreadable(f"'{word}' needs a part and a whole, e.g. 'share of revenue by "
                             "region' or 'what percentage of rows are in 2024'")  # fmt: skip

    def _grouping_after(self, pos: int) -> bool:
        """Whether the words after the ratio's verb name a grouping rather than a condition."""
        for t in self.toks[pos + 1 :]:
            if t.is_word("from", "in", "to", "the", "of", "for", "into", "across"):
                continue
            return self.used.get(t.pos) == "dimension"
        return False

    def _assemble_order(self, spec: QuerySpec) -> None:
        if spec.order is not None:  # set by a ranking
            return
        explicit = self.order
        if explicit is not None:
            if explicit.key == "time" and spec.time_dim is None:
                raise Unreadable("'chronologically' needs a time grouping, e.g. 'by month'")
            if explicit.key == "label" and not spec.dims:
                raise Unreadable("'alphabetically' needs a grouping to sort, e.g. 'by region'")
            spec.order = explicit
            return
        if spec.rows or not spec.dims:
            return
        if spec.time_dim is not None and spec.comparison is None and spec.ratio is None:
            spec.order = Order("time", desc=False)
        else:
            falling = spec.comparison is not None and spec.comparison.falling
            spec.order = Order("measure", desc=not falling)

    # --- resolution of the date column ------------------------------------------------------
    def _dimension(self, d: PendingDim) -> Dimension:
        if d.col is not None:
            return Dimension(d.col, d.grain)
        assert d.grain is not None
        col = self._date_col(d.grain, years=d.grain == "year")
        if d.grain == "hour":
            _needs_time(col, "hour")
        if col.kind != "date":
            return Dimension(col, "year")
        return Dimension(col, d.grain)

    def _resolve(self, f: ValueFilter | PeriodFilter) -> ValueFilter | PeriodFilter:
        if isinstance(f, ValueFilter) or f.col is not None:
            return f
        if f.period.grain in RECURRING and f.op != "in":
            raise Unreadable(f"'{f.op} {f.period.label}' is not a range I can read; "
                             f"ask for '{f.period.label}' alone")  # fmt: skip
        years = f.period.grain == "year" and (f.to is None or f.to.grain == "year")
        col = self._date_col(f.period.label, years=years)
        if f.period.grain == "hour_of_day":
            _needs_time(col, f.period.label)
        if col.kind != "date" and not years:
            raise Unreadable(f"{col.name} holds years, so '{f.period.label}' cannot be applied")
        return replace(f, col=col)

    def _date_col(self, why: str, *, years: bool = False) -> ColumnRef:
        """The date a time word refers to: named, stamped by the entity, or the only one."""
        if self.date_ref is not None:
            return self.date_ref
        if self.entity_dates:
            return self.entity_dates[0]
        dates = self.schema.date_cols
        if len(dates) == 1:
            return dates[0]
        if len(dates) > 1:
            names = ", ".join(c.name for c in dates)
            raise Unreadable(
                f"'{why}' needs a date and the table has several ({names}); name one, e.g. "
                f"'by month of {dates[0].label}'"
            )
        if years and self.schema.year_col is not None:
            return self.schema.year_col
        raise Unreadable(f"'{why}' needs a date column, and the table has none")


def _refuse_contradictions(filters: list[ValueFilter | PeriodFilter]) -> None:
    """Conditions on one column that can never hold together ('for the North in the
    South', 'in March and in April 2024') are refused rather than answered with nothing."""
    by_col: dict[str, list[ValueFilter | PeriodFilter]] = {}
    for f in filters:
        assert f.col is not None
        by_col.setdefault(f.col.name, []).append(f)
    for name, fs in by_col.items():
        equal = [f for f in fs if isinstance(f, ValueFilter) and f.op in ("=", "in")
                 and f.col.kind in ("text", "bool")]  # fmt: skip
        if len(equal) > 1 and not set.intersection(
            *({str(v).lower() for v in f.values} for f in equal)
        ):
            a, b = (" or ".join(str(v) for v in f.values) for f in equal[:2])
            raise Unreadable(f"'{a}' and '{b}' cannot both hold for {name}; ask for one of "
                             f"them, or for '{a} or {b}'")  # fmt: skip
        periods = [f for f in fs if isinstance(f, PeriodFilter) and f.op == "in"]
        if len(periods) > 1 and not _periods_meet(periods):
            labels = [" or ".join(p.label for p in (f.period, *f.also)) for f in periods]
            raise Unreadable(f"'{labels[0]}' and '{labels[1]}' have no day in common, so "
                             "nothing could match; ask for one of them")  # fmt: skip


def _periods_meet(filters: list[PeriodFilter]) -> bool:
    """Whether some day falls in every period named ('March' and '2024' do; '2023' and
    '2024' do not)."""
    once = [p for f in filters for p in (f.period, *f.also) if p.grain not in RECURRING]
    start = min((p.start for p in once), default=date(2000, 1, 1))
    end = max((p.end for p in once), default=date(2002, 1, 1))

    def holds(f: PeriodFilter, day: date) -> bool:
        return any(
            p.start <= day < p.end if p.grain not in RECURRING
            else (day.month if p.grain == "month_of_year" else day.isoweekday()) in p.parts
            if p.grain != "hour_of_day" else True
            for p in (f.period, *f.also)
        )  # fmt: skip

    day = start
    while day < end:
        if all(holds(f, day) for f in filters):
            return True
        day += timedelta(days=1)
    return False


def _needs_time(col: ColumnRef, said: str) -> None:
    if col.kind != "date" or not col.type.upper().startswith(("TIMESTAMP", "DATETIME")):
        raise Unreadable(f"'{said}' needs a time of day, and {col.name} holds days only")


def dim_word(d: Dimension) -> str:
    return d.grain or d.col.name

