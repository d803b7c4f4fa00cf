"""The planner evaluation as a test: no wrong answer, and at least 90 % right.

`make eval` prints the same figures as a table (tests/planner/report.py).
"""

from __future__ import annotations

import re

import pytest

from tests.planner.harness import DATASETS, Outcome, evaluate, load_cases, score, table

BAR = 0.9


@pytest.fixture(scope="module")
def outcomes() -> list[Outcome]:
    return evaluate()


def _listed(outcomes: list[Outcome]) -> str:
    return "\n".join(f"[{o.verdict}] {o.case.dataset}: {o.case.ask} — {o.detail}"
                     for o in outcomes)  # fmt: skip


def test_the_evaluation_covers_150_questions_over_four_datasets() -> None:
    cases = load_cases()
    assert len(cases) >= 150
    assert {c.dataset for c in cases} == set(DATASETS)
    assert len({c.ask for c in cases}) == len(cases), "no question is counted twice"


def test_the_planner_is_never_wrong_on_the_evaluation(outcomes: list[Outcome]) -> None:
    wrong = [o for o in outcomes if o.verdict == "wrong"]
    assert not wrong, _listed(wrong)


def test_the_planner_answers_at_least_90_percent_of_answerable_questions(
    outcomes: list[Outcome],
) -> None:
    s = score(outcomes)
    assert s.rate >= BAR, table(outcomes)


def test_every_question_of_the_issue_answers_right_or_refuses_naming_a_word(
    outcomes: list[Outcome],
) -> None:
    issue = [o for o in outcomes if "issue" in o.case.tags]
    assert len(issue) >= 14
    for o in issue:
        assert o.verdict == "right" or (o.verdict == "refused" and _named(o)), _listed([o])


def test_the_readme_example_questions_answer_right(outcomes: list[Outcome]) -> None:
    readme = [o for o in outcomes if "readme" in o.case.tags]
    assert {o.case.ask for o in readme} == {
        "total revenue by month",
        "top 3 products by units",
        "average unit_price by region where year is 2024",
    }
    assert all(o.verdict == "right" for o in readme), _listed(readme)


def _named(o: Outcome) -> list[str]:
    """What a refusal quotes from the question, between its prefix and the column list."""
    reason = o.detail.removeprefix(f"I could not answer {o.case.ask!r}: ")
    reason = reason.split(". The table has the columns")[0]
    quoted = re.findall(r"'([^']+)'", reason)
    quoted += re.findall(r"(?:the column|^)(\w+) (?:but|is)", reason)
    return [q for q in quoted if q.split()[0].lower() in o.case.ask.lower()]


def test_every_refusal_in_the_evaluation_names_a_word_of_the_question(
    outcomes: list[Outcome],
) -> None:
    for o in outcomes:
        if o.verdict == "refused" or (o.verdict == "right" and not o.case.answerable):
            assert _named(o), _listed([o])
