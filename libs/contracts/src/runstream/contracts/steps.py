"""The pipeline's steps, in order, with the titles a reader sees."""

from __future__ import annotations

PIPELINE_STEPS: tuple[str, ...] = ("context", "plan", "script", "execute", "chart")
STEP_TITLES: dict[str, str] = {
    "context": "reading the session and the dataset",
    "plan": "planning the query",
    "script": "writing the script",
    "execute": "running the query",
    "chart": "drawing the chart",
}


def step_index(step: str) -> int:
    """1-based position of a pipeline step."""
    return PIPELINE_STEPS.index(step) + 1
