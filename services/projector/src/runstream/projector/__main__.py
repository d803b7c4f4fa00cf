"""`python -m runstream.projector`: fold the stream into Postgres until SIGTERM/SIGINT.

`python -m runstream.projector rebuild`: fold the whole stream into a fresh schema and
swap it in (what `runstream rebuild` runs), then exit.
"""

import asyncio
import sys

import msgspec

from runstream.bus import Bus
from runstream.projector.rebuild import rebuild
from runstream.projector.service import SERVICE, ProjectorSettings, run_projector
from runstream.runtime import serve
from runstream.store import postgres_unavailable
from runstream.telemetry import configure_logging


def run_rebuild() -> None:
    settings = ProjectorSettings()
    configure_logging(f"{SERVICE}-rebuild", settings.log_level, json=settings.log_json)

    async def run() -> object:
        async with Bus.connect(settings.bus(), name=f"{SERVICE}-rebuild") as bus:
            return await rebuild(settings.database_url, bus, schema=settings.db_schema,
                                 partitions=settings.partitions)

    report = asyncio.run(run())
    print(
        "rebuilt schema {schema}: {events} events folded ({poison} poison), checkpoint "
        "{checkpoint} (was {previous_checkpoint}), {duration_s:.2f}s".format(
            **msgspec.to_builtins(report)
        )
    )


def main() -> None:
    if sys.argv[1:] == ["rebuild"]:
        run_rebuild()
        return
    # Postgres down (at start-up or for good in the loop) restarts the run, as NATS does.
    serve(SERVICE, ProjectorSettings, run_projector, transient=postgres_unavailable)


if __name__ == "__main__":
    main()
