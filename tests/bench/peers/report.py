"""Figures of the side-by-side benchmark: one table, a JSON dump, a plot."""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.peers.clients import JobRecord
from tests.bench.peers.job import STEPS
from tests.bench.support import percentile

LABELS = {
    "runstream": "Runstream, SSE (session stream)",
    "celery-poll": "Celery, poll backend every 500 ms",
    "celery-sse": "Celery, Redis pub/sub -> SSE",
}


@dataclass
class Run:
    """One load shape on one system: `concurrency` clients, `jobs` jobs in all."""

    system: str
    concurrency: int
    records: list[JobRecord]

    @property
    def label(self) -> str:
        return LABELS[self.system]

    def visibility_ms(self, step: str | None = None) -> list[float]:
        return [(s.seen - s.at) * 1000 for r in self.records for s in r.steps
                if step is None or s.step == step]

    def figures(self) -> dict[str, float]:
        submit = [r.submit_s * 1000 for r in self.records]
        seen = self.visibility_ms()
        e2e = [r.end_to_end_s * 1000 for r in self.records]
        wall = max(r.done or 0 for r in self.records) - min(r.sent for r in self.records)
        return {
            "jobs": len(self.records), "concurrency": self.concurrency,
            "submit_p50_ms": percentile(submit, 50), "submit_p99_ms": percentile(submit, 99),
            "seen_p50_ms": percentile(seen, 50), "seen_p99_ms": percentile(seen, 99),
            "seen_max_ms": max(seen),
            "e2e_p50_ms": percentile(e2e, 50), "e2e_p99_ms": percentile(e2e, 99),
            "jobs_per_s": len(self.records) / wall,
        }


@dataclass
class KillRow:
    """What one `kill -9` mid-job cost: how each of the jobs in flight ended."""

    name: str
    jobs: int
    completed_once: int = 0
    resumed: int = 0  # Runstream: completed, the interrupted step redelivered
    rerun: int = 0  # Celery: completed, the whole task ran again from step 1
    failed: int = 0  # the client is told the job failed (WorkerLostError)
    stuck_until_visibility: int = 0  # still in Redis' `unacked`: back after 1 hour
    stuck_forever: int = 0  # acked and gone, its state says PROGRESS for ever
    recovered_s: float | None = None  # kill -> the last job that completed after it did
    note: str = ""

    @property
    def completed(self) -> int:
        return self.completed_once + self.resumed + self.rerun


@dataclass
class Report:
    meta: dict[str, Any] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    kills: list[KillRow] = field(default_factory=list)

    def table(self) -> str:
        lines = []
        head = (f"{'system / progress path':<36} {'conc':>4} {'jobs':>4}  "
                f"{'submit p50/p99 ms':>17}  {'step seen p50/p99 ms':>20}  "
                f"{'end-to-end p50/p99 ms':>21}  {'jobs/s':>6}")
        lines += [head, "-" * len(head)]
        for run in sorted(self.runs, key=lambda r: (r.concurrency, list(LABELS).index(r.system))):
            f = run.figures()
            lines.append(
                f"{run.label:<36} {run.concurrency:>4} {f['jobs']:>4}  "
                f"{f['submit_p50_ms']:>8.1f}/{f['submit_p99_ms']:<8.1f}  "
                f"{f['seen_p50_ms']:>10.1f}/{f['seen_p99_ms']:<9.1f}  "
                f"{f['e2e_p50_ms']:>10.0f}/{f['e2e_p99_ms']:<10.0f}  {f['jobs_per_s']:>6.2f}")
        if self.kills:
            head = (f"{'kill -9 mid-job':<58} {'jobs':>4} {'done once':>9} {'resumed':>7} "
                    f"{'re-run':>6} {'failed':>6} {'stuck 1h':>8} {'stuck':>5} "
                    f"{'recovered':>9}")
            lines += ["", head, "-" * len(head)]
            for k in self.kills:
                rec = f"{k.recovered_s:.1f} s" if k.recovered_s is not None else "-"
                lines.append(
                    f"{k.name:<58} {k.jobs:>4} {k.completed_once:>9} {k.resumed:>7} "
                    f"{k.rerun:>6} {k.failed:>6} {k.stuck_until_visibility:>8} "
                    f"{k.stuck_forever:>5} {rec:>9}")
                if k.note:
                    lines.append(textwrap.fill(k.note, 112, initial_indent="    ",
                                               subsequent_indent="    "))
        return "\n".join(lines)

    def breakdown(self) -> str:
        """Per run: where a job's time goes, p50 in ms by the workers' own stamps (submit ->
        the first step starts; each step's work; the last step -> the client sees the end),
        and each step's visibility p50/p99 (the JSON has every sample)."""
        lines = []
        for run in sorted(self.runs, key=lambda r: (r.concurrency, list(LABELS).index(r.system))):
            recs = run.records
            queued = [(r.steps[0].began or r.steps[0].at) - r.sent for r in recs]
            work = []
            for i, step in enumerate(STEPS):
                took = [r.steps[i].at - (r.steps[i].began or r.steps[i].at) for r in recs]
                work.append(f"{step} {percentile(took, 50) * 1000:.0f}")
            tail = [(r.done or 0.0) - r.steps[-1].at for r in recs]
            seen = []
            for step in STEPS:
                v = run.visibility_ms(step)
                seen.append(f"{step} {percentile(v, 50):.0f}/{percentile(v, 99):.0f}")
            lines.append(f"  {run.label} x{run.concurrency}: until the first step starts "
                         f"{percentile(queued, 50) * 1000:.0f}; work " + ", ".join(work)
                         + f"; last step -> end seen {percentile(tail, 50) * 1000:.0f}")
            lines.append("      step seen p50/p99: " + ", ".join(seen))
        return "\n".join(lines)

    def dump(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "meta": self.meta,
            "runs": [{"system": r.system, "concurrency": r.concurrency,
                      "figures": r.figures(),
                      "jobs": [{**asdict(j), "result": None} for j in r.records]}
                     for r in self.runs],
            "kills": [asdict(k) for k in self.kills],
        }, indent=1))

    def plot(self, path: Path) -> None:
        """Step-visibility latency, one curve per system and progress path (CDF, log x),
        one panel per concurrency."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        levels = sorted({r.concurrency for r in self.runs})
        fig, axes = plt.subplots(1, len(levels), figsize=(6.2 * len(levels), 5.2),
                                 sharey=True, squeeze=False)
        colors = {"runstream": "#1f77b4", "celery-sse": "#2ca02c", "celery-poll": "#d62728"}
        for ax, level in zip(axes[0], levels, strict=True):
            for run in [r for r in self.runs if r.concurrency == level]:
                values = sorted(max(v, 0.1) for v in run.visibility_ms())
                ys = [(i + 1) / len(values) for i in range(len(values))]
                f = run.figures()
                ax.step(values, ys, where="post", color=colors[run.system],
                        label=f"{run.label} (p50 {f['seen_p50_ms']:.0f}, "
                              f"p99 {f['seen_p99_ms']:.0f} ms)")
            ax.set_xscale("log")
            ax.set_xlabel("step finished (worker's clock) -> client sees it, ms")
            ax.set_title(f"{level} concurrent job{'s' if level > 1 else ''}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8)
        axes[0][0].set_ylabel("share of steps seen within")
        fig.suptitle("Step visibility: Runstream vs Celery + Redis "
                     f"({self.meta.get('rows', 0):,}-row CSV, 5 steps per job)", fontsize=11)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
