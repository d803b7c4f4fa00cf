"""`Allow` on OPTIONS lists every method of the path.

Litestar 2's automatic OPTIONS handler lists only the methods registered on a path before
it was made (litestar-org/litestar#4169, fixed in 3.0), e.g. `DELETE, OPTIONS` for a path
that also has GET. This middleware answers with the route's methods instead.
"""

from __future__ import annotations

from typing import Any

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Message, Receive, Scope, Send


class AllowHeader(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send,
                     next_app: ASGIApp) -> None:
        if scope.get("method") != "OPTIONS":
            await next_app(scope, receive, send)
            return
        methods = _methods(scope["litestar_app"], scope.get("route_handler"))

        async def send_allow(message: Message) -> None:
            if message["type"] == "http.response.start" and methods:
                headers = MutableScopeHeaders(message)
                if "allow" in headers:
                    headers["allow"] = methods
            await send(message)

        await next_app(scope, receive, send_allow)


def _methods(app: Any, handler: Any) -> str | None:
    cache: dict[int, str | None] = app.state.setdefault("_allow_by_handler", {})
    key = id(handler)
    if key not in cache:
        route = next((r for r in app.routes
                      if isinstance(r, HTTPRoute) and handler in r.route_handlers), None)
        cache[key] = ", ".join(sorted(route.methods)) if route is not None else None
    return cache[key]
