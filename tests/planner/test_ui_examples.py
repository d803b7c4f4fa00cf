"""The web UI's example questions (static/examples.js, built in the browser from a
dataset's columns) are questions the offline rules planner answers: the module runs in
Node on each dataset of the planner evaluation, and every question it offers is planned.
Skipped when Node is missing."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from runstream.analysis_worker.planner import PlanningContext
from runstream.analysis_worker.planner.rules import example_questions, plan_question
from tests.planner.harness import DATASETS, open_dataset

EXAMPLES_JS = (Path(__file__).resolve().parents[2]
               / "services/gateway/src/runstream/gateway/static/examples.js")
RUN = """
const [path, payload] = process.argv.slice(1);
const { exampleQuestions } = await import(path);
const { columns, rows } = JSON.parse(payload);
console.log(JSON.stringify(exampleQuestions(columns, rows)));
"""


def _ui_examples(node: str, columns: list[dict[str, str]], rows: list[list[Any]]) -> list[str]:
    payload = json.dumps({"columns": columns, "rows": rows}, default=str)
    done = subprocess.run(
        [node, "--input-type=module", "-e", RUN, EXAMPLES_JS.as_uri(), payload],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return list(json.loads(done.stdout))


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_example_the_ui_offers_is_answered_by_the_rules_planner(name: str) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    data = open_dataset(name)
    try:
        columns = [{"name": c.name, "type": c.type} for c in data.columns]
        # The sample rows as the gateway sends them: JSON (dates as text).
        rows = json.loads(json.dumps(data.sample_rows, default=str))
        questions = _ui_examples(node, columns, rows)
        assert len(questions) == 3, questions
        ctx = PlanningContext(question="", columns=data.columns, sample_rows=data.sample_rows,
                              values=data.values, dataset_name=data.name)
        for question in questions:
            plan = plan_question(PlanningContext(
                question=question, columns=data.columns, sample_rows=data.sample_rows,
                values=data.values, dataset_name=data.name))
            assert plan.sql and plan.interpretation, question
        # The very questions the planner itself suggests in a refusal on this table.
        assert questions == example_questions(ctx)
    finally:
        data.con.close()
