"""`python -m runstream.projector`: fold the stream into Postgres until SIGTERM/SIGINT."""

from runstream.bus.service import serve
from runstream.projector.service import SERVICE, ProjectorSettings, run_projector


def main() -> None:
    serve(SERVICE, ProjectorSettings, run_projector)


if __name__ == "__main__":
    main()
