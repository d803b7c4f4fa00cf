"""`QuerySpec` -> the one plain sentence that says what was computed.

"Sum of revenue for each region, 2024 only, as a share of the total, largest first."
It is written from the same structure the SQL is rendered from, so it cannot claim
anything the query does not do.
"""

from __future__ import annotations

from runstream.analysis_worker.planner.lexicon import singular
from runstream.analysis_worker.planner.spec import (
    Dimension,
    Filter,
    Measure,
    PeriodFilter,
    QuerySpec,
    ValueFilter,
)

_AGG_WORDS = {"sum": "Sum", "avg": "Average", "median": "Median", "min": "Minimum",
              "max": "Maximum", "stddev": "Standard deviation"}  # fmt: skip
_NUM_OPS = {"=": "is", "<>": "is not", ">": "above", ">=": "at least", "<": "below",
            "<=": "at most"}  # fmt: skip
_GRAIN_WORDS = {"day": "day", "week": "week", "month": "month", "quarter": "quarter",
                "year": "year", "weekday": "weekday", "hour": "hour of the day",
                "month_of_year": "calendar month"}  # fmt: skip


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def measure_phrase(m: Measure) -> str:
    if m.agg == "count":
        return f"Number of {m.noun}"
    assert m.col is not None
    if m.agg == "count_distinct":
        return f"Number of distinct {m.col.name} values"
    if m.agg == "quantile":
        assert m.q is not None
        return f"{ordinal(round(m.q * 100))} percentile of {m.col.name}"
    if m.agg == "corr":
        assert m.other is not None
        return f"Correlation between {m.col.name} and {m.other.name}"
    return f"{_AGG_WORDS[m.agg]} of {m.col.name}"


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]


def dim_phrase(d: Dimension) -> str:
    if d.grain is None:
        return d.col.name
    if d.col.kind != "date":
        return d.col.name  # a column of years
    return f"{_GRAIN_WORDS[d.grain]} of {d.col.name}"


def _number(v: object) -> str:
    f = float(v)  # type: ignore[arg-type]
    return str(int(f)) if f.is_integer() else str(f)


def _listed(values: tuple[object, ...], joiner: str) -> str:
    texts = [str(v) for v in values]
    return texts[0] if len(texts) == 1 else f"{', '.join(texts[:-1])} {joiner} {texts[-1]}"


def value_phrase(f: ValueFilter) -> str:
    name = f.col.name
    if f.col.kind == "bool":
        return f"{name} is {'true' if f.values[0] else 'false'}"
    if f.col.kind == "text":
        if f.op == "in":
            return f"{name} is {_listed(f.values, 'or')}"
        if f.op == "not in":
            return f"{name} is none of {_listed(f.values, 'and')}"
        return f"{name} {'is not' if f.op == '<>' else 'is'} {f.values[0]}"
    if f.op == "between":
        return f"{name} between {_number(f.values[0])} and {_number(f.values[1])}"
    return f"{name} {_NUM_OPS[f.op]} {_number(f.values[0])}"


def _labels(f: PeriodFilter) -> str:
    labels = [p.label for p in (f.period, *f.also)]
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} or {labels[-1]}"


def period_phrase(f: PeriodFilter, single_date_col: bool) -> str:
    label = _labels(f)
    text = {
        "in": f"{label} only",
        "since": f"from {label} on",
        "after": f"after {label}",
        "before": f"before {label}",
        "until": f"up to {label}",
        "between": f"from {label} to {f.to.label if f.to else label}",
    }[f.op]
    if f.period.grain == "month_of_year":
        text += " (any year)"  # "March only" alone could be read as one March
    if not single_date_col and f.col is not None and f.col.kind == "date":
        text += f" (by {f.col.name})"
    return text


def period_condition(f: PeriodFilter) -> str:
    """A period as a condition on its column: 'order_date is in 2024'."""
    assert f.col is not None
    label = _labels(f) + (" (any year)" if f.period.grain == "month_of_year" else "")
    return f"{f.col.name} is " + {
        "in": f"in {label}",
        "since": f"from {label} on",
        "after": f"after {label}",
        "before": f"before {label}",
        "until": f"up to {label}",
        "between": f"from {label} to {f.to.label if f.to else label}",
    }[f.op]


def condition_phrase(filters: list[Filter]) -> str:
    return " and ".join(
        value_phrase(f) if isinstance(f, ValueFilter) else period_condition(f) for f in filters
    )


def interpret(spec: QuerySpec) -> str:
    text = _rows(spec) if spec.rows else _aggregate(spec)
    values = [f for f in spec.filters if isinstance(f, ValueFilter)]
    periods = [f for f in spec.filters if isinstance(f, PeriodFilter)]
    if values:
        among = f", among {spec.noun} where " if spec.ratio is not None else ", where "
        text += among + condition_phrase(list(values))
    for p in periods:
        text += ", " + period_phrase(p, spec.single_date_col)
    if spec.share is not None:
        within = spec.share.within
        text += (
            f", as a share of each {dim_phrase(within)}'s total"
            if within is not None else ", as a share of the total"
        )  # fmt: skip
    return text + _order(spec) + "."


def _rows(spec: QuerySpec) -> str:
    noun = spec.noun
    if spec.rank_col is None:
        return f"The first {spec.limit} {noun}" if spec.limit is not None else f"All {noun}"
    desc = spec.order is not None and spec.order.desc
    if spec.rank_col.kind == "date":
        which = "latest" if desc else "earliest"
    else:
        which = "highest" if desc else "lowest"
    if spec.limit == 1:
        return f"The {singular(noun)} with the {which} {spec.rank_col.name}"
    return f"The {spec.limit} {noun} with the {which} {spec.rank_col.name}"


def _aggregate(spec: QuerySpec) -> str:
    if spec.comparison is not None:
        (m,) = spec.measures
        c = spec.comparison
        text = (
            f"Change and percentage change in {_lower(measure_phrase(m))} from "
            f"{c.first.label} to {c.second.label}"
        )
    elif spec.ratio is not None:
        (m,) = spec.measures
        if m.agg == "count":
            whole = m.noun
        elif m.agg == "count_distinct":
            assert m.col is not None
            whole = f"distinct {m.col.name} values"
        else:
            whole = _lower(measure_phrase(m))
        text = f"Percentage of {whole} where {condition_phrase(spec.ratio)}"
    elif not spec.measures:
        return "The distinct values of " + " and ".join(dim_phrase(d) for d in spec.dims)
    else:
        phrases = [measure_phrase(m) for m in spec.measures]
        text = " and ".join([phrases[0], *(_lower(p) for p in phrases[1:])])
    if spec.dims:
        text += " for each " + " and ".join(dim_phrase(d) for d in spec.dims)
    return text


def _order(spec: QuerySpec) -> str:
    order = spec.order
    if order is None or spec.rows:
        return ""
    if order.key == "time":
        return ", newest first" if order.desc else ", in time order"
    if order.key == "label":
        return ", in reverse alphabetical order" if order.desc else ", in alphabetical order"
    if spec.comparison is not None:
        what = "percentage " if spec.comparison.by_percent else ""
        what += "increase" if order.desc else "decrease"
        big = f"largest {what}"
    else:
        big = "largest" if order.desc else "smallest"
    if spec.limit is None:
        return f", {big} first"
    if spec.limit == 1:
        return f", the {big} only"
    plural = "s" if spec.comparison is not None else ""
    return f", the {spec.limit} {big}{plural}"
