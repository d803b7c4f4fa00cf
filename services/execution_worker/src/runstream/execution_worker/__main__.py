"""`python -m runstream.execution_worker`: run the execution worker until SIGTERM/SIGINT."""

from runstream.execution_worker.settings import ExecutionWorkerSettings
from runstream.execution_worker.worker import run_worker
from runstream.runtime import serve


def main() -> None:
    serve("execution-worker", ExecutionWorkerSettings, run_worker)


if __name__ == "__main__":
    main()
