"""Dev tokens: JWT HS256 whose subject is the owner, signed with the stack's secret."""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt

ALGORITHM = "HS256"
DEV_SUBJECT = "dev"
DEV_TTL = timedelta(days=30)
ISSUER = "runstream"  # the gateway checks `iss` (RUNSTREAM_JWT_ISSUER)
ACCESS = "access"  # as opposed to the gateway's short-lived stream tokens


def ensure_secret(data_dir: Path) -> str:
    """The secret in `<data_dir>/secret`, created once (0600) and reused by every run."""
    path = data_dir / "secret"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value + "\n")
    return value


def resolve_secret(env_secret: str | None, data_dir: Path) -> str | None:
    """RUNSTREAM_JWT_SECRET when set, else the secret `up` keeps in the data folder."""
    if env_secret:
        return env_secret
    path = data_dir / "secret"
    return path.read_text(encoding="utf-8").strip() if path.exists() else None


def make_token(
    secret: str,
    sub: str,
    ttl: timedelta = DEV_TTL,
    *,
    issuer: str = ISSUER,
    now: datetime | None = None,
) -> str:
    issued = now or datetime.now(UTC)
    claims = {
        "sub": sub, "iss": issuer, "typ": ACCESS,
        "iat": int(issued.timestamp()), "exp": int((issued + ttl).timestamp()),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(secret: str, token: str, *, issuer: str = ISSUER) -> dict[str, Any]:
    return jwt.decode(
        token, secret, algorithms=[ALGORITHM], issuer=issuer,
        options={"require": ["sub", "exp", "iss"]},
    )
