"""`python -m runstream.analysis_worker`: run the analysis worker until SIGTERM/SIGINT."""

from runstream.analysis_worker.settings import AnalysisWorkerSettings
from runstream.analysis_worker.worker import run_worker
from runstream.runtime import serve


def main() -> None:
    serve("analysis-worker", AnalysisWorkerSettings, run_worker)


if __name__ == "__main__":
    main()
