"""Folds events into Postgres read models (the only writer of Postgres)."""

from runstream.projector.fold import fold_event
from runstream.projector.projector import PROJECTOR_LOCK, Projector
from runstream.projector.rebuild import RebuildReport, rebuild, rebuild_from

__all__ = [
    "PROJECTOR_LOCK",
    "Projector",
    "RebuildReport",
    "fold_event",
    "rebuild",
    "rebuild_from",
]
