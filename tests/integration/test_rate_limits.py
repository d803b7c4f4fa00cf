"""Rate limits: writes per owner, token-free routes per client address, across replicas."""

from __future__ import annotations

import httpx

from tests.integration.conftest import new_session


async def _written(client: httpx.AsyncClient) -> int:
    """The stream's last sequence: every write is an event on it."""
    r = await client.get("/api/stats")
    assert r.status_code == 200, r.text
    return int(r.json()["stream"]["last_seq"])


def assert_rate_limited(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    error = r.json()["error"]
    assert error["code"] == "rate_limited" and error["message"]
    assert error["details"]["window_s"] == 60


async def test_writes_over_the_limit_get_429_with_retry_after_and_write_nothing(stack_factory):
    async with stack_factory(overrides={"rate_limit_writes": "3/minute"}) as stack, \
            stack.client() as alice:
        sid = await new_session(alice)
        await new_session(alice)
        first = await alice.post(f"/api/sessions/{sid}/analyses", json={"question": "rows?"})
        assert first.status_code == 202, first.text
        assert first.headers["RateLimit-Remaining"] == "0"
        before = await _written(alice)
        refused = [
            await alice.post("/api/sessions", json={"title": "one more"}),
            await alice.post(f"/api/messages/{first.json()['message_id']}/retry"),
            await alice.post(f"/api/sessions/{sid}/datasets?name=d", content=b"a,b\n1,2\n"),
            await alice.post("/api/stream-tokens"),
        ]
        for r in refused:
            assert_rate_limited(r)
        assert await _written(alice) == before, "a refused write writes nothing"
        # Reads and cancelling are not writes the limit counts.
        assert (await alice.get(f"/api/sessions/{sid}")).status_code == 200
        cancel = await alice.post(f"/api/messages/{first.json()['message_id']}/cancel")
        assert cancel.status_code == 202, cancel.text


async def test_another_owner_is_not_affected_by_one_owners_limit(stack_factory):
    async with stack_factory(overrides={"rate_limit_writes": "2/minute"}) as stack, \
            stack.client("alice") as alice, stack.client("bob") as bob:
        await new_session(alice)
        await new_session(alice)
        assert_rate_limited(await alice.post("/api/sessions", json={}))
        await new_session(bob)
        await new_session(bob)


async def test_the_write_limit_holds_across_gateway_replicas(stack_factory):
    async with stack_factory(gateways=2, overrides={"rate_limit_writes": "4/minute"}) as stack, \
            stack.client(index=0) as a, stack.client(index=1) as b:
        answers = [await (a if i % 2 else b).post("/api/stream-tokens") for i in range(6)]
    assert [r.status_code for r in answers] == [201, 201, 201, 201, 429, 429]
    assert_rate_limited(answers[-1])


async def test_routes_without_a_token_are_limited_per_client_address(stack_factory):
    async with stack_factory(overrides={"rate_limit_public": "5/minute"}) as stack, \
            httpx.AsyncClient(base_url=stack.url) as anon, stack.client() as alice:
        codes = [(await anon.get("/healthz")).status_code for _ in range(5)]
        assert codes == [200] * 5
        assert_rate_limited(await anon.get("/metrics"))
        assert (await alice.get("/api/sessions")).status_code == 200, "token routes are apart"


async def test_a_limit_set_off_counts_nothing(stack_factory):
    async with stack_factory(overrides={"rate_limit_writes": "off"}) as stack, \
            stack.client() as alice:
        answers = [await alice.post("/api/stream-tokens") for _ in range(30)]
    assert {r.status_code for r in answers} == {201}
    assert "RateLimit-Limit" not in answers[0].headers
