"""A message's steps (part of the message aggregate) and the running mean of each step's
duration, which gives the ETA of the next run of that step."""

from __future__ import annotations

from datetime import datetime
from typing import TypeAlias

from runstream.contracts import StepCompleted, StepFailed, StepProgressed, StepStarted
from runstream.projector.fold.state import Row, State, aware

StepEvent: TypeAlias = StepStarted | StepProgressed | StepCompleted | StepFailed


def fold_step(state: State, seq: int, event: StepEvent) -> None:
    """One step event of a message that is not settled."""
    key = (event.message_id, event.step)
    mean = _mean(state, event.step)
    row = state.steps.rows.get(key)
    counted = row is not None and row["mean_counted"]
    at = aware(event.at)
    if row is None:
        # Its step_started never reached us (trimmed stream), or this is the start.
        row = state.steps.put(key, _new(event, seq))
        state.step_names(event.message_id).append(event.step)
    match event:
        case StepStarted():
            state.steps.change(
                key, idx=event.index, total=event.total, status="running", progress=0.0,
                detail="", attempt=event.attempt, started_at=at, ended_at=None,
                duration_ms=None, error=None, error_code=None,
                eta_ms=event.eta_ms if event.eta_ms is not None else _round(mean),
                last_seq=seq,
            )  # fmt: skip
        case StepProgressed():
            eta = _progress_eta(row["started_at"], at, event.progress, mean)
            state.steps.change(
                key, status="running", progress=float(event.progress), detail=event.detail,
                eta_ms=eta if eta is not None else row["eta_ms"], last_seq=seq,
            )  # fmt: skip
        case StepCompleted():
            state.steps.change(
                key, status="completed", progress=100.0, ended_at=at,
                duration_ms=event.duration_ms, eta_ms=0, error=None, error_code=None,
                mean_counted=True, last_seq=seq,
            )  # fmt: skip
            if not counted:
                _count(state, event.step, float(event.duration_ms))
        case StepFailed():
            duration = event.duration_ms if event.duration_ms is not None else row["duration_ms"]
            state.steps.change(
                key, status="failed", ended_at=at, duration_ms=duration, error=event.error,
                error_code=event.code, eta_ms=None, last_seq=seq,
            )  # fmt: skip


def _new(event: StepEvent, seq: int) -> Row:
    return {
        "message_id": event.message_id, "step": event.step, "session_id": event.session_id,
        "idx": 0, "total": 0, "status": "running", "progress": 0.0, "detail": "",
        "attempt": event.attempt, "started_at": None, "ended_at": None, "duration_ms": None,
        "error": None, "error_code": None, "eta_ms": None, "mean_counted": False,
        "last_seq": seq,
    }  # fmt: skip


def _mean(state: State, step: str) -> float | None:
    row = state.durations.rows.get(step)
    return None if row is None else float(row["mean_ms"])


def _count(state: State, step: str, duration_ms: float) -> None:
    """One more finished run of `step` in its running mean (exactly once per message)."""
    row = state.durations.rows.get(step)
    if row is None:
        state.durations.put(step, {"step": step, "count": 1, "mean_ms": duration_ms})
        return
    count, mean = row["count"], row["mean_ms"]
    state.durations.change(step, count=count + 1, mean_ms=mean + (duration_ms - mean) / (count + 1))


def _round(value: float | None) -> int | None:
    return None if value is None else max(0, round(value))


def _progress_eta(
    started_at: datetime | None, at: datetime, progress: float, mean: float | None
) -> int | None:
    """Remaining time: the running mean minus elapsed, else extrapolated from progress."""
    if started_at is None:
        return None
    elapsed_ms = (at - started_at).total_seconds() * 1000
    if mean is not None:
        return max(0, round(mean - elapsed_ms))
    if progress > 0:
        return max(0, round(elapsed_ms * (100 - progress) / progress))
    return None
