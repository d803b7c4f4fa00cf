"""`python -m runstream.projector`: fold the stream into Postgres until SIGTERM/SIGINT."""

from runstream.bus.service import serve
from runstream.projector.service import SERVICE, ProjectorSettings, run_projector
from runstream.store import postgres_unavailable


def main() -> None:
    # Postgres down (at start-up or for good in the loop) restarts the run, as NATS does.
    serve(SERVICE, ProjectorSettings, run_projector, transient=postgres_unavailable)


if __name__ == "__main__":
    main()
