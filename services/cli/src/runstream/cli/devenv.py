"""`<data-dir>/dev.env`: where the stack started by `up` lives, and a token for it."""

from __future__ import annotations

import os
from pathlib import Path


def write_dev_env(path: Path, values: dict[str, str]) -> None:
    """Write KEY=value lines atomically (a reader never sees half a file), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("# written by `runstream up`; `source` it or read it from scripts\n")
        for key, value in values.items():
            if "\n" in value:
                raise ValueError(f"{key} holds a newline")
            f.write(f"{key}={value}\n")
    os.replace(tmp, path)
