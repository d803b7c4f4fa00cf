"""The job both systems run, and the work of each of its five steps on the Celery side.

The dataset is one CSV made here (sales: date, region, product, units, unit_price,
revenue; ROWS rows from a seeded generator) and the question is "average revenue by
region", which Runstream's offline `rules` planner answers with one DuckDB GROUP BY.

On the Celery side each step calls the very functions Runstream's workers call, in the
Celery worker's own process (no sandbox child), so both sides do the same work:

1. context  - `profile_dataset` (load the CSV into DuckDB, list the values of the text
              columns), cached per dataset and process as Runstream's analysis worker does;
2. plan     - the `rules` planner (`plan_question`) on the same schema, sample rows and values;
3. script   - nothing left to do: the planner's SQL is the script (Runstream's step too);
4. execute  - a fresh in-memory DuckDB (1 thread, 256 MB): `CREATE TABLE ... AS SELECT *
              FROM read_csv_auto(<csv>)`, the planner's SQL, then the display formats
              (`column_formats`, `display_rows`);
5. chart    - `choose_chart` + `render_svg` (Vega-Lite -> SVG with vl-convert).

Runstream does the same in its three workers, with what its design adds: the dataset
comes from the NATS object store, the session's history is read from JetStream, the
query runs in a sandboxed child process (a spare one started ahead of time), and every
step is published as events.
"""

from __future__ import annotations

import csv
import io
import random
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

QUESTION = "average revenue by region"
STEPS = ("context", "plan", "script", "execute", "chart")
TABLE = "sales"
REGIONS = ("North", "South", "East", "West", "Central")
PRODUCTS = ("Widget", "Gadget", "Gizmo", "Doohickey", "Sprocket", "Flange")


@dataclass(frozen=True)
class Dataset:
    """The CSV on disk and what an upload learns about it (schema, sample rows)."""

    path: Path
    size: int
    rows: int
    columns: list[dict[str, str]]
    sample_rows: list[list[Any]]
    expected: dict[str, float]  # region -> average revenue, computed here in Python

    def job_args(self, dataset_id: str) -> dict[str, Any]:
        """What the Celery web app hands its task: where the file is and its schema."""
        return {"dataset_id": dataset_id, "path": str(self.path), "table": TABLE,
                "name": "sales.csv", "columns": self.columns, "sample_rows": self.sample_rows}


def make_dataset(folder: Path, rows: int) -> Dataset:
    """Write `rows` sales rows (seeded) as CSV; the expected averages are computed here."""
    rng = random.Random(11)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["date", "region", "product", "units", "unit_price", "revenue"])
    revenue_by_region: dict[str, list[float]] = defaultdict(list)
    start = date(2024, 1, 1)
    for i in range(rows):
        region = REGIONS[rng.randrange(len(REGIONS))]
        units = rng.randint(1, 40)
        price = round(rng.uniform(2.0, 250.0), 2)
        revenue = round(units * price, 2)
        revenue_by_region[region].append(revenue)
        writer.writerow([(start + timedelta(days=i % 731)).isoformat(), region,
                         PRODUCTS[rng.randrange(len(PRODUCTS))], units, f"{price:.2f}",
                         f"{revenue:.2f}"])
    data = out.getvalue().encode()
    path = folder / "sales.csv"
    path.write_bytes(data)
    columns, sample = inspect_csv(path)
    expected = {r: statistics.fmean(v) for r, v in revenue_by_region.items()}
    return Dataset(path=path, size=len(data), rows=rows, columns=columns, sample_rows=sample,
                   expected=expected)


def inspect_csv(path: Path) -> tuple[list[dict[str, str]], list[list[Any]]]:
    """Schema and five sample rows, as Runstream's gateway reads them at upload."""
    import duckdb

    from runstream.contracts import json_safe

    con = duckdb.connect(config={"threads": 1, "memory_limit": "256MB"})
    try:
        source = f"read_csv_auto('{path}')"
        described = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        sample = con.execute(f"SELECT * FROM {source} LIMIT 5").fetchall()
    finally:
        con.close()
    return [{"name": str(r[0]), "type": str(r[1])} for r in described], json_safe(sample)


# --- the Celery side's steps (run inside the Celery worker's pool processes) ------------

_PROFILES: dict[str, dict[str, list[str]]] = {}  # dataset id -> values, per process


def step_context(job: dict[str, Any]) -> dict[str, Any]:
    from runstream.analysis_worker.planner.profile import profile_dataset
    from runstream.contracts import Column

    columns = [Column(name=c["name"], type=c["type"]) for c in job["columns"]]
    values = _PROFILES.get(job["dataset_id"])
    if values is None:
        data = Path(job["path"]).read_bytes()
        values = _PROFILES[job["dataset_id"]] = profile_dataset(data, "csv", columns)
    return {"columns": columns, "values": values}


def step_plan(job: dict[str, Any], context: dict[str, Any]) -> Any:
    from runstream.analysis_worker.planner import PlanningContext
    from runstream.analysis_worker.planner.rules import plan_question

    planning = PlanningContext(question=job["question"], columns=context["columns"],
                               table_name=job["table"], dataset_name=job["name"],
                               sample_rows=job["sample_rows"], values=context["values"])
    return plan_question(planning)  # what the `rules` planner's `plan` returns


def step_execute(job: dict[str, Any], plan: Any) -> dict[str, Any]:
    import duckdb

    from runstream.contracts import Column, json_safe
    from runstream.execution_worker.display import column_formats, display_rows

    con = duckdb.connect(":memory:", config={"threads": 1, "memory_limit": "256MB"})
    try:
        con.execute(f'CREATE TABLE "{job["table"]}" AS SELECT * FROM '
                    f"read_csv_auto('{job['path']}')")
        rel = con.sql(plan.sql)
        columns = [Column(name=n, type=str(t)) for n, t in zip(rel.columns, rel.types,
                                                                   strict=True)]
        rows = [list(r) for r in json_safe(rel.fetchall())]
    finally:
        con.close()
    formats = column_formats(columns, rows, plan.shape)
    return {"columns": columns, "rows": rows, "formats": formats,
            "display_rows": display_rows(formats, rows)}


def step_chart(plan: Any, result: dict[str, Any]) -> dict[str, Any]:
    from runstream.chart_worker.charts import choose_chart, render_svg

    choice = choose_chart(result["columns"], result["rows"], shape=plan.shape,
                          formats=result["formats"], display_rows=result["display_rows"],
                          interpretation=plan.interpretation)
    svg = render_svg(choice.spec) if choice.spec is not None and choice.kind not in (
        "none", "number") else None
    return {"kind": choice.kind, "title": choice.title, "svg": svg}


def now() -> float:
    """The wall clock both sides stamp steps with (one host, one clock)."""
    return time.time()
