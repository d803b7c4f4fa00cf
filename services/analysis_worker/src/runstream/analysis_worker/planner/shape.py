"""`QuerySpec` -> the `ResultShape` of the SQL that `render.py` writes for it.

The shape names the result's columns exactly as render.py aliases them, so the execution
worker can display each at its grain (a `year` is "2024", a share is "34.5%") and the
chart worker can draw what was asked (the share, the change; a line only over a real
time axis; no chart for whole records).
"""

from __future__ import annotations

from runstream.analysis_worker.planner.render import dim_sql, measure_alias, period_slug
from runstream.analysis_worker.planner.spec import QuerySpec
from runstream.contracts import ColumnHint, ResultShape


def result_shape(spec: QuerySpec) -> ResultShape:
    order = spec.order.key if spec.order is not None else None
    descending = spec.order.desc if spec.order is not None else False
    if spec.rows:
        return ResultShape(kind="rows", order=order, descending=descending, limit=spec.limit)
    dims = [
        ColumnHint(name=dim_sql(d)[1], role="dimension", grain=d.grain) for d in spec.dims
    ]
    if spec.comparison is not None:
        (m,) = spec.measures
        alias = measure_alias(m)
        cmp = spec.comparison
        measures = [
            ColumnHint(name=f"{alias}_{period_slug(cmp.first.label)}", role="measure", agg=m.agg),
            ColumnHint(name=f"{alias}_{period_slug(cmp.second.label)}", role="measure", agg=m.agg),
            ColumnHint(name="change", role="measure", agg=m.agg),
            ColumnHint(name="percent_change", role="measure", percent=True),
        ]
        return ResultShape(
            kind="comparison",
            columns=dims + measures,
            value="percent_change" if cmp.by_percent else "change",
            order="measure",
            descending=order is None or descending,  # render.py: largest change first
            limit=spec.limit,
        )
    value: str | None
    if spec.ratio is not None:
        measures = [ColumnHint(name="percent", role="measure", percent=True)]
        value = "percent"
    else:
        measures = [ColumnHint(name=measure_alias(m), role="measure", agg=m.agg)
                    for m in spec.measures]  # fmt: skip
        value = measures[0].name if measures else None
        if spec.share is not None:
            within = spec.share.within
            name = f"percent_of_{dim_sql(within)[1]}" if within is not None else "percent_of_total"
            measures.append(ColumnHint(name=name, role="measure", percent=True))
            value = name
    return ResultShape(kind="aggregate", columns=dims + measures, value=value, order=order,
                       descending=descending, limit=spec.limit)  # fmt: skip
