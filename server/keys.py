"""The application's typed state keys (aiohttp `web.AppKey`s): one place, no globals."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from catalog.catalog import Catalog
from server.classrooms import ClassroomMonitor
from server.metrics import RelayMetrics
from server.questions import QuestionBoard
from server.recording import RecordingService
from server.relay import Relay
from server.schools.attendance import AttendanceService
from server.schools.registry import Registry
from server.schools.timetable import Timetable
from server.settings import Settings
from server.sockets import RoomSockets
from server.storage import S3Store
from server.tokens import TokenIssuer

SETTINGS_KEY = web.AppKey("settings", Settings)
ISSUER_KEY = web.AppKey("issuer", TokenIssuer)
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
METRICS_KEY = web.AppKey("metrics", RelayMetrics)
RELAY_KEY = web.AppKey("relay", Relay)
STORE_KEY = web.AppKey("store", S3Store)
RECORDINGS_KEY = web.AppKey("recordings", RecordingService)
CATALOG_KEY = web.AppKey("catalog", Catalog)
PROXY_PLAYBACK_KEY = web.AppKey("proxy_playback", bool)
QUESTIONS_KEY = web.AppKey("questions", QuestionBoard)
CLASSROOMS_KEY = web.AppKey("classrooms", ClassroomMonitor)
CHANNELS_KEY = web.AppKey("channels", RoomSockets)
# the school registry (REGISTRY_KEY above is Prometheus's), timetable and attendance
SCHOOL_REGISTRY_KEY = web.AppKey("school_registry", Registry)
TIMETABLE_KEY = web.AppKey("timetable", Timetable)
ATTENDANCE_KEY = web.AppKey("attendance", AttendanceService)
