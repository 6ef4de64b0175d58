"""The application factory: `create_app(settings)` wires every part of the service."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web
from prometheus_client import CollectorRegistry

from catalog.catalog import Catalog
from catalog.index import CatalogIndex
from recorder.manifest import Manifest
from recorder.metrics import RecorderMetrics
from recorder.recorder import Recorder
from recorder.recording import RecorderConfig
from server import api, channel, ice, lessons, pages, turn, whip
from server.classrooms import ClassroomMonitor
from server.errors import ConfigError
from server.http import error_middleware
from server.keys import (
    ATTENDANCE_KEY,
    CATALOG_KEY,
    CHANNELS_KEY,
    CLASSROOMS_KEY,
    ISSUER_KEY,
    METRICS_KEY,
    PROXY_PLAYBACK_KEY,
    QUESTIONS_KEY,
    RECORDINGS_KEY,
    REGISTRY_KEY,
    RELAY_KEY,
    SCHOOL_REGISTRY_KEY,
    SETTINGS_KEY,
    STORE_KEY,
    TIMETABLE_KEY,
)
from server.metrics import RelayMetrics
from server.questions import QuestionBoard
from server.recording import RecordingService
from server.relay import Relay
from server.schools import api as schools_api
from server.schools.service import open_schools
from server.settings import Settings
from server.storage import S3Store, open_archive
from server.tokens import TokenIssuer, load_or_create_secret

logger = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    try:
        ZoneInfo(settings.catalog.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"catalog.timezone {settings.catalog.timezone!r} is not a time zone "
                          "name like Asia/Shanghai") from exc
    ice.install()
    app = web.Application(middlewares=[error_middleware],
                          client_max_size=max(settings.http.max_sdp_bytes, 1024 * 1024))
    app[SETTINGS_KEY] = settings
    secret = load_or_create_secret(settings.auth.secret, Path(settings.data_dir))
    app[ISSUER_KEY] = TokenIssuer(secret)
    registry = CollectorRegistry()
    app[REGISTRY_KEY] = registry
    app[METRICS_KEY] = RelayMetrics(registry)
    app[QUESTIONS_KEY] = QuestionBoard()
    whip.add_routes(app)
    channel.add_routes(app)
    api.add_routes(app)
    lessons.add_routes(app)
    pages.add_routes(app)
    schools_api.add_routes(app)
    turn.add_routes(app)
    app.cleanup_ctx.append(_relay)
    app.cleanup_ctx.append(_schools)
    app.cleanup_ctx.append(_archive)
    return app


async def _relay(app: web.Application) -> AsyncIterator[None]:
    relay = Relay(app[SETTINGS_KEY], app[METRICS_KEY])
    app[RELAY_KEY] = relay
    relay.listeners.append(app[CHANNELS_KEY])  # classroom pages hear when a lesson starts
    monitor = ClassroomMonitor(relay)
    app[CLASSROOMS_KEY] = monitor
    monitor.start()
    yield
    await monitor.close()
    await relay.close()


async def _schools(app: web.Application) -> AsyncIterator[None]:
    """The school registry, timetable and attendance (listening to the relay)."""
    async with open_schools(app[SETTINGS_KEY], app[REGISTRY_KEY], app[RELAY_KEY]) as schools:
        app[SCHOOL_REGISTRY_KEY] = schools.registry
        app[TIMETABLE_KEY] = schools.timetable
        app[ATTENDANCE_KEY] = schools.attendance
        yield


async def _archive(app: web.Application) -> AsyncIterator[None]:
    """The bucket (embedded S3 server unless an endpoint is configured), the catalog and
    the recorder."""
    settings = app[SETTINGS_KEY]
    async with open_archive(settings) as archive:
        app[STORE_KEY] = archive.store
        mode = settings.catalog.playback
        app[PROXY_PLAYBACK_KEY] = mode == "proxy" or (mode == "auto" and archive.embedded)
        async with _catalog_and_recorder(app, archive.store):
            yield


@contextlib.asynccontextmanager
async def _catalog_and_recorder(app: web.Application, store: S3Store) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    data_dir = Path(settings.data_dir)
    index = CatalogIndex(data_dir / "catalog.sqlite3")
    await index.open()
    catalog = Catalog(index, store, settings.recorder.prefix)
    app[CATALOG_KEY] = catalog

    async def recorded(manifest: Manifest) -> None:
        await catalog.add_manifest(manifest.to_json(), manifest.playlist)

    rec = settings.recorder
    recorder = Recorder(store, data_dir / "spool", RecorderMetrics(app[REGISTRY_KEY]),
                        config=RecorderConfig(segment_s=rec.segment_s, prefix=rec.prefix),
                        spool_budget_bytes=int(rec.spool_budget_mb * 1024 * 1024),
                        on_finished=recorded)
    await recorder.open()
    service = RecordingService(app[RELAY_KEY], recorder, auto_start=rec.auto_start,
                               grace_s=rec.grace_s, manual_rooms=rec.manual_rooms,
                               questions=app[QUESTIONS_KEY].take,
                               lessons=app[ATTENDANCE_KEY])
    app[RECORDINGS_KEY] = service
    try:
        yield
    finally:
        await service.close()
        await catalog.close()
