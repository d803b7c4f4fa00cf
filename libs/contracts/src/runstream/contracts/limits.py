"""Size limits every publisher and the projector agree on.

- `LOG_TEXT_MAX_BYTES` (16 KiB of UTF-8): a log line is a progress line in a chat page,
  replayed whole to every tab on each refresh. The longest useful ones are error messages
  quoting SQL or a trace excerpt (a few KiB); 16 KiB is ~200 lines of 80 characters.
  Anything bigger (data, scripts, results) has its own event fields.
- `EVENT_MAX_BYTES`: one encoded event. NATS refuses payloads over its `max_payload`
  (1 MiB by default, headers included), so events stay under 1,000,000 bytes and leave
  the rest to headers (ids, type, trace context).
- `STREAM_MAX_MSG_BYTES`: the stream's `max_msg_size` (headers + payload), so a
  publisher that bypasses `Bus.publish` is still refused by the server.
"""

from __future__ import annotations

LOG_TEXT_MAX_BYTES = 16 * 1024
EVENT_MAX_BYTES = 1_000_000
STREAM_MAX_MSG_BYTES = 1024 * 1024

# Appended to a cut text; the size tells the reader how much was lost.
TRUNCATION_MARKER = " … [truncated: {size} bytes in all]"


def utf8_size(text: str) -> int:
    # surrogatepass: a lone surrogate must be measured, not crash the measurer.
    return len(text.encode("utf-8", "surrogatepass"))


def truncate_text(text: str, max_bytes: int = LOG_TEXT_MAX_BYTES) -> tuple[str, bool]:
    """`(text, False)` when it fits in `max_bytes` of UTF-8, else `(head + marker, True)`.

    The result always fits, never splits a character, and depends only on its inputs
    (folding the same event twice cuts it the same way).
    """
    if len(text) * 4 <= max_bytes:  # no character is wider than 4 bytes: fits for sure
        return text, False
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text, False
    marker = TRUNCATION_MARKER.format(size=len(data))
    keep = max(0, max_bytes - utf8_size(marker))
    # Cutting may split the last character; "ignore" drops that partial tail only.
    head = data[:keep].decode("utf-8", "ignore")
    return head + marker, True
