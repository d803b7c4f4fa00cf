"""`QuerySpec` -> one DuckDB SELECT. Literals reach SQL only through `quote_literal`."""

from __future__ import annotations

from runstream.analysis_worker.planner.lexicon import ColumnRef, quote_ident, quote_literal
from runstream.analysis_worker.planner.spec import (
    RECURRING,
    Dimension,
    Filter,
    Measure,
    Period,
    PeriodFilter,
    QuerySpec,
)

_AGG_SQL = {"sum": "sum", "avg": "avg", "median": "median", "min": "min", "max": "max",
            "stddev": "stddev_samp"}  # fmt: skip
_AGG_ALIAS = {"sum": "total", "avg": "average", "median": "median", "min": "min", "max": "max",
              "stddev": "stddev"}  # fmt: skip
_TRUNC = ("week", "month", "quarter", "year")


def dim_sql(d: Dimension) -> tuple[str, str, str]:
    """(select expression, alias, sort expression) of a dimension."""
    c = quote_ident(d.col.name)
    if d.grain is None or d.col.kind != "date":
        return c, d.col.name, c
    if d.grain == "day":
        return f"CAST({c} AS DATE)", "day", f"CAST({c} AS DATE)"
    if d.grain in _TRUNC:
        expr = f"CAST(date_trunc({quote_literal(d.grain)}, {c}) AS DATE)"
        return expr, d.grain, expr
    if d.grain == "weekday":
        return f"dayname({c})", "weekday", f"isodow({c})"
    if d.grain == "hour":
        return f"hour({c})", "hour", f"hour({c})"
    return f"monthname({c})", "month", f"month({c})"  # month_of_year


def measure_sql(m: Measure, where: str | None = None) -> str:
    """The aggregate; with `where`, over the rows that match it only."""
    filt = f" FILTER (WHERE {where})" if where else ""
    if m.agg == "count":
        return f"count(*){filt}"
    assert m.col is not None
    c = quote_ident(m.col.name)
    if m.agg == "count_distinct":
        return f"count(DISTINCT {c}){filt}"
    if m.agg == "quantile":
        return f"quantile_cont({c}, {m.q}){filt}"
    if m.agg == "corr":
        assert m.other is not None
        return f"corr({c}, {quote_ident(m.other.name)}){filt}"
    return f"{_AGG_SQL[m.agg]}({c}){filt}"


def measure_alias(m: Measure) -> str:
    if m.agg == "count":
        return "count"
    assert m.col is not None
    if m.agg == "count_distinct":
        return f"distinct_{m.col.name}"
    if m.agg == "quantile":
        assert m.q is not None
        return f"p{round(m.q * 100)}_{m.col.name}"
    if m.agg == "corr":
        assert m.other is not None
        return f"correlation_{m.col.name}_{m.other.name}"
    return f"{_AGG_ALIAS[m.agg]}_{m.col.name}"


def _number(v: object) -> str:
    f = float(v)  # type: ignore[arg-type]
    return str(int(f)) if f.is_integer() else repr(f)


def period_sql(col: ColumnRef, p: Period, op: str = "in", to: Period | None = None) -> str:
    c = quote_ident(col.name)
    if col.kind != "date":  # a column of years
        y, last = p.start.year, (to or p).start.year
        return {
            "in": f"{c} = {y}", "since": f"{c} >= {y}", "after": f"{c} > {y}",
            "before": f"{c} < {y}", "until": f"{c} <= {y}",
            "between": f"{c} BETWEEN {y} AND {last}",
        }[op]  # fmt: skip
    if p.grain in RECURRING:
        part = {"month_of_year": "month", "isodow": "isodow", "hour_of_day": "hour"}[p.grain]
        if len(p.parts) == 1:
            return f"{part}({c}) = {p.parts[0]}"
        return f"{part}({c}) IN ({', '.join(str(n) for n in p.parts)})"
    start, end = f"DATE '{p.start.isoformat()}'", f"DATE '{p.end.isoformat()}'"
    if op == "in":
        return f"{c} >= {start} AND {c} < {end}"
    if op == "between":
        assert to is not None
        return f"{c} >= {start} AND {c} < DATE '{to.end.isoformat()}'"
    return {"since": f"{c} >= {start}", "after": f"{c} >= {end}", "before": f"{c} < {start}",
            "until": f"{c} < {end}"}[op]  # fmt: skip


def filter_sql(f: Filter) -> str:
    if isinstance(f, PeriodFilter):
        assert f.col is not None
        if f.also:
            col = f.col
            return " OR ".join(f"({period_sql(col, p)})" for p in (f.period, *f.also))
        return period_sql(f.col, f.period, f.op, f.to)
    c = quote_ident(f.col.name)
    if f.col.kind == "bool":
        return f"{c} = {'true' if f.values[0] else 'false'}"
    if f.col.kind == "text":
        # Text matches ignore case: users type 'north' for 'North'.
        lowered = f"lower(CAST({c} AS VARCHAR))"
        items = ", ".join(quote_literal(str(v).lower()) for v in f.values)
        if f.op in ("in", "not in"):
            return f"{lowered} {f.op.upper()} ({items})"
        return f"{lowered} {f.op} {items}"
    if f.op == "between":
        return f"{c} BETWEEN {_number(f.values[0])} AND {_number(f.values[1])}"
    return f"{c} {f.op} {_number(f.values[0])}"


def _where(parts: list[str]) -> str:
    return f"\nWHERE {' AND '.join(f'({p})' if ' OR ' in p else p for p in parts)}" if parts else ""


def render_sql(spec: QuerySpec, table: str) -> str:
    t = quote_ident(table)
    where = [filter_sql(f) for f in spec.filters]
    limit = f"\nLIMIT {spec.limit}" if spec.limit is not None else ""
    if spec.rows:
        order = ""
        if spec.rank_col is not None and spec.order is not None:
            direction = "DESC" if spec.order.desc else "ASC"
            order = f"\nORDER BY {quote_ident(spec.rank_col.name)} {direction} NULLS LAST"
        return f"SELECT *\nFROM {t}{_where(where)}{order}{limit}"

    dims = [dim_sql(d) for d in spec.dims]
    select = [e if e == quote_ident(a) else f"{e} AS {quote_ident(a)}" for e, a, _ in dims]
    key: str
    if spec.comparison is not None:
        return _comparison(spec, t, dims, where, limit)
    if spec.ratio is not None:
        (m,) = spec.measures
        cond = " AND ".join(filter_sql(f) for f in spec.ratio)
        select.append(f"100.0 * {measure_sql(m, cond)} / {measure_sql(m)} AS \"percent\"")
        key = '"percent"'
    else:
        select += [f"{measure_sql(m)} AS {quote_ident(measure_alias(m))}" for m in spec.measures]
        key = quote_ident(measure_alias(spec.measures[0])) if spec.measures else ""
        if spec.share is not None:
            (m,) = spec.measures
            within = spec.share.within
            over = f"PARTITION BY {dim_sql(within)[0]}" if within is not None else ""
            name = f"percent_of_{dim_sql(within)[1]}" if within is not None else "percent_of_total"
            select.append(
                f"100.0 * {measure_sql(m)} / sum({measure_sql(m)}) OVER ({over}) "
                f"AS {quote_ident(name)}"
            )
    sql = f"SELECT {', '.join(select)}\nFROM {t}{_where(where)}"
    if not dims:
        return sql
    group = list(dict.fromkeys([e for e, _, _ in dims] + [s for _, _, s in dims]))
    sql += f"\nGROUP BY {', '.join(group)}"
    return f"{sql}\nORDER BY {', '.join(_order(spec, dims, key))}{limit}"


def _comparison(
    spec: QuerySpec, t: str, dims: list[tuple[str, str, str]], where: list[str], limit: str
) -> str:
    """Both periods side by side in a CTE, then the change between them."""
    cmp = spec.comparison
    assert cmp is not None and cmp.col is not None
    (m,) = spec.measures
    alias = measure_alias(m)
    first, second = period_sql(cmp.col, cmp.first), period_sql(cmp.col, cmp.second)
    a_name = quote_ident(f"{alias}_{period_slug(cmp.first.label)}")
    b_name = quote_ident(f"{alias}_{period_slug(cmp.second.label)}")
    a, b = measure_sql(m, first), measure_sql(m, second)
    if m.agg in ("sum", "count", "count_distinct"):
        a, b = f"coalesce({a}, 0)", f"coalesce({b}, 0)"  # no rows in a period: zero
    keys = [e if e == quote_ident(n) else f"{e} AS {quote_ident(n)}" for e, n, _ in dims]
    inner = f"SELECT {', '.join([*keys, f'{a} AS {a_name}', f'{b} AS {b_name}'])}\n  FROM {t}"
    inner += _where([*where, f"{first} OR {second}"]).replace("\n", "\n  ")
    if dims:
        inner += f"\n  GROUP BY {', '.join(e for e, _, _ in dims)}"
    sql = (
        f"WITH periods AS (\n  {inner}\n)\nSELECT *, {b_name} - {a_name} AS \"change\", "
        f"100.0 * ({b_name} - {a_name}) / nullif({a_name}, 0) AS \"percent_change\"\n"
        "FROM periods"
    )
    if not dims:
        return sql
    key = '"percent_change"' if cmp.by_percent else '"change"'
    direction = "DESC" if spec.order is None or spec.order.desc else "ASC"
    names = ", ".join(f"{quote_ident(n)} ASC" for _, n, _ in dims)
    return f"{sql}\nORDER BY {key} {direction} NULLS LAST, {names}{limit}"


def _order(spec: QuerySpec, dims: list[tuple[str, str, str]], key: str) -> list[str]:
    order = spec.order
    sorts = [s for _, _, s in dims]
    if order is None:
        return [f"{s} ASC" for s in sorts]
    direction = "DESC" if order.desc else "ASC"
    if order.key == "measure":
        return [f"{key} {direction} NULLS LAST", *(f"{s} ASC" for s in sorts)]
    if order.key == "time":
        i = next(i for i, d in enumerate(spec.dims) if d.grain is not None)
    else:
        i = next((i for i, d in enumerate(spec.dims) if d.grain is None), 0)
    first = [f"{sorts[i]} {direction}"]
    return first + [f"{s} ASC" for j, s in enumerate(sorts) if j != i]


def period_slug(label: str) -> str:
    return "_".join(label.lower().split())
