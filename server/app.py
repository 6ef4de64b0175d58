"""The application factory: `create_app(settings)` wires every part of the service."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from recorder.errors import StoreError
from recorder.metrics import RecorderMetrics
from recorder.recorder import Recorder
from recorder.recording import RecorderConfig
from server import api, ice, pages, whip
from server.http import error_middleware
from server.keys import (
    ISSUER_KEY,
    METRICS_KEY,
    RECORDINGS_KEY,
    REGISTRY_KEY,
    RELAY_KEY,
    SETTINGS_KEY,
    STORE_KEY,
)
from server.metrics import RelayMetrics
from server.recording import RecordingService
from server.relay import Relay
from server.s3server import EmbeddedS3
from server.settings import Settings
from server.storage import S3Store
from server.tokens import TokenIssuer, load_or_create_secret

logger = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    ice.install()
    app = web.Application(middlewares=[error_middleware],
                          client_max_size=max(settings.http.max_sdp_bytes, 1024 * 1024))
    app[SETTINGS_KEY] = settings
    secret = load_or_create_secret(settings.auth.secret, Path(settings.data_dir))
    app[ISSUER_KEY] = TokenIssuer(secret)
    registry = CollectorRegistry()
    app[REGISTRY_KEY] = registry
    app[METRICS_KEY] = RelayMetrics(registry)
    whip.add_routes(app)
    api.add_routes(app)
    pages.add_routes(app)
    app.cleanup_ctx.append(_relay)
    app.cleanup_ctx.append(_archive)
    return app


async def _relay(app: web.Application) -> AsyncIterator[None]:
    relay = Relay(app[SETTINGS_KEY], app[METRICS_KEY])
    app[RELAY_KEY] = relay
    yield
    await relay.close()


async def _archive(app: web.Application) -> AsyncIterator[None]:
    """The bucket (embedded S3 server unless an endpoint is configured) and the recorder."""
    settings = app[SETTINGS_KEY]
    data_dir = Path(settings.data_dir)
    embedded: EmbeddedS3 | None = None
    s3 = settings.s3
    endpoint, access_key, secret_key = s3.endpoint, s3.access_key, s3.secret_key
    if not endpoint:
        secret_key = load_or_create_secret(secret_key, data_dir, "s3-secret")
        embedded = EmbeddedS3(data_dir / "s3", access_key, secret_key)
        endpoint = (await embedded.start()).endpoint
    store = S3Store(endpoint, access_key, secret_key, s3.bucket, secure=s3.secure)
    app[STORE_KEY] = store
    try:
        await store.ensure_bucket()
    except StoreError as exc:
        # Not fatal: recordings spool locally and upload once the archive answers.
        logger.error("the archive bucket %s at %s is not usable: %s; recordings will be "
                     "spooled until it is", s3.bucket, endpoint, exc)
    rec = settings.recorder
    recorder = Recorder(store, data_dir / "spool", RecorderMetrics(app[REGISTRY_KEY]),
                        config=RecorderConfig(segment_s=rec.segment_s, prefix=rec.prefix),
                        spool_budget_bytes=int(rec.spool_budget_mb * 1024 * 1024))
    await recorder.open()
    service = RecordingService(app[RELAY_KEY], recorder, auto_start=rec.auto_start,
                               grace_s=rec.grace_s, manual_rooms=rec.manual_rooms)
    app[RECORDINGS_KEY] = service
    try:
        yield
    finally:
        await service.close()
        if embedded is not None:
            await embedded.stop()
