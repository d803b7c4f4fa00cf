"""The rules planner, checked by running its SQL in DuckDB against numbers computed in Python."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest

from runstream.analysis_worker.planner import (
    PlanningContext,
    UnanswerableQuestion,
    build_planner,
)
from runstream.analysis_worker.planner.rules import plan_question
from runstream.contracts import Column

REGIONS = ["North", "South", "East", "West"]
PRODUCTS = ["Widget", "Gadget Pro", "Doohickey", "O'Brien Tool", "Sprocket", "Gizmo"]


def _rows() -> list[dict[str, Any]]:
    rows = []
    for i in range(240):
        rows.append(
            {
                "order_date": date(2023 + (i // 120), 1 + (i * 7) % 12, 1 + (i * 5) % 28),
                "region": REGIONS[(i * 3) % 4],
                "product": PRODUCTS[(i * 5) % 6],
                "units": 1 + (i * 7) % 9,
                "unit_price": round(2.5 + (i % 6) * 1.25, 2),
            }
        )
    for r in rows:
        r["revenue"] = round(r["units"] * r["unit_price"], 2)
    return rows


ROWS = _rows()


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = Path(tmp_path_factory.mktemp("rules")) / "orders.csv"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(ROWS[0]))
    writer.writeheader()
    writer.writerows(ROWS)
    path.write_text(buf.getvalue())
    c = duckdb.connect()
    c.execute(f"CREATE TABLE data AS SELECT * FROM read_csv_auto('{path}')")
    yield c
    c.close()


@pytest.fixture(scope="module")
def columns(con: Any) -> list[Column]:
    return [Column(name=n, type=str(t)) for n, t in zip(*_describe(con), strict=True)]


def _describe(con: Any) -> tuple[list[str], list[str]]:
    rel = con.sql("SELECT * FROM data")
    return rel.columns, [str(t) for t in rel.types]


async def _ask(con: Any, columns: list[Column], question: str) -> list[tuple[Any, ...]]:
    samples = [[r[c.name] for c in columns] for r in ROWS[:20]]
    ctx = PlanningContext(question=question, columns=columns, sample_rows=samples)
    plan = await build_planner("rules").plan(ctx)
    assert plan.planner == "rules"
    return con.execute(plan.sql).fetchall()


def _group(key: Any, value: Any, rows: list[dict[str, Any]] = ROWS) -> dict[Any, list[Any]]:
    out: dict[Any, list[Any]] = defaultdict(list)
    for r in rows:
        out[key(r)].append(value(r))
    return out


def test_the_csv_schema_has_a_date_and_numbers(columns: list[Column]) -> None:
    types = {c.name: c.type for c in columns}
    assert types["order_date"] == "DATE"
    assert types["units"] == "BIGINT"
    assert types["revenue"] == "DOUBLE"


async def test_how_many_rows_counts_every_row(con: Any, columns: list[Column]) -> None:
    assert await _ask(con, columns, "How many rows are there?") == [(len(ROWS),)]


async def test_count_of_orders_by_region_counts_each_region_largest_first(
    con: Any, columns: list[Column]
) -> None:
    got = await _ask(con, columns, "count of orders by region")
    want = {k: len(v) for k, v in _group(lambda r: r["region"], lambda r: 1).items()}
    assert dict(got) == want
    assert [c for _, c in got] == sorted(want.values(), reverse=True)


async def test_average_revenue_by_region_matches_python(con: Any, columns: list[Column]) -> None:
    got = await _ask(con, columns, "average revenue by region")
    want = {
        k: sum(v) / len(v) for k, v in _group(lambda r: r["region"], lambda r: r["revenue"]).items()
    }
    assert dict(got) == pytest.approx(want)
    assert [v for _, v in got] == sorted(want.values(), reverse=True)


async def test_total_units_per_product_sums_each_product(con: Any, columns: list[Column]) -> None:
    got = await _ask(con, columns, "total units per product")
    want = {k: sum(v) for k, v in _group(lambda r: r["product"], lambda r: r["units"]).items()}
    assert dict(got) == want


async def test_top_5_products_by_revenue_keeps_the_five_largest(
    con: Any, columns: list[Column]
) -> None:
    got = await _ask(con, columns, "top 5 products by revenue")
    totals = {k: sum(v) for k, v in _group(lambda r: r["product"], lambda r: r["revenue"]).items()}
    want = sorted(totals.items(), key=lambda kv: -kv[1])[:5]
    assert [k for k, _ in got] == [k for k, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want])


async def test_bottom_3_regions_by_units_keeps_the_three_smallest(
    con: Any, columns: list[Column]
) -> None:
    got = await _ask(con, columns, "bottom 3 regions by units")
    totals = {k: sum(v) for k, v in _group(lambda r: r["region"], lambda r: r["units"]).items()}
    assert got == sorted(totals.items(), key=lambda kv: kv[1])[:3]


async def test_which_region_has_the_highest_revenue_answers_one_region(
    con: Any, columns: list[Column]
) -> None:
    got = await _ask(con, columns, "Which region has the highest revenue?")
    totals = {k: sum(v) for k, v in _group(lambda r: r["region"], lambda r: r["revenue"]).items()}
    assert [k for k, _ in got] == [max(totals, key=lambda k: totals[k])]


async def test_top_3_orders_by_revenue_lists_whole_rows(con: Any, columns: list[Column]) -> None:
    got = await _ask(con, columns, "top 3 orders by revenue")
    assert len(got) == 3 and len(got[0]) == len(columns)
    idx = [c.name for c in columns].index("revenue")
    assert [r[idx] for r in got] == sorted((r["revenue"] for r in ROWS), reverse=True)[:3]


@pytest.mark.parametrize(
    ("question", "grain"),
    [
        ("revenue by month", "month"),
        ("monthly trend of revenue", "month"),
        ("revenue per year", "year"),
    ],
)
async def test_trends_sum_per_period_oldest_first(
    con: Any, columns: list[Column], question: str, grain: str
) -> None:
    got = await _ask(con, columns, question)

    def period(r: dict[str, Any]) -> date:
        d = r["order_date"]
        return date(d.year, d.month if grain == "month" else 1, 1)

    want = {k: sum(v) for k, v in _group(period, lambda r: r["revenue"]).items()}
    assert [k for k, _ in got] == sorted(want)
    assert dict(got) == pytest.approx(want)


async def test_orders_per_day_counts_each_day(con: Any, columns: list[Column]) -> None:
    got = await _ask(con, columns, "number of orders per day")
    want = {k: len(v) for k, v in _group(lambda r: r["order_date"], lambda r: 1).items()}
    assert dict(got) == want


async def test_a_where_filter_ignores_case(con: Any, columns: list[Column]) -> None:
    got = await _ask(con, columns, "total revenue where region is north")
    assert got[0][0] == pytest.approx(sum(r["revenue"] for r in ROWS if r["region"] == "North"))


async def test_a_year_filter_keeps_that_year(con: Any, columns: list[Column]) -> None:
    got = await _ask(con, columns, "how many orders in 2024")
    assert got == [(sum(1 for r in ROWS if r["order_date"].year == 2024),)]


async def test_a_month_filter_keeps_that_month(con: Any, columns: list[Column]) -> None:
    got = await _ask(con, columns, "total units in 2023-03")
    want = sum(
        r["units"] for r in ROWS if (r["order_date"].year, r["order_date"].month) == (2023, 3)
    )
    assert got == [(want,)]


async def test_for_a_product_named_in_the_samples_filters_that_product(
    con: Any, columns: list[Column]
) -> None:
    got = await _ask(con, columns, "total revenue for Gadget Pro")
    want = sum(r["revenue"] for r in ROWS if r["product"] == "Gadget Pro")
    assert got[0][0] == pytest.approx(want)


async def test_a_literal_with_a_quote_is_escaped(con: Any, columns: list[Column]) -> None:
    got = await _ask(con, columns, "how many rows where product is O'Brien Tool")
    assert got == [(sum(1 for r in ROWS if r["product"] == "O'Brien Tool"),)]


async def test_an_injection_attempt_stays_a_literal(con: Any, columns: list[Column]) -> None:
    got = await _ask(con, columns, "how many rows where region is 'x'' OR 1=1 --'")
    assert got == [(0,)]


async def test_numeric_comparisons_filter_rows(con: Any, columns: list[Column]) -> None:
    got = await _ask(con, columns, "average revenue where units greater than 4")
    kept = [r["revenue"] for r in ROWS if r["units"] > 4]
    assert got[0][0] == pytest.approx(sum(kept) / len(kept))


async def test_filter_group_and_trend_combine(con: Any, columns: list[Column]) -> None:
    got = await _ask(con, columns, "revenue for product Widget by month in 2023")
    rows = [r for r in ROWS if r["product"] == "Widget" and r["order_date"].year == 2023]
    want = {
        k: sum(v)
        for k, v in _group(
            lambda r: r["order_date"].replace(day=1), lambda r: r["revenue"], rows
        ).items()
    }
    assert dict(got) == pytest.approx(want)


async def test_two_group_columns_group_by_both(con: Any, columns: list[Column]) -> None:
    got = await _ask(con, columns, "total units by region and product")
    want = {
        k: sum(v)
        for k, v in _group(lambda r: (r["region"], r["product"]), lambda r: r["units"]).items()
    }
    assert {(a, b): v for a, b, v in got} == want


@pytest.mark.parametrize(
    ("question", "compute"),
    [
        ("total revenue", lambda: sum(r["revenue"] for r in ROWS)),
        ("average price", lambda: sum(r["unit_price"] for r in ROWS) / len(ROWS)),
        ("max units", lambda: max(r["units"] for r in ROWS)),
        ("minimum unit price", lambda: min(r["unit_price"] for r in ROWS)),
        ("how many distinct products", lambda: len(PRODUCTS)),
        ("how many units were sold", lambda: sum(r["units"] for r in ROWS)),
    ],
)
async def test_scalar_aggregates_match_python(
    con: Any, columns: list[Column], question: str, compute: Any
) -> None:
    got = await _ask(con, columns, question)
    assert len(got) == 1 and got[0][0] == pytest.approx(compute())


async def test_a_price_column_by_group_is_averaged_not_summed(
    con: Any, columns: list[Column]
) -> None:
    got = await _ask(con, columns, "unit_price by region")
    want = {
        k: sum(v) / len(v)
        for k, v in _group(lambda r: r["region"], lambda r: r["unit_price"]).items()
    }
    assert dict(got) == pytest.approx(want)


async def test_the_same_question_always_gives_the_same_sql(columns: list[Column]) -> None:
    planner = build_planner("rules")
    ctx = PlanningContext(question="Top 5 products by revenue in 2024", columns=columns)
    first = await planner.plan(ctx)
    again = [(await planner.plan(ctx)).sql for _ in range(5)]
    assert again == [first.sql] * 5
    assert first.chart_hint == "bar"


@pytest.mark.parametrize(
    ("question", "word"),
    [
        ("what is the weather like", "weather"),
        ("revenue by colour", "colour"),
        ("average revenue last year", "last year"),
        ("top 5 colours by revenue", "colours"),
        ("how many customers", "customers"),
        ("average region", "region is not numeric"),
        ("revenue by week", "week"),
        ("total revenue for each product, excluding returns", "returns"),
    ],
)
async def test_questions_it_cannot_read_are_refused_naming_the_word_with_help(
    columns: list[Column], question: str, word: str
) -> None:
    cols = columns if question != "revenue by week" else [c for c in columns if c.type != "DATE"]
    ctx = PlanningContext(question=question, columns=cols)
    with pytest.raises(UnanswerableQuestion) as info:
        await build_planner("rules").plan(ctx)
    message = str(info.value)
    assert info.value.code == "unanswerable_question" and not info.value.retryable
    assert word in message, "the refusal names what it could not use"
    assert "region (text)" in message and "revenue (number)" in message
    assert len(_examples(message)) == 3


def _examples(message: str) -> list[str]:
    return [q.strip("'") for q in message.split("work on this table: ")[1][:-1].split("; ")]


async def test_example_questions_in_the_refusal_are_themselves_answerable(
    con: Any, columns: list[Column]
) -> None:
    ctx = PlanningContext(question="tell me a joke", columns=columns)
    with pytest.raises(UnanswerableQuestion) as info:
        await build_planner("rules").plan(ctx)
    examples = _examples(str(info.value))
    assert len(examples) == 3
    for example in examples:
        assert await _ask(con, columns, example)


# --- the honesty rule and the interpretation ------------------------------------------

PEOPLE = [
    Column(name="employee_id", type="BIGINT"),
    Column(name="name", type="VARCHAR"),
    Column(name="city", type="VARCHAR"),
    Column(name="hire_date", type="DATE"),
    Column(name="salary", type="BIGINT"),
    Column(name="remote", type="BOOLEAN"),
]


def _plan(question: str, columns: list[Column], **kw: Any) -> Any:
    return plan_question(PlanningContext(question=question, columns=columns, **kw))


def _refusal(question: str, columns: list[Column], **kw: Any) -> str:
    with pytest.raises(UnanswerableQuestion) as info:
        _plan(question, columns, **kw)
    return info.value.detail


def test_a_question_with_one_unread_word_is_refused_not_answered_more_simply(
    columns: list[Column],
) -> None:
    # Without the honesty rule this would be "total revenue by region", a confident lie.
    message = _refusal("total revenue by region for returning customers", columns)
    assert "'returning', 'customers'" in message


def test_the_interpretation_says_what_is_computed_in_one_sentence(columns: list[Column]) -> None:
    plan = _plan("what percentage of revenue comes from each region in 2024", columns)
    assert plan.interpretation == (
        "Sum of revenue for each region, 2024 only, as a share of the total, largest first."
    )
    assert plan.explanation.startswith(plan.interpretation)


def test_assumptions_made_reading_the_question_are_in_the_explanation(
    columns: list[Column],
) -> None:
    plan = _plan("total sales by region", columns)
    assert plan.interpretation == "Sum of revenue for each region, largest first."
    assert "'sales' read as the column revenue" in plan.explanation


def test_a_synonym_stands_for_a_column_only_when_that_column_exists() -> None:
    cols = [Column(name="region", type="VARCHAR"), Column(name="units", type="BIGINT")]
    assert "'sales'" in _refusal("total sales by region", cols)


def test_an_identifier_column_is_never_summed_or_averaged() -> None:
    assert "identifier" in _refusal("total employee_id", PEOPLE)
    assert "identifier" in _refusal("average employee id by city", PEOPLE)
    plan = _plan("how many distinct employee ids", PEOPLE)
    assert plan.interpretation == "Number of distinct employee_id values."


def test_refusal_examples_come_from_real_columns_and_never_use_an_identifier() -> None:
    message = _refusal("what is the meaning of life", PEOPLE)
    examples = _examples(message)
    assert len(examples) == 3
    assert not any("id" in e.split() or "employee" in e or "name" in e for e in examples)
    for example in examples:
        _plan(example, PEOPLE)


def test_rows_are_counted_under_the_noun_the_dataset_gives_them() -> None:
    assert _plan("how many employees per city", PEOPLE).interpretation == (
        "Number of employees for each city, largest first."
    )
    plan = _plan("hires per year", PEOPLE)
    assert plan.interpretation == "Number of hires for each year of hire_date, in time order."
    assert "date_trunc('year', \"hire_date\")" in plan.sql


def test_a_value_from_the_profile_is_read_as_a_filter_on_its_column() -> None:
    values = {"city": ["Berlin", "Warsaw", "New York"], "name": []}
    plan = _plan("average salary in New York", PEOPLE, values=values)
    assert plan.interpretation == "Average of salary, where city is New York."
    assert "'new york'" in plan.sql
    # Without the profile the value is unknown, and the words are named, not dropped.
    assert "'New', 'York'" in _refusal("average salary in New York", PEOPLE)


def test_a_value_held_by_two_columns_is_refused_until_the_column_is_named() -> None:
    cols = [*PEOPLE, Column(name="home_city", type="VARCHAR")]
    values = {"city": ["Berlin"], "home_city": ["Berlin"]}
    assert "city and home_city" in _refusal("how many employees in Berlin", cols, values=values)
    plan = _plan("how many employees with home city Berlin", cols, values=values)
    assert plan.interpretation == "Number of employees, where home_city is Berlin."


@pytest.mark.parametrize(
    ("question", "word"),
    [
        ("forecast revenue for 2025", "forecast"),
        ("what will revenue be next quarter", "will"),
        ("why did revenue fall in the West", "why"),
        ("revenue this month", "this month"),
        ("orders in the past 3 weeks", "past 3 weeks"),
    ],
)
def test_forecasts_causes_and_dates_relative_to_today_are_refused(
    columns: list[Column], question: str, word: str
) -> None:
    assert f"'{word}" in _refusal(question, columns)


def test_a_share_with_a_condition_and_a_grouping_is_ambiguous_and_refused() -> None:
    message = _refusal("percentage of remote employees by city", PEOPLE)
    assert "two things" in message
    within = _plan("what percentage of employees are remote in each city", PEOPLE)
    assert within.interpretation == (
        "Percentage of employees where remote is true for each city, largest first."
    )
    across = _plan("remote employees by city as a share of the total", PEOPLE)
    assert across.interpretation == (
        "Number of employees for each city, where remote is true, as a share of the total, "
        "largest first."
    )


@pytest.mark.parametrize(
    ("question", "words"),
    [
        ("total revenue for the North in the South", "'North' and 'South'"),
        ("revenue in 2023 for North, in 2024 for South", "'2023' and '2024'"),
        ("orders in March in Q2 2024", "'March' and 'Q2 2024'"),
    ],
)
def test_conditions_that_can_never_hold_together_are_refused_not_answered_with_nothing(
    columns: list[Column], question: str, words: str
) -> None:
    assert words in _refusal(question, columns, values={"region": REGIONS})


async def test_periods_joined_by_and_or_or_mean_either_period(
    con: Any, columns: list[Column]
) -> None:
    got = await _ask(con, columns, "how many orders in March and April 2023")
    assert got == [(sum(1 for r in ROWS if (r["order_date"].year, r["order_date"].month)
                        in ((2023, 3), (2023, 4))),)]  # fmt: skip


def test_a_total_per_row_reads_two_ways_and_is_refused(columns: list[Column]) -> None:
    assert "reads two ways" in _refusal("total revenue per order", columns)
    assert _plan("revenue per order", columns).interpretation == "Average of revenue."


def test_an_hour_of_a_date_without_time_is_refused(columns: list[Column]) -> None:
    assert "holds days only" in _refusal("orders per hour", columns)
