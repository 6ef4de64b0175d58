"""Fan-out of one room media line (e.g. the teacher's camera video) to its subscribers.

A `RoomTrack` outlives publisher sessions: when the teacher reconnects, a new source attaches
(a new *generation*) and every subscriber keeps its connection, continuing its own RTP
timeline. Frames are packetized once per room track; each subscriber has a bounded queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from server.passthrough import AUDIO_CLOCK, VIDEO_CLOCK, EncodedFrame, Packetizer
from server.retransmit import RetransmitPolicy

logger = logging.getLogger(__name__)


class RelayTelemetry(Protocol):
    """What the forwarder reports; `server.metrics.RelayMetrics` implements it."""

    def frame_forwarded(self, kind: str, packets: int, octets: int) -> None: ...

    def frames_dropped(self, kind: str, reason: str, count: int) -> None: ...

    def keyframe_requested(self, reason: str) -> None: ...

    def retransmission(self, outcome: str) -> None: ...


class NullTelemetry:
    def frame_forwarded(self, kind: str, packets: int, octets: int) -> None:
        pass

    def frames_dropped(self, kind: str, reason: str, count: int) -> None:
        pass

    def keyframe_requested(self, reason: str) -> None:
        pass

    def retransmission(self, outcome: str) -> None:
        pass


@dataclass(frozen=True, slots=True)
class RelayFrame:
    """A frame as every subscriber of a room track sees it: packetized once."""

    frame: EncodedFrame
    payloads: list[bytes]
    octets: int
    generation: int


KeyframeRequest = Callable[[], Awaitable[None]]


def same_codec(a: RTCRtpCodecParameters, b: RTCRtpCodecParameters) -> bool:
    return (a.mimeType.lower() == b.mimeType.lower() and a.clockRate == b.clockRate
            and a.parameters == b.parameters)


class RoomTrack:
    def __init__(self, kind: str, *, video_queue: int = 90, audio_queue: int = 50,
                 keyframe_interval_s: float = 1.0, join_keyframe_interval_s: float = 0.25,
                 telemetry: RelayTelemetry | None = None) -> None:
        self.kind = kind
        self.codec: RTCRtpCodecParameters | None = None
        self.generation = 0
        self._queue_limit = video_queue if kind == "video" else audio_queue
        self._keyframe_interval_s = keyframe_interval_s
        self._join_keyframe_interval_s = min(join_keyframe_interval_s, keyframe_interval_s)
        self._telemetry: RelayTelemetry = telemetry or NullTelemetry()
        self._subscribers: set[SubscriberTrack] = set()
        self._packetizer: Packetizer | None = None
        self._source: KeyframeRequest | None = None
        self._keyframe_wanted = asyncio.Event()
        self._keyframe_reasons: set[str] = set()
        self._last_keyframe_request = -1e9
        self._pump: asyncio.Task[None] | None = None
        self.frames_in = 0

    # --- source side ------------------------------------------------------------------------
    @property
    def live(self) -> bool:
        return self._source is not None

    def attach_source(self, codec: RTCRtpCodecParameters,
                      request_keyframe: KeyframeRequest) -> int:
        """A publisher session starts feeding this track; returns its generation."""
        if self.codec is None or not same_codec(self.codec, codec):
            self._packetizer = Packetizer(codec.name)
        self.codec = codec
        self.generation += 1
        self._source = request_keyframe
        if self.kind == "video" and self._subscribers:
            self.request_keyframe("source")
        if self._pump is None and self.kind == "video":
            self._pump = asyncio.create_task(self._keyframe_pump(), name="keyframe-pump")
        return self.generation

    def detach_source(self, generation: int) -> None:
        if generation == self.generation:
            self._source = None

    def push(self, frame: EncodedFrame, generation: int) -> None:
        """Called by the publisher's FrameAssembler for each complete frame."""
        if generation != self.generation or self._packetizer is None:
            return  # a late frame from a replaced session
        self.frames_in += 1
        if not self._subscribers:
            return
        payloads = self._packetizer(frame.data)
        relay_frame = RelayFrame(frame, payloads, sum(map(len, payloads)), generation)
        for subscriber in self._subscribers:
            subscriber.offer(relay_frame)

    # --- subscriber side --------------------------------------------------------------------
    def subscribe(self, on_first_frame: Callable[[], None] | None = None) -> SubscriberTrack:
        track = SubscriberTrack(self, self._queue_limit, on_first_frame)
        self._subscribers.add(track)
        if self.kind == "video":
            self.request_keyframe("join")
        return track

    def unsubscribe(self, track: SubscriberTrack) -> None:
        self._subscribers.discard(track)

    @property
    def subscribers(self) -> frozenset[SubscriberTrack]:
        return frozenset(self._subscribers)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def request_keyframe(self, reason: str) -> None:
        """Ask the publisher for a keyframe: at most one per interval, none lost."""
        if self.kind != "video":
            return
        self._keyframe_reasons.add(reason)
        self._keyframe_wanted.set()

    def telemetry(self) -> RelayTelemetry:
        return self._telemetry

    async def _keyframe_pump(self) -> None:
        while True:
            await self._keyframe_wanted.wait()
            # A classroom joining waits for its first picture: it may ask sooner.
            interval = (self._join_keyframe_interval_s if self._keyframe_reasons == {"join"}
                        else self._keyframe_interval_s)
            wait = self._last_keyframe_request + interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._keyframe_wanted.clear()
            reasons, self._keyframe_reasons = self._keyframe_reasons, set()
            source = self._source
            if source is None:
                continue
            self._last_keyframe_request = time.monotonic()
            for reason in sorted(reasons):
                self._telemetry.keyframe_requested(reason)
            try:
                await source()
            except ConnectionError:
                logger.debug("keyframe request not sent: publisher transport closed")

    async def close(self) -> None:
        for subscriber in list(self._subscribers):
            subscriber.stop()
        self._subscribers.clear()
        self._source = None
        if self._pump is not None:
            self._pump.cancel()
            try:
                await self._pump
            except asyncio.CancelledError:
                if (task := asyncio.current_task()) and task.cancelling():
                    raise
            self._pump = None


class SubscriberTrack(MediaStreamTrack):
    """One classroom's view of a room track; also the packer its RTCRtpSender calls.

    Video waits for a keyframe before the first frame and after any drop. A queue that fills
    up (a subscriber that is not being drained) is emptied and waits for the next keyframe,
    so a stalled classroom holds at most `limit` frames and never slows the others.
    """

    def __init__(self, room_track: RoomTrack, limit: int,
                 on_first_frame: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._on_first_frame = on_first_frame
        self.kind = room_track.kind
        self._room_track = room_track
        self._limit = limit
        self._queue: deque[RelayFrame] = deque()
        self._ready = asyncio.Event()
        self._waiting_keyframe = room_track.kind == "video"
        self._generation = 0
        self._offset = 0
        self._last_out: int | None = None
        self._clock = VIDEO_CLOCK if room_track.kind == "video" else AUDIO_CLOCK
        self._step = self._clock // 30 if room_track.kind == "video" else AUDIO_CLOCK // 50
        self._last_received_at = 0.0
        self.first_frame_at: float | None = None
        self.first_frame_keyframe: bool | None = None
        self.frames_sent = 0
        self.frames_dropped = 0
        self.retransmits = RetransmitPolicy(room_track.telemetry().retransmission)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def offer(self, item: RelayFrame) -> None:
        if self.readyState != "live":
            return
        telemetry = self._room_track.telemetry()
        if self._waiting_keyframe:
            if not item.frame.keyframe:
                self.frames_dropped += 1
                telemetry.frames_dropped(self.kind, "await_keyframe", 1)
                return
            self._waiting_keyframe = False
        if len(self._queue) >= self._limit:
            dropped = len(self._queue)
            self.frames_dropped += dropped
            if self.kind == "video":
                self._queue.clear()
                telemetry.frames_dropped(self.kind, "slow_subscriber", dropped + 1)
                self._waiting_keyframe = True
                if self.first_frame_at is not None:
                    # Only a classroom that is being sent to asks the teacher; one whose
                    # connection is not up yet asks when it first reads (see recv).
                    self._room_track.request_keyframe("slow_subscriber")
                return
            self._queue.popleft()
            telemetry.frames_dropped(self.kind, "slow_subscriber", 1)
        self._queue.append(item)
        self._ready.set()

    async def recv(self) -> RelayFrame:  # type: ignore[override]
        if self.first_frame_at is None and self._waiting_keyframe and not self._queue:
            # The connection is up and nothing usable is queued: ask for a picture now.
            self._room_track.request_keyframe("join")
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        if self.first_frame_at is None:
            self.first_frame_at = time.monotonic()
            self.first_frame_keyframe = self._queue[0].frame.keyframe
            if self._on_first_frame is not None:
                self._on_first_frame()
        return self._queue.popleft()

    def pack(self, item: RelayFrame) -> tuple[list[bytes], int]:
        """aiortc's Encoder.pack: the shared payloads and this subscriber's RTP timestamp."""
        timestamp = item.frame.timestamp
        if item.generation != self._generation:
            # New publisher session: continue this subscriber's timeline as far on as the
            # wall clock went (the relay's arrival times, the same for audio and video), so
            # players keep audio and video in step across a teacher's reconnect.
            if self._last_out is None:
                start = 0
            else:
                gap = item.frame.received_at - self._last_received_at
                start = self._last_out + max(self._step, round(gap * self._clock))
            self._offset = start - timestamp
            self._generation = item.generation
        out = timestamp + self._offset
        self._last_out = out
        self._last_received_at = item.frame.received_at
        self.frames_sent += 1
        self._room_track.telemetry().frame_forwarded(self.kind, len(item.payloads), item.octets)
        return item.payloads, out & 0xFFFFFFFF

    def request_keyframe(self) -> None:
        """The classroom sent a PLI or FIR."""
        self._room_track.request_keyframe("subscriber")

    def stop(self) -> None:
        super().stop()
        self._room_track.unsubscribe(self)
        self._queue.clear()
        self._ready.set()
