"""Chart choice: each family is chosen for the data it fits, its Vega-Lite encodings say so,
and it renders to SVG with vl-convert (the rendered text is read back where it matters:
legends, axis labels at the right grain)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from runstream.chart_worker.charts import (
    ChartChoice,
    choose_chart,
    human,
    render_svg,
    render_svg_async,
)
from runstream.contracts import Column, ColumnFormat, ColumnHint, ResultShape


def dim(name: str, grain: Any = None) -> ColumnHint:
    return ColumnHint(name=name, role="dimension", grain=grain)


def measure(name: str, agg: str | None = "sum", percent: bool = False) -> ColumnHint:
    return ColumnHint(name=name, role="measure", agg=agg, percent=percent)


def chart(
    types: list[tuple[str, str]],
    rows: list[list[Any]],
    shape: ResultShape | None = None,
    *,
    interpretation: str = "",
    display: list[list[str | None]] | None = None,
    formats: list[ColumnFormat] | None = None,
    adjustment: str | None = None,
) -> ChartChoice:
    columns = [Column(name=n, type=t) for n, t in types]
    return choose_chart(columns, rows, shape=shape, interpretation=interpretation,
                        display_rows=display, formats=formats,
                        adjustment=adjustment)  # fmt: skip


def enc(choice: ChartChoice) -> dict[str, Any]:
    assert choice.spec is not None
    return choice.spec["encoding"]  # type: ignore[no-any-return]


def values(choice: ChartChoice) -> list[dict[str, Any]]:
    assert choice.spec is not None
    return choice.spec["data"]["values"]  # type: ignore[no-any-return]


def texts(svg: str) -> list[str]:
    """The text nodes of a rendered chart: axis labels, titles, legend entries."""
    return re.findall(r"<text[^>]*>([^<]*)</text>", svg)


REGIONS = [["North", 120.5], ["South", 80.0], ["East", 200.25], ["West", 15.0]]
REGION_TYPES = [("region", "VARCHAR"), ("total_revenue", "DOUBLE")]
BY_REGION = ResultShape(columns=[dim("region"), measure("total_revenue")],
                        value="total_revenue", order="measure", descending=True)  # fmt: skip
SENTENCE = "Sum of revenue for each region, largest first."


# --- bars for categories ---------------------------------------------------------------------
def test_a_category_makes_a_bar_chart_sorted_largest_first_with_a_human_title() -> None:
    choice = chart(REGION_TYPES, REGIONS, BY_REGION, interpretation=SENTENCE)
    assert (choice.kind, choice.x, choice.y) == ("bar", "region", "total_revenue")
    assert choice.title == "Sum of revenue for each region, largest first"
    spec = choice.spec
    assert spec is not None and spec["$schema"].endswith("/vega-lite/v5.json")
    assert spec["mark"]["type"] == "bar"
    assert spec["title"]["text"] == ["Sum of revenue for each region, largest first"]
    assert enc(choice)["x"] == {"field": "region", "type": "nominal", "title": "Region",
                                "sort": "-y", "axis": {"labelAngle": 0}}  # fmt: skip
    y = enc(choice)["y"]
    assert (y["field"], y["type"], y["title"]) == ("total_revenue", "quantitative",
                                                   "Total revenue")  # fmt: skip
    assert y["axis"]["format"] == ",.2~f"
    assert "color" not in enc(choice)
    config = spec["config"]
    assert config["axis"]["labelFontSize"] >= 12 and config["axis"]["titleFontSize"] >= 12
    svg = render_svg(spec)
    bars = re.findall(r'aria-label="Region: (\w+); Total revenue: ([\d.,]+)"', svg)
    assert {(r, float(v.replace(",", ""))) for r, v in bars} == {(r, v) for r, v in REGIONS}
    assert "Sum of revenue for each region, largest first" in texts(svg)


def test_the_bars_follow_the_plans_order_ascending_or_as_listed() -> None:
    ascending = ResultShape(columns=BY_REGION.columns, value="total_revenue",
                            order="measure", descending=False)  # fmt: skip
    assert enc(chart(REGION_TYPES, REGIONS, ascending))["x"]["sort"] == "y"
    alphabetical = ResultShape(columns=BY_REGION.columns, value="total_revenue", order="label")
    assert enc(chart(REGION_TYPES, REGIONS, alphabetical))["x"]["sort"] is None


def test_long_labels_turn_the_bars_horizontal_instead_of_rotating_them() -> None:
    rows = [["Research and Development", 40], ["Customer Success Operations", 31],
            ["Sales", 20], ["Marketing Communications", 12], ["Finance", 9]]  # fmt: skip
    shape = ResultShape(columns=[dim("department"), measure("count", "count")], value="count",
                        order="measure", descending=True)  # fmt: skip
    choice = chart([("department", "VARCHAR"), ("count", "BIGINT")], rows, shape)
    assert choice.kind == "bar"
    assert enc(choice)["y"]["field"] == "department" and enc(choice)["y"]["type"] == "nominal"
    assert enc(choice)["y"]["sort"] == "-x"
    assert enc(choice)["x"]["field"] == "count" and enc(choice)["x"]["type"] == "quantitative"
    assert "Research and Development" in texts(render_svg(choice.spec or {}))


def test_short_labels_stay_level_and_only_colliding_ones_are_rotated() -> None:
    days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    shape = ResultShape(columns=[dim("weekday", "weekday"), measure("count", "count")],
                        value="count", order="time")  # fmt: skip
    week = chart([("weekday", "VARCHAR"), ("count", "BIGINT")],
                 [[d, i + 1] for i, d in enumerate(days)], shape)  # fmt: skip
    assert enc(week)["x"]["axis"]["labelAngle"] == 0
    assert enc(week)["x"]["sort"] is None, "a week reads Monday to Sunday, not by size"
    assert [v["weekday"] for v in values(week)] == days
    hours = ResultShape(columns=[dim("hour", "hour"), measure("count", "count")],
                        value="count", order="time")  # fmt: skip
    day = chart([("hour", "BIGINT"), ("count", "BIGINT")], [[h, h + 1] for h in range(24)],
                hours, display=[[f"{h:02d}:00", str(h + 1)] for h in range(24)])  # fmt: skip
    assert enc(day)["x"]["axis"]["labelAngle"] == -45, "24 labels of 5 characters collide"
    assert enc(day)["x"]["type"] == "ordinal" and values(day)[8]["hour"] == "08:00"


# --- two dimensions: grouped bars with a legend --------------------------------------------
PRODUCTS = ["Gadget", "Gizmo", "Widget"]
TWO_DIMS = [[r, p, 100.0 + 10 * i + j] for i, r in enumerate(["East", "North", "South", "West"])
            for j, p in enumerate(PRODUCTS)]  # fmt: skip
TWO_SHAPE = ResultShape(columns=[dim("region"), dim("product"), measure("total_revenue")],
                        value="total_revenue", order="label")  # fmt: skip


def test_two_dimensions_make_grouped_bars_coloured_with_a_legend() -> None:
    choice = chart([("region", "VARCHAR"), ("product", "VARCHAR"), ("total_revenue", "DOUBLE")],
                   TWO_DIMS, TWO_SHAPE,
                   interpretation="Sum of revenue for each region and product.")  # fmt: skip
    assert (choice.kind, choice.x, choice.y, choice.series) == (
        "bar", "region", "total_revenue", "product")
    e = enc(choice)
    assert e["x"]["field"] == "region" and e["x"]["type"] == "nominal"
    assert e["xOffset"] == {"field": "product", "type": "nominal"}
    assert e["color"]["field"] == "product" and e["color"]["type"] == "nominal"
    assert e["color"]["legend"]["title"] == "Product"
    svg = render_svg(choice.spec or {})
    assert 'aria-roledescription="legend"' in svg
    assert "Product" in texts(svg) and set(PRODUCTS) <= set(texts(svg))
    assert len(re.findall(r'aria-roledescription="bar"', svg)) == len(TWO_DIMS)


def test_the_dimension_with_fewer_values_goes_to_the_legend() -> None:
    rows = [[p, r, 1.0] for p in PRODUCTS for r in ["East", "North", "South", "West", "Other"]]
    shape = ResultShape(columns=[dim("product"), dim("region"), measure("total_revenue")],
                        value="total_revenue", order="label")  # fmt: skip
    choice = chart([("product", "VARCHAR"), ("region", "VARCHAR"),
                    ("total_revenue", "DOUBLE")], rows, shape)  # fmt: skip
    assert (choice.x, choice.series) == ("region", "product")


def test_too_many_bars_of_a_total_are_stacked_and_of_an_average_stay_grouped() -> None:
    rows = [[f"city {i:02d}", p, 1.0 + i] for i in range(25) for p in PRODUCTS]
    types = [("city", "VARCHAR"), ("product", "VARCHAR"), ("total", "DOUBLE")]
    total = ResultShape(columns=[dim("city"), dim("product"), measure("total")], value="total",
                        order="measure", descending=True)  # fmt: skip
    stacked = chart(types, rows, total)
    assert "xOffset" not in enc(stacked) and "yOffset" not in enc(stacked)
    assert enc(stacked)["color"]["field"] == "product"
    mean = ResultShape(columns=[dim("city"), dim("product"), measure("total", "avg")],
                       value="total", order="measure", descending=True)  # fmt: skip
    grouped = chart(types, rows, mean)
    assert "xOffset" in enc(grouped) or "yOffset" in enc(grouped)


# --- lines over a real time axis, at its grain ------------------------------------------------
def test_years_make_a_line_whose_axis_reads_years_only() -> None:
    rows = [["2021-01-01", 10.5], ["2022-01-01", 14.2], ["2023-01-01", 11.1], ["2024-01-01", 17.0]]
    shape = ResultShape(columns=[dim("year", "year"), measure("total_revenue")],
                        value="total_revenue", order="time")  # fmt: skip
    choice = chart([("year", "DATE"), ("total_revenue", "DOUBLE")], rows, shape)
    assert (choice.kind, choice.x) == ("line", "year")
    x = enc(choice)["x"]
    assert (x["type"], x["timeUnit"], x["axis"]["format"]) == ("temporal", "utcyear", "%Y")
    labels = texts(render_svg(choice.spec or {}))
    assert {"2021", "2022", "2023", "2024"} <= set(labels)
    assert not any(re.match(r"(Jan|Apr|Jul|Oct)", t) for t in labels), "no month ticks"


def test_a_column_of_years_held_as_numbers_is_a_year_axis_too() -> None:
    rows = [[2015 + i, 1000 + 50.5 * i] for i in range(6)]
    shape = ResultShape(columns=[dim("year", "year"), measure("average_gdp", "avg")],
                        value="average_gdp", order="time")  # fmt: skip
    choice = chart([("year", "BIGINT"), ("average_gdp", "DOUBLE")], rows, shape)
    assert choice.kind == "line" and enc(choice)["x"]["timeUnit"] == "utcyear"
    assert values(choice)[0]["year"] == "2015-01-01"
    labels = texts(render_svg(choice.spec or {}))
    assert "2015" in labels and "2,015" not in labels


def test_months_and_quarters_read_at_their_grain() -> None:
    months = [[f"2024-{m:02d}-01", float(m)] for m in range(1, 7)]
    shape = ResultShape(columns=[dim("month", "month"), measure("total_revenue")],
                        value="total_revenue", order="time")  # fmt: skip
    choice = chart([("month", "DATE"), ("total_revenue", "DOUBLE")], months, shape)
    x = enc(choice)["x"]
    assert (x["timeUnit"], x["axis"]["format"]) == ("utcyearmonth", "%b %Y")
    assert "Mar 2024" in texts(render_svg(choice.spec or {}))
    quarters = [[f"2023-{m:02d}-01", float(m)] for m in (1, 4, 7, 10)]
    shape = ResultShape(columns=[dim("quarter", "quarter"), measure("total_revenue")],
                        value="total_revenue", order="time")  # fmt: skip
    choice = chart([("quarter", "DATE"), ("total_revenue", "DOUBLE")], quarters, shape)
    assert enc(choice)["x"]["timeUnit"] == "utcyearquarter"
    assert {"Q1 2023", "Q2 2023", "Q3 2023", "Q4 2023"} <= set(
        texts(render_svg(choice.spec or {})))


def test_a_period_by_a_category_makes_one_coloured_line_each_with_a_legend() -> None:
    rows = [[f"2024-{m:02d}-01", r, float(m * len(r))] for m in (1, 2, 3) for r in ("East", "West")]
    shape = ResultShape(columns=[dim("month", "month"), dim("region"), measure("total_revenue")],
                        value="total_revenue", order="time")  # fmt: skip
    choice = chart([("month", "DATE"), ("region", "VARCHAR"), ("total_revenue", "DOUBLE")],
                   rows, shape)  # fmt: skip
    assert (choice.kind, choice.series) == ("line", "region")
    assert enc(choice)["color"]["legend"]["title"] == "Region"
    assert {"East", "West", "Region"} <= set(texts(render_svg(choice.spec or {})))


def test_two_periods_are_two_bars_not_a_line() -> None:
    regions = ("East", "North", "West")
    rows = [["2023-01-01", r, 10.0 * i] for i, r in enumerate(regions)] + [
        ["2024-01-01", r, 12.0 * i] for i, r in enumerate(regions)]  # fmt: skip
    shape = ResultShape(columns=[dim("year", "year"), dim("region"), measure("total_revenue")],
                        value="total_revenue", order="time")  # fmt: skip
    display = [["2023" if r[0] < "2024" else "2024", r[1], str(r[2])] for r in rows]
    choice = chart([("year", "DATE"), ("region", "VARCHAR"), ("total_revenue", "DOUBLE")],
                   rows, shape, display=display)  # fmt: skip
    assert choice.kind == "bar"
    assert enc(choice)["color"]["field"] == "year" and enc(choice)["color"]["type"] == "ordinal"
    assert {v["year"] for v in values(choice)} == {"2023", "2024"}


def test_the_top_days_are_ranked_bars_never_a_line_across_unrelated_days() -> None:
    rows = [["2023-01-26", 3690.44], ["2023-01-10", 3282.73], ["2023-07-27", 3126.0],
            ["2024-08-15", 3111.5]]  # fmt: skip
    shape = ResultShape(columns=[dim("day", "day"), measure("total_revenue")],
                        value="total_revenue", order="measure", descending=True, limit=4)
    display = [["Jan 26, 2023", ""], ["Jan 10, 2023", ""], ["Jul 27, 2023", ""],
               ["Aug 15, 2024", ""]]  # fmt: skip
    choice = chart([("day", "DATE"), ("total_revenue", "DOUBLE")], rows, shape, display=display)
    assert choice.kind == "bar" and enc(choice)["x"]["type"] == "ordinal"
    assert enc(choice)["x"]["sort"] is None, "the ranking's own order, largest first"
    assert [v["day"] for v in values(choice)] == [d for d, _ in display]
    # Without a shape, days out of time order say the same.
    assert chart([("day", "DATE"), ("total_revenue", "DOUBLE")], rows).kind == "bar"


# --- what answers with one number, and what is not charted ---------------------------------
def test_a_single_number_is_a_big_number_card_not_a_chart() -> None:
    shape = ResultShape(columns=[measure("total_revenue")], value="total_revenue")
    choice = chart([("total_revenue", "DOUBLE")], [[29671.929999999997]], shape,
                   display=[["29,671.93"]], interpretation="Sum of revenue.")  # fmt: skip
    assert choice.kind == "number" and choice.title == "Sum of revenue"
    assert choice.spec == {"cards": [{"column": "total_revenue", "label": "Total revenue",
                                      "value": 29671.929999999997, "display": "29,671.93",
                                      "primary": True}], "context": []}  # fmt: skip


def test_the_single_top_group_is_a_card_led_by_the_number_asked_for() -> None:
    types = [("region", "VARCHAR"), ("total_2023", "DOUBLE"), ("total_2024", "DOUBLE"),
             ("change", "DOUBLE"), ("percent_change", "DOUBLE")]  # fmt: skip
    shape = ResultShape(kind="comparison", value="change", order="measure", descending=True,
                        limit=1, columns=[dim("region"), measure("total_2023"),
                                          measure("total_2024"), measure("change"),
                                          measure("percent_change", None, True)])  # fmt: skip
    choice = chart(types, [["West", 10000.0, 17858.55, 7858.55, 78.5855]], shape,
                   display=[["West", "10,000.00", "17,858.55", "7,858.55", "78.6%"]])  # fmt: skip
    assert choice.kind == "number" and choice.spec is not None
    cards = choice.spec["cards"]
    assert [c["column"] for c in cards] == ["change", "total_2023", "total_2024",
                                            "percent_change"]  # fmt: skip
    assert cards[0]["primary"] and cards[0]["display"] == "7,858.55"
    assert cards[3]["display"] == "78.6%"
    assert choice.spec["context"] == [{"column": "region", "label": "Region", "display": "West"}]


def test_whole_records_are_not_charted_even_with_a_date_and_a_number() -> None:
    rows = [[7, "2023-01-05", "West", 900.0], [3, "2024-11-30", "East", 880.0],
            [9, "2023-06-01", "North", 870.0]]  # fmt: skip
    types = [("order_id", "BIGINT"), ("order_date", "DATE"), ("region", "VARCHAR"),
             ("revenue", "DOUBLE")]  # fmt: skip
    shape = ResultShape(kind="rows", order="measure", descending=True, limit=5)
    choice = chart(types, rows, shape)
    assert choice.kind == "none" and choice.spec is None
    assert "individual records" in choice.title


def test_a_share_is_drawn_as_the_percentage_with_a_percent_axis() -> None:
    shape = ResultShape(columns=[dim("region"), measure("total_revenue"),
                                 measure("percent_of_total", None, True)],
                        value="percent_of_total", order="measure", descending=True)  # fmt: skip
    rows = [["West", 300.0, 50.0], ["East", 200.0, 33.3], ["North", 100.0, 16.7]]
    choice = chart([("region", "VARCHAR"), ("total_revenue", "DOUBLE"),
                    ("percent_of_total", "DOUBLE")], rows, shape)  # fmt: skip
    assert choice.y == "percent_of_total"
    assert enc(choice)["y"]["title"] == "Share of total (%)"
    assert "50%" in texts(render_svg(choice.spec or {}))


@pytest.mark.parametrize(
    ("name", "said"),
    [("total_revenue", "Total revenue"), ("percent_of_region", "Share within region (%)"),
     ("p90_fare", "90th percentile of fare"), ("distinct_product", "Distinct product values"),
     ("unitPrice", "Unit Price")],
)  # fmt: skip
def test_column_names_are_said_as_a_reader_would(name: str, said: str) -> None:
    assert human(name) == said


# --- without a plan's shape: the column types decide ---------------------------------------
def test_without_a_shape_the_types_still_choose_bar_line_and_scatter() -> None:
    assert chart(REGION_TYPES, REGIONS).kind == "bar"
    assert enc(chart(REGION_TYPES, REGIONS))["x"]["sort"] == "-y"
    monthly = [["2024-01-01", 10.0], ["2024-02-01", 14.5], ["2024-03-01", 9.0]]
    formats = [ColumnFormat(name="month", kind="date", grain="month"),
               ColumnFormat(name="revenue", kind="decimal", decimals=2)]  # fmt: skip
    line = chart([("month", "DATE"), ("revenue", "DECIMAL(18,2)")], monthly, formats=formats)
    assert line.kind == "line" and enc(line)["x"]["timeUnit"] == "utcyearmonth"
    iso = chart([("period", "VARCHAR"), ("n", "BIGINT")], [["2024-01", 1], ["2024-02", 2],
                                                           ["2024-03", 4]])  # fmt: skip
    assert iso.kind == "line"
    scatter = chart([("units", "INTEGER"), ("revenue", "DOUBLE")], [[1, 2.5], [3, 7.5], [2, 5.0]])
    assert (scatter.kind, scatter.x, scatter.y) == ("scatter", "units", "revenue")
    assert scatter.spec is not None and scatter.spec["mark"]["type"] == "point"


@pytest.mark.parametrize(
    ("types", "rows", "kind"),
    [
        ([("count", "BIGINT")], [[42]], "number"),
        ([("total", "DOUBLE"), ("avg", "DOUBLE")], [[1.0, 2.0]], "number"),
        ([("region", "VARCHAR"), ("product", "VARCHAR")], [["a", "b"]], "none"),
        (REGION_TYPES, [], "none"),
        ([("a", "VARCHAR"), ("b", "VARCHAR"), ("c", "DATE"), ("d", "DOUBLE")],
         [["x", "y", "2024-01-01", 1.0], ["z", "w", "2024-01-02", 2.0]], "none"),
    ],
)  # fmt: skip
def test_one_row_is_a_card_and_no_pair_or_no_rows_is_no_chart(
    types: list[tuple[str, str]], rows: list[list[Any]], kind: str
) -> None:
    choice = chart(types, rows)
    assert choice.kind == kind
    if kind == "none":
        assert choice.spec is None and choice.title.startswith("No chart")


# --- adjustments ------------------------------------------------------------------------------
MONTHLY = ([("month", "DATE"), ("revenue", "DOUBLE")],
           [["2024-01-01", 10.0], ["2024-02-01", 14.5], ["2024-03-01", 9.0]])  # fmt: skip


def test_as_a_line_chart_turns_a_monthly_bar_into_a_line_and_back() -> None:
    assert chart(*MONTHLY, adjustment="show it as a bar chart").kind == "bar"
    assert chart(*MONTHLY, adjustment="as a line chart please").kind == "line"


def test_a_kind_the_data_cannot_carry_keeps_the_automatic_choice_with_a_note() -> None:
    choice = chart(REGION_TYPES, REGIONS, adjustment="as a scatter")
    assert choice.kind == "bar" and choice.notes and "scatter" in choice.notes[0]


def test_top_and_bottom_n_keep_the_largest_or_smallest() -> None:
    top = chart(REGION_TYPES, REGIONS, adjustment="top 2 only")
    assert [v["region"] for v in values(top)] == ["East", "North"]
    bottom = chart(REGION_TYPES, REGIONS, adjustment="bottom 1")
    assert [v["region"] for v in values(bottom)] == ["West"]


def test_sorted_ascending_sorts_bars_by_the_measure_ascending() -> None:
    assert enc(chart(REGION_TYPES, REGIONS, adjustment="sorted ascending"))["x"]["sort"] == "y"
    assert enc(chart(REGION_TYPES, REGIONS, adjustment="sorted descending"))["x"]["sort"] == "-y"


def test_field_names_with_dots_are_escaped_for_vega_lite() -> None:
    choice = chart([("a.b", "VARCHAR"), ("sum(x)", "DOUBLE")], [["p", 1.0], ["q", 2.0]])
    assert enc(choice)["x"]["field"] == "a\\.b"
    assert "<svg" in render_svg(choice.spec or {})


async def test_a_line_chart_renders_to_svg_off_the_event_loop() -> None:
    choice = chart(*MONTHLY)
    svg = await render_svg_async(choice.spec or {})
    assert svg.lstrip().startswith("<svg") and "mark-line" in svg
