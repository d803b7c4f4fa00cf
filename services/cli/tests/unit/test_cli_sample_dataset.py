import csv
from datetime import date

from runstream.cli.up import sample_dataset_path

COLUMNS = ["order_date", "region", "product", "units", "unit_price", "revenue"]


def test_the_sample_dataset_has_the_promised_shape() -> None:
    path = sample_dataset_path()
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    assert header == COLUMNS
    assert 450 <= len(rows) <= 550
    dates = [date.fromisoformat(r[0]) for r in rows]
    assert {d.year for d in dates} == {2023, 2024}
    assert {r[1] for r in rows} == {"North", "South", "East", "West"}
    assert len({r[2] for r in rows}) == 5
    for r in rows:
        units, price, revenue = int(r[3]), float(r[4]), float(r[5])
        assert units > 0 and price > 0
        assert abs(units * price - revenue) < 0.01
