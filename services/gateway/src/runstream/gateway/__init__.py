"""HTTP API, SSE and WebSocket streams, web UI."""
