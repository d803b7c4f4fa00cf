"""Write the generated contract files under proto/ (run by `make proto`)."""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from runstream.contracts import json_schema


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "proto")
    out.mkdir(parents=True, exist_ok=True)
    data = msgspec.json.format(msgspec.json.encode(json_schema()), indent=2)
    (out / "events.schema.json").write_bytes(data + b"\n")
    print(f"wrote {out / 'events.schema.json'}")


if __name__ == "__main__":
    main()
