"""TURN credentials for browsers, in coturn's shared-secret REST scheme (`use-auth-secret` with
`static-auth-secret`): username = "<expiry unix time>:<user>", credential =
base64(HMAC-SHA1(secret, username)). coturn recomputes the HMAC and refuses expired usernames,
so nothing is stored. `GET /api/ice-servers` hands them out to any token holder."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

from aiohttp import web

from server.http import claims
from server.keys import SETTINGS_KEY

UNSAFE = re.compile(r"[^A-Za-z0-9_.@-]")


@dataclass(frozen=True)
class TurnCredentials:
    urls: tuple[str, ...]
    username: str
    credential: str
    expires_at: int


def credentials(secret: str, urls: tuple[str, ...], user: str, ttl_s: int,
                now: float | None = None) -> TurnCredentials:
    expires = int(now if now is not None else time.time()) + ttl_s
    # coturn takes the expiry from before the first ":", so the user part must have none
    username = f"{expires}:{UNSAFE.sub('-', user) or 'user'}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredentials(urls, username, base64.b64encode(digest).decode("ascii"), expires)


def verify(secret: str, username: str, credential: str, now: float | None = None) -> bool:
    """What coturn checks: the HMAC matches and the expiry has not passed."""
    expiry, _, _ = username.partition(":")
    if not expiry.isdigit() or int(expiry) < (now if now is not None else time.time()):
        return False
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return hmac.compare_digest(base64.b64encode(digest).decode("ascii"), credential)


async def ice_servers(request: web.Request) -> web.Response:
    """`{"iceServers": [...]}` for `new RTCPeerConnection(...)`; empty without TURN settings."""
    who = claims(request)
    turn = request.app[SETTINGS_KEY].turn
    servers: list[dict[str, object]] = []
    if turn.urls:
        if turn.secret:
            creds = credentials(turn.secret, turn.urls, who.subject, turn.ttl_s)
            servers.append({"urls": list(creds.urls), "username": creds.username,
                            "credential": creds.credential})
        else:  # STUN only
            servers.append({"urls": [u for u in turn.urls if u.startswith("stun")]})
    return web.json_response({"iceServers": [s for s in servers if s["urls"]],
                              "ttl_s": turn.ttl_s},
                             headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/ice-servers", ice_servers)
