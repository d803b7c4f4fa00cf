"""`python -m tests.bench.profiled <module> <out.prof>`: run a service under cProfile.

Used by BENCH_PROFILE=<dir> (and BENCH_PROFILE_CLOCK=cpu, below). uvicorn restores the
previous SIGTERM handler and re-raises the signal after its graceful shutdown, so the
handler installed here writes the stats before the process ends.
"""

from __future__ import annotations

import cProfile
import os
import runpy
import signal
import sys
import time
from typing import Any

module, out = sys.argv[1], sys.argv[2]
# BENCH_PROFILE_CLOCK=cpu: the process's CPU time instead of the wall clock, so that time
# spent descheduled (other processes on the same cores) or idle in the event loop's
# poll is not charged to whatever function was running.
clock = time.process_time if os.environ.get("BENCH_PROFILE_CLOCK") == "cpu" else time.perf_counter
profile = cProfile.Profile(clock)


def dump(*_: Any) -> None:
    profile.disable()
    profile.dump_stats(out)
    sys.exit(0)


signal.signal(signal.SIGTERM, dump)
sys.argv = [module]
profile.enable()
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    profile.disable()
    profile.dump_stats(out)
