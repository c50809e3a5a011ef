"""Authentication floods against the real gateway process: an address that keeps failing is
refused with 429 (OpenAI format, Retry-After) without a database query, a forged
X-Forwarded-For does not buy it a fresh address, and an honest tenant elsewhere is unaffected.

Loopback is 127.0.0.0/8, so each test's attacker binds its own source address."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import websockets

from tenants import keys
from tests.gateway_fixtures import MODEL

LIMIT = 30  # SWITCHYARD_AUTH_FAILURE_LIMIT default


def _address() -> str:
    return f"127.{random.randint(1, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"


def _client_from(address: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


def _random_key() -> str:
    return keys.generate_key()[0]


def test_failed_keys_from_one_address_get_429_and_others_are_unaffected(caller):
    attacker = _address()
    url = f"{caller.base_url}/v1/models"
    with _client_from(attacker) as client:
        for i in range(LIMIT):
            resp = client.get(url, headers={"Authorization": f"Bearer {_random_key()}"})
            assert resp.status_code == 401, (i, resp.text)
            assert resp.json()["error"]["code"] == "invalid_api_key"
        for forged in ("10.9.8.7", "127.0.0.1", ""):
            # Forged proxy headers do not make a fresh address.
            resp = client.get(
                url,
                headers={"Authorization": f"Bearer {_random_key()}", "X-Forwarded-For": forged},
            )
            assert resp.status_code == 429, resp.text
            error = resp.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["code"] == "too_many_auth_failures"
            assert 1 <= int(resp.headers["Retry-After"]) <= 60
        # Also on the completion endpoints, before the body is looked at.
        resp = client.post(
            f"{caller.base_url}/v1/chat/completions",
            json={"model": "x"},
            headers={"Authorization": f"Bearer {_random_key()}"},
        )
        assert resp.status_code == 429
    # The honest tenant, from its own address, never notices.
    with _client_from(_address()) as client:
        resp = client.get(url, headers={"Authorization": f"Bearer {caller.key}"})
        assert resp.status_code == 200
        resp = client.get(url, headers={"Authorization": f"Bearer {_random_key()}"})
        assert resp.status_code == 401
    resp = caller.post(
        "/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert resp.status_code == 200, resp.text


async def test_the_websocket_auth_path_is_throttled_too(caller):
    attacker = _address()
    url = caller.base_url.replace("http", "ws") + "/v1/ws"
    # Fail the limit over HTTP, then try the socket from the same address.
    async with httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(local_address=attacker), timeout=10
    ) as client:
        for _ in range(LIMIT):
            resp = await client.get(
                f"{caller.base_url}/v1/models", headers={"Authorization": f"Bearer {_random_key()}"}
            )
            assert resp.status_code == 401
    async with websockets.connect(url, local_addr=(attacker, 0)) as ws:
        await ws.send(json.dumps({"type": "auth", "api_key": _random_key()}))
        msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert msg["type"] == "error" and msg["error"]["code"] == "too_many_auth_failures"
        try:
            await asyncio.wait_for(ws.recv(), 5)
            raise AssertionError("the socket should be closed")
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd.code == 4429
    async with websockets.connect(url, local_addr=(_address(), 0)) as ws:
        await ws.send(json.dumps({"type": "auth", "api_key": caller.key}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "ready"}


async def test_a_flood_of_random_keys_from_many_addresses_leaves_the_gateway_serving(caller):
    """Five hundred random keys from twenty-five addresses at once (twenty each: under the throttle,
    so each costs a lookup). The gateway's key cache stays bounded
    (tests/tenants/test_api_key_auth.py) and an honest tenant's requests all succeed."""
    url = f"{caller.base_url}/v1/models"

    async def attacker() -> None:
        async with httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(local_address=_address()), timeout=30
        ) as client:
            for _ in range(20):
                resp = await client.get(url, headers={"Authorization": f"Bearer {_random_key()}"})
                assert resp.status_code == 401

    async def honest() -> list[int]:
        statuses = []
        async with httpx.AsyncClient(timeout=30) as client:
            while not flood.done():
                resp = await client.get(url, headers={"Authorization": f"Bearer {caller.key}"})
                statuses.append(resp.status_code)
                await asyncio.sleep(0.05)
        return statuses

    flood = asyncio.ensure_future(asyncio.gather(*(attacker() for _ in range(25))))
    statuses = await honest()
    await flood
    assert statuses and set(statuses) == {200}
