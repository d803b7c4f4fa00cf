"""The worker framework: steps and their reporter, the per-message guard, dispatch, dead
letters, and one `run_pipeline_worker` every pipeline worker runs on."""

from runstream.pipeline.deadletters import on_max_deliveries, settle_dead_letter
from runstream.pipeline.guard import MessageGuard, Stop
from runstream.pipeline.reporter import StepReporter
from runstream.pipeline.worker import (
    Consumer,
    WorkerSettings,
    consumer_spec,
    decoded,
    dispatch,
    run_pipeline_worker,
)

__all__ = [
    "Consumer",
    "MessageGuard",
    "StepReporter",
    "Stop",
    "WorkerSettings",
    "consumer_spec",
    "decoded",
    "dispatch",
    "on_max_deliveries",
    "run_pipeline_worker",
    "settle_dead_letter",
]
