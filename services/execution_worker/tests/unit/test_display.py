"""Display forms: each expected string is written out by hand, never computed by the code
under test; the raw rows are never changed."""

from __future__ import annotations

from typing import Any

import pytest

from runstream.contracts import Column, ColumnFormat, ColumnHint, ResultShape
from runstream.execution_worker.display import column_formats, display_rows, markdown


def shown(types: list[tuple[str, str]], rows: list[list[Any]],
          shape: ResultShape | None = None) -> list[list[str | None]]:  # fmt: skip
    columns = [Column(name=n, type=t) for n, t in types]
    return display_rows(column_formats(columns, rows, shape), rows)


def test_money_is_rounded_to_cents_with_thousands_separators() -> None:
    rows = [["West", 29671.929999999997], ["East", 812.5], ["North", -1234567.891]]
    assert shown([("region", "VARCHAR"), ("total_revenue", "DOUBLE")], rows) == [
        ["West", "29,671.93"], ["East", "812.50"], ["North", "-1,234,567.89"],
    ]  # fmt: skip
    assert rows[0][1] == 29671.929999999997  # the raw value is untouched


def test_integers_get_separators_but_years_hours_and_ids_do_not() -> None:
    types = [("count", "BIGINT"), ("year", "BIGINT"), ("customer_id", "INTEGER")]
    assert shown(types, [[1234567, 2024, 10234]]) == [["1,234,567", "2024", "10234"]]


def test_decimals_that_are_all_whole_show_none_and_small_values_keep_three_digits() -> None:
    assert shown([("total", "DOUBLE")], [[1500.0], [20.0]]) == [["1,500"], ["20"]]
    assert shown([("correlation", "DOUBLE")], [[0.82345], [-0.05]]) == [["0.823"], ["-0.050"]]
    assert shown([("price", "DECIMAL(10,2)")], [[12.0], [7.5]]) == [["12.00"], ["7.50"]]


def test_a_value_rounded_to_zero_loses_its_minus_sign() -> None:
    assert shown([("x", "DOUBLE")], [[-0.001], [2.5]]) == [["0.00"], ["2.50"]]


def test_percentages_from_the_plan_get_one_decimal_and_a_percent_sign() -> None:
    shape = ResultShape(columns=[
        ColumnHint(name="region", role="dimension"),
        ColumnHint(name="share", role="measure", percent=True),
    ])  # fmt: skip
    rows = [["West", 34.4567], ["East", 100.0], ["South", 0.04]]
    assert shown([("region", "VARCHAR"), ("share", "DOUBLE")], rows, shape) == [
        ["West", "34.5%"], ["East", "100.0%"], ["South", "0.0%"],
    ]  # fmt: skip


def test_the_rules_planners_percent_columns_read_as_percentages_without_a_shape() -> None:
    assert shown([("percent_change", "DOUBLE")], [[-12.345]]) == [["-12.3%"]]


def test_a_tables_own_column_is_not_taken_for_a_percentage_when_the_plan_has_a_shape() -> None:
    rows = [[0.25]]
    assert shown([("percent_done", "DOUBLE")], rows, ResultShape(kind="rows")) == [["0.250"]]


@pytest.mark.parametrize(
    ("grain", "values", "expected"),
    [
        ("year", ["2023-01-01", "2024-01-01"], ["2023", "2024"]),
        ("quarter", ["2023-01-01", "2023-10-01"], ["Q1 2023", "Q4 2023"]),
        ("month", ["2023-01-01", "2024-12-01"], ["Jan 2023", "Dec 2024"]),
        ("week", ["2024-01-01", "2024-03-04"], ["Week of Jan 1, 2024", "Week of Mar 4, 2024"]),
        ("day", ["2024-02-29", "2023-07-04"], ["Feb 29, 2024", "Jul 4, 2023"]),
    ],
)
def test_dates_read_at_the_grain_the_plan_gives_them(
    grain: str, values: list[str], expected: list[str]
) -> None:
    shape = ResultShape(columns=[ColumnHint(name="period", role="dimension", grain=grain)])  # type: ignore[arg-type]
    got = shown([("period", "DATE")], [[v] for v in values], shape)
    assert got == [[e] for e in expected]


def test_a_date_column_named_after_a_grain_reads_at_it_only_when_every_value_agrees() -> None:
    assert shown([("month", "DATE")], [["2023-01-01"], ["2023-02-01"]]) == [
        ["Jan 2023"], ["Feb 2023"]]  # fmt: skip
    assert shown([("month", "DATE")], [["2023-01-01"], ["2023-02-15"]]) == [
        ["Jan 1, 2023"], ["Feb 15, 2023"]]  # fmt: skip
    assert shown([("order_date", "DATE")], [["2023-01-01"]]) == [["Jan 1, 2023"]]


def test_a_year_of_a_number_column_and_an_hour_of_the_day() -> None:
    shape = ResultShape(columns=[
        ColumnHint(name="year", role="dimension", grain="year"),
        ColumnHint(name="hour", role="dimension", grain="hour"),
    ])  # fmt: skip
    assert shown([("year", "BIGINT"), ("hour", "BIGINT")], [[2024, 8]], shape) == [
        ["2024", "08:00"]]  # fmt: skip


def test_timestamps_show_seconds_only_when_some_value_has_them() -> None:
    types = [("pickup_at", "TIMESTAMP")]
    assert shown(types, [["2024-03-05T14:05:00"], ["2024-03-06T09:00:00"]]) == [
        ["Mar 5, 2024 14:05"], ["Mar 6, 2024 09:00"]]  # fmt: skip
    assert shown(types, [["2024-03-05T14:05:07"]]) == [["Mar 5, 2024 14:05:07"]]
    assert shown([("at", "TIMESTAMP WITH TIME ZONE")], [["2024-03-05T14:05:00+00:00"]]) == [
        ["Mar 5, 2024 14:05 UTC"]]  # fmt: skip


def test_booleans_nulls_and_text() -> None:
    types = [("remote", "BOOLEAN"), ("name", "VARCHAR"), ("total", "DOUBLE")]
    assert shown(types, [[True, "Ann", None], [False, None, 2.5]]) == [
        ["Yes", "Ann", None], ["No", None, "2.50"]]  # fmt: skip


def test_formats_say_how_each_column_was_displayed() -> None:
    columns = [Column(name="month", type="DATE"), Column(name="total", type="DOUBLE")]
    assert column_formats(columns, [["2024-01-01", 1.5]]) == [
        ColumnFormat(name="month", kind="date", grain="month"),
        ColumnFormat(name="total", kind="decimal", decimals=2),
    ]


def test_the_markdown_table_escapes_pipes_and_notes_the_rows_left_out() -> None:
    table = markdown(["a|b"], [["x|y"]] * 60, 60)
    lines = table.splitlines()
    assert lines[0] == "| a\\|b |" and lines[2] == "| x\\|y |"
    assert lines[-1] == "_50 of 60 rows shown._"
