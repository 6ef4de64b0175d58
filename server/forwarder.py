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

from server import tasks
from server.passthrough import AUDIO_CLOCK, VIDEO_CLOCK, EncodedFrame, Packetizer
from server.retransmit import RetransmitPolicy

logger = logging.getLogger(__name__)


class RelayTelemetry(Protocol):
    """What the forwarder reports; `server.metrics.RelayMetrics` implements it."""

    def frame_forwarded(self, kind: str, packets: int, octets: int) -> None: ...

    def frames_dropped(self, kind: str, reason: str, count: int) -> None: ...

    def keyframe_requested(self, reason: str) -> None: ...

    def retransmission(self, outcome: str) -> None: ...

    def gop_replayed(self, frames: int) -> None: ...

    def transcoded(self, cpu_s: float) -> None: ...


class NullTelemetry:
    def frame_forwarded(self, kind: str, packets: int, octets: int) -> None:
        pass

    def frames_dropped(self, kind: str, reason: str, count: int) -> None:
        pass

    def keyframe_requested(self, reason: str) -> None:
        pass

    def retransmission(self, outcome: str) -> None:
        pass

    def gop_replayed(self, frames: int) -> None:
        pass

    def transcoded(self, cpu_s: float) -> None:
        pass


@dataclass(frozen=True, slots=True)
class RelayFrame:
    """A frame as every subscriber of a room track sees it: packetized once."""

    frame: EncodedFrame
    payloads: list[bytes]
    octets: int
    generation: int


KeyframeRequest = Callable[[], Awaitable[None]]

KEYFRAME_ANSWER_S = 1.0  # a source that sends no keyframe this soon after a request ignores them
GOP_CACHE_FRAMES = 300  # 10 s at 30 fps
GOP_CACHE_OCTETS = 4 * 1024 * 1024


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
        self.octets_in = 0  # payload bytes received: what a classroom on this track is sent
        # The frames since the last keyframe, for a source that ignores keyframe requests
        # (a file or camera through `classcast ingest`): a classroom joining it, or moving
        # to it, starts from these at once instead of waiting up to a whole GOP.
        self._gop: list[tuple[EncodedFrame, int]] = []
        self._gop_octets = 0
        self._asked_at: float | None = None  # an unanswered keyframe request
        self.answers_keyframes = True  # until a request goes unanswered
        self._answered_in_row = 0

    # --- source side ------------------------------------------------------------------------
    @property
    def live(self) -> bool:
        return self._source is not None

    def attach_source(self, codec: RTCRtpCodecParameters, request_keyframe: KeyframeRequest,
                      generation: int | None = None) -> int:
        """A publisher session starts feeding this track; returns its generation. A derived
        track (the low rendition) takes the `generation` of the frames it is made from, so a
        classroom moving between it and the original keeps one timeline."""
        if self.codec is None or not same_codec(self.codec, codec):
            self._packetizer = Packetizer(codec.name)
        self.codec = codec
        self.generation = self.generation + 1 if generation is None else generation
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
        self.octets_in += len(frame.data)
        if self.kind == "video":
            self._remember(frame, generation)
        if not self._subscribers:
            return
        payloads = self._packetizer(frame.data)
        relay_frame = RelayFrame(frame, payloads, sum(map(len, payloads)), generation)
        # (no copy: an offer that completes a switch leaves the subscriber's *old* track)
        for subscriber in self._subscribers:
            subscriber.offer(relay_frame, self)

    def _remember(self, frame: EncodedFrame, generation: int) -> None:
        if self._asked_at is not None:
            waited = frame.received_at - self._asked_at
            if frame.keyframe or waited > KEYFRAME_ANSWER_S:
                answered = frame.keyframe and waited <= KEYFRAME_ANSWER_S
                # One unanswered request makes a source deaf; it takes two answered in a row
                # to undo (a long GOP's own keyframe can land just after a request).
                self._answered_in_row = self._answered_in_row + 1 if answered else 0
                self.answers_keyframes = answered and (self.answers_keyframes
                                                       or self._answered_in_row >= 2)
                self._asked_at = None
        if frame.keyframe:
            self._gop, self._gop_octets = [], 0
        elif not self._gop:
            return  # no keyframe to start from
        self._gop.append((frame, generation))
        self._gop_octets += len(frame.data)
        if len(self._gop) > GOP_CACHE_FRAMES or self._gop_octets > GOP_CACHE_OCTETS:
            self._gop, self._gop_octets = [], 0  # too long a GOP to replay: wait for the next

    @property
    def cached_keyframe_at(self) -> float | None:
        """Arrival time of the keyframe the GOP cache starts with, if it holds one."""
        return self._gop[0][0].received_at if self._gop else None

    def _replay(self, track: SubscriberTrack) -> None:
        """Hand a joining classroom the current GOP, if the source will not send a keyframe."""
        if self.answers_keyframes or not self._gop or self._packetizer is None:
            return
        frames = [(f, g) for f, g in self._gop if g == self.generation]
        for frame, generation in frames:
            payloads = self._packetizer(frame.data)
            track.offer(RelayFrame(frame, payloads, sum(map(len, payloads)), generation), self)
        self._telemetry.gop_replayed(len(frames))

    # --- subscriber side --------------------------------------------------------------------
    def subscribe(self, on_first_frame: Callable[[], None] | None = None) -> SubscriberTrack:
        track = SubscriberTrack(self, self._queue_limit, on_first_frame)
        self.add(track)
        if self.kind == "video":
            self.request_keyframe("join")
        return track

    def add(self, track: SubscriberTrack) -> None:
        self._subscribers.add(track)
        if self.kind == "video":
            self._replay(track)

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
            if self._asked_at is None:
                self._asked_at = self._last_keyframe_request
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
        await tasks.stop(self._pump)
        self._pump = None


class SubscriberTrack(MediaStreamTrack):
    """One classroom's view of a room track; also the packer its RTCRtpSender calls.

    Video waits for a keyframe before the first frame and after any drop. A queue that fills
    up (a subscriber that is not being drained) is emptied and waits for the next keyframe,
    so a stalled classroom holds at most `limit` frames and never slows the others.

    A video subscriber can be moved to another room track of the same timeline (the low
    rendition) or to none (audio only) with `switch`: it keeps taking frames from its current
    source until the new one delivers a keyframe, so the picture never breaks.
    """

    def __init__(self, room_track: RoomTrack, limit: int,
                 on_first_frame: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._on_first_frame = on_first_frame
        self.kind = room_track.kind
        self._home = room_track  # the track it was made for: kind and telemetry
        self._source: RoomTrack | None = room_track
        self._pending: RoomTrack | None = None
        self._pending_since = 0.0
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
        self.packets_sent = 0
        self.retransmits = RetransmitPolicy(room_track.telemetry().retransmission)
        self.remb_bps: float | None = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def source(self) -> RoomTrack | None:
        return self._source

    @property
    def target_bitrate(self) -> float | None:
        return self.remb_bps

    @target_bitrate.setter
    def target_bitrate(self, bps: float) -> None:
        """aiortc's sender sets this from each REMB the classroom sends (it takes this track
        for its encoder); `server.adaptation` decides what to believe."""
        self.remb_bps = float(bps)

    def switching_for_s(self, now: float) -> float:
        """How long a switch has waited for the new source's keyframe (-1: none pending)."""
        return -1.0 if self._pending is None else now - self._pending_since

    def switch(self, target: RoomTrack | None) -> None:
        """Take video from `target` from its next keyframe on (None: no video)."""
        if self._pending is not None and self._pending is not target:
            self._pending.unsubscribe(self)
            self._pending = None
        if target is self._source:
            return
        if target is None:
            if self._source is not None:
                self._source.unsubscribe(self)
                self._source = None
            self._queue.clear()
            self._waiting_keyframe = True
            return
        self._pending = target
        self._pending_since = time.monotonic()
        target.add(self)
        target.request_keyframe("switch")

    def offer(self, item: RelayFrame, source: RoomTrack | None = None) -> None:
        if self.readyState != "live":
            return
        if source is not None and source is not self._source:
            if source is not self._pending or not item.frame.keyframe:
                return
            if self._source is not None:  # the new source's first keyframe: move over
                self._source.unsubscribe(self)
            self._source, self._pending = source, None
            self._waiting_keyframe = True
        telemetry = self._home.telemetry()
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
                if self.first_frame_at is not None and self._source is not None:
                    # Only a classroom that is being sent to asks the teacher; one whose
                    # connection is not up yet asks when it first reads (see recv).
                    self._source.request_keyframe("slow_subscriber")
                return
            self._queue.popleft()
            telemetry.frames_dropped(self.kind, "slow_subscriber", 1)
        self._queue.append(item)
        self._ready.set()

    async def recv(self) -> RelayFrame:  # type: ignore[override]
        if self.first_frame_at is None and self._waiting_keyframe and not self._queue \
                and self._source is not None:
            # The connection is up and nothing usable is queued: ask for a picture now.
            self._source.request_keyframe("join")
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
        if self._last_out is not None and out <= self._last_out:
            # A switch to the low rendition can land a frame or two back in time (it is
            # made from frames that arrived a moment earlier): keep timestamps rising.
            out = self._last_out + 1
        self._last_out = out
        self._last_received_at = item.frame.received_at
        self.frames_sent += 1
        self.packets_sent += len(item.payloads)
        self._home.telemetry().frame_forwarded(self.kind, len(item.payloads), item.octets)
        return item.payloads, out & 0xFFFFFFFF

    def request_keyframe(self) -> None:
        """The classroom sent a PLI or FIR."""
        source = self._pending or self._source
        if source is not None:
            source.request_keyframe("subscriber")

    def stop(self) -> None:
        super().stop()
        for track in (self._home, self._source, self._pending):
            if track is not None:
                track.unsubscribe(self)
        self._queue.clear()
        self._ready.set()
