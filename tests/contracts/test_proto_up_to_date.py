"""The committed files under proto/ are what `make proto` would write today."""

from pathlib import Path

import pytest

from scripts.gen_proto import documents

PROTO = Path(__file__).resolve().parents[2] / "proto"


@pytest.mark.parametrize("name", ["events.schema.json", "asyncapi.json", "openapi.json"])
def test_committed_proto_file_is_up_to_date(name):
    committed = PROTO / name
    assert committed.exists(), "run `make proto`"
    assert committed.read_bytes() == documents()[name], f"proto/{name} is stale: `make proto`"
