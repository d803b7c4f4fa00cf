"""The plan's result shape names exactly the columns its SQL returns, on every question of
the evaluation that the planner answers."""

from __future__ import annotations

import pytest

from runstream.analysis_worker.planner import PlanningContext, UnanswerableQuestion
from runstream.analysis_worker.planner.rules import plan_question
from tests.planner.harness import Dataset, load_cases, open_dataset


@pytest.fixture(scope="module")
def datasets() -> dict[str, Dataset]:
    opened = {name: open_dataset(name) for name in {c.dataset for c in load_cases()}}
    yield opened  # type: ignore[misc]
    for data in opened.values():
        data.con.close()


def test_every_shape_names_the_columns_of_its_result(datasets: dict[str, Dataset]) -> None:
    checked = 0
    for case in load_cases():
        data = datasets[case.dataset]
        ctx = PlanningContext(question=case.ask, columns=data.columns, values=data.values,
                              sample_rows=data.sample_rows, dataset_name=data.name)  # fmt: skip
        try:
            plan = plan_question(ctx)
        except UnanswerableQuestion:
            continue
        shape = plan.shape
        assert shape is not None, case.ask
        rel = data.con.sql(plan.sql)
        types = dict(zip(rel.columns, (str(t) for t in rel.types), strict=True))
        if shape.kind == "rows":
            assert plan.sql.startswith("SELECT *"), case.ask
            assert not shape.columns
            continue
        assert [c.name for c in shape.columns] == list(types), case.ask
        measures = [c.name for c in shape.columns if c.role == "measure"]
        # Only a listing of distinct values ("list all departments") has no measure.
        assert shape.value in measures if measures else shape.value is None, case.ask
        for hint in shape.columns:
            if hint.grain in ("day", "week", "month", "quarter"):
                assert types[hint.name] == "DATE", (case.ask, hint)
            if hint.grain == "year":
                assert types[hint.name] in ("DATE", "BIGINT"), (case.ask, hint)
            if hint.percent:
                assert hint.name.startswith("percent"), (case.ask, hint)
        checked += 1
    assert checked >= 150


def test_a_share_a_comparison_and_a_listing_say_so(datasets: dict[str, Dataset]) -> None:
    data = datasets["sales"]

    def shape(question: str):  # type: ignore[no-untyped-def]
        ctx = PlanningContext(question=question, columns=data.columns, values=data.values,
                              dataset_name=data.name)  # fmt: skip
        return plan_question(ctx).shape

    share = shape("percentage of revenue by region")
    assert share.value == "percent_of_total" and share.hint("percent_of_total").percent
    assert share.hint("region").role == "dimension" and share.hint("region").grain is None
    growth = shape("which region had the highest revenue growth from 2023 to 2024?")
    assert (growth.kind, growth.value, growth.limit) == ("comparison", "change", 1)
    monthly = shape("total revenue by month")
    assert monthly.hint("month").grain == "month" and monthly.order == "time"
    assert monthly.hint("total_revenue").agg == "sum"
    top = shape("top 5 orders by revenue")
    assert (top.kind, top.limit, top.descending) == ("rows", 5, True)
