"""The follow view folds SSE frames as the UI does and renders them with rich."""

from datetime import UTC, datetime, timedelta

from rich.console import Console

from runstream.cli.runview import AnalysisView

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _render(renderable: object) -> str:
    console = Console(width=120, record=True, force_terminal=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_a_running_analysis_shows_its_steps_bars_eta_and_last_logs() -> None:
    view = AnalysisView(message_id="m1", question="total revenue by region")
    frames = [
        (1, "analysis_started", {}),
        (2, "step_started", {"step": "context", "index": 1, "total": 5, "at": T0.isoformat()}),
        (3, "step_completed", {"step": "context", "duration_ms": 120}),
        (4, "step_started", {"step": "plan", "index": 2, "total": 5, "eta_ms": 10_000,
                             "at": T0.isoformat()}),
        (5, "step_progressed", {"step": "plan", "progress": 40.0}),
        (6, "log_appended", {"level": "info", "text": "planning", "at": T0.isoformat()}),
        (6, "log_appended", {"level": "info", "text": "a frame seen twice"}),  # replayed
    ]
    for seq, kind, data in frames:
        view.apply(seq, kind, {"message_id": "m1", **data})

    text = _render(view.live(T0 + timedelta(seconds=4)))

    assert "RUNNING" in text and "total revenue by region" in text
    assert "✓ reading the session and the dataset" in text and "120 ms" in text
    assert "● planning the query" in text and "40% · about 6.0 s left" in text
    assert "○ writing the script" in text and "○ drawing the chart" in text  # to come
    assert "planning" in text and "a frame seen twice" not in text


def test_a_failed_analysis_shows_why_and_closes_its_open_steps() -> None:
    view = AnalysisView(message_id="m1")
    view.apply(1, "step_started", {"message_id": "m1", "step": "execute", "index": 4,
                                   "total": 5})
    view.apply(2, "execution_failed", {"message_id": "m1", "kind": "sql",
                                       "error": "no such column"})
    view.apply(3, "analysis_settled", {"message_id": "m1", "status": "failed",
                                       "error": {"code": "sql", "message": "no such column"}})

    text = _render(view.final())

    assert view.settled and "FAILED" in text
    assert "✗ running the query" in text and "no such column" in text
    assert "drawing the chart" not in text  # never ran
