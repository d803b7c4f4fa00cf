"""Chart choice from column types, adjustments, and real SVG rendering with vl-convert."""

from __future__ import annotations

import re

import pytest

from runstream.chart_worker.charts import ChartChoice, choose_chart, render_svg, render_svg_async
from runstream.contracts import Column

REGION_TOTALS = (
    [Column(name="region", type="VARCHAR"), Column(name="total", type="DOUBLE")],
    [["North", 120.5], ["South", 80.0], ["East", 200.25], ["West", 15.0]],
)
MONTHLY = (
    [Column(name="month", type="DATE"), Column(name="revenue", type="DECIMAL(18,2)")],
    [["2024-01-01", 10.0], ["2024-02-01", 14.5], ["2024-03-01", 9.0]],
)


def _values(choice: ChartChoice) -> list[dict[str, object]]:
    assert choice.spec is not None
    return choice.spec["data"]["values"]  # type: ignore[no-any-return]


def test_a_category_and_a_number_make_a_bar_chart_largest_first() -> None:
    choice = choose_chart(*REGION_TOTALS)
    assert (choice.kind, choice.x, choice.y) == ("bar", "region", "total")
    assert choice.spec is not None
    assert choice.spec["$schema"].endswith("/vega-lite/v5.json")
    assert choice.spec["mark"]["type"] == "bar"
    assert choice.spec["encoding"]["x"] == {
        "field": "region", "type": "nominal", "title": "region", "sort": "-y"
    }  # fmt: skip
    assert choice.spec["encoding"]["y"]["type"] == "quantitative"
    assert _values(choice)[0] == {"region": "North", "total": 120.5}


def test_a_date_and_a_number_make_a_line_chart() -> None:
    choice = choose_chart(*MONTHLY)
    assert (choice.kind, choice.x, choice.y) == ("line", "month", "revenue")
    assert choice.spec is not None
    assert choice.spec["encoding"]["x"]["type"] == "temporal"


@pytest.mark.parametrize("values", [["2024-01", "2024-02"], ["2024-01-05", "2024-02-07"]])
def test_text_that_reads_as_iso_dates_makes_a_line_chart(values: list[str]) -> None:
    cols = [Column(name="period", type="VARCHAR"), Column(name="n", type="BIGINT")]
    choice = choose_chart(cols, [[v, i] for i, v in enumerate(values)])
    assert choice.kind == "line"


def test_timestamps_with_a_category_make_one_line_per_category() -> None:
    cols = [
        Column(name="day", type="TIMESTAMP"),
        Column(name="region", type="VARCHAR"),
        Column(name="n", type="HUGEINT"),
    ]
    rows = [["2024-01-01T00:00:00", "North", 1], ["2024-01-02T00:00:00", "South", 2]]
    choice = choose_chart(cols, rows)
    assert (choice.kind, choice.series) == ("line", "region")
    assert choice.spec is not None and choice.spec["encoding"]["color"]["field"] == "region"


def test_two_numbers_make_a_scatter_chart() -> None:
    cols = [Column(name="units", type="INTEGER"), Column(name="revenue", type="DOUBLE")]
    choice = choose_chart(cols, [[1, 2.5], [3, 7.5], [2, 5.0]])
    assert (choice.kind, choice.x, choice.y) == ("scatter", "units", "revenue")
    assert choice.spec is not None and choice.spec["mark"]["type"] == "point"


@pytest.mark.parametrize(
    ("columns", "rows"),
    [
        ([Column(name="count", type="BIGINT")], [[42]]),
        ([Column(name="total", type="DOUBLE"), Column(name="avg", type="DOUBLE")], [[1.0, 2.0]]),
        (
            [Column(name="region", type="VARCHAR"), Column(name="product", type="VARCHAR")],
            [["a", "b"]],
        ),
        ([Column(name="region", type="VARCHAR"), Column(name="total", type="DOUBLE")], []),
    ],
)
def test_a_single_value_or_no_usable_pair_makes_no_chart(
    columns: list[Column], rows: list[list[object]]
) -> None:
    choice = choose_chart(columns, rows)
    assert choice.kind == "none" and choice.spec is None and choice.title.startswith("No chart")


def test_as_a_line_chart_turns_a_monthly_bar_into_a_line_and_back() -> None:
    assert choose_chart(*MONTHLY, adjustment="show it as a bar chart").kind == "bar"
    assert choose_chart(*MONTHLY, adjustment="as a line chart please").kind == "line"


def test_a_kind_the_data_cannot_carry_keeps_the_automatic_choice_with_a_note() -> None:
    choice = choose_chart(*REGION_TOTALS, adjustment="as a scatter")
    assert choice.kind == "bar" and choice.notes and "scatter" in choice.notes[0]


def test_top_n_only_keeps_the_n_largest_measures() -> None:
    choice = choose_chart(*REGION_TOTALS, adjustment="top 2 only")
    assert [v["region"] for v in _values(choice)] == ["East", "North"]


def test_bottom_n_keeps_the_smallest() -> None:
    choice = choose_chart(*REGION_TOTALS, adjustment="bottom 1")
    assert [v["region"] for v in _values(choice)] == ["West"]


def test_sorted_ascending_sorts_bars_by_the_measure_ascending() -> None:
    choice = choose_chart(*REGION_TOTALS, adjustment="sorted ascending")
    assert choice.spec is not None and choice.spec["encoding"]["x"]["sort"] == "y"
    choice = choose_chart(*REGION_TOTALS, adjustment="sorted descending")
    assert choice.spec is not None and choice.spec["encoding"]["x"]["sort"] == "-y"


def test_field_names_with_dots_are_escaped_for_vega_lite() -> None:
    cols = [Column(name="a.b", type="VARCHAR"), Column(name="sum(x)", type="DOUBLE")]
    choice = choose_chart(cols, [["p", 1.0], ["q", 2.0]])
    assert choice.spec is not None and choice.spec["encoding"]["x"]["field"] == "a\\.b"
    assert "<svg" in render_svg(choice.spec)


def test_a_bar_chart_renders_to_svg_with_one_bar_per_row() -> None:
    choice = choose_chart(*REGION_TOTALS)
    assert choice.spec is not None
    svg = render_svg(choice.spec)
    assert svg.lstrip().startswith("<svg")
    bars = re.findall(
        r'aria-label="region: (\w+); total: ([\d.]+)"[^>]*aria-roledescription="bar"', svg
    )
    assert {(r, float(v)) for r, v in bars} == {(r, v) for r, v in REGION_TOTALS[1]}


async def test_a_line_chart_renders_to_svg_off_the_event_loop() -> None:
    choice = choose_chart(*MONTHLY)
    assert choice.spec is not None
    svg = await render_svg_async(choice.spec)
    assert svg.lstrip().startswith("<svg") and "mark-line" in svg
