"""The web UI in a real browser: a whole stack in process, Chromium driven from Node.

The scenario (tests/browser/ui.spec.mjs), every main state audited with axe-core (no
serious or critical violation allowed) and saved to test-artifacts/: the empty session
(columns with types, three example questions, one asked by keyboard); an analysis running
in the run view (timeline, progress, live-region announcement, composer locked), a reload
mid-analysis that loses no log line; the completed answer (interpretation, table, chart,
SQL copied, Download CSV, no Retry); a second reload mid-query whose ETA is seconds and
steady; grouped bars brought into view; a big-number card; a refusal said once with its
examples; an analysis started by "another tab" that locks the composer, cancelled (the
composer is free at once, no stale banner, focus on Retry), then retried (attempt
separators); a browser notification, the unread dot and the title's count for a session
finishing in the background; the phone layout with the run panel opened and closed by
keyboard. Skipped, loudly, when Node or Chromium is missing and cannot be installed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

pytestmark = pytest.mark.browser

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SPEC = HERE / "ui.spec.mjs"
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = [ARTIFACTS / f"ui-{name}.png" for name in (
    "empty", "running", "finished", "two-dimensions", "number-card", "failed", "cancelled",
    "retried", "mobile", "mobile-run")]
AXE_STATES = ("empty", "running", "completed", "failed", "cancelled", "mobile", "mobile-run")
NODE_PACKAGES = ("playwright-core", "axe-core")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Extra time the sandboxed query takes, so that "reload mid-analysis" is not a race.
EXECUTION_DELAY_S = 3.0
SPEC_TIMEOUT_S = 240.0

REGIONS = ("North", "South", "East", "West")
PRODUCTS = ("Widget", "Gadget", "Gizmo")


def _sales() -> tuple[str, float]:
    """A sample-like CSV (one row per order) and its total revenue, computed here."""
    lines = ["order_date,region,product,units,revenue"]
    total = 0.0
    for i in range(36):
        region, product = REGIONS[i % 4], PRODUCTS[i % 3]
        revenue = round(180 + (i * 53 % 97) * 7.35, 2)
        total += revenue
        lines.append(f"2024-{1 + i % 6:02d}-{1 + i % 27:02d},{region},{product},{1 + i % 5},"
                     f"{revenue:.2f}")  # fmt: skip
    return "\n".join(lines) + "\n", total


def _skip(reason: str) -> None:
    banner = f"\n{'=' * 72}\nBROWSER TESTS SKIPPED: {reason}\n{'=' * 72}\n"
    print(banner, file=sys.stderr)
    pytest.skip(f"browser tests skipped: {reason}")


def _run(
    *cmd: str, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _ensure_chromium() -> None:
    """Debian's chromium package; installed here when running as root with apt."""
    if Path(CHROMIUM).exists():
        return
    apt = shutil.which("apt-get")
    if apt and hasattr(os, "geteuid") and os.geteuid() == 0:
        print("installing chromium with apt-get (one-time set-up)...", file=sys.stderr)
        if _run(apt, "install", "-y", "chromium").returncode != 0:
            _run(apt, "update")
            _run(apt, "install", "-y", "chromium")
    if not Path(CHROMIUM).exists():
        _skip(
            f"Chromium is not available at {CHROMIUM} "
            "(install Debian's `chromium` package, or set CHROMIUM=/path/to/chromium)"
        )


def _ensure_node_modules(node: str) -> None:
    """playwright-core and axe-core from the committed lock file (no browser download)."""
    if all((HERE / "node_modules" / p / "package.json").exists() for p in NODE_PACKAGES):
        return
    npm = shutil.which("npm")
    if npm is None:
        _skip("npm is not installed, so playwright-core cannot be installed")
    result = _run(npm, "ci", "--no-audit", "--no-fund", cwd=HERE)
    if result.returncode != 0:
        _skip(f"`npm ci` in {HERE} failed:\n{result.stderr[-2000:]}")
    check = _run(node, "-e", "import('playwright-core').then(() => 0)", cwd=HERE)
    if check.returncode != 0:
        _skip(f"playwright-core does not load:\n{check.stderr[-2000:]}")


@pytest.fixture(scope="session")
def browser_tools() -> str:
    """The node binary, once Chromium and playwright-core are in place."""
    node = shutil.which("node")
    if node is None:
        _skip("Node.js is not installed (`node` is not on PATH)")
    assert node is not None
    _ensure_chromium()
    _ensure_node_modules(node)
    return node


def _slow_down_execution(monkeypatch: pytest.MonkeyPatch, seconds: float) -> bool:
    """Stretch each sandboxed query by `seconds` (the in-process execution worker)."""
    try:
        from runstream.execution_worker import worker
    except ImportError:
        return False
    original = getattr(worker, "run_sandboxed", None)
    if original is None:
        return False

    async def slowed(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        await asyncio.sleep(seconds)
        # The query "took" that long: its duration feeds the step's mean, so the ETAs the UI
        # shows for later queries expect it.
        return msgspec.structs.replace(
            result, duration_ms=result.duration_ms + round(seconds * 1000))

    monkeypatch.setattr(worker, "run_sandboxed", slowed)
    return True


@pytest.mark.timeout(SPEC_TIMEOUT_S + 60)
async def test_the_ui_shows_each_analysis_live_across_reloads_by_keyboard_and_passes_axe(
    stack_factory: Any,
    browser_tools: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slowed = _slow_down_execution(monkeypatch, EXECUTION_DELAY_S)
    csv_path = tmp_path / "sales.csv"
    text, total = _sales()
    csv_path.write_text(text)
    assert not float(total).is_integer(), "the card's two decimals are part of the check"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in [*SCREENSHOTS, *(ARTIFACTS / f"axe-{s}.json" for s in AXE_STATES)]:
        old.unlink(missing_ok=True)

    async with stack_factory(workers=True) as stack:
        env = {
            **os.environ,
            "RUNSTREAM_URL": stack.url,
            "RUNSTREAM_TOKEN": stack.token("alice"),
            "RUNSTREAM_CSV": str(csv_path),
            "RUNSTREAM_ARTIFACTS": str(ARTIFACTS),
            "RUNSTREAM_EXPECT_TOTAL": f"{total:,.2f}",
            "RUNSTREAM_REQUIRE_MID_ANALYSIS": "1" if slowed else "0",
            "CHROMIUM": CHROMIUM,
        }
        # A subprocess on the event loop, so the in-process stack keeps serving meanwhile.
        proc = await asyncio.create_subprocess_exec(
            browser_tools,
            str(SPEC),
            cwd=str(HERE),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), SPEC_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            output, _ = await proc.communicate()
            print(output.decode(errors="replace"))
            pytest.fail(f"the browser scenario did not finish within {SPEC_TIMEOUT_S:.0f} s")

    print(output.decode(errors="replace"))
    assert proc.returncode == 0, f"the browser scenario failed (exit {proc.returncode})"
    for shot in SCREENSHOTS:
        assert shot.exists() and shot.stat().st_size > 0, shot
        print(f"screenshot: {shot}")
    for state in AXE_STATES:
        report = ARTIFACTS / f"axe-{state}.json"
        assert report.exists(), report
        print(f"axe {state}: {report}")
