"""The classrooms watching each room and how well they receive it.

The monitor samples every classroom's link (`server.quality.sample_link`) every few seconds in
one task it owns, and keeps what the classroom pages report of their own playback (frames per
second, freezes) over their WebSocket. The teacher console and `GET /api/rooms/{room}` read
`classrooms(room)`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from server import tasks
from server.quality import LinkQuality, sample_link
from server.recording import SUBJECT as RECORDER_SUBJECT
from server.relay import Relay

logger = logging.getLogger(__name__)

REPORT_FRESH_S = 10.0  # a page report older than this is no longer shown


@dataclass(frozen=True)
class PageReport:
    """What a classroom page measured itself (from its getStats)."""

    fps: float
    kbps: float
    lost: int
    freezes: int
    at: float  # time.monotonic() when received


@dataclass(frozen=True)
class ClassroomInfo:
    session: str  # the WHEP session id
    subject: str
    state: str
    connected_for_s: float | None
    link: LinkQuality | None  # as the relay measures it
    page: PageReport | None  # as the classroom page reports it

    def to_json(self) -> dict[str, object]:
        link = self.link
        page = self.page
        return {
            "session": self.session, "subject": self.subject, "state": self.state,
            "connected_for_s": self.connected_for_s,
            "link": None if link is None else {
                "rtt_ms": link.rtt_ms, "loss": link.loss, "jitter_ms": link.jitter_ms,
                "kbps": link.kbps, "packets_lost": link.packets_lost},
            "page": None if page is None else {
                "fps": page.fps, "kbps": page.kbps, "lost": page.lost, "freezes": page.freezes},
        }


class ClassroomMonitor:
    def __init__(self, relay: Relay, interval_s: float = 2.0) -> None:
        self._relay = relay
        self._interval_s = interval_s
        self._links: dict[str, LinkQuality] = {}
        self._reports: dict[str, PageReport] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="classroom-monitor")

    async def close(self) -> None:
        await tasks.stop(self._task)
        self._task = None

    def classrooms(self, room: str) -> tuple[ClassroomInfo, ...]:
        live = self._relay.rooms.get(room)
        if live is None:
            return ()
        now = time.monotonic()
        out = []
        for session in live.subscribers.values():
            if session.subject == RECORDER_SUBJECT:
                continue
            report = self._reports.get(session.id)
            if report is not None and now - report.at > REPORT_FRESH_S:
                report = None
            out.append(ClassroomInfo(
                session.id, session.subject, session.state,
                None if session.connected_at is None else round(now - session.connected_at, 1),
                self._links.get(session.id), report))
        return tuple(out)

    def report(self, room: str, session_id: str, report: PageReport) -> bool:
        """Keep a page's own measurements; False if it names no classroom of this room."""
        live = self._relay.rooms.get(room)
        if live is None or session_id not in live.subscribers:
            return False
        self._reports[session_id] = report
        return True

    async def sample(self) -> None:
        """Sample every classroom once (the task does this every interval)."""
        seen: set[str] = set()
        for room in self._relay.rooms:
            for session in list(room.subscribers.values()):
                if session.subject == RECORDER_SUBJECT or session.closed:
                    continue
                seen.add(session.id)
                adapter = self._relay.adapters.get(session.id)
                if adapter is not None and adapter.link is not None:
                    # its adapter reads this link every second already: no second getStats
                    self._links[session.id] = adapter.link
                    continue
                try:
                    self._links[session.id] = await sample_link(session,
                                                                self._links.get(session.id))
                except Exception:  # a session closing under us: skip it this round
                    logger.debug("sampling session %s failed", session.id[:8], exc_info=True)
        for gone in set(self._links) - seen:
            del self._links[gone]
        for gone in set(self._reports) - seen:
            del self._reports[gone]

    async def _run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self._interval_s)
