"""Opens and closes the schools parts together: one database file, the registry, the
timetable and the attendance service listening to the relay."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry

from server.relay import Relay
from server.schools.attendance import AttendanceService
from server.schools.metrics import SchoolMetrics
from server.schools.registry import Registry
from server.schools.store import schools_database
from server.schools.timetable import Timetable
from server.settings import Settings

DB_NAME = "schools.sqlite3"


@dataclass(frozen=True)
class Schools:
    registry: Registry
    timetable: Timetable
    attendance: AttendanceService


@contextlib.asynccontextmanager
async def open_schools(settings: Settings, metrics_registry: CollectorRegistry,
                       relay: Relay) -> AsyncIterator[Schools]:
    db = schools_database(Path(settings.data_dir) / DB_NAME)
    await db.open()
    try:
        registry = Registry(db)
        await registry.open()
        timetable = Timetable(db, ZoneInfo(settings.catalog.timezone))
        await timetable.open()
        attendance = AttendanceService(db, registry, timetable, SchoolMetrics(metrics_registry),
                                       settings.schools)
        await attendance.open()
        relay.listeners.append(attendance)
        relay.subscriber_listeners.append(attendance)
        try:
            yield Schools(registry, timetable, attendance)
        finally:
            relay.listeners.remove(attendance)
            relay.subscriber_listeners.remove(attendance)
            await attendance.close()
    finally:
        await db.close()
