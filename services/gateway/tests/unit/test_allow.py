"""OPTIONS lists every method of a path (Litestar 2 lists only the first registered)."""

from __future__ import annotations

from litestar import Controller, Litestar, delete, get, post
from litestar.params import FromPath
from litestar.testing import AsyncTestClient

from runstream.gateway.allow import AllowHeader


class Things(Controller):
    path = "/things"

    @get("/{thing_id:str}")
    async def read(self, thing_id: FromPath[str]) -> str:
        return thing_id

    @delete("/{thing_id:str}", status_code=202)
    async def remove(self, thing_id: FromPath[str]) -> None:
        return None

    @post("/")
    async def make(self) -> str:
        return "made"

    @get("/")
    async def list_all(self) -> list[str]:
        return []


async def test_options_and_405_name_every_method_of_the_path():
    app = Litestar([Things], middleware=[AllowHeader()])
    async with AsyncTestClient(app) as client:
        one = await client.options("/things/x")
        many = await client.options("/things")
        refused = await client.put("/things/x")
    assert one.status_code == 204 and one.headers["allow"] == "DELETE, GET, OPTIONS"
    assert many.headers["allow"] == "GET, OPTIONS, POST"
    assert refused.status_code == 405
    assert set(refused.headers["allow"].split(", ")) == {"DELETE", "GET", "OPTIONS"}
