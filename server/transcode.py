"""The low rendition of a room's camera, for classrooms on weak links.

The teacher's stream (often 1-2.5 Mbit/s) cannot reach a village school on 300 kbit/s.
For each room that has a classroom needing it, one `LowRendition` decodes the camera once,
scales it to 360 lines and encodes it again at about 150 kbit/s with a keyframe every 2 s,
in a thread of its own (codec work never runs on the event loop), and feeds a second room
track that classrooms are moved to. It starts when the first classroom needs it and stops
when none has for a while, so rooms whose classrooms all have good links pay nothing.

Its frames keep the source frames' RTP timestamps and generation: a classroom moving between
the full and the low track stays on one timeline."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction

import av
from aiortc import RTCRtpCodecParameters
from aiortc.mediastreams import MediaStreamError
from av.codec.context import CodecContext
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType, VideoFrame

from server import tasks
from server.forwarder import RoomTrack
from server.passthrough import VIDEO_CLOCK, EncodedFrame

logger = logging.getLogger(__name__)

ENCODERS = {"H264": "libx264", "VP8": "libvpx"}
DECODERS = {"H264": "h264", "VP8": "vp8"}


@dataclass(frozen=True)
class LowSpec:
    height: int = 360
    kbps: int = 150
    keyframe_s: float = 2.0
    idle_s: float = 30.0  # stop this long after the last classroom left the low track


def can_transcode(codec_name: str) -> bool:
    return codec_name.upper() in ENCODERS


class Transcoder:
    """Decode → scale → encode, one source frame at a time (blocking: call it in a thread)."""

    def __init__(self, codec_name: str, spec: LowSpec) -> None:
        name = codec_name.upper()
        self._name = name
        self._spec = spec
        decoder = CodecContext.create(DECODERS[name], "r")
        assert isinstance(decoder, VideoCodecContext)
        decoder.thread_count = 1
        self._decoder = decoder
        self._encoder: VideoCodecContext | None = None
        self._last_keyframe_pts: int | None = None
        self._last_pts: int | None = None
        self._interval: float | None = None  # smoothed source frame interval, 90 kHz units
        self.force_keyframe = False

    def _open_encoder(self, width: int, height: int) -> VideoCodecContext:
        encoder = CodecContext.create(ENCODERS[self._name], "w")
        assert isinstance(encoder, VideoCodecContext)
        encoder.width, encoder.height = width, height
        encoder.pix_fmt = "yuv420p"
        encoder.time_base = Fraction(1, VIDEO_CLOCK)
        # Rate control shares the bitrate among frames by the frame rate; without one it
        # takes 1 / time_base, 90 000 fps, and each frame gets almost nothing (measured: 6
        # kbit/s out of a 200 kbit/s target). The source's own rate, from its timestamps.
        encoder.framerate = Fraction(round(self.fps()), 1)
        encoder.bit_rate = self._spec.kbps * 1000
        encoder.thread_count = 1
        encoder.gop_size = 10_000  # keyframes come from `force_keyframe` and the clock
        kbps = self._spec.kbps
        if self._name == "H264":
            # baseline (what WebRTC decoders take), no lookahead, SPS/PPS before every
            # keyframe, and a VBV of a quarter second: no frame, keyframes included, may
            # be larger than a thin link's modem queue holds (300 kbit/s with ~300 ms of
            # queue drops a 2 s-GOP keyframe of the usual size whole, every 2 s)
            encoder.options = {
                "preset": "veryfast", "tune": "zerolatency", "profile": "baseline",
                "x264-params": f"vbv-maxrate={kbps}:vbv-bufsize={kbps // 4}:"
                               "scenecut=0:repeat-headers=1"}
        else:
            encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                               "error-resilient": "1", "maxrate": f"{kbps}k",
                               "bufsize": f"{kbps // 4}k"}
        encoder.open()
        return encoder

    def __call__(self, frame: EncodedFrame, encode: bool = True
                 ) -> list[tuple[bytes, bool, int]]:
        """The low rendition's encoded frames for one source frame: (data, keyframe, pts).
        With `encode` false the frame is only decoded (catching up on a backlog: every frame
        must be decoded, but only the newest is worth encoding)."""
        out: list[tuple[bytes, bool, int]] = []
        packet = av.Packet(frame.data)
        packet.pts = frame.timestamp
        packet.time_base = Fraction(1, VIDEO_CLOCK)
        if self._last_pts is not None and 0 < frame.timestamp - self._last_pts < VIDEO_CLOCK:
            step = frame.timestamp - self._last_pts
            self._interval = step if self._interval is None else 0.9 * self._interval + 0.1 * step
        self._last_pts = frame.timestamp
        for picture in self._decoder.decode(packet):
            assert isinstance(picture, VideoFrame)
            if encode and self._interval is not None:  # the first frame only tells the time
                out += self._encode(picture, frame.timestamp)
        return out

    def fps(self) -> float:
        """The source's frame rate as its timestamps say (30 until two frames were seen)."""
        if self._interval is None:
            return 30.0
        return min(60.0, max(5.0, VIDEO_CLOCK / self._interval))

    def _encode(self, picture: VideoFrame, pts: int) -> list[tuple[bytes, bool, int]]:
        height = min(self._spec.height, picture.height) // 2 * 2
        width = max(2, round(picture.width * height / picture.height / 2) * 2)
        if self._encoder is None or (self._encoder.width, self._encoder.height) != (width,
                                                                                   height):
            self._encoder = self._open_encoder(width, height)
            self.force_keyframe = True
        scaled = picture.reformat(width=width, height=height, format="yuv420p")
        scaled.pts = pts
        scaled.time_base = Fraction(1, VIDEO_CLOCK)
        due = (self._last_keyframe_pts is None
               or pts - self._last_keyframe_pts >= self._spec.keyframe_s * VIDEO_CLOCK)
        if self.force_keyframe or due:
            scaled.pict_type = PictureType.I
            self.force_keyframe = False
            self._last_keyframe_pts = pts
        return [(bytes(p), p.is_keyframe, pts) for p in self._encoder.encode(scaled)]


class LowRendition:
    """One room's low rendition: owns its task and thread; `ensure_running` starts it."""

    def __init__(self, source: RoomTrack, target: RoomTrack, spec: LowSpec) -> None:
        self.source = source
        self.target = target
        self.spec = spec
        self._task: asyncio.Task[None] | None = None
        self._transcoder: Transcoder | None = None
        self.frames_in = 0
        self.frames_out = 0
        self.cpu_s = 0.0  # thread time spent transcoding

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def available(self) -> bool:
        codec = self.source.codec
        return codec is not None and can_transcode(codec.name)

    def ensure_running(self) -> None:
        if not self.running and self.available():
            self._task = asyncio.create_task(self._run(), name="low-rendition")

    async def close(self) -> None:
        await tasks.stop(self._task)
        self._task = None

    async def _request_keyframe(self) -> None:
        if self._transcoder is not None:
            self._transcoder.force_keyframe = True

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        feed = self.source.subscribe()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="low-rendition")
        codec: RTCRtpCodecParameters | None = None
        generation = -1
        idle_since: float | None = None
        logger.info("low rendition started (%s)", self.source.codec and self.source.codec.name)
        try:
            while True:
                try:
                    item = await asyncio.wait_for(feed.recv(), timeout=1.0)
                except TimeoutError:
                    item = None
                except MediaStreamError:
                    return
                if self.target.subscriber_count == 0:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since >= self.spec.idle_s:
                        logger.info("low rendition stopped: no classroom needs it")
                        return
                else:
                    idle_since = None
                if item is None:
                    continue
                source_codec = self.source.codec
                if source_codec is None or not can_transcode(source_codec.name):
                    return
                if codec is None or codec.name != source_codec.name:
                    self._transcoder = Transcoder(source_codec.name, self.spec)
                if codec is not source_codec or item.generation != generation:
                    codec, generation = source_codec, item.generation
                    self.target.attach_source(codec, self._request_keyframe,
                                              generation=generation)
                transcoder = self._transcoder
                assert transcoder is not None
                self.frames_in += 1
                # a backlog (a cached GOP handed over at start, or a slow moment): decode it all,
                # encode only the newest
                encoded, spent = await loop.run_in_executor(
                    executor, _timed, transcoder, item.frame, feed.queued == 0)
                self.cpu_s += spent
                self.target.telemetry().transcoded(spent)
                for data, keyframe, pts in encoded:
                    self.frames_out += 1
                    self.target.push(EncodedFrame(data, pts, keyframe, item.frame.received_at),
                                     generation)
        finally:
            feed.stop()
            self.target.detach_source(generation)
            executor.shutdown(wait=False, cancel_futures=True)


def _timed(transcoder: Transcoder, frame: EncodedFrame,
           encode: bool) -> tuple[list[tuple[bytes, bool, int]], float]:
    started = time.thread_time()
    result = transcoder(frame, encode)
    return result, time.thread_time() - started
