"""Process facts read from /proc (Linux): a process's children, their state and memory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class Proc:
    pid: int
    state: str  # R, S, D, Z (zombie: exited, not reaped), ...
    cmdline: str  # empty for a zombie
    rss: int  # bytes

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")


def proc(pid: int) -> Proc | None:
    """The process `pid`, or None if it is gone (reaped)."""
    base = Path(f"/proc/{pid}")
    try:
        # comm may hold spaces or parentheses: the fields start after the last ')'.
        fields = (base / "stat").read_text().rsplit(")", 1)[1].split()
        cmdline = (base / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return None
    return Proc(pid=pid, state=fields[0], cmdline=cmdline.strip(), rss=int(fields[21]) * PAGE)


def children(pid: int) -> list[Proc]:
    """Direct children of `pid`, zombies included."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            child = proc(int(stat.parent.name))
            if child is not None:
                out.append(child)
    return out


def live_children(pid: int) -> set[int]:
    """The pids of `pid`'s direct children that have not exited (no zombies)."""
    return {child.pid for child in children(pid) if not child.zombie}


def gone(pid: int) -> bool:
    """Exited and reaped: neither running nor a zombie."""
    p = proc(pid)
    return p is None
