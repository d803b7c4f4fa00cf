"""One analysis as the web UI shows it, for a terminal: steps with progress bars, logs,
the interpretation, the table, the charts, the SQL.

`AnalysisView` folds the same SSE frames the UI folds (static/app.js `applyEvent`) over
the same snapshot (`GET /api/messages/{mid}`); `live()` and `final()` render it with rich.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from runstream.contracts import PIPELINE_STEPS, STEP_TITLES, is_terminal

MAX_TABLE_ROWS = 200  # as the UI
LIVE_LOG_LINES = 8
NUMERIC_FORMATS = frozenset({"integer", "decimal", "percent"})
ICONS = {"completed": ("✓", "green"), "running": ("●", "yellow"), "failed": ("✗", "red"),
         "cancelled": ("-", "magenta"), "pending": ("○", "dim")}
LEVELS = {"debug": "dim", "info": "", "success": "green", "warning": "yellow", "error": "red"}
STATUS_STYLES = {"completed": "bold green", "failed": "bold red", "cancelled": "bold magenta",
                 "expired": "bold magenta", "running": "bold yellow", "pending": "bold"}


def _when(value: Any) -> datetime | None:
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def fmt_duration(ms: float | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


@dataclass
class StepView:
    step: str
    status: str = "pending"
    progress: float = 0.0
    idx: int = 0
    total: int = 0
    eta_ms: int | None = None
    started_at: datetime | None = None
    duration_ms: int | None = None
    detail: str = ""
    error: str | None = None


@dataclass
class AnalysisView:
    message_id: str
    question: str = ""
    status: str = "pending"
    steps: list[StepView] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    script: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    summary: str | None = None
    charts: list[dict[str, Any]] = field(default_factory=list)
    chart_progress: float | None = None
    as_of: int = 0  # the stream position this view includes
    settled_seq: int | None = None

    @classmethod
    def from_message(cls, m: dict[str, Any]) -> AnalysisView:
        """From `GET /api/messages/{mid}` (or the snapshot of a `reset` frame)."""
        view = cls(
            message_id=m["message_id"], question=m.get("question") or "",
            status=m.get("status") or "pending", logs=list(m.get("logs") or []),
            result=m.get("result"), script=m.get("script"), error=m.get("error"),
            summary=m.get("summary"), charts=list(m.get("charts") or []),
            as_of=int(m.get("as_of_seq") or 0), settled_seq=m.get("settled_seq"),
        )
        for s in m.get("steps") or []:
            view.steps.append(StepView(
                step=s["step"], status=s.get("status") or "pending",
                progress=float(s.get("progress") or 0), idx=s.get("idx") or 0,
                total=s.get("total") or 0, eta_ms=s.get("eta_ms"),
                started_at=_when(s.get("started_at")), duration_ms=s.get("duration_ms"),
                detail=s.get("detail") or "", error=s.get("error")))
        view.steps.sort(key=lambda s: s.idx or 99)
        return view

    @property
    def settled(self) -> bool:
        return is_terminal(self.status)

    def _step(self, name: str) -> StepView:
        for s in self.steps:
            if s.step == name:
                return s
        s = StepView(step=name)
        self.steps.append(s)
        return s

    def apply(self, seq: int, kind: str, ev: dict[str, Any]) -> None:
        """Fold one frame in, as the UI does; frames the view already holds are skipped."""
        if seq <= self.as_of or (ev.get("message_id") not in (None, self.message_id)):
            return
        self.as_of = seq
        match kind:
            case "analysis_requested":
                self.question = ev.get("question") or self.question
            case "analysis_started":
                if not self.settled:
                    self.status = "running"
            case "step_started":
                s = self._step(ev["step"])
                s.idx, s.total, s.status, s.progress = ev["index"], ev["total"], "running", 0.0
                s.eta_ms, s.started_at = ev.get("eta_ms"), _when(ev.get("at"))
                s.error, s.duration_ms = None, None
                self.steps.sort(key=lambda x: x.idx or 99)
                if not self.settled:
                    self.status = "running"
            case "step_progressed":
                s = self._step(ev["step"])
                s.status, s.progress = "running", float(ev["progress"])
                s.detail = ev.get("detail") or ""
            case "step_completed":
                s = self._step(ev["step"])
                s.status, s.progress, s.duration_ms = "completed", 100.0, ev.get("duration_ms")
            case "step_failed":
                s = self._step(ev["step"])
                s.status, s.error = "failed", ev.get("error")
            case "log_appended":
                self.logs.append({"seq": seq, "level": ev.get("level", "info"),
                                  "text": ev.get("text", ""), "at": ev.get("at")})
            case "script_generated":
                self.script = {k: ev.get(k) for k in ("sql", "explanation", "planner",
                                                      "interpretation")}
            case "execution_completed":
                self.result = {k: ev.get(k) for k in (
                    "columns", "rows", "row_count", "truncated", "formats", "display_rows",
                    "interpretation")}
            case "execution_failed":
                self.error = {"code": ev.get("kind"), "message": ev.get("error")}
            case "chart_started" | "chart_progressed":
                self.chart_progress = float(ev.get("progress") or 0)
            case "chart_completed":
                self.chart_progress = None
                if ev.get("svg") or ev.get("kind") == "number":
                    self.charts.append({k: ev.get(k) for k in ("chart_id", "kind", "title",
                                                               "spec")})
            case "chart_failed" | "chart_cancelled":
                self.chart_progress = None
            case "analysis_settled":
                self.status = ev["status"]
                self.summary = ev.get("summary")
                self.settled_seq = seq
                if ev.get("error"):
                    self.error = ev["error"]
                for s in self.steps:  # as the projector closes the steps still open
                    if s.status in ("pending", "running"):
                        s.status = {"failed": "failed", "completed": "completed"}.get(
                            self.status, "cancelled")
            case _:
                pass

    # --- rendering -------------------------------------------------------------------
    def header(self) -> Text:
        text = Text()
        text.append(self.status.upper(), style=STATUS_STYLES.get(self.status, "bold"))
        text.append(f"  {self.question}" if self.question else "")
        text.append(f"  ({self.message_id})", style="dim")
        return text

    def steps_table(self, now: datetime | None = None) -> Table:
        table = Table.grid(padding=(0, 1))
        for _ in range(4):
            table.add_column()
        known = {s.step for s in self.steps}
        rows = list(self.steps)
        if not self.settled:  # the steps still to come, as in "Step 2 of 5"
            rows += [StepView(step=name) for name in PIPELINE_STEPS if name not in known]
        for s in rows:
            icon, style = ICONS.get(s.status, ("?", ""))
            progress = 100.0 if s.status == "completed" else max(0.0, min(100.0, s.progress))
            table.add_row(
                Text(icon, style=style),
                Text(STEP_TITLES.get(s.step, s.step), style="dim" if s.status == "pending"
                     else ""),
                ProgressBar(total=100, completed=progress, width=24,
                            complete_style="green" if s.status == "completed" else "yellow"),
                Text(self._step_right(s, now)),
            )
        return table

    def _step_right(self, s: StepView, now: datetime | None) -> str:
        if s.status == "completed":
            return fmt_duration(s.duration_ms)
        if s.status == "failed":
            return f"failed: {s.error}" if s.error else "failed"
        if s.status != "running" or self.settled:
            return ""
        if s.eta_ms and s.started_at and now is not None:
            left = s.eta_ms - (now - s.started_at).total_seconds() * 1000
            if left > 500:
                return f"{s.progress:.0f}% · about {fmt_duration(left)} left"
        detail = f" · {s.detail}" if s.detail else ""
        return f"{s.progress:.0f}%{detail}"

    def logs_text(self, last: int | None = None) -> Text:
        lines = self.logs[-last:] if last else self.logs
        text = Text()
        for line in lines:
            at = _when(line.get("at"))
            level = line.get("level") or "info"
            text.append(f"  {at:%H:%M:%S} " if at else "  ", style="dim")
            text.append(f"{level:<7} ", style=LEVELS.get(level, ""))
            text.append(str(line.get("text", "")) + "\n")
        return text

    def live(self, now: datetime | None = None) -> RenderableType:
        parts: list[RenderableType] = [self.header(), self.steps_table(now)]
        if self.chart_progress is not None:
            parts.append(Text(f"Drawing the chart… {self.chart_progress:.0f}%", style="dim"))
        if self.logs:
            parts.append(Text(f"Log ({len(self.logs)})", style="bold"))
            parts.append(self.logs_text(LIVE_LOG_LINES))
        return Group(*parts)

    def final(self) -> RenderableType:
        parts: list[RenderableType] = [self.header(), self.steps_table()]
        if self.logs:
            parts += [Text(f"Log ({len(self.logs)})", style="bold"), self.logs_text()]
        if self.error and self.status != "completed":
            parts.append(Text(str(self.error.get("message") or self.error), style="red"))
        elif self.status == "cancelled":
            parts.append(Text(self.summary or "The analysis was cancelled.", style="magenta"))
        sentence = (self.result or {}).get("interpretation") or \
            (self.script or {}).get("interpretation")
        if sentence and (self.result or self.status == "completed"):
            parts.append(Text(sentence, style="italic"))
        for chart in self.charts:
            if chart.get("kind") == "number":
                parts.append(number_cards(chart))
        if self.result:
            parts += result_table(self.result)
        for chart in self.charts:
            if chart.get("kind") != "number":
                parts.append(Text(f"Chart ({chart.get('kind')}): {chart.get('title') or ''} "
                                  "— open the web UI to see it", style="dim"))
        if self.script and self.script.get("sql"):
            parts += [Text("SQL", style="bold"), Text(str(self.script["sql"]), style="cyan")]
        return Group(*parts)


def number_cards(chart: dict[str, Any]) -> Text:
    spec = chart.get("spec") or {}
    text = Text()
    for card in spec.get("cards") or []:
        text.append(f"{card.get('label')}: ", style="dim")
        text.append(f"{card.get('display')}   ", style="bold")
    return text


def result_table(result: dict[str, Any]) -> list[RenderableType]:
    columns = result.get("columns") or []
    rows = result.get("rows") or []
    display = result.get("display_rows")
    if not (isinstance(display, list) and len(display) == len(rows)):
        display = None
    formats = result.get("formats")
    if not (isinstance(formats, list) and len(formats) == len(columns)):
        formats = None
    table = Table(show_edge=False, header_style="bold")
    for i, col in enumerate(columns):
        numeric = (formats[i].get("kind") in NUMERIC_FORMATS) if formats else \
            any(t in str(col.get("type", "")).lower()
                for t in ("int", "float", "double", "decimal", "numeric", "real"))
        table.add_column(str(col.get("name")), justify="right" if numeric else "left")
    for i, row in enumerate(rows[:MAX_TABLE_ROWS]):
        cells = display[i] if display else row
        table.add_row(*("—" if v is None else str(v) for v in cells))
    count = result.get("row_count", len(rows))
    foot = f"{count} row{'' if count == 1 else 's'}"
    if len(rows) > MAX_TABLE_ROWS:
        foot += f" · showing {MAX_TABLE_ROWS}"
    if result.get("truncated"):
        foot += " · truncated"
    return [table, Text(foot, style="dim")]
