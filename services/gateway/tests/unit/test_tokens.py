"""Bearer tokens: a verified token is remembered until it expires, and only then."""

from __future__ import annotations

import time

import pytest
from litestar.exceptions import NotAuthorizedException

from runstream.gateway.auth import Tokens

SECRET = "s" * 32


def test_a_verified_token_is_remembered_until_it_expires(monkeypatch):
    tokens = Tokens(SECRET)
    token, exp = tokens.issue("alice", ttl_s=60)
    assert tokens.verify(token)["sub"] == "alice"
    checks: list[str] = []
    later = time.time() + 61  # past the token's expiry

    def check_again(t: str) -> dict:
        checks.append(t)
        return {"sub": "checked again", "exp": later + 60}

    monkeypatch.setattr(tokens, "_verify", check_again)
    assert tokens.verify(token)["sub"] == "alice"  # from memory, not checked again
    assert checks == []
    monkeypatch.setattr(time, "time", lambda: later)
    assert tokens.verify(token)["sub"] == "checked again"  # forgotten once expired
    assert checks == [token] and exp < later


def test_a_tampered_or_foreign_token_is_never_taken_from_memory():
    tokens = Tokens(SECRET)
    token, _ = tokens.issue("alice", ttl_s=60)
    tokens.verify(token)
    with pytest.raises(NotAuthorizedException):
        tokens.verify(token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    other, _ = Tokens("o" * 32).issue("alice", ttl_s=60)
    with pytest.raises(NotAuthorizedException):
        tokens.verify(other)
