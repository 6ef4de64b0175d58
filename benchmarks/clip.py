"""The benchmark's test clip: 720p30 ~1.5 Mbps H264 (constrained baseline) + Opus, encoded once.

The publisher sends it without encoding anything: every encoded packet is held in memory and
handed to aiortc as an `av.Packet` at the clip's frame rate, with timestamps that keep rising
across loops. (aiortc's `MediaPlayer(decode=False, loop=True)` cannot be used for a run longer
than the clip: after the first loop it stops pacing and its timestamps restart from zero, so it
floods the relay; measured here: 52 829 video packets in 8 s from a 3 s clip.)

A keyframe request (PLI) makes the video track jump to the clip's next IDR frame, so the relay
sees what a live encoder does (a keyframe within one frame interval) and the stream stays
decodable.
"""

from __future__ import annotations

import asyncio
import fractions
import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import av
import ffmpeg
from aiortc import MediaStreamTrack
from aiortc.codecs.h264 import H264Encoder
from aiortc.mediastreams import MediaStreamError

WIDTH, HEIGHT, FPS = 1280, 720, 30
VIDEO_KBPS = 1500
AUDIO_KBPS = 48
KEYINT = 60
VIDEO_CLOCK = 90000
AUDIO_CLOCK = 48000
AUDIO_FRAME_S = 0.02


def frame_key(data: bytes) -> int:
    """A frame's identity that survives repacketization: a hash of its NAL units' bodies.

    The publisher's Annex-B packets and the subscriber's depayloaded frames may use different
    start codes (3 or 4 bytes) and NAL aggregation, but carry the same NAL units."""
    return nal_units_key(nal_units(data))


def nal_units(data: bytes) -> list[bytes]:
    """The NAL units of an Annex-B frame, without their start codes."""
    return list(H264Encoder._split_bitstream(data))


def nal_units_key(nals: Iterable[bytes]) -> int:
    """`frame_key` of a frame given as NAL units (e.g. read back from an MP4's samples)."""
    digest = hashlib.blake2b(digest_size=8)
    for nal in nals:
        digest.update(len(nal).to_bytes(4, "big"))
        digest.update(nal)
    return int.from_bytes(digest.digest(), "big")


async def ensure_clip(cache_dir: Path, seconds: int = 20) -> Path:
    """Encode the clip with ffmpeg unless it is cached; returns its path (MPEG-TS, Annex-B)."""
    path = cache_dir / f"clip-{WIDTH}x{HEIGHT}-{FPS}fps-{VIDEO_KBPS}k-{seconds}s.ts"
    if path.exists():
        return path
    await asyncio.to_thread(cache_dir.mkdir, parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.ts")
    video = (ffmpeg.input(f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}", f="lavfi", t=seconds)
             .filter("noise", alls=8, allf="t"))  # moving pattern + grain: a realistic bitrate
    audio = ffmpeg.input(f"sine=frequency=440:sample_rate={AUDIO_CLOCK}", f="lavfi", t=seconds)
    argv = (ffmpeg.output(video, audio, str(tmp), f="mpegts", **{
        "c:v": "libx264", "profile:v": "baseline", "pix_fmt": "yuv420p", "preset": "veryfast",
        "b:v": f"{VIDEO_KBPS}k", "maxrate": f"{VIDEO_KBPS}k", "bufsize": f"{VIDEO_KBPS}k",
        "g": KEYINT, "keyint_min": KEYINT, "sc_threshold": 0,
        "c:a": "libopus", "b:a": f"{AUDIO_KBPS}k", "frame_duration": 20})
        .global_args("-hide_banner", "-loglevel", "error").overwrite_output().compile())
    process = await asyncio.create_subprocess_exec(*argv, stderr=asyncio.subprocess.PIPE)
    _, stderr = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"ffmpeg could not encode the test clip: {stderr.decode()[-2000:]}")
    await asyncio.to_thread(tmp.replace, path)
    return path


@dataclass(frozen=True, slots=True)
class VideoFrame:
    data: bytes
    keyframe: bool
    key: int


@dataclass(frozen=True)
class Clip:
    video: tuple[VideoFrame, ...]
    audio: tuple[bytes, ...]

    @property
    def video_kbps(self) -> float:
        return sum(len(f.data) for f in self.video) * 8 / (len(self.video) / FPS) / 1000

    @property
    def seconds(self) -> float:
        return len(self.video) / FPS


def load_clip(path: Path) -> Clip:
    """Demux every packet into memory (20 s is ~4 MB)."""
    video: list[VideoFrame] = []
    audio: list[bytes] = []
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.size == 0:
                continue
            data = bytes(packet)
            if packet.stream.type == "video":
                video.append(VideoFrame(data, bool(packet.is_keyframe), frame_key(data)))
            elif packet.stream.type == "audio":
                audio.append(data)
    if not video or not video[0].keyframe:
        raise RuntimeError(f"{path}: the clip must start with a keyframe")
    return Clip(tuple(video), tuple(audio))


class ClipClock:
    """One start time for both tracks of a publisher."""

    def __init__(self) -> None:
        self.start: float | None = None

    def origin(self) -> float:
        if self.start is None:
            self.start = time.monotonic()
        return self.start


class ClipVideoTrack(MediaStreamTrack):
    """The clip's video frames, paced at its frame rate, looping; records each send."""

    kind = "video"

    def __init__(self, clip: Clip, clock: ClipClock) -> None:
        super().__init__()
        self._clip = clip
        self._clock = clock
        self._position = 0
        self._keyframe_wanted = False
        self.count = 0
        self.keyframes_on_request = 0
        # (frame key, pts, time.time() when handed to the sender), for every frame sent
        self.sends: list[tuple[int, int, float]] = []
        self.started = asyncio.Event()

    def request_keyframe(self) -> None:
        """Wired to the sender's PLI/FIR handler."""
        self._keyframe_wanted = True

    def _next_keyframe(self) -> int:
        frames = self._clip.video
        for step in range(len(frames)):
            index = (self._position + step) % len(frames)
            if frames[index].keyframe:
                return index
        return 0

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        delay = self._clock.origin() + self.count / FPS - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if self._keyframe_wanted:
            self._keyframe_wanted = False
            if not self._clip.video[self._position].keyframe:
                self._position = self._next_keyframe()
                self.keyframes_on_request += 1
        frame = self._clip.video[self._position]
        self._position = (self._position + 1) % len(self._clip.video)
        packet = av.Packet(frame.data)
        packet.pts = self.count * (VIDEO_CLOCK // FPS)
        packet.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.sends.append((frame.key, packet.pts, time.time()))
        self.count += 1
        self.started.set()
        return packet


class ClipAudioTrack(MediaStreamTrack):
    """The clip's Opus packets, one per 20 ms, looping."""

    kind = "audio"

    def __init__(self, clip: Clip, clock: ClipClock) -> None:
        super().__init__()
        self._clip = clip
        self._clock = clock
        self.count = 0
        # time.time() when packet i (the clip's packet i % len(clip.audio)) was handed over
        self.sends: list[float] = []

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        delay = self._clock.origin() + self.count * AUDIO_FRAME_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self.sends.append(time.time())
        packet = av.Packet(self._clip.audio[self.count % len(self._clip.audio)])
        packet.pts = self.count * int(AUDIO_CLOCK * AUDIO_FRAME_S)
        packet.time_base = fractions.Fraction(1, AUDIO_CLOCK)
        self.count += 1
        return packet
