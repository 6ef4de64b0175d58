"""Synthetic media sources and counting sinks for tests and benchmarks (real aiortc tracks)."""

from __future__ import annotations

import asyncio
import fractions
import math
import time

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame

VIDEO_RATE = 90000


class PatternVideoTrack(MediaStreamTrack):
    """Moving bars at `fps`; the frame number is encoded in the top rows' luma."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: int = 30) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self.count = 0
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self.count / self.fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = VideoFrame(self.width, self.height, "yuv420p")
        shift = (self.count * 4) % self.width
        row = bytes(((x + shift) // 16 % 2) * 200 + 28 for x in range(self.width))
        y, u, v = frame.planes
        y.update(row * self.height if y.line_size == self.width else
                 (row + bytes(y.line_size - self.width)) * self.height)
        u.update(bytes([128]) * (u.line_size * (self.height // 2)))
        v.update(bytes([128]) * (v.line_size * (self.height // 2)))
        frame.pts = int(self.count * VIDEO_RATE / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_RATE)
        self.count += 1
        return frame


class ToneAudioTrack(MediaStreamTrack):
    """A 440 Hz tone in 20 ms s16 mono frames at 48 kHz."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self.count * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        samples = 960
        frame = AudioFrame(format="s16", layout="mono", samples=samples)
        base = self.count * samples
        data = b"".join(int(8000 * math.sin(2 * math.pi * 440 * (base + i) / 48000))
                        .to_bytes(2, "little", signed=True) for i in range(samples))
        frame.planes[0].update(data)
        frame.pts = base
        frame.sample_rate = 48000
        frame.time_base = fractions.Fraction(1, 48000)
        self.count += 1
        return frame


class FrameCounter:
    """Drains a received track, recording each frame's pts and arrival time."""

    def __init__(self, track: MediaStreamTrack) -> None:
        self.track = track
        self.pts: list[int] = []
        self.arrivals: list[float] = []
        self.sizes: list[tuple[int, int]] = []
        self._changed = asyncio.Condition()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            while True:
                frame = await self.track.recv()
                self.pts.append(int(frame.pts or 0))
                self.arrivals.append(time.monotonic())
                if isinstance(frame, VideoFrame):
                    self.sizes.append((frame.width, frame.height))
                async with self._changed:
                    self._changed.notify_all()
        except MediaStreamError:
            pass

    @property
    def count(self) -> int:
        return len(self.pts)

    async def wait_for(self, n: int, timeout: float = 20.0) -> None:
        async def reached() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.count >= n)
        await asyncio.wait_for(reached(), timeout)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
