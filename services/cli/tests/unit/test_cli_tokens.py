import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from runstream.cli.tokens import decode_token, ensure_secret, make_token, resolve_secret

KEY = "k" * 32
OTHER = "o" * 32


def test_a_token_decodes_with_its_secret_to_the_owner_and_expiry() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    token = make_token(KEY, "alice", timedelta(days=30), now=now)
    claims = jwt.decode(
        token, KEY, algorithms=["HS256"], options={"verify_exp": False}
    )
    assert claims["sub"] == "alice"
    assert claims["iss"] == "runstream"
    assert claims["typ"] == "access"
    assert claims["exp"] == int((now + timedelta(days=30)).timestamp())
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_a_fresh_dev_token_is_valid_for_thirty_days() -> None:
    before = datetime.now(UTC)
    claims = decode_token(KEY, make_token(KEY, "dev"))
    assert claims["sub"] == "dev"
    expires = datetime.fromtimestamp(claims["exp"], UTC)
    lifetime = expires - before
    assert timedelta(days=30, seconds=-5) <= lifetime <= timedelta(days=30, seconds=5)


def test_a_token_signed_with_another_secret_is_rejected() -> None:
    with pytest.raises(jwt.InvalidSignatureError):
        decode_token(KEY, make_token(OTHER, "dev"))


def test_a_token_from_another_issuer_is_rejected() -> None:
    with pytest.raises(jwt.InvalidIssuerError):
        decode_token(KEY, make_token(KEY, "dev", issuer="elsewhere"))


def test_an_expired_token_is_rejected() -> None:
    old = datetime.now(UTC) - timedelta(days=2)
    with pytest.raises(jwt.ExpiredSignatureError):
        decode_token(KEY, make_token(KEY, "dev", timedelta(days=1), now=old))


def test_the_secret_is_made_once_private_and_then_reused(tmp_path: Path) -> None:
    first = ensure_secret(tmp_path / "state")
    path = tmp_path / "state" / "secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert ensure_secret(tmp_path / "state") == first
    assert resolve_secret(None, tmp_path / "state") == first


def test_the_environment_secret_wins_over_the_stored_one(tmp_path: Path) -> None:
    ensure_secret(tmp_path)
    assert resolve_secret("from-env", tmp_path) == "from-env"
    assert resolve_secret(None, tmp_path / "nowhere") is None
