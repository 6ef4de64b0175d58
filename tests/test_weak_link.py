"""Issue 7 end to end: classrooms behind emulated weak rural links keep the lesson.

The emulated network of tests/netem.py (namespaces, veth, tbf, the userspace loss/delay
bridge): `classcast serve` and the lesson's publisher run in the server namespace, each
classroom in a namespace of its own behind its own link. The namespaces go with the `netem`
fixture at teardown, also when a test fails.

- The lesson is the benchmarks' pre-encoded clip (1280x720, 30 fps, ~1.5 Mbit/s H264
  constrained baseline + Opus ~48 kbit/s), sent by `benchmarks/peers.py publish` with no
  encoder running. The relay forwards the teacher's frames unchanged, so an aiortc classroom
  recognises each frame of the full stream by its content (`benchmarks.clip.frame_key`); the
  low rendition's frames (re-encoded by the relay) match no frame of the clip.
- The Chromium classroom is the real classroom page (`/class/{room}`, Debian's chromium run in
  a classroom namespace); what it plays is read from `getStats()` inside the page.
- aiortc classrooms are `benchmarks.peers.Subscriber`s (frames reassembled, never decoded),
  each run by a thread of this process that entered its classroom's namespace, with its own
  event loop. One of them can be made mute: no RTCP at all (no receiver reports, REMB, NACKs
  or keyframe requests).
- The test's own requests (levels, rooms, metrics) leave from the server namespace (the main
  thread enters it for the whole scenario), so they never cross a weak link.

The server runs with CLASSCAST_RELAY_ADAPT_UP_AFTER_S=6 (production waits 8 s of clean link
before moving a classroom up a level) so that a recovery fits the time budget.
Measurement windows and warm-ups are spans of time by nature; everything else waits on state.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from playwright.async_api import BrowserContext, ConsoleMessage, Page, async_playwright
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.clip import ensure_clip, load_clip
from benchmarks.peers import Subscriber
from server.passthrough import EncodedFrame
from server.tokens import Role, TokenIssuer
from server.transcode import LowSpec, Transcoder
from tests.netem import (
    Namespace,
    Network,
    NetworkFactory,
    Profile,
    netem_fixture,  # noqa: F401  (the `netem` fixture)
)

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benchmarks" / "peers.py"
CLIP_CACHE = ROOT / "benchmarks" / ".cache"
CHROMIUM_ARGS = [  # DESIGN §5 (no loopback switch: the classroom has a real address here)
    "--headless=new", "--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]

ROOM = "village"
# The weak rural link, downstream. Upstream the same modem: 300 kbit/s, 5 % of UDP
# (the classroom's RTCP) lost, 80 ms; it only carries feedback and the page's HTTP.
WEAK = Profile(rate_kbit=300, loss=0.05, delay_ms=80)
WORSE_KBIT = 100  # the link's rate during an outage: too thin even for the low rendition
UP_AFTER_S = 6.0  # CLASSCAST_RELAY_ADAPT_UP_AFTER_S for the test server (production: 8 s)

CLIP_SIZE = (1280, 720)
LOW_SIZE = (640, 360)
CLIP_FPS = 30

# Targets of issue 7 for the Chromium classroom on WEAK.
MIN_FPS = 20.0
MAX_FREEZE_S_PER_MIN = 2.0
MIN_LOW_KBPS = 100.0  # a moving picture (the low rendition is nominally 200 kbit/s)
MAX_CONCEALED = 0.10  # share of played audio samples the decoder had to invent (loss is 5 %)
MIN_AUDIO_SHARE = 0.90  # of the 50 Opus packets a second
# Right after a move to audio only on 100 kbit/s the link still carries the video sent before
# it (measured: 23 % of the audio lost for 2 s): there, sound must keep coming, each second.
MIN_OUTAGE_AUDIO_SHARE = 0.50
# after a move to audio only, before video must have stopped: the modem's queue (300 ms), the
# retransmissions of what it dropped (a few RTTs of 160 ms) and the page's 400 ms jitter buffer
DRAIN_S = 3.0
WINDOW_S = 30.0  # the measured window
MUTE_WINDOW_S = 15.0
HOLD_S = 5.0  # unmoved at the low level: settled

SERVER_START_S = 60.0
JOIN_S = 30.0
LEVEL_S = 20.0  # a level change the link calls for must show within this


# --- the lesson: server and publisher in the server namespace ---------------------------------
class Process:
    """A process of the test in a namespace, its output in a log file; stopped gracefully."""

    def __init__(self, name: str, namespace: Namespace, argv: list[str], log_dir: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        self.argv = namespace.argv(argv)
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.lines: asyncio.Queue[bytes] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        self._reader = asyncio.create_task(self._read(), name=f"read-{self.name}")

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with await asyncio.to_thread(self.log.open, "ab") as log:
            while line := await self.process.stdout.readline():
                log.write(line)
                log.flush()
                await self.lines.put(line)

    async def expect_event(self, event: str, timeout: float) -> dict[str, Any]:
        """The next JSON line `{"event": event, ...}` it prints."""
        async with asyncio.timeout(timeout):
            while True:
                line = await self.lines.get()
                with contextlib.suppress(ValueError):
                    message = json.loads(line)
                    if isinstance(message, dict) and message.get("event") == event:
                        return message

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


@dataclass
class Lesson:
    """`classcast serve` and the clip's publisher, both in the server namespace."""

    net: Network
    log_dir: Path
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    url: str = ""
    clip_keys: frozenset[int] = frozenset()  # every frame of the teacher's stream
    processes: list[Process] = field(default_factory=list)

    def token(self, role: Role, subject: str = "") -> str:
        return TokenIssuer(self.secret).mint(role, ROOM, 3600, subject)

    @property
    def address(self) -> str:
        assert self.net.server.address is not None
        return self.net.server.address

    async def start(self, http: aiohttp.ClientSession) -> None:
        port = 8080
        self.url = f"http://{self.address}:{port}"
        env = {**os.environ, "CLASSCAST_SECRET": self.secret, "CLASSCAST_HOST": self.address,
               "CLASSCAST_PORT": str(port), "CLASSCAST_DATA_DIR": str(self.log_dir / "data"),
               "CLASSCAST_ICE_ADDRESSES": self.address,
               "CLASSCAST_RECORDER_AUTO_START": "false",
               "CLASSCAST_RELAY_ADAPT_UP_AFTER_S": str(UP_AFTER_S)}
        server = Process("server", self.net.server,
                         [str(Path(sys.executable).with_name("classcast")), "serve"],
                         self.log_dir, env)
        self.processes.append(server)
        await server.start()
        deadline = time.monotonic() + SERVER_START_S
        while True:  # polling a starting server
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{self.url}/healthz") as response:
                    if response.status == 200:
                        break
            assert server.process is not None
            if server.process.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{server.tail()}")
            await asyncio.sleep(0.2)
        clip = await ensure_clip(CLIP_CACHE)
        self.clip_keys = frozenset(
            f.key for f in (await asyncio.to_thread(load_clip, clip)).video)
        publisher = Process("publisher", self.net.server, [
            sys.executable, str(PEERS), "--ice-address", self.address, "publish",
            "--url", f"{self.url}/whip/{ROOM}", "--token", self.token(Role.TEACHER, "teacher"),
            "--clip", str(clip), "--out", str(self.log_dir / "publisher.json")], self.log_dir)
        self.processes.append(publisher)
        await publisher.start()
        try:
            await publisher.expect_event("ready", 30)
        except TimeoutError:
            raise AssertionError(f"the publisher did not go live:\n{publisher.tail()}"
                                 f"\nserver:\n{server.tail()}") from None

    async def stop(self) -> None:
        for process in reversed(self.processes):
            await process.stop()


# --- what the relay says ------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    at: float  # time.time() when the poller saw it
    level: str
    reason: str
    changes: int


class LevelLog:
    """Every classroom's level as `GET /api/rooms/{room}` (teacher token) shows it, polled
    every 0.25 s: each classroom's (time, level, reason, changes) whenever they change."""

    def __init__(self, http: aiohttp.ClientSession, lesson: Lesson) -> None:
        self._http = http
        self._url = f"{lesson.url}/api/rooms/{ROOM}"
        self._headers = {"Authorization": f"Bearer {lesson.token(Role.TEACHER, 'teacher')}"}
        self.by_subject: dict[str, list[Change]] = {}
        self.room: dict[str, Any] = {}

    async def poll(self) -> dict[str, Any]:
        async with self._http.get(self._url, headers=self._headers) as response:
            assert response.status == 200, await response.text()
            room: dict[str, Any] = await response.json()
        now = time.time()
        for sub in room["subscribers"]:
            level = sub.get("level")
            if level is None:
                continue
            history = self.by_subject.setdefault(sub["subject"], [])
            if not history or (history[-1].level, history[-1].changes) != (
                    level["level"], level["changes"]):
                history.append(Change(now, level["level"], level["reason"], level["changes"]))
        self.room = room
        return room

    async def run(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(0.25)  # the poll interval

    def levels(self, subject: str) -> list[str]:
        return [c.level for c in self.by_subject.get(subject, [])]

    def timeline(self, subject: str, t0: float) -> str:
        return ", ".join(f"{c.at - t0:.1f} s {c.level} ({c.reason})"
                         for c in self.by_subject.get(subject, []))


async def metric_levels(http: aiohttp.ClientSession, lesson: Lesson
                        ) -> dict[str, dict[str, float]]:
    """One scrape: classrooms per level (gauge) and level changes by new level (counter)."""
    async with http.get(f"{lesson.url}/metrics") as response:
        text = await response.text()
    seen: dict[str, dict[str, float]] = {"by_level": {}, "changes": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "classcast_relay_classrooms_by_level":
                seen["by_level"][sample.labels["level"]] = sample.value
            elif sample.name == "classcast_relay_level_changes_total":
                seen["changes"][sample.labels["level"]] = sample.value
    return seen


async def level_of(http: aiohttp.ClientSession, lesson: Lesson, session: str,
                   token: str) -> dict[str, Any]:
    async with http.get(f"{lesson.url}/whep/{ROOM}/{session}/level",
                        headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200, await response.text()
        info: dict[str, Any] = await response.json()
        return info


async def wait_level(http: aiohttp.ClientSession, lesson: Lesson, session: str, token: str,
                     level: str, timeout: float = LEVEL_S) -> tuple[float, dict[str, Any]]:
    """Poll the classroom's level until it is `level`: (when, the level's JSON)."""
    deadline = time.monotonic() + timeout
    while True:
        info = await level_of(http, lesson, session, token)
        if info["level"] == level:
            return time.time(), info
        if time.monotonic() > deadline:
            raise AssertionError(f"classroom {session[:8]} not at {level!r} after {timeout} s: "
                                 f"{info}")
        await asyncio.sleep(0.1)  # polling the relay's state


async def held(http: aiohttp.ClientSession, lesson: Lesson, session: str, token: str,
               level: str, levels: LevelLog, subject: str, t0: float) -> None:
    """Wait until the classroom has been at `level`, unmoved, for HOLD_S (within JOIN_S)."""
    deadline = time.monotonic() + JOIN_S
    since: tuple[float, int] | None = None  # (when, changes) of the current stay
    while True:
        info = await level_of(http, lesson, session, token)
        now = time.monotonic()
        if info["level"] != level:
            since = None
        elif since is None or since[1] != info["changes"]:
            since = (now, info["changes"])
        elif now - since[0] >= HOLD_S:
            return
        assert now < deadline, (
            f"the classroom did not stay at {level!r} for {HOLD_S} s within {JOIN_S} s: "
            f"{levels.timeline(subject, t0)} (s after {t0:.0f})")
        await asyncio.sleep(0.2)  # polling the relay's state


async def until(predicate: Callable[[], bool | Awaitable[bool]], timeout: float,
                what: str) -> None:
    """Poll `predicate` (plain or async) until it holds."""
    deadline = time.monotonic() + timeout
    while not await _value(predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.2)  # polling state


async def _value(value: bool | Awaitable[bool]) -> bool:
    return await value if inspect.isawaitable(value) else bool(value)


# --- aiortc classrooms ---------------------------------------------------------------------------
class _Subscriber(Subscriber):
    """The benchmark's subscriber, also keeping the latest keyframe it got and every video
    frame's size."""

    def __init__(self, url: str, token: str, addresses: tuple[str, ...]) -> None:
        super().__init__(url, token, addresses, audio_times=True)
        self.keyframe: bytes | None = None
        self.sizes: list[int] = []  # one per entry of `self.video`

    def _on_video(self, frame: EncodedFrame) -> None:
        super()._on_video(frame)
        self.sizes.append(len(frame.data))
        if frame.keyframe:
            self.keyframe = frame.data


class AiortcClassroom:
    """An aiortc classroom in its namespace: a thread with its own event loop.

    `feedback=False` makes it mute: its receivers send no RTCP at all."""

    def __init__(self, namespace: Namespace, lesson: Lesson, subject: str,
                 feedback: bool = True) -> None:
        assert namespace.address is not None
        self.namespace = namespace
        self.subject = subject
        self.token = lesson.token(Role.CLASSROOM, subject)
        self._url = f"{lesson.url}/whep/{ROOM}"
        self._feedback = feedback
        self.sub: _Subscriber | None = None
        self.session = ""
        self.rtcp_silenced = 0
        self._joined = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"classroom-{subject}",
                                        daemon=True)

    def _run(self) -> None:
        try:
            with self.namespace.entered():
                asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._joined.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        assert self.namespace.address is not None
        sub = _Subscriber(self._url, self.token, (self.namespace.address,))
        self.sub = sub
        if not self._feedback:
            async def mute(packet: object) -> None:
                self.rtcp_silenced += 1

            for transceiver in sub.pc.getTransceivers():
                transceiver.receiver._send_rtcp = mute  # type: ignore[method-assign]
        try:
            await sub.join()
            self.session = (sub.session.location or "").rsplit("/", 1)[-1]
            self._joined.set()
            await self._stop.wait()
        finally:
            await sub.session.close()

    async def join(self) -> None:
        self._thread.start()
        await asyncio.to_thread(self._joined.wait, JOIN_S)
        if self._error is not None:
            raise self._error
        assert self.sub is not None and self.sub.error is None, self.sub and self.sub.error
        assert self.session, f"{self.subject} did not join"

    async def close(self) -> None:
        if self._thread.ident is None:
            return  # never started (an earlier classroom failed to join)
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        await asyncio.to_thread(self._thread.join, 15)

    def frames(self, t0: float, t1: float) -> list[tuple[int, float]]:
        assert self.sub is not None
        return [(key, at) for key, _, at in list(self.sub.video) if t0 <= at <= t1]

    def kbps(self, t0: float, t1: float) -> float:
        """Video payload bit rate received between t0 and t1."""
        assert self.sub is not None
        video, sizes = list(self.sub.video), list(self.sub.sizes)
        return sum(size for (_, _, at), size in zip(video, sizes, strict=False)
                   if t0 <= at <= t1) * 8 / (t1 - t0) / 1000

    def audio(self, t0: float, t1: float) -> int:
        assert self.sub is not None and self.sub.audio_times is not None
        return sum(1 for at in list(self.sub.audio_times) if t0 <= at <= t1)


def picture_size(keyframe: bytes) -> tuple[int, int]:
    """Width and height of an H264 keyframe, decoded."""
    decoder = av.CodecContext.create("h264", "r")
    frames = decoder.decode(av.Packet(keyframe)) + decoder.decode(None)
    assert frames, "the keyframe did not decode"
    return frames[0].width, frames[0].height


@contextlib.asynccontextmanager
async def classrooms(*rooms: AiortcClassroom) -> AsyncIterator[None]:
    try:
        for room in rooms:
            await room.join()
        yield
    finally:
        await asyncio.gather(*(room.close() for room in rooms))


# --- the Chromium classroom ----------------------------------------------------------------------
# getStats() of the page's session: the camera's inbound-rtp and the microphone's.
STATS_JS = """async () => {
  const s = window.classcast && window.classcast.session;
  if (!s || !s.location) return null;
  const camera = s.stream.getVideoTracks()[0]?.id;
  const report = await s.pc.getStats();
  let video = null, audio = null;
  report.forEach((r) => {
    if (r.type !== "inbound-rtp") return;
    if (r.kind === "video" && r.trackIdentifier === camera) video = r;
    else if (r.kind === "audio") audio = r;
  });
  const pick = (r, names) => Object.fromEntries(names.map((n) => [n, (r && r[n]) || 0]));
  return {
    t: Date.now() / 1000,
    session: new URL(s.location).pathname.split("/").pop(),
    level: window.classcast.level && window.classcast.level.level,
    jitterTarget: s.pc.getReceivers().map((r) => r.jitterBufferTarget),
    video: pick(video, ["framesDecoded", "framesDropped", "freezeCount",
                        "totalFreezesDuration", "frameWidth", "frameHeight", "packetsLost",
                        "packetsReceived", "nackCount", "keyFramesDecoded", "bytesReceived",
                        "retransmittedBytesReceived"]),
    audio: pick(audio, ["packetsReceived", "packetsLost", "totalSamplesReceived",
                        "concealedSamples", "silentConcealedSamples", "concealmentEvents"]),
  };
}"""


@dataclass(frozen=True)
class Stats:
    t: float
    session: str
    level: str | None
    video: dict[str, float]
    audio: dict[str, float]

    @classmethod
    def of(cls, data: dict[str, Any]) -> Stats:
        return cls(data["t"], data["session"], data["level"], data["video"], data["audio"])


@dataclass(frozen=True)
class Window:
    """What a classroom page played between two getStats() samples."""

    seconds: float
    fps: float
    freeze_s: float
    freezes: int
    concealed: float  # share of the audio samples played that were concealment
    audio_packets_per_s: float
    min_fps_1s: float  # the worst one-second sample inside the window
    min_audio_1s: float
    video_kbps: float  # the picture's own bytes (retransmissions left out)

    @property
    def freeze_s_per_min(self) -> float:
        return self.freeze_s * 60 / self.seconds

    @classmethod
    def of(cls, samples: list[Stats]) -> Window:
        a, b = samples[0], samples[-1]
        dt = b.t - a.t

        def delta(kind: str, name: str, x: Stats = a, y: Stats = b) -> float:
            return float(getattr(y, kind)[name] - getattr(x, kind)[name])

        samples_played = delta("audio", "totalSamplesReceived")
        pairs = list(itertools.pairwise(samples))
        return cls(
            seconds=dt, fps=delta("video", "framesDecoded") / dt,
            freeze_s=delta("video", "totalFreezesDuration"),
            freezes=int(delta("video", "freezeCount")),
            concealed=delta("audio", "concealedSamples") / samples_played
            if samples_played else 1.0,
            audio_packets_per_s=delta("audio", "packetsReceived") / dt,
            min_fps_1s=min(delta("video", "framesDecoded", x, y) / (y.t - x.t)
                           for x, y in pairs),
            min_audio_1s=min(delta("audio", "packetsReceived", x, y) / (y.t - x.t)
                             for x, y in pairs),
            video_kbps=(delta("video", "bytesReceived")
                        - delta("video", "retransmittedBytesReceived")) * 8 / dt / 1000)

    def __str__(self) -> str:
        return (f"{self.seconds:.1f} s: {self.fps:.1f} fps (worst second "
                f"{self.min_fps_1s:.0f}), video {self.video_kbps:.0f} kbit/s, freezes "
                f"{self.freezes} / {self.freeze_s:.2f} s = {self.freeze_s_per_min:.2f} s/min, "
                f"audio {self.audio_packets_per_s:.1f} packets/s (worst second "
                f"{self.min_audio_1s:.0f}), concealed {self.concealed:.1%}")


class ChromiumClassroom:
    def __init__(self, page: Page, lesson: Lesson, token: str) -> None:
        self.page = page
        self.lesson = lesson
        self.token = token
        self.errors: list[str] = []

    async def stats(self) -> Stats | None:
        data = await self.page.evaluate(STATS_JS)
        return None if data is None else Stats.of(data)

    async def measure(self, seconds: float) -> list[Stats]:
        """getStats() once a second for `seconds` (the measurement window)."""
        samples = []
        end = time.monotonic() + seconds
        while True:
            sample = await self.stats()
            assert sample is not None, "the page lost its session"
            samples.append(sample)
            if time.monotonic() >= end:
                return samples
            await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic())))  # the window


@contextlib.asynccontextmanager
async def chromium_in(namespace: Namespace, workdir: Path) -> AsyncIterator[BrowserContext]:
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            workdir / "chromium-profile", headless=False,
            executable_path=str(namespace.chromium(workdir)), args=CHROMIUM_ARGS)
        context.set_default_timeout(JOIN_S * 1000)
        try:
            yield context
        finally:
            await context.close()


async def open_classroom(context: BrowserContext, lesson: Lesson,
                         subject: str) -> ChromiumClassroom:
    token = lesson.token(Role.CLASSROOM, subject)
    page = await context.new_page()
    classroom = ChromiumClassroom(page, lesson, token)

    def log(message: ConsoleMessage) -> None:
        logger.info("%s console %s: %s", subject, message.type, message.text)
        if message.type == "error":
            classroom.errors.append(message.text)

    page.on("console", log)
    page.on("pageerror", lambda exc: classroom.errors.append(f"page error: {exc}"))
    await page.goto(f"{lesson.url}/class/{ROOM}?token={token}&lang=zh", timeout=JOIN_S * 1000)
    return classroom


# --- the scenarios -------------------------------------------------------------------------------
def run_in_server_namespace(net: Network,
                            scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """The scenario's event loop runs in this thread, moved into the server namespace."""
    with net.server.entered():
        asyncio.run(scenario())


@contextlib.asynccontextmanager
async def lesson_on(net: Network, log_dir: Path
                    ) -> AsyncIterator[tuple[Lesson, aiohttp.ClientSession, LevelLog]]:
    async with aiohttp.ClientSession() as http:
        lesson = Lesson(net, log_dir)
        poller: asyncio.Task[None] | None = None
        try:
            await lesson.start(http)
            levels = LevelLog(http, lesson)
            poller = asyncio.create_task(levels.run(), name="levels")
            yield lesson, http, levels
        except BaseException:
            print(f"server log:\n{lesson.processes[0].tail(60) if lesson.processes else ''}")
            raise
        finally:
            if poller is not None:
                poller.cancel()
                await asyncio.gather(poller, return_exceptions=True)
            await lesson.stop()


def report(text: str) -> None:
    print(text, flush=True)
    logger.warning("%s", text)


@pytest.fixture
def log_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "logs"
    path.mkdir()
    yield path


def link_counters(before: dict[str, int], after: dict[str, int], seconds: float) -> str:
    """The downstream link between two `Link.stats()` readings, for the reports."""
    frames = after["frames"] - before["frames"]
    lost = after["udp_lost"] - before["udp_lost"]
    refused = after["send_dropped"] - before["send_dropped"]
    kbps = (after["bytes"] - before["bytes"]) * 8 / seconds / 1000
    return (f"offered {kbps:.0f} kbit/s, {frames} frames, {lost} lost at random, "
            f"{refused} refused by the full rate limiter queue")


async def weak_page_at_low(context: BrowserContext, lesson: Lesson, http: aiohttp.ClientSession,
                           subject: str) -> tuple[ChromiumClassroom, str, float]:
    """Open the classroom page; wait until the relay moved it to the low rendition and the
    page plays it. (page, its session id, when it was opened)."""
    opened = time.time()
    page = await open_classroom(context, lesson, subject)
    await until(lambda: _has_session(page), JOIN_S, "the page's WHEP session")
    stats = await page.stats()
    assert stats is not None
    at_low, info = await wait_level(http, lesson, stats.session, page.token, "low")
    report(f"{subject}: level low {at_low - opened:.1f} s after the page opened "
           f"({info['reason']})")
    await until(lambda: _playing(page, LOW_SIZE), JOIN_S, "low rendition pictures in the page")
    return page, stats.session, opened


def test_a_chromium_classroom_on_300_kbit_plays_the_low_rendition_smoothly(
        netem: NetworkFactory, log_dir: Path) -> None:
    """Issue 7's main target. A Chromium classroom page behind 300 kbit/s, 5 % loss, 80 ms
    (both directions) watches the ~1.5 Mbit/s 720p lesson: the relay moves it to the low
    rendition; once it has stayed there for 5 s, over a 30 s window it stays at "low" and
    plays a moving 640x360 picture (>= 100 kbit/s of video) at >= 20 fps with <= 2 s of
    freezes a minute (getStats totalFreezesDuration) and continuous audio (>= 90 % of the
    Opus packets, some in every second, <= 10 % of the samples concealed). An aiortc
    classroom on a clean link meanwhile gets the teacher's own 1280x720 frames at >= 27 fps
    and is never moved from "full"."""
    net = netem(classrooms=2)
    weak_link = net.links[0]
    weak_link.apply(down=WEAK, up=WEAK)

    async def scenario() -> None:
        async with lesson_on(net, log_dir) as (lesson, http, levels):
            clean = AiortcClassroom(net.classrooms[1], lesson, "clean-aiortc")
            async with classrooms(clean), chromium_in(net.classrooms[0], log_dir) as context:
                page, session, opened = await weak_page_at_low(context, lesson, http,
                                                               "weak-chromium")
                # settled: at the low level, unmoved, for 5 s (queues drained, buffers filled)
                await held(http, lesson, session, page.token, "low", levels, "weak-chromium",
                           opened)
                before = await level_of(http, lesson, session, page.token)
                link0 = weak_link.stats()["down"]
                samples = await page.measure(WINDOW_S)
                link1 = weak_link.stats()["down"]
                after = await level_of(http, lesson, session, page.token)
                window = Window.of(samples)
                last = samples[-1].video
                report(f"weak Chromium classroom, window of {window}; picture "
                       f"{last['frameWidth']:.0f}x{last['frameHeight']:.0f}; level at the "
                       f"window's start {before['level']} ({before['changes']} changes), at its "
                       f"end {after['level']} ({after['changes']} changes: {after['reason']}); "
                       f"link {link_counters(link0, link1, window.seconds)}")
                report(f"levels seen (s after the page opened): weak "
                       f"{levels.timeline('weak-chromium', opened)}; clean "
                       f"{levels.timeline('clean-aiortc', opened)}")
                full = FullStream.of(clean, lesson, samples[0].t, samples[-1].t)
                report(f"clean aiortc classroom, same window: {full}")

                assert (after["level"], after["changes"]) == ("low", before["changes"]), \
                    (before, after)
                assert samples[-1].level == "low"  # the page knows (and shows) it
                assert (last["frameWidth"], last["frameHeight"]) == LOW_SIZE
                assert window.video_kbps >= MIN_LOW_KBPS, str(window)
                assert window.fps >= MIN_FPS, str(window)
                assert window.freeze_s_per_min <= MAX_FREEZE_S_PER_MIN, str(window)
                assert window.audio_packets_per_s >= 50 * MIN_AUDIO_SHARE, str(window)
                assert window.min_audio_1s > 0, str(window)
                assert window.concealed <= MAX_CONCEALED, str(window)
                full.check(levels)
                assert page.errors == [], page.errors

    run_in_server_namespace(net, scenario)


def test_a_chromium_classroom_goes_audio_only_at_100_kbit_and_gets_video_back(
        netem: NetworkFactory, log_dir: Path) -> None:
    """The weak link of the Chromium classroom drops from 300 to 100 kbit/s (both
    directions): the relay moves it to audio only (its level API, the metrics, and the page's
    own level badge say so), the picture stops while the sound goes on; back at 300 kbit/s
    the relay moves it to the low rendition again (after the 3 s quiet period of this test
    server) and the page decodes pictures again."""
    net = netem(classrooms=1)
    weak_link = net.links[0]
    weak_link.apply(down=WEAK, up=WEAK)

    async def scenario() -> None:
        async with lesson_on(net, log_dir) as (lesson, http, levels):
            async with chromium_in(net.classrooms[0], log_dir) as context:
                page, session, opened = await weak_page_at_low(context, lesson, http,
                                                               "weak-chromium")
                # the premise: on 300 kbit/s the classroom settles at the low level, so that
                # what follows is the relay's answer to the outage
                await held(http, lesson, session, page.token, "low", levels, "weak-chromium",
                           opened)
                dropped_at = time.time()
                weak_link.set(rate_kbit=WORSE_KBIT)
                at_audio, info = await wait_level(http, lesson, session, page.token, "audio")
                audio_changes = info["changes"]
                seen = await metric_levels(http, lesson)
                report(f"link at {WORSE_KBIT} kbit/s: level audio after "
                       f"{at_audio - dropped_at:.1f} s ({info['reason']}); metrics {seen}")
                # what was already on the way is played out first (the link's queue holds
                # <= 300 ms, the page's jitter buffer 400 ms); the controller's first probe
                # up comes no sooner than one sample and 3 quiet seconds after the move, so
                # in between, for 2 s, nothing may be decoded
                await asyncio.sleep(DRAIN_S)  # a span of time
                quiet = await page.measure(2.0)
                audio_only = Window.of(quiet)
                still = await level_of(http, lesson, session, page.token)
                report(f"audio only, {audio_only}")
                # the page asks over the same thin link (HTTP, every 2 s, a stalled request
                # given up after 4 s): allow it time
                await page.page.wait_for_function(
                    "window.classcast.level && window.classcast.level.level === 'audio'"
                    " && !document.getElementById('level').hidden", timeout=60_000)
                badge = await page.page.locator("#level").inner_text()

                restored_at = time.time()
                weak_link.set(rate_kbit=WEAK.rate_kbit)
                at_low, info = await wait_level(http, lesson, session, page.token, "low",
                                                timeout=LEVEL_S + 4 * UP_AFTER_S)
                decoded = quiet[-1].video["framesDecoded"]
                await until(lambda: _decoded_beyond(page, decoded + 2 * CLIP_FPS), JOIN_S,
                            "pictures again")
                pictures_at = time.time()
                report(f"link back at {WEAK.rate_kbit} kbit/s: level low after "
                       f"{at_low - restored_at:.1f} s ({info['reason']}), 60 frames decoded "
                       f"{pictures_at - restored_at:.1f} s after the restore; levels seen "
                       f"{levels.timeline('weak-chromium', opened)}")

                assert seen["by_level"] == {"full": 0, "low": 0, "audio": 1}, seen
                assert seen["changes"].get("audio", 0) >= 1, seen
                # the page shows it (zh: "the network is very weak: sound only for now")
                assert badge == "网络很弱，暂时只播放声音，网络好转后自动恢复画面", badge
                # no picture while at audio only (the level held through the 2 s), sound on
                assert (still["level"], still["changes"]) == ("audio", audio_changes), still
                # no video arrives. (The page may still decode frames it already held: its
                # jitter buffer keeps frames waiting for repairs, measured 0-16 in these 2 s,
                # so the decoded count is reported, not asserted.)
                assert audio_only.video_kbps == 0, str(audio_only)
                assert audio_only.min_audio_1s >= 50 * MIN_OUTAGE_AUDIO_SHARE, str(audio_only)
                assert page.errors == [], page.errors

    run_in_server_namespace(net, scenario)


async def _has_session(page: ChromiumClassroom) -> bool:
    return await page.stats() is not None


async def _playing(page: ChromiumClassroom, size: tuple[int, int]) -> bool:
    stats = await page.stats()
    return stats is not None and stats.video["framesDecoded"] > 0 and (
        stats.video["frameWidth"], stats.video["frameHeight"]) == size


async def _decoded_beyond(page: ChromiumClassroom, frames: float) -> bool:
    stats = await page.stats()
    return stats is not None and stats.video["framesDecoded"] >= frames


@dataclass(frozen=True)
class FullStream:
    """What an aiortc classroom got between two times: the teacher's own frames?"""

    subject: str
    fps: float
    foreign: int  # frames that are not the clip's (the low rendition's, or damaged)
    size: tuple[int, int]  # of the latest keyframe, decoded

    @classmethod
    def of(cls, room: AiortcClassroom, lesson: Lesson, t0: float, t1: float) -> FullStream:
        assert room.sub is not None and room.sub.keyframe is not None
        frames = room.frames(t0, t1)
        return cls(room.subject, len(frames) / (t1 - t0),
                   sum(1 for key, _ in frames if key not in lesson.clip_keys),
                   picture_size(room.sub.keyframe))

    def __str__(self) -> str:
        return (f"{self.fps:.1f} fps of the teacher's frames, {self.foreign} foreign, "
                f"{self.size[0]}x{self.size[1]}")

    def check(self, levels: LevelLog) -> None:
        """The full stream at the clip's rate, and the relay never moved the classroom."""
        assert self.fps >= CLIP_FPS * 0.9, str(self)
        assert self.foreign == 0, str(self)
        assert self.size == CLIP_SIZE, str(self)
        history = levels.by_subject[self.subject]
        assert [c.level for c in history] == ["full"] and history[-1].changes == 0, history


async def agreed(levels: LevelLog, http: aiohttp.ClientSession, lesson: Lesson,
                 subject: str) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """The classroom's level in `GET /api/rooms/{room}` and one `/metrics` scrape taken
    between two reads of it that agree (so both describe the same moment)."""
    for _ in range(5):
        first = _level_in(await levels.poll(), subject)
        seen = await metric_levels(http, lesson)
        second = _level_in(await levels.poll(), subject)
        if first == second:
            return first, seen
    start = levels.by_subject[subject][0].at
    raise AssertionError(f"{subject}'s level kept changing: {levels.timeline(subject, start)}")


def _level_in(room: dict[str, Any], subject: str) -> dict[str, Any]:
    subs = [s for s in room["subscribers"] if s["subject"] == subject]
    assert len(subs) == 1, room
    level: dict[str, Any] = subs[0]["level"]
    return level


def _check_reported(level: dict[str, Any], seen: dict[str, dict[str, float]],
                    expected: str) -> None:
    """One classroom: the room API, the gauge and the counters tell the same story."""
    assert level["level"] == expected, level
    assert seen["by_level"] == {n: float(n == expected) for n in ("full", "low", "audio")}, seen
    assert sum(seen["changes"].values()) == level["changes"], (level, seen)


def test_an_aiortc_classroom_on_a_weak_link_is_reported_in_the_api_and_metrics(
        netem: NetworkFactory, log_dir: Path) -> None:
    """An aiortc classroom on the same weak link (300 kbit/s, 5 %, 80 ms): every level the
    relay gives it (low, then audio only at 100 kbit/s, then low again at 300 kbit/s) shows
    the same in its `GET /whep/{room}/{session}/level`, in the teacher's
    `GET /api/rooms/{room}` and in `/metrics` (classrooms per level, changes by level, and
    the number of changes equals the API's), and is what the classroom receives: the low
    rendition's 640x360 frames (none of them the teacher's), then no video but the sound."""
    net = netem(classrooms=1)
    weak_link = net.links[0]
    weak_link.apply(down=WEAK, up=WEAK)

    async def scenario() -> None:
        async with lesson_on(net, log_dir) as (lesson, http, levels):
            weak = AiortcClassroom(net.classrooms[0], lesson, "weak-aiortc")
            async with classrooms(weak):
                joined = time.time()
                at_low, info = await wait_level(http, lesson, weak.session, weak.token, "low")
                low, seen_low = await agreed(levels, http, lesson, weak.subject)
                report(f"weak aiortc classroom: low {at_low - joined:.1f} s after joining "
                       f"({info['reason']}); API {low}; metrics {seen_low}")
                await until(lambda: len(weak.frames(at_low, time.time())) >= CLIP_FPS,
                            JOIN_S, "low rendition frames")
                low_frames = weak.frames(at_low, time.time())
                low_kbps = weak.kbps(at_low, time.time())
                assert weak.sub is not None and weak.sub.keyframe is not None
                low_size = picture_size(weak.sub.keyframe)
                report(f"low rendition at the classroom: {len(low_frames)} frames, "
                       f"{sum(1 for k, _ in low_frames if k in lesson.clip_keys)} of them the "
                       f"teacher's, {low_size[0]}x{low_size[1]}, {low_kbps:.0f} kbit/s")

                dropped_at = time.time()
                weak_link.set(rate_kbit=WORSE_KBIT)
                at_audio, info = await wait_level(http, lesson, weak.session, weak.token,
                                                  "audio")
                audio, seen_audio = await agreed(levels, http, lesson, weak.subject)
                report(f"link at {WORSE_KBIT} kbit/s: audio only after "
                       f"{at_audio - dropped_at:.1f} s ({info['reason']}); API {audio}; "
                       f"metrics {seen_audio}")
                await asyncio.sleep(DRAIN_S + 2)  # what was on the way drains, then 2 s of nothing
                frames_after = weak.frames(at_audio + DRAIN_S, at_audio + DRAIN_S + 2)
                audio_packets = weak.audio(at_audio + DRAIN_S, at_audio + DRAIN_S + 2)
                still = await level_of(http, lesson, weak.session, weak.token)

                restored_at = time.time()
                weak_link.set(rate_kbit=WEAK.rate_kbit)
                at_low_again, info = await wait_level(http, lesson, weak.session, weak.token,
                                                      "low", timeout=LEVEL_S + 4 * UP_AFTER_S)
                again, seen_again = await agreed(levels, http, lesson, weak.subject)
                await until(lambda: len(weak.frames(at_low_again, time.time())) >= 10,
                            JOIN_S, "video again")
                report(f"link back at {WEAK.rate_kbit} kbit/s: low after "
                       f"{at_low_again - restored_at:.1f} s ({info['reason']}); API {again}; "
                       f"metrics {seen_again}; levels seen (s after joining) "
                       f"{levels.timeline(weak.subject, joined)}")

                _check_reported(low, seen_low, "low")
                assert seen_low["changes"].get("low", 0) >= 1, seen_low
                assert low_size == LOW_SIZE
                assert not any(k in lesson.clip_keys for k, _ in low_frames[CLIP_FPS // 2:])
                _check_reported(audio, seen_audio, "audio")
                assert audio["reason"] not in ("", "start"), audio
                assert (still["level"], still["changes"]) == ("audio", audio["changes"]), still
                assert frames_after == [], len(frames_after)
                assert audio_packets >= 2 * 50 * MIN_OUTAGE_AUDIO_SHARE, audio_packets
                _check_reported(again, seen_again, "low")
                assert again["changes"] > audio["changes"]
                assert seen_again["changes"]["low"] > seen_audio["changes"].get("low", 0)

    run_in_server_namespace(net, scenario)


def test_a_classroom_that_sends_no_feedback_starves_nobody(
        netem: NetworkFactory, log_dir: Path) -> None:
    """Bad input of issue 7: a classroom that sends no RTCP at all (an aiortc classroom whose
    receivers' RTCP is switched off: no receiver reports, REMB, NACKs or keyframe requests),
    itself on a weak link, watches beside a classroom on a clean link and one on a weak link
    that does send feedback. Over a 15 s window the clean one keeps the teacher's 1280x720
    frames at >= 27 fps and is never moved from "full"; the weak one is still moved to the
    low rendition by its own feedback. The relay really heard nothing from the mute one (no
    receiver report: no RTT, no loss for it in the teacher's classroom list)."""
    net = netem(classrooms=3)
    net.links[0].apply(down=WEAK, up=WEAK)
    net.links[2].apply(down=WEAK, up=WEAK)

    async def scenario() -> None:
        async with lesson_on(net, log_dir) as (lesson, http, levels):
            mute = AiortcClassroom(net.classrooms[0], lesson, "mute-aiortc", feedback=False)
            clean = AiortcClassroom(net.classrooms[1], lesson, "clean-aiortc")
            weak = AiortcClassroom(net.classrooms[2], lesson, "weak-aiortc")
            async with classrooms(mute, clean, weak):
                joined = time.time()
                at_low, info = await wait_level(http, lesson, weak.session, weak.token, "low")
                t0 = time.time()
                await asyncio.sleep(MUTE_WINDOW_S)  # the measured window
                t1 = time.time()
                room = await levels.poll()
                full = FullStream.of(clean, lesson, t0, t1)
                links = {c["subject"]: c["link"] for c in room.get("classrooms", [])}
                mute_level = _level_in(room, mute.subject)
                report(f"with a mute classroom: clean {full}; weak low after "
                       f"{at_low - joined:.1f} s ({info['reason']}); mute: "
                       f"{mute.rtcp_silenced} RTCP packets held back, "
                       f"{len(mute.frames(t0, t1)) / (t1 - t0):.1f} fps received, level "
                       f"{mute_level}, link as the relay sees it {links.get(mute.subject)}; "
                       f"levels seen (s after joining) "
                       + "; ".join(f"{s} {levels.timeline(s, joined)}" for s in levels.by_subject))

                full.check(levels)
                assert "low" in levels.levels(weak.subject)
                assert mute.rtcp_silenced > 0
                mute_link = links[mute.subject]
                assert mute_link is not None, room
                assert (mute_link["rtt_ms"], mute_link["loss"]) == (None, None), mute_link
                assert links[clean.subject] is not None
                assert links[clean.subject]["rtt_ms"] is not None, links

    run_in_server_namespace(net, scenario)


def test_the_low_rendition_is_encoded_at_its_bitrate() -> None:
    """What the end-to-end tests measure at the classrooms, from the transcoder alone: 10 s of
    the lesson (the clip, 30 fps) become 640x360 at about the rendition's bit rate, and not
    far below it: an encoder left guessing the frame rate from the 90 kHz RTP clock gives
    each frame 1/3000 of its budget and sends skipped blocks (a still picture played at
    full frame rate, keyframes every 2 s)."""
    clip = load_clip(asyncio.run(ensure_clip(CLIP_CACHE)))
    spec = LowSpec()
    transcoder = Transcoder("H264", spec)
    frames = clip.video[:10 * CLIP_FPS]
    out = [encoded for n, frame in enumerate(frames)
           for encoded in transcoder(EncodedFrame(frame.data, n * 90_000 // CLIP_FPS,
                                                  frame.keyframe, 0.0))]
    kbps = sum(len(data) for data, _, _ in out) * 8 / (len(frames) / CLIP_FPS) / 1000
    keyframes = [len(data) for data, keyframe, _ in out if keyframe]
    size = picture_size(next(data for data, keyframe, _ in out if keyframe))
    report(f"low rendition from the transcoder: {len(out)} frames, {size[0]}x{size[1]}, "
           f"{kbps:.0f} kbit/s (spec {spec.kbps}), keyframes {keyframes} bytes")
    assert size == LOW_SIZE
    assert len(out) >= len(frames) - 2
    assert spec.kbps * 0.6 <= kbps <= spec.kbps * 1.2, kbps
