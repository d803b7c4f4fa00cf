"""Bearer-token auth (JWT HS256): the token's subject is the owner.

Stream routes also accept a short-lived stream token as `?token=` because a browser's
EventSource cannot send headers; such a token is refused everywhere else.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import jwt
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from runstream.contracts import is_valid_id

VERIFIED_CACHE = 10_000  # tokens whose verification is remembered
ACCESS = "access"
STREAM = "stream"


class Tokens:
    def __init__(self, secret: str, issuer: str = "runstream") -> None:
        if len(secret.encode()) < 32:  # RFC 7518 §3.2: at least the hash size
            raise ValueError("RUNSTREAM_JWT_SECRET must be set, at least 32 bytes long")
        self._secret = secret
        self.issuer = issuer
        # token -> its verified claims, until the token expires: a client sends the same
        # bearer token with every request, and checking it again costs more than the
        # rest of a submit's own work. Bounded; the oldest entries go first.
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def issue(self, sub: str, *, ttl_s: int, typ: str = ACCESS) -> tuple[str, int]:
        now = int(time.time())
        exp = now + ttl_s
        claims = {"sub": sub, "iat": now, "exp": exp, "iss": self.issuer, "typ": typ}
        return jwt.encode(claims, self._secret, algorithm="HS256"), exp

    def verify(self, token: str) -> dict[str, Any]:
        claims = self._verified.get(token)
        if claims is not None:
            if claims["exp"] > time.time():
                return claims
            del self._verified[token]
        claims = self._verify(token)
        self._verified[token] = claims
        if len(self._verified) > VERIFIED_CACHE:
            self._verified.popitem(last=False)
        return claims

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._secret, algorithms=["HS256"], issuer=self.issuer,
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise NotAuthorizedException("token expired") from exc
        except jwt.PyJWTError as exc:
            raise NotAuthorizedException("invalid token") from exc
        sub = claims.get("sub")
        if not isinstance(sub, str) or not is_valid_id(sub):
            raise NotAuthorizedException("invalid token subject")
        return claims


def _is_stream_route(path: str) -> bool:
    return path.endswith("/events") or path.endswith("/ws")


class BearerAuth(AbstractAuthenticationMiddleware):
    """Authenticates every /api route; the user is the owner id (the token's `sub`)."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]):
        tokens: Tokens = connection.app.state.tokens
        header = connection.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            claims = tokens.verify(header[7:].strip())
            if claims.get("typ", ACCESS) != ACCESS:
                raise NotAuthorizedException("a stream token only opens streams")
            return AuthenticationResult(user=claims["sub"], auth=claims)
        query_token = connection.query_params.get("token")
        if query_token and _is_stream_route(connection.url.path):
            claims = tokens.verify(query_token)
            return AuthenticationResult(user=claims["sub"], auth=claims)
        raise NotAuthorizedException("missing bearer token")
