"""Retention on a schedule: `cleanup()` every so often, under `runstream up`.

The same function `runstream cleanup` calls (and the Helm CronJob runs that command),
so a scheduled run removes exactly what `runstream cleanup --dry-run` lists at that
moment. A run that fails (NATS or Postgres away) is reported and tried again at the
next tick; it never stops the stack.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta

import structlog

from runstream.cli.cleanup import Plan, cleanup, render
from runstream.cli.durations import format_duration, parse_duration
from runstream.cli.settings import CliSettings

logger = structlog.get_logger()

OFF = frozenset({"", "0", "off", "never", "none"})


def parse_every(text: str) -> timedelta | None:
    """The interval of the periodic run; None when switched off (`off`, `0`)."""
    return None if text.strip().lower() in OFF else parse_duration(text)


class CleanupSchedule:
    """Runs `cleanup(older_than)` now, then every `every`, until `stop` is set."""

    def __init__(
        self,
        settings: CliSettings,
        *,
        older_than: timedelta,
        every: timedelta,
        report: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.older_than = older_than
        self.every = every
        self.report = report
        self.runs: list[Plan | None] = []  # one per finished run; None for a failed one

    async def run_once(self) -> Plan | None:
        label = format_duration(self.older_than)
        try:
            plan = await cleanup(self.settings, self.older_than, dry_run=False)
        except Exception as exc:  # an outage: the next tick tries again
            logger.warning("cleanup.run_failed", error=type(exc).__name__, detail=str(exc)[:200])
            self.report(f"cleanup failed ({type(exc).__name__}: {exc}); "
                        f"next run in {format_duration(self.every)}")
            self.runs.append(None)
            return None
        for line in render(plan, dry_run=False, older_than=label).splitlines():
            self.report(line)
        self.runs.append(plan)
        return plan

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.run_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every.total_seconds())
