"""Write the planner evaluation's synthetic datasets (seeded: the same files every run).

    .venv/bin/python -m tests.planner.make_datasets

Shapes: people (employees with a hire date, a boolean and categories), events with
timestamps (taxi trips), and a wide numeric table (country indicators per year, with a
year column instead of a date). The fourth dataset is the bundled sales sample.
The numbers are invented; only their shape matters.
"""

from __future__ import annotations

import csv
import random
from datetime import date, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).parent / "datasets"

FIRST = ["Ada", "Ben", "Chloe", "Dan", "Eva", "Finn", "Grace", "Hugo", "Iris", "Jan", "Kai",
         "Lena", "Max", "Nina", "Omar", "Pia", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera",
         "Will", "Xena", "Yuri", "Zoe", "Alba", "Bruno", "Cleo", "Dario"]  # fmt: skip
LAST = ["Novak", "Schmidt", "Kowalski", "Silva", "Smith", "Rossi", "Dubois", "Jansen",
        "Horvat", "Berg", "Costa", "Meyer", "Nowak", "Lopez", "Moreau", "Fischer", "Baker",
        "Keller", "Varga", "Weber"]  # fmt: skip
DEPARTMENTS = [("Engineering", 0.35, 1.25), ("Sales", 0.2, 1.0), ("Marketing", 0.12, 0.95),
               ("Finance", 0.1, 1.1), ("Support", 0.15, 0.75), ("HR", 0.08, 0.85)]  # fmt: skip
CITIES = ["Berlin", "Warsaw", "London", "Lisbon", "Toronto", "Austin"]
LEVELS = [("Junior", 0.75), ("Mid", 1.0), ("Senior", 1.3), ("Lead", 1.6)]


def employees(rng: random.Random) -> list[dict[str, object]]:
    names = rng.sample([f"{f} {n}" for f in FIRST for n in LAST], 300)
    salaries: set[int] = set()
    rows = []
    for i, name in enumerate(names):
        dept, _, dept_pay = rng.choices(DEPARTMENTS, [d[1] for d in DEPARTMENTS])[0]
        level, level_pay = rng.choice(LEVELS)
        salary = int(52000 * dept_pay * level_pay * rng.uniform(0.85, 1.2))
        while salary in salaries:  # distinct, so "top 5 highest paid" has one right answer
            salary += 7
        salaries.add(salary)
        rows.append({
            "employee_id": 1001 + i,
            "name": name,
            "department": dept,
            "city": rng.choice(CITIES),
            "hire_date": date(2015, 1, 1) + timedelta(days=rng.randrange(3653)),
            "salary": salary,
            "remote": rng.random() < 0.35,
            "age": rng.randint(22, 63),
            "level": level,
            "performance_score": round(rng.uniform(2.0, 5.0), 1),
        })
    return rows


ZONES = ["Downtown", "Midtown", "Harbor", "University", "Old Town", "Riverside"]
PAYMENTS = [("card", 0.55), ("cash", 0.25), ("app", 0.2)]
HOUR_WEIGHTS = [1, 1, 1, 1, 1, 2, 4, 7, 9, 7, 5, 5, 6, 5, 5, 6, 8, 10, 9, 7, 5, 4, 3, 2]


def trips(rng: random.Random) -> list[dict[str, object]]:
    rows = []
    start = datetime(2024, 1, 1)
    for i in range(2000):
        day = start + timedelta(days=rng.randrange(182))
        hour = rng.choices(range(24), HOUR_WEIGHTS)[0]
        at = day + timedelta(hours=hour, minutes=rng.randrange(60), seconds=rng.randrange(60))
        distance = round(rng.uniform(0.5, 25.0), 2)
        duration = round(distance * rng.uniform(1.8, 3.5) + rng.uniform(2, 8), 1)
        fare = round(3.5 + distance * 1.8 + duration * 0.3, 2)
        payment = rng.choices([p for p, _ in PAYMENTS], [w for _, w in PAYMENTS])[0]
        tip = 0.0 if payment == "cash" else round(fare * rng.uniform(0.0, 0.25), 2)
        rows.append({
            "trip_id": i + 1,
            "pickup_time": at.isoformat(sep=" "),
            "pickup_zone": rng.choice(ZONES),
            "payment_type": payment,
            "passengers": rng.choices([1, 2, 3, 4], [6, 3, 1, 1])[0],
            "distance_km": distance,
            "duration_min": duration,
            "fare": fare,
            "tip": tip,
            "to_airport": rng.random() < 0.1,
        })
    return rows


COUNTRIES = {
    "Europe": ["Poland", "Germany", "France", "Spain", "Italy", "Sweden"],
    "Asia": ["Japan", "India", "China", "Indonesia", "Vietnam", "Thailand"],
    "Africa": ["Nigeria", "Kenya", "Egypt", "South Africa", "Ghana", "Morocco"],
    "Americas": ["Brazil", "Mexico", "Canada", "United States", "Argentina", "Chile"],
    "Oceania": ["Australia", "New Zealand", "Fiji", "Papua New Guinea", "Samoa", "Tonga"],
}


def countries(rng: random.Random) -> list[dict[str, object]]:
    rows = []
    for continent, names in COUNTRIES.items():
        for country in names:
            population = rng.randint(200_000, 300_000_000)
            per_capita = rng.uniform(1500, 65000)
            area = rng.randint(2_000, 9_000_000)
            life = rng.uniform(58, 84)
            for y in range(2019, 2024):
                growth = rng.uniform(-0.04, 0.06)
                per_capita *= 1 + growth
                population = int(population * rng.uniform(0.995, 1.02))
                rows.append({
                    "country": country,
                    "continent": continent,
                    "year": y,
                    "population": population,
                    "gdp": round(population * per_capita / 1e9, 2),
                    "gdp_per_capita": round(per_capita, 2),
                    "life_expectancy": round(life + rng.uniform(-0.6, 0.8), 2),
                    "co2_per_capita": round(rng.uniform(0.1, 16), 2),
                    "unemployment_rate": round(rng.uniform(2, 25), 2),
                    "inflation_rate": round(rng.uniform(-1, 30), 2),
                    "internet_users_pct": round(rng.uniform(20, 99), 2),
                    "urban_population_pct": round(rng.uniform(15, 95), 2),
                    "health_spending_pct": round(rng.uniform(2, 17), 2),
                    "literacy_rate": round(rng.uniform(55, 99.9), 2),
                    "fertility_rate": round(rng.uniform(1.0, 5.5), 2),
                    "area_km2": area,
                })
    return rows


def write(name: str, rows: list[dict[str, object]]) -> None:
    with (HERE / name).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    HERE.mkdir(exist_ok=True)
    write("employees.csv", employees(random.Random(8)))
    write("trips.csv", trips(random.Random(80)))
    write("countries.csv", countries(random.Random(800)))


if __name__ == "__main__":
    main()
