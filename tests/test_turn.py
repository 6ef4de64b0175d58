"""TURN credentials in coturn's shared-secret REST scheme, checked the way coturn checks them:
HMAC-SHA1 of the username under the shared secret, base64, and an expiry in the username."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable

from aiohttp.test_utils import TestClient

from server import turn
from server.app import create_app
from server.keys import ISSUER_KEY
from server.settings import Settings, TurnSettings
from server.tokens import Role

SECRET = "north-county-turn-secret"
URLS = ("turn:turn.example.org:3478?transport=udp", "turn:turn.example.org:3478?transport=tcp")


def coturn_accepts(secret: str, username: str, credential: str, now: float) -> bool:
    """coturn's check, written out independently of server.turn."""
    expiry = int(username.split(":", 1)[0])
    expected = base64.b64encode(
        hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()
    return expiry >= now and hmac.compare_digest(expected, credential)


def test_credentials_verify_against_the_shared_secret() -> None:
    now = 1_800_000_000.0
    creds = turn.credentials(SECRET, URLS, "classroom:12", ttl_s=3600, now=now)
    assert creds.username == f"{int(now) + 3600}:classroom-12"  # one ":" only: expiry first
    assert coturn_accepts(SECRET, creds.username, creds.credential, now)
    assert turn.verify(SECRET, creds.username, creds.credential, now)
    assert not coturn_accepts("another-secret", creds.username, creds.credential, now)
    assert not turn.verify("another-secret", creds.username, creds.credential, now)
    assert not turn.verify(SECRET, creds.username, creds.credential, now + 3601)  # expired
    forged = f"{int(now) + 99999}:classroom-12"
    assert not turn.verify(SECRET, forged, creds.credential, now)


async def test_endpoint_hands_out_credentials_to_token_holders(
        aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings) -> None:
    settings = dataclasses.replace(settings, turn=TurnSettings(secret=SECRET, urls=URLS,
                                                               ttl_s=600))
    client = await aiohttp_client(create_app(settings))
    token = client.app[ISSUER_KEY].mint(Role.CLASSROOM, "maths-5a", subject="classroom:7")
    resp = await client.get("/api/ice-servers", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    [server] = body["iceServers"]
    assert server["urls"] == list(URLS)
    expiry = int(server["username"].split(":")[0])
    assert 590 <= expiry - time.time() <= 601
    assert coturn_accepts(SECRET, server["username"], server["credential"], time.time())
    resp = await client.get("/api/ice-servers")
    assert resp.status == 401 and (await resp.json())["error"] == "unauthorized"


async def test_no_turn_configured_means_no_servers(client: TestClient,
                                                   token: Callable[..., str]) -> None:
    resp = await client.get("/api/ice-servers",
                            headers={"Authorization": f"Bearer {token('viewer')}"})
    assert (await resp.json())["iceServers"] == []
