"""The CLI's settings: the shared RUNSTREAM_* environment plus what `up` and tokens need.

Commands other than `up` also read `<data-dir>/dev.env` (written by `up`) for anything
the environment leaves unset, so `runstream status` in a second terminal finds the stack
that `runstream up` started on its own ports.
"""

from __future__ import annotations

import os
from pathlib import Path

from runstream.runtime import DatabaseSettings

DEFAULT_DATA_DIR = Path(".runstream")


class CliSettings(DatabaseSettings):
    jwt_secret: str | None = None
    jwt_issuer: str = "runstream"
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    nats_port: int | None = None
    data_dir: Path = DEFAULT_DATA_DIR
    def database_url_given(self) -> bool:
        return bool(os.environ.get("RUNSTREAM_DATABASE_URL") or os.environ.get("DATABASE_URL"))


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines; blank lines and # comments are skipped."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


def load_settings(data_dir: Path | None = None, *, use_dev_env: bool = True) -> CliSettings:
    """Settings from the environment, with `dev.env` filling in what the environment lacks."""
    directory = data_dir or Path(os.environ.get("RUNSTREAM_DATA_DIR") or DEFAULT_DATA_DIR)
    if use_dev_env:
        for key, value in read_env_file(directory / "dev.env").items():
            if key.startswith("RUNSTREAM_") and key not in os.environ:
                if key == "RUNSTREAM_DATABASE_URL" and os.environ.get("DATABASE_URL"):
                    continue
                os.environ[key] = value
    settings = CliSettings()
    settings.data_dir = directory
    return settings
