"""Running a Runstream service: settings bases, `serve()`, and local server processes.

Libraries never run on their own; this one is what every service's `__main__` (and the
CLI and the test harness, for nats-server and Postgres processes) starts from.
"""

from runstream.runtime.serve import dependency_down, keep_running, serve
from runstream.runtime.settings import DatabaseSettings, ServiceSettings

__all__ = ["DatabaseSettings", "ServiceSettings", "dependency_down", "keep_running", "serve"]
