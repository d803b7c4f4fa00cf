"""`python -m tests.bench.profiled <module> <out.prof>`: run a service under cProfile.

Used by BENCH_PROFILE=<dir>. uvicorn restores the previous SIGTERM handler and
re-raises the signal after its graceful shutdown, so the handler installed here
writes the stats before the process ends.
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
from typing import Any

module, out = sys.argv[1], sys.argv[2]
profile = cProfile.Profile()


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
