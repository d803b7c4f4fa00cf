"""The planner a worker's settings name."""

from __future__ import annotations

from runstream.analysis_worker.planner.base import PLANNER_KINDS, Planner
from runstream.analysis_worker.planner.openai import OpenAIPlanner
from runstream.analysis_worker.planner.rules import RulesPlanner


def build_planner(
    kind: str,
    *,
    openai_base_url: str | None = None,
    openai_model: str | None = None,
    openai_api_key: str | None = None,
    timeout_s: float = 30.0,
) -> Planner:
    """The planner named by settings (`rules` needs nothing; `openai` needs a URL and model)."""
    if kind == "rules":
        return RulesPlanner()
    if kind == "openai":
        if not openai_base_url or not openai_model:
            raise ValueError("the openai planner needs openai_base_url and openai_model")
        return OpenAIPlanner(
            base_url=openai_base_url,
            model=openai_model,
            api_key=openai_api_key,
            timeout_s=timeout_s,
        )
    raise ValueError(f"unknown planner {kind!r}; expected one of {', '.join(PLANNER_KINDS)}")
