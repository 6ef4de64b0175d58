"""Carries out one classroom's level: reads its link every second, asks its
`LevelController`, and moves its video between the room's full track, the low rendition and
nothing (audio only). Owned by the relay, one per classroom that receives video."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from server import tasks
from server.adaptation import (
    Decision,
    Level,
    LevelController,
    LevelInfo,
    LinkSample,
    Thresholds,
)
from server.forwarder import RoomTrack, SubscriberTrack
from server.quality import LinkQuality, sample_link
from server.rooms import Room
from server.sessions import PeerSession

logger = logging.getLogger(__name__)

SWITCH_WAIT_S = 5.0  # judge the link again even if a switch has not completed by then
RTP_OVERHEAD = 1.08  # headers, SRTP tag and UDP/IP on top of payload bytes, roughly


class TrackRate:
    """A room track's payload bitrate, from its byte counter between two reads."""

    def __init__(self, track: RoomTrack) -> None:
        self._track = track
        self._octets = track.octets_in
        self._at = time.monotonic()
        self.bps: float | None = None

    def read(self) -> float | None:
        now = time.monotonic()
        if now - self._at >= 0.5:
            octets = self._track.octets_in
            self.bps = max(0.0, octets - self._octets) * 8 * RTP_OVERHEAD / (now - self._at)
            self._octets, self._at = octets, now
        return self.bps


class ClassroomAdapter:
    def __init__(self, session: PeerSession, video: SubscriberTrack, room: Room,
                 interval_s: float, on_change: Callable[[Level, Level], None],
                 thresholds: Thresholds | None = None) -> None:
        self._session = session
        self._video = video
        self._room = room
        self._interval_s = interval_s
        self._on_change = on_change
        self._full = TrackRate(room.tracks["video"])
        self._audio = TrackRate(room.tracks["audio"])
        self._low = TrackRate(room.low.target) if room.low is not None else None
        self.controller = LevelController(self._bitrate, self._available, thresholds)
        self.changes = 0
        self._task: asyncio.Task[None] | None = None
        self._link: LinkQuality | None = None
        self._nacks = 0
        self._packets = 0
        self._switching = False

    @property
    def link(self) -> LinkQuality | None:
        """The classroom's link as last sampled (every `interval_s`)."""
        return self._link

    @property
    def info(self) -> LevelInfo:
        c = self.controller
        return LevelInfo(c.level.value, c.reason, c.pinned.value if c.pinned else None,
                         self.changes)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"adapter-{self._session.id}")

    async def close(self) -> None:
        await tasks.stop(self._task)
        self._task = None

    def pin(self, ceiling: Level | None) -> None:
        decision = self.controller.pin(ceiling, time.monotonic())
        if decision is not None:
            self._apply(decision)

    def _available(self, level: Level) -> bool:
        return level != Level.LOW or (self._room.low is not None and self._room.low.available())

    def _bitrate(self, level: Level) -> float | None:
        audio = self._audio.bps or 0.0
        if level == Level.FULL:
            return None if self._full.bps is None else self._full.bps + audio
        if level == Level.LOW:
            low = self._low.bps if self._low is not None and self._room.low is not None \
                and self._room.low.running else None
            spec = self._room.low.spec.kbps * 1000.0 if self._room.low is not None else 0.0
            return (low or spec) + audio
        return audio

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            sample = await self._sample()
            waited = self._video.switching_for_s(sample.at)
            if 0 <= waited < SWITCH_WAIT_S:
                continue  # still on the old level until the new one's keyframe: nothing to judge
            if self._switching:
                self._switching = False
                self.controller.switched(sample.at)
            decision = self.controller.update(sample)
            if decision is not None:
                self._apply(decision)

    async def _sample(self) -> LinkSample:
        for rate in (self._full, self._audio, self._low):
            if rate is not None:
                rate.read()
        self._link = await sample_link(self._session, self._link)
        nacks = self._video.retransmits.distinct  # each lost packet once, however often asked
        packets = self._video.packets_sent
        sent = packets - self._packets
        nack_ratio = (nacks - self._nacks) / sent if sent > 0 else None
        self._nacks, self._packets = nacks, packets
        link = self._link
        return LinkSample(at=time.monotonic(), remb_bps=self._video.remb_bps,
                          loss=link.loss, nack_ratio=nack_ratio,
                          rtt_s=None if link.rtt_ms is None else link.rtt_ms / 1000,
                          report_age_s=link.report_age_s)

    def _apply(self, decision: Decision) -> None:
        previous = self._current_level()
        if decision.level == Level.FULL:
            self._video.switch(self._room.tracks["video"])
        elif decision.level == Level.LOW and self._room.low is not None:
            self._room.low.ensure_running()
            self._video.switch(self._room.low.target)
        else:
            self._video.switch(None)
        if self._video.switching_for_s(time.monotonic()) >= 0:
            self._switching = True  # `switched` when the new source's keyframe went out
        else:
            self.controller.switched(time.monotonic())
        self.changes += 1
        logger.info("classroom %s in room %s: %s -> %s (%s)", self._session.id,
                    self._room.name, previous.value, decision.level.value, decision.reason)
        self._on_change(previous, decision.level)

    def _current_level(self) -> Level:
        source = self._video.source
        if source is None:
            return Level.AUDIO
        if self._room.low is not None and source is self._room.low.target:
            return Level.LOW
        return Level.FULL
