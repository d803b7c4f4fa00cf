"""Writes the bundled sample dataset (deterministic: the same bytes on every run).

    .venv/bin/python services/cli/scripts/make_sample_dataset.py
"""

from __future__ import annotations

import csv
import random
from datetime import date, timedelta
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src/runstream/cli/data/sample_sales.csv"
ROWS = 500
REGIONS = ["North", "South", "East", "West"]
PRODUCTS = {  # name -> list price
    "Widget": 12.50,
    "Gadget": 24.00,
    "Gizmo": 7.25,
    "Doohickey": 49.90,
    "Sprocket": 3.80,
}


def main() -> None:
    rng = random.Random(20240101)
    start, days = date(2023, 1, 1), (date(2024, 12, 31) - date(2023, 1, 1)).days
    rows = []
    for _ in range(ROWS):
        day = start + timedelta(days=rng.randint(0, days))
        product = rng.choice(list(PRODUCTS))
        units = rng.randint(1, 40)
        # a little regional pricing and a 2024 price rise, so trends and averages differ
        rise = 1.05 if day.year == 2024 else 1.0
        price = round(PRODUCTS[product] * rng.uniform(0.9, 1.1) * rise, 2)
        rows.append((day.isoformat(), rng.choice(REGIONS), product, units, price,
                     round(units * price, 2)))
    rows.sort()
    with OUT.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["order_date", "region", "product", "units", "unit_price", "revenue"])
        writer.writerows(rows)


if __name__ == "__main__":
    main()
