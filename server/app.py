"""The application factory: `create_app(settings)` wires every part of the service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from server import api, ice, pages, whip
from server.http import ISSUER_KEY, METRICS_KEY, error_middleware
from server.metrics import RelayMetrics
from server.relay import Relay
from server.settings import Settings
from server.tokens import TokenIssuer, load_or_create_secret


def create_app(settings: Settings) -> web.Application:
    ice.install()
    app = web.Application(middlewares=[error_middleware],
                          client_max_size=max(settings.http.max_sdp_bytes, 1024 * 1024))
    app[whip.SETTINGS_KEY] = settings
    secret = load_or_create_secret(settings.auth.secret, Path(settings.data_dir))
    app[ISSUER_KEY] = TokenIssuer(secret)
    app[METRICS_KEY] = RelayMetrics(CollectorRegistry())
    whip.add_routes(app)
    api.add_routes(app)
    pages.add_routes(app)
    app.cleanup_ctx.append(_relay)
    return app


async def _relay(app: web.Application) -> AsyncIterator[None]:
    relay = Relay(app[whip.SETTINGS_KEY], app[METRICS_KEY])
    app[whip.RELAY_KEY] = relay
    yield
    await relay.close()
