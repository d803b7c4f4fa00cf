"""The CLI's settings: the shared RUNSTREAM_* environment plus what `up` and tokens need.

Commands other than `up` also read `<data-dir>/dev.env` (written by `up`) for anything
the environment leaves unset, so `runstream status` in a second terminal finds the stack
that `runstream up` started on its own ports. The plain `DATABASE_URL` (the test suites'
server) counts least: `RUNSTREAM_DATABASE_URL` from the environment, then from
`dev.env`, and only then `DATABASE_URL`.
"""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import dotenv_values
from pydantic import SecretStr

from runstream.runtime import DatabaseSettings

DEFAULT_DATA_DIR = Path(".runstream")
DEFAULT_HTTP_PORT = 8000
DEFAULT_NATS_PORT = 4222
DEFAULT_POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"
DATABASE_NAME = "runstream"  # what `up` creates on a server it did not start
DEFAULT_CLEANUP_OLDER_THAN = "7d"
DEFAULT_CLEANUP_EVERY = "1h"


class CliSettings(DatabaseSettings):
    jwt_secret: SecretStr | None = None  # never printed: repr shows **********
    jwt_issuer: str = "runstream"
    http_host: str = "127.0.0.1"
    http_port: int | None = None  # `up`: 8000, or a free port when 8000 is taken
    nats_port: int | None = None  # `up`: 4222, or a free port when 4222 is taken
    # `up` without RUNSTREAM_DATABASE_URL: the `runstream` database on this server when it
    # answers, else a cluster of its own in <data-dir>/pg; "off" skips the server.
    postgres_server: str = DEFAULT_POSTGRES_SERVER
    ready_timeout_s: float = 90.0
    data_dir: Path = DEFAULT_DATA_DIR
    # The gateway `follow` reads, and its token (both written to dev.env by `up`).
    url: str | None = None
    token: SecretStr | None = None
    # Retention: `cleanup` removes what is settled and older than this; `up` runs it this
    # often ("off" never), the Helm chart on its CronJob schedule.
    cleanup_older_than: str = DEFAULT_CLEANUP_OLDER_THAN
    cleanup_every: str = DEFAULT_CLEANUP_EVERY
    # The command's own log lines (stderr); its report goes to stdout either way. Read
    # before settings are (main.py), listed here as the setting it is.
    cli_log_level: str = "ERROR"


def read_env_file(path: Path) -> dict[str, str]:
    """The KEY=value lines of a dotenv file (what `up` writes), {} when it is absent —
    also when it goes between dotenv's look and its open (`up` removes the last run's)."""
    try:
        return {k: v for k, v in dotenv_values(path).items() if v is not None}
    except FileNotFoundError:
        return {}


def load_settings(data_dir: Path | None = None, *, use_dev_env: bool = True) -> CliSettings:
    """Settings from the environment, with `dev.env` filling in what the environment lacks."""
    directory = data_dir or Path(os.environ.get("RUNSTREAM_DATA_DIR") or DEFAULT_DATA_DIR)
    env_file = directory / "dev.env" if use_dev_env else None
    settings = CliSettings(_env_file=env_file)  # type: ignore[call-arg]
    settings.data_dir = directory
    if env_file is not None and "RUNSTREAM_DATABASE_URL" not in os.environ:
        # pydantic would let a plain DATABASE_URL in the environment beat dev.env
        from_file = read_env_file(env_file).get("RUNSTREAM_DATABASE_URL")
        if from_file:
            settings.database_url = from_file
    return settings


def child_env(settings: CliSettings) -> dict[str, str]:
    """The environment for a service the CLI runs: its own, over what `dev.env` says."""
    return {**read_env_file(settings.data_dir / "dev.env"), **os.environ}
