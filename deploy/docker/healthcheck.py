"""Docker HEALTHCHECK: GET a local endpoint, exit 0 on a 2xx answer, 1 otherwise.

`healthcheck.py http` asks the gateway's /healthz on RUNSTREAM_HTTP_PORT;
`healthcheck.py metrics` asks /metrics on RUNSTREAM_METRICS_PORT (workers, projector).
Standard library only: it runs with the image's Python, outside any dependency.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def main(kind: str) -> int:
    if kind == "http":
        url = f"http://127.0.0.1:{os.environ.get('RUNSTREAM_HTTP_PORT', '8000')}/healthz"
    else:
        url = f"http://127.0.0.1:{os.environ.get('RUNSTREAM_METRICS_PORT', '9100')}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if 200 <= response.status < 300 else 1
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "http"))
