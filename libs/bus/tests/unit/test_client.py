"""The NATS client's header parser gives what nats-py's own gives, for any header block."""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from runstream.bus.client import parse_header_lines

BLOCKS = [
    b"Nats-Stream: RUNSTREAM\r\nNats-Subject: rs.a.session\r\nNats-Sequence: 42\r\n"
    b"Nats-Time-Stamp: 2026-12-01T04:00:00.123456789Z\r\nNats-Msg-Id: 01a2\r\n"
    b"Rs-Type: analysis_requested\r\n"
    b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n",
    b"Name:Value\r\nTabbed:\tvalue \r\n  Padded  :  x  \r\n\r\n",
    b"Has Space: dropped\r\nTab\tInside: dropped\r\nSep\x1cChar: dropped\r\nok: kept\r\n",
    b"no colon here\r\n\r\n:empty name\r\nEmpty:\r\n",
    b"Caf\xc3\xa9: non-ascii name\r\nValue: caf\xc3\xa9 \xff\xfe\r\nUrl: http://a:1/b\r\n",
    b"Dup: one\r\nDup: two\r\n",
    b"",
    b"\r\n\r\n",
]


@pytest.mark.parametrize("raw", BLOCKS)
def test_headers_parse_as_nats_py_parses_them(raw: bytes) -> None:
    assert parse_header_lines(raw) == Client._parse_header_lines(raw)


def test_every_whitespace_character_in_a_name_drops_the_line_as_nats_py_does() -> None:
    for code in range(128):
        raw = b"A" + bytes([code]) + b"B: v\r\nok: kept\r\n"
        assert parse_header_lines(raw) == Client._parse_header_lines(raw), code
