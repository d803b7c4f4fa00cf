"""Folds events into Postgres read models (the only writer of Postgres)."""

from runstream.projector.projector import PROJECTOR_LOCK, Projector, fold_batch
from runstream.projector.rebuild import RebuildReport, rebuild, rebuild_from

__all__ = [
    "PROJECTOR_LOCK",
    "Projector",
    "RebuildReport",
    "fold_batch",
    "rebuild",
    "rebuild_from",
]
