"""The CLI's settings: the shared RUNSTREAM_* environment plus what `up` and tokens need.

Commands other than `up` also read `<data-dir>/dev.env` (written by `up`) for anything
the environment leaves unset, so `runstream status` in a second terminal finds the stack
that `runstream up` started on its own ports.
"""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import dotenv_values
from pydantic import SecretStr

from runstream.runtime import DatabaseSettings

DEFAULT_DATA_DIR = Path(".runstream")


class CliSettings(DatabaseSettings):
    jwt_secret: SecretStr | None = None  # never printed: repr shows **********
    jwt_issuer: str = "runstream"
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    nats_port: int | None = None
    data_dir: Path = DEFAULT_DATA_DIR
    def database_url_given(self) -> bool:
        return bool(os.environ.get("RUNSTREAM_DATABASE_URL") or os.environ.get("DATABASE_URL"))


def read_env_file(path: Path) -> dict[str, str]:
    """The KEY=value lines of a dotenv file (what `up` writes), {} when it is absent."""
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def load_settings(data_dir: Path | None = None, *, use_dev_env: bool = True) -> CliSettings:
    """Settings from the environment, with `dev.env` filling in what the environment lacks."""
    directory = data_dir or Path(os.environ.get("RUNSTREAM_DATA_DIR") or DEFAULT_DATA_DIR)
    env_file = directory / "dev.env" if use_dev_env else None
    settings = CliSettings(_env_file=env_file)  # type: ignore[call-arg]
    settings.data_dir = directory
    return settings


def child_env(settings: CliSettings) -> dict[str, str]:
    """The environment for a service the CLI runs: its own, over what `dev.env` says."""
    return {**read_env_file(settings.data_dir / "dev.env"), **os.environ}
