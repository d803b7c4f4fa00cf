"""`python -m runstream.chart_worker`: run the chart worker until SIGTERM/SIGINT."""

from runstream.bus.service import serve
from runstream.chart_worker.settings import ChartWorkerSettings
from runstream.chart_worker.worker import run_worker


def main() -> None:
    serve("chart-worker", ChartWorkerSettings, run_worker)


if __name__ == "__main__":
    main()
