"""The planner evaluation: questions with their expected interpretation and an
independently written truth, run against real datasets with DuckDB.

Each case in `questions/*.toml` is either answerable — `means` (the interpretation
sentence a reader must see) and `truth` (hand-written SQL over the table `data`) — or
must be refused, naming the word in `refuse`. A verdict is:

- right:   answerable, planned, same sentence, and the planner's SQL returns exactly the
           rows the truth returns (in order, unless `unordered`); or refused as required,
           naming the word;
- refused: answerable, but the planner refused (honest, yet a miss);
- wrong:   anything else — a different answer, a different sentence, SQL that fails, an
           answer where a refusal was required, or a refusal that names no word.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from runstream.analysis_worker.planner import PlanningContext, UnanswerableQuestion
from runstream.analysis_worker.planner.profile import profile_values
from runstream.analysis_worker.planner.rules import plan_question
from runstream.contracts import Column

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
DATASETS = {
    "sales": ROOT / "services/cli/src/runstream/cli/data/sample_sales.csv",
    "employees": HERE / "datasets/employees.csv",
    "trips": HERE / "datasets/trips.csv",
    "countries": HERE / "datasets/countries.csv",
}
FAMILIES = [
    "count", "distinct", "aggregate", "grouped", "two-dims", "share", "ratio", "filter",
    "time", "ranking", "rows", "order", "comparison", "refusal",
]  # fmt: skip


@dataclass(frozen=True)
class Case:
    dataset: str
    family: str
    ask: str
    means: str | None = None
    truth: str | None = None
    refuse: str | None = None
    unordered: bool = False
    tags: tuple[str, ...] = ()

    @property
    def answerable(self) -> bool:
        return self.refuse is None


@dataclass
class Outcome:
    case: Case
    verdict: str  # "right" | "refused" | "wrong"
    detail: str = ""
    sql: str = ""


@dataclass
class Dataset:
    con: Any
    columns: list[Column]
    values: dict[str, list[str]]
    sample_rows: list[list[Any]] = field(default_factory=list)
    name: str = ""


def load_cases() -> list[Case]:
    cases: list[Case] = []
    for path in sorted((HERE / "questions").glob("*.toml")):
        doc = tomllib.loads(path.read_text())
        for raw in doc["case"]:
            case = Case(dataset=doc["dataset"], **{
                k: tuple(v) if k == "tags" else v for k, v in raw.items()
            })  # fmt: skip
            if case.family not in FAMILIES:
                raise ValueError(f"{path.name}: unknown family {case.family!r} ({case.ask!r})")
            if case.answerable != (case.truth is not None and case.means is not None):
                raise ValueError(f"{path.name}: {case.ask!r} needs means+truth, or refuse")
            cases.append(case)
    return cases


def open_dataset(name: str) -> Dataset:
    """Load a CSV the way the gateway does (read_csv_auto) into the table `data`."""
    path = DATASETS[name]
    con = duckdb.connect()
    con.execute(f"CREATE TABLE data AS SELECT * FROM read_csv_auto('{path}')")
    rel = con.sql("SELECT * FROM data")
    columns = [Column(name=n, type=str(t)) for n, t in zip(rel.columns, rel.types, strict=True)]
    samples = [list(r) for r in con.execute("SELECT * FROM data LIMIT 5").fetchall()]
    return Dataset(con, columns, profile_values(con, "data", columns), samples, path.name)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, decimal.Decimal):
        a = float(a)
    if isinstance(b, decimal.Decimal):
        b = float(b)
    if a is None or b is None or isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, dt.datetime) and isinstance(b, dt.date) and not isinstance(b, dt.datetime):
        return a == dt.datetime.combine(b, dt.time())
    return bool(a == b)


def same_rows(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]], unordered: bool) -> str:
    """'' when the results agree; else what differs."""
    if len(got) != len(want):
        return f"{len(got)} rows, the truth has {len(want)}"
    if unordered:
        got, want = sorted(got, key=repr), sorted(want, key=repr)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if len(g) != len(w):
            return f"{len(g)} columns, the truth has {len(w)}"
        if not all(_same(x, y) for x, y in zip(g, w, strict=True)):
            return f"row {i}: {g!r} but the truth is {w!r}"
    return ""


def _norm(sentence: str) -> str:
    return " ".join(sentence.strip().rstrip(".").split()).lower()


def judge(case: Case, data: Dataset) -> Outcome:
    ctx = PlanningContext(
        question=case.ask, columns=data.columns, sample_rows=data.sample_rows,
        values=data.values, dataset_name=data.name,
    )  # fmt: skip
    try:
        plan = plan_question(ctx)
    except UnanswerableQuestion as exc:
        if case.answerable:
            return Outcome(case, "refused", exc.detail)
        assert case.refuse is not None
        if case.refuse.lower() in exc.detail.lower():
            return Outcome(case, "right", exc.detail)
        return Outcome(case, "wrong", f"refused without naming {case.refuse!r}: {exc.detail}")
    if not case.answerable:
        return Outcome(case, "wrong", f"answered ({plan.interpretation}) instead of refusing",
                       plan.sql)  # fmt: skip
    assert case.means is not None and case.truth is not None
    if _norm(plan.interpretation) != _norm(case.means):
        return Outcome(case, "wrong", f"means {plan.interpretation!r}", plan.sql)
    try:
        got = data.con.execute(plan.sql).fetchall()
    except duckdb.Error as exc:
        return Outcome(case, "wrong", f"the planner's SQL fails: {exc}", plan.sql)
    want = data.con.execute(case.truth).fetchall()
    diff = same_rows(got, want, case.unordered)
    return Outcome(case, "wrong" if diff else "right", diff, plan.sql)


def evaluate(cases: list[Case] | None = None) -> list[Outcome]:
    cases = load_cases() if cases is None else cases
    opened: dict[str, Dataset] = {}
    outcomes = []
    for case in cases:
        if case.dataset not in opened:
            opened[case.dataset] = open_dataset(case.dataset)
        outcomes.append(judge(case, opened[case.dataset]))
    for data in opened.values():
        data.con.close()
    return outcomes


@dataclass(frozen=True)
class Score:
    right: int
    refused: int
    wrong: int
    answerable: int
    answerable_right: int

    @property
    def rate(self) -> float:
        return self.answerable_right / self.answerable if self.answerable else 1.0


def score(outcomes: list[Outcome]) -> Score:
    verdicts = Counter(o.verdict for o in outcomes)
    answerable = [o for o in outcomes if o.case.answerable]
    return Score(
        verdicts["right"], verdicts["refused"], verdicts["wrong"], len(answerable),
        sum(o.verdict == "right" for o in answerable),
    )  # fmt: skip


def table(outcomes: list[Outcome]) -> str:
    lines = [f"{'family':<12} {'questions':>9} {'right':>6} {'refused':>8} {'wrong':>6}"]
    for family in FAMILIES:
        mine = [o for o in outcomes if o.case.family == family]
        if mine:
            s = score(mine)
            lines.append(f"{family:<12} {len(mine):>9} {s.right:>6} {s.refused:>8} {s.wrong:>6}")
    s = score(outcomes)
    lines.append(f"{'total':<12} {len(outcomes):>9} {s.right:>6} {s.refused:>8} {s.wrong:>6}")
    datasets = Counter(o.case.dataset for o in outcomes)
    lines.append("")
    lines.append(f"right on answerable questions: {s.answerable_right}/{s.answerable} "
                 f"= {100 * s.rate:.1f} %   (datasets: "
                 + ", ".join(f"{k} {v}" for k, v in sorted(datasets.items())) + ")")  # fmt: skip
    return "\n".join(lines)
