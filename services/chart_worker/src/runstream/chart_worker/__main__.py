"""`python -m runstream.chart_worker`: run the chart worker until SIGTERM/SIGINT."""

from runstream.chart_worker.settings import ChartWorkerSettings
from runstream.chart_worker.worker import run_worker
from runstream.runtime import serve


def main() -> None:
    serve("chart-worker", ChartWorkerSettings, run_worker)


if __name__ == "__main__":
    main()
