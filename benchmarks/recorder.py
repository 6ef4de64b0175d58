"""ClassCast recorder benchmark: what a recording costs, how soon it reaches the bucket, and
whether the bucket holds every byte the teacher sent.

Run by hand (not a test; every process talks over loopback only; ~12 minutes, `--seconds 20`
~5):

    .venv/bin/python benchmarks/recorder.py [--k 1,4,8] [--seconds 60] [--json out.json]

For each K, a fresh `classcast serve` (configured only by CLASSCAST_* variables, no S3 endpoint,
so it runs its embedded SeaweedFS, `weed`) gets K rooms, each with its own publisher process
sending the benchmark clip (720p30 ~1.5 Mbps H264 + Opus 48 kbps, pre-encoded: no encoder
runs). Each K runs twice, with a fresh server each time:

- recording off (CLASSCAST_RECORDER_AUTO_START=false): the relay receiving K lessons;
- recording on (=true: each room's recording starts when it goes live): the same, plus K
  recorder peers (aiortc subscribers inside the server), K `ffmpeg -c copy` and the uploads.

Measured over a window of `--seconds` after a warm-up, every recording running throughout:

- CPU (% of one core): the server process, its ffmpeg children (live ones by psutil, exited
  ones such as the thumbnail ffmpeg through the server's reaped-children times) and `weed`.
  Recording CPU = (server + ffmpeg, recording on) - (server, recording off); per recording
  = / K. `weed` is reported, not counted.
- upload lag: the server's own histogram `classcast_recorder_upload_lag_seconds` (segment
  file closed by ffmpeg -> stored in the bucket), scraped from /metrics once every recording
  is archived; p50/p95 interpolated within its buckets as Prometheus' histogram_quantile does,
  plus the exact share of uploads <= 3 s (3 s is a bucket edge). Cross-checked by watching
  the spool every 0.1 s: a segment's mtime (ffmpeg closed it) to the moment it is gone (the
  uploader deletes it right after S3 took it).
- bytes: the recordings are stopped through the API, their objects downloaded from the bucket
  and demuxed. Every stored video frame is matched to the publisher's send log by a hash of
  its NAL units, so "sent" is exactly the H264 NAL-unit bytes (start codes not counted) and
  Opus packet bytes the publisher sent from the recording's first frame until the stop
  request, and "stored" is the bytes of the init file and segments in the bucket (fMP4
  container and 4-byte NAL length prefixes included; playlist, manifest and thumbnail listed
  apart).

Baseline (K = 1, in the same run): aiortc's `MediaRecorder` (decode, re-encode with libx264 and
AAC, MP4 file), in a receiver process of its own (`recorder.py baseline-receiver`) that plays
the room over WHEP from ClassCast with recording off. Its cost = the receiver process + the
server's extra CPU for forwarding to it (server CPU minus the recording-off run at K = 1).

Prints Markdown tables (paste them into benchmarks/README.md) and checks the issue's targets.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # see benchmarks/__init__.py

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import tempfile
import time
from collections.abc import Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import aiohttp
import aiortc
import av
import psutil
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection
from aiortc.contrib.media import MediaRecorder
from av.frame import Frame
from av.packet import Packet
from minio import Minio
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.clip import (
    AUDIO_KBPS,
    FPS,
    HEIGHT,
    KEYINT,
    WIDTH,
    Clip,
    ensure_clip,
    load_clip,
    nal_units_key,
)
from benchmarks.peers import emit, h264_preferences, opus_preferences, stop_event, write_json
from benchmarks.readback import audio_sent, match, read_back, read_mp4, sent_frames
from benchmarks.relay import NCPU, NOISE_CORES, BenchError, Child, free_port, percentile
from recorder import hls
from server.tokens import Role, TokenIssuer
from server.whipclient import WhipSession

HERE = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"
BUCKET = "classcast"  # the server's default (CLASSCAST_S3_BUCKET)
S3_ACCESS_KEY = "classcast"  # the server's default (CLASSCAST_S3_ACCESS_KEY)
LAG_METRIC = "classcast_recorder_upload_lag_seconds"
WATCH_INTERVAL_S = 0.1
T = TypeVar("T")

# The targets.
TARGET_CPU_PER_RECORDING = 3.0  # % of one core, ffmpeg included
TARGET_LAG_P95_S = 3.0


# --- options ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    ks: tuple[int, ...]
    seconds: float
    warmup_s: float
    baseline: bool
    wait_quiet_s: float
    loop: str
    json_out: Path | None
    keep: bool


def parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(p) for p in text.split(",") if p.strip()}))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from exc
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError("recording counts are positive numbers, e.g. 1,4,8")
    return ks


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=parse_ks, default=(1, 4, 8),
                        help="simultaneous recordings, one room and publisher each "
                             "(default 1,4,8)")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="measured window of every run, recordings running throughout "
                             "(default 60)")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds between every recording running and the window "
                             "(default 5)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip aiortc's MediaRecorder (K = 1)")
    parser.add_argument("--wait-quiet", type=float, default=30.0,
                        help="before each run, wait up to this many seconds for other "
                             "processes to leave the machine idle (default 30; 0: don't)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="event loop of the benchmark's own processes (the server is "
                             "`classcast serve` with its own choice)")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run directory (logs, downloaded recordings)")
    args = parser.parse_args(argv)
    return Options(ks=args.k, seconds=args.seconds, warmup_s=args.warmup,
                   baseline=not args.no_baseline, wait_quiet_s=args.wait_quiet,
                   loop=args.loop, json_out=args.json, keep=bool(args.keep))


# --- CPU of a process tree --------------------------------------------------------------------
@dataclass(frozen=True)
class TreeCpu:
    own: float  # CPU seconds of the process itself
    reaped: float  # of its children it has waited for (exited ones)
    live: dict[int, tuple[str, float]]  # {pid: (name, CPU seconds)} of its descendants now


def tree_cpu(process: psutil.Process) -> TreeCpu:
    times = process.cpu_times()
    live: dict[int, tuple[str, float]] = {}
    with contextlib.suppress(psutil.Error):
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                t = child.cpu_times()
                live[child.pid] = (child.name(), float(t.user + t.system))
    return TreeCpu(float(times.user + times.system),
                   float(times.children_user + times.children_system), live)


def tree_delta(a: TreeCpu, b: TreeCpu) -> dict[str, float]:
    """CPU seconds between two samples: own, and per child name ("ffmpeg", "weed", ...).

    A child that exited in between (e.g. the thumbnail ffmpeg) shows up only in the reaped
    times, which count its whole life: its part before `a` is taken off again. Exited
    children are attributed to ffmpeg, the only short-lived children the server has."""
    out: dict[str, float] = {"own": b.own - a.own}
    for pid, (name, cpu) in b.live.items():
        out[name] = out.get(name, 0.0) + cpu - a.live.get(pid, (name, 0.0))[1]
    exited_before = sum(cpu for pid, (_name, cpu) in a.live.items() if pid not in b.live)
    out["ffmpeg"] = out.get("ffmpeg", 0.0) + (b.reaped - a.reaped) - exited_before
    return out


def rss_mb(process: psutil.Process, name: str | None = None) -> float:
    """RSS of the process (name None) or the sum over its descendants called `name`."""
    with contextlib.suppress(psutil.Error):
        if name is None:
            return float(process.memory_info().rss) / 2**20
        total = 0.0
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if child.name() == name:
                    total += child.memory_info().rss
        return total / 2**20
    return 0.0


# --- the spool watch --------------------------------------------------------------------------
class SpoolWatch:
    """Polls the server's spool: when each segment was closed (mtime) and when it was gone."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self.closed: dict[str, float] = {}
        self.gone: dict[str, float] = {}

    def poll(self) -> None:
        now = time.time()
        present: set[str] = set()
        with contextlib.suppress(OSError):
            for recording in self.spool.iterdir():
                with contextlib.suppress(OSError):
                    for entry in os.scandir(recording):
                        if entry.name.startswith("seg_") and entry.name.endswith(".m4s"):
                            key = f"{recording.name}/{entry.name}"
                            present.add(key)
                            if key not in self.closed:
                                with contextlib.suppress(OSError):
                                    self.closed[key] = entry.stat().st_mtime
        for key in self.closed:
            if key not in present and key not in self.gone:
                self.gone[key] = now

    async def run(self) -> None:
        while True:
            await asyncio.to_thread(self.poll)
            await asyncio.sleep(WATCH_INTERVAL_S)

    def lags(self) -> list[float]:
        """Close -> gone, per segment; seg_00000 is left out (kept for the thumbnail)."""
        return [self.gone[k] - self.closed[k] for k in self.gone
                if not k.endswith("/seg_00000.m4s")]


# --- Prometheus histogram ---------------------------------------------------------------------
@dataclass
class Histogram:
    buckets: list[tuple[float, float]] = field(default_factory=list)  # (le, cumulative count)
    count: float = 0.0
    sum: float = 0.0

    def quantile(self, q: float) -> float | None:
        """Prometheus' histogram_quantile: linear within the bucket that holds the rank."""
        if not self.count:
            return None
        rank = q * self.count
        low, below = 0.0, 0.0
        for le, cumulative in sorted(self.buckets):
            if cumulative >= rank:
                if le == float("inf"):
                    return low
                if cumulative == below:
                    return le
                return low + (le - low) * (rank - below) / (cumulative - below)
            low, below = le, cumulative
        return low

    def share_le(self, bound: float) -> float | None:
        for le, cumulative in self.buckets:
            if le == bound:
                return cumulative / self.count if self.count else None
        return None


def parse_histogram(text: str, name: str) -> Histogram:
    out = Histogram()
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == name + "_bucket":
                out.buckets.append((float(sample.labels["le"]), float(sample.value)))
            elif sample.name == name + "_count":
                out.count = float(sample.value)
            elif sample.name == name + "_sum":
                out.sum = float(sample.value)
    return out


def counters(text: str, prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(prefix) and not sample.name.endswith(
                    ("_bucket", "_created")):
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[sample.name + (f"{{{labels}}}" if labels else "")] = float(sample.value)
    return out


# --- results ----------------------------------------------------------------------------------
@dataclass
class Archive:
    """One recording as the bucket holds it, compared with what its publisher sent."""

    room: str
    id: str
    status: str
    segments: int
    duration_s: float
    manifest_bytes: int  # what the manifest says was uploaded (init + segments)
    init_bytes: int
    segment_bytes: int
    other_bytes: dict[str, int]  # playlist, manifest, thumbnail
    video_frames: int  # demuxed from the bucket's init + segments
    audio_frames: int
    video_nal_bytes: int
    audio_bytes: int
    matched_frames: int  # stored frames found, byte-identical, in the publisher's send log
    unmatched_frames: int  # stored frames found nowhere in it
    missing_frames: int  # sent between the first and last stored frame, not stored
    tail_frames: int  # sent after the last stored frame, before the stop request
    sent_video_frames: int  # first stored frame .. stop request
    sent_video_nal_bytes: int
    sent_video_annexb_bytes: int
    sent_audio_frames: int
    sent_audio_bytes: int
    finalize_s: float  # stop request -> manifest.json in the bucket

    @property
    def stored_bytes(self) -> int:
        return self.init_bytes + self.segment_bytes

    @property
    def sent_bytes(self) -> int:
        return self.sent_video_nal_bytes + self.sent_audio_bytes

    @property
    def payload_bytes(self) -> int:
        return self.video_nal_bytes + self.audio_bytes


@dataclass
class BaselineResult:
    join_s: float
    window_fps: float  # video frames MediaRecorder took from the track, per second
    window_audio_fps: float
    backlog_frames: int  # decoded frames queued for MediaRecorder at the stop
    decoder_backlog: int  # encoded frames queued for aiortc's decoder thread at the stop
    stop_s: float  # MediaRecorder.stop(): flushing the encoder, writing the trailer
    file_bytes: int
    file_video_frames: int
    file_audio_frames: int
    file_duration_s: float
    video_codec: str
    video_kbps: float
    sent_video_frames: int  # first frame it took .. stop
    sent_bytes: int  # H264 NAL-unit + Opus bytes sent in that span


@dataclass
class Run:
    mode: str  # "off", "on", "baseline"
    k: int
    window_s: float
    server_cpu_pct: float  # the server process itself
    ffmpeg_cpu_pct: float  # its ffmpeg children, exited ones included
    weed_cpu_pct: float
    other_children_cpu_pct: float
    publishers_cpu_pct: float
    receiver_cpu_pct: float  # the baseline's receiver process
    machine_busy_cores: float
    other_load_cores: float
    server_rss_mb: float
    ffmpeg_rss_mb: float
    receiver_rss_mb: float = 0.0
    lag: Histogram | None = None
    watch_lags: list[float] = field(default_factory=list)
    archives: list[Archive] = field(default_factory=list)
    baseline: BaselineResult | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def recording_cpu_pct(self) -> float:
        """What the run's side of the recording-off subtraction is: server + ffmpeg."""
        return self.server_cpu_pct + self.ffmpeg_cpu_pct


# --- the baseline receiver (its own process) --------------------------------------------------
class CountingTrack(MediaStreamTrack):
    """Passes a received track's decoded frames to MediaRecorder, noting when it takes each."""

    def __init__(self, source: MediaStreamTrack, times: list[float],
                 first: asyncio.Event) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source
        self._times = times
        self._first = first

    async def recv(self) -> Frame | Packet:
        frame = await self._source.recv()
        self._times.append(time.time())
        self._first.set()
        return frame


async def baseline_receiver(args: argparse.Namespace) -> None:
    """Play the room over WHEP, decoding, and record it with aiortc's MediaRecorder."""
    stop = stop_event()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video = pc.addTransceiver("video", direction="recvonly")
    video.setCodecPreferences(h264_preferences())
    audio = pc.addTransceiver("audio", direction="recvonly")
    audio.setCodecPreferences(opus_preferences())
    recorder = MediaRecorder(args.mp4)
    times: dict[str, list[float]] = {"video": [], "audio": []}
    sources: dict[str, MediaStreamTrack] = {}
    first_video = asyncio.Event()
    no_event = asyncio.Event()

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        sources[track.kind] = track
        recorder.addTrack(CountingTrack(track, times[track.kind],
                                        first_video if track.kind == "video" else no_event))

    session = WhipSession(args.url, args.token, ice_addresses=(LOOPBACK,), pc=pc)
    started = time.time()
    await session.start()
    await recorder.start()
    await asyncio.wait_for(first_video.wait(), 30)
    emit("ready", join_s=time.time() - started)
    await stop.wait()
    backlog = sources["video"]._queue.qsize() if "video" in sources else 0  # type: ignore[attr-defined]
    decoder_backlog = video.receiver._RTCRtpReceiver__decoder_queue.qsize()  # type: ignore[attr-defined]
    stop_at = time.time()
    await recorder.stop()
    stop_s = time.time() - stop_at
    await session.close()
    await write_json(args.out, {"video": times["video"], "audio": times["audio"],
                                "backlog": backlog, "decoder_backlog": decoder_backlog,
                                "stop_at": stop_at, "stop_s": stop_s})


# --- the benchmark ----------------------------------------------------------------------------
class RecorderBench:
    def __init__(self, options: Options, run_dir: Path, clip_path: Path, clip: Clip) -> None:
        self.options = options
        self.run_dir = run_dir
        self.clip_path = clip_path
        self.clip = clip
        self.secret = secrets.token_urlsafe(48)
        self.issuer = TokenIssuer(self.secret)
        self.admin = self.issuer.mint(Role.ADMIN)
        self.python = sys.executable
        self._counter = 0

    def _name(self, stem: str) -> str:
        self._counter += 1
        return f"{self._counter:02d}-{stem}"

    async def start_server(self, record: bool, data_dir: Path) -> tuple[Child, str]:
        port = free_port()
        env = {**os.environ, "CLASSCAST_SECRET": self.secret, "CLASSCAST_HOST": LOOPBACK,
               "CLASSCAST_PORT": str(port), "CLASSCAST_DATA_DIR": str(data_dir),
               "CLASSCAST_ICE_ADDRESSES": LOOPBACK,
               "CLASSCAST_RECORDER_AUTO_START": "true" if record else "false"}
        for name in ("CLASSCAST_S3_ENDPOINT", "CLASSCAST_CONFIG"):
            env.pop(name, None)
        child = Child(self._name("server"),
                      [str(Path(self.python).with_name("classcast")), "serve"], self.run_dir,
                      env)
        await child.start()
        url = f"http://{LOOPBACK}:{port}"
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as http:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{url}/healthz") as response:
                        if response.status == 200:
                            return child, url
                if time.monotonic() > deadline:
                    await child.stop()
                    raise BenchError(f"the server did not answer /healthz in 60 s; see "
                                     f"{child.log_path}:\n{await child.log_tail()}")
                await asyncio.sleep(0.2)

    async def start_publisher(self, url: str, room: str) -> Child:
        child = Child(self._name(f"publisher-{room}"), [
            self.python, str(HERE / "peers.py"), "--loop", self.options.loop, "publish",
            "--url", f"{url}/whip/{room}", "--token", self.issuer.mint(Role.TEACHER, room),
            "--clip", str(self.clip_path)], self.run_dir)
        child.argv += ["--out", str(child.out_path)]
        await child.start()
        return child

    async def start_receiver(self, url: str, room: str) -> Child:
        child = Child(self._name("baseline-receiver"), [
            self.python, str(HERE / "recorder.py"), "baseline-receiver", "--loop",
            self.options.loop, "--url", f"{url}/whep/{room}", "--token",
            self.issuer.mint(Role.CLASSROOM, room)], self.run_dir)
        child.argv += ["--out", str(child.out_path), "--mp4",
                       str(self.run_dir / f"{child.name}.mp4")]
        await child.start()
        return child

    async def api(self, method: str, url: str, body: object | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.admin}"}
        async with aiohttp.ClientSession() as http, http.request(
                method, url, json=body, headers=headers) as response:
            text = await response.text()
            if response.status >= 400:
                raise BenchError(f"{method} {url}: {response.status} {text[:300]}")
            return json.loads(text) if "json" in response.content_type else text

    async def wait_recording(self, url: str, room: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = await self.api("GET", f"{url}/api/rooms/{room}/recording")
            recording = state.get("recording")
            if recording and recording.get("status") == "recording":
                return str(recording["id"])
            if state.get("error") or time.monotonic() > deadline:
                raise BenchError(f"room {room} is not being recorded: {state}")
            await asyncio.sleep(0.2)

    # one run ----------------------------------------------------------------------------------
    async def measure(self, mode: str, k: int) -> Run:
        options = self.options
        record = mode == "on"
        rooms = [f"lesson-{i}" for i in range(k)]
        data_dir = self.run_dir / self._name(f"data-{mode}-k{k}")
        watch: SpoolWatch | None = None
        watch_task: asyncio.Task[None] | None = None
        lag: Histogram | None = None
        metrics: dict[str, float] = {}
        errors: list[str] = []
        receiver: Child | None = None
        join_s = 0.0
        async with contextlib.AsyncExitStack() as stack:
            server, url = await self.start_server(record, data_dir)
            stack.push_async_callback(server.stop)
            server_ps = psutil.Process(server.pid)
            publishers = [await self.start_publisher(url, room) for room in rooms]
            for child in publishers:
                stack.push_async_callback(child.stop)
            await asyncio.gather(*(c.expect("ready", 40) for c in publishers))
            ids: dict[str, str] = {}
            if record:
                watch = SpoolWatch(data_dir / "spool")
                watch_task = asyncio.create_task(watch.run(), name="spool-watch")

                async def cancel_watch() -> None:
                    assert watch_task is not None
                    watch_task.cancel()
                    await asyncio.gather(watch_task, return_exceptions=True)

                stack.push_async_callback(cancel_watch)
                for room in rooms:
                    ids[room] = await self.wait_recording(url, room)
            if mode == "baseline":
                receiver = await self.start_receiver(url, rooms[0])
                stack.push_async_callback(receiver.stop)
                join_s = float((await receiver.expect("ready", 40))["join_s"])
            await asyncio.sleep(options.warmup_s)

            clients = [*publishers, *([receiver] if receiver else [])]
            client_ps = [psutil.Process(c.pid) for c in clients]
            me = psutil.Process()
            t0 = time.time()
            tree0 = tree_cpu(server_ps)
            clients0 = [c.cpu_s() for c in clients]
            me0 = sum(me.cpu_times()[:2])
            psutil.cpu_percent(None)
            server_rss, ffmpeg_rss, receiver_rss = [rss_mb(server_ps)], [0.0], [0.0]
            while (left := t0 + options.seconds - time.time()) > 0:
                await asyncio.sleep(min(1.0, left))
                server_rss.append(rss_mb(server_ps))
                ffmpeg_rss.append(rss_mb(server_ps, "ffmpeg"))
                if receiver is not None:
                    receiver_rss.append(rss_mb(client_ps[-1]))
            t1 = time.time()
            machine = psutil.cpu_percent(None) / 100 * NCPU
            tree1 = tree_cpu(server_ps)
            clients1 = [c.cpu_s() for c in clients]
            me1 = sum(me.cpu_times()[:2])
            window = t1 - t0
            delta = {name: v / window * 100 for name, v in tree_delta(tree0, tree1).items()}
            client_pct = [(b - a) / window * 100 for a, b in zip(clients0, clients1, strict=True)]
            ours = sum(delta.values()) + sum(client_pct) + (me1 - me0) / window * 100

            stop_at: dict[str, float] = {}
            finalize: dict[str, float] = {}
            objects: dict[str, dict[str, int]] = {}
            manifests: dict[str, dict[str, Any]] = {}
            if record:
                for room in rooms:
                    stop_at[room] = time.time()
                    await self.api("POST", f"{url}/api/rooms/{room}/recording",
                                   {"action": "stop"})
                bucket = await asyncio.to_thread(self._bucket, server_ps, data_dir)
                deadline = time.monotonic() + 120
                while len(finalize) < k and time.monotonic() < deadline:
                    keys = await asyncio.to_thread(_list, bucket)
                    for room in rooms:
                        key = f"lessons/{ids[room]}/manifest.json"
                        if room not in finalize and key in keys:
                            finalize[room] = time.time() - stop_at[room]
                    await asyncio.sleep(0.25)
                if len(finalize) < k:
                    errors.append(f"only {len(finalize)} of {k} manifests within 120 s")
                text = await self.api("GET", f"{url}/metrics")
                lag = parse_histogram(text, LAG_METRIC)
                metrics = counters(text, "classcast_recorder_")
                for room in rooms:
                    objects[room], manifests[room] = await asyncio.to_thread(
                        self._download, bucket, ids[room], self.run_dir / ids[room])
        # every child stopped: the publishers wrote their send logs
        sends = [await p.result() for p in publishers]
        run = Run(mode, k, window, server_cpu_pct=delta["own"],
                  ffmpeg_cpu_pct=delta.get("ffmpeg", 0.0), weed_cpu_pct=delta.get("weed", 0.0),
                  other_children_cpu_pct=sum(v for n, v in delta.items()
                                             if n not in ("own", "ffmpeg", "weed")),
                  publishers_cpu_pct=sum(client_pct[:k]),
                  receiver_cpu_pct=sum(client_pct[k:]), machine_busy_cores=machine,
                  other_load_cores=max(0.0, machine - ours / 100),
                  server_rss_mb=max(server_rss), ffmpeg_rss_mb=max(ffmpeg_rss),
                  receiver_rss_mb=max(receiver_rss), lag=lag,
                  watch_lags=watch.lags() if watch else [], metrics=metrics, errors=errors)
        for room, log in zip(rooms, sends, strict=True):
            if room in manifests:
                run.archives.append(await asyncio.to_thread(
                    self._compare, room, log, objects[room], manifests[room],
                    self.run_dir / ids[room], stop_at[room], finalize.get(room, float("nan"))))
        if receiver is not None:
            run.baseline = await self._baseline(receiver, sends[0], t0, t1)
            run.baseline.join_s = join_s
        return run

    # bucket -----------------------------------------------------------------------------------
    def _bucket(self, server: psutil.Process, data_dir: Path) -> Minio:
        """A client of the server's embedded S3 (its port from weed's command line)."""
        port = None
        for child in server.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                for arg in child.cmdline():
                    if arg.startswith("-s3.port="):
                        port = int(arg.split("=", 1)[1])
        if port is None:
            raise BenchError("found no embedded S3 server (weed) under the server process")
        secret = (data_dir / "s3-secret").read_text(encoding="ascii").strip()
        return Minio(f"{LOOPBACK}:{port}", access_key=S3_ACCESS_KEY, secret_key=secret,
                     secure=False, region="us-east-1")

    @staticmethod
    def _download(bucket: Minio, recording_id: str,
                  directory: Path) -> tuple[dict[str, int], dict[str, Any]]:
        directory.mkdir(parents=True, exist_ok=True)
        sizes: dict[str, int] = {}
        prefix = f"lessons/{recording_id}/"
        for item in bucket.list_objects(BUCKET, prefix, recursive=True):
            assert item.object_name is not None
            name = item.object_name[len(prefix):]
            bucket.fget_object(BUCKET, item.object_name, str(directory / name))
            sizes[name] = int(item.size or 0)
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        return sizes, manifest

    def _compare(self, room: str, log: dict[str, Any], sizes: dict[str, int],
                 manifest: dict[str, Any], directory: Path, stop_at: float,
                 finalize_s: float) -> Archive:
        text = (directory / "index.m3u8").read_text(encoding="utf-8")
        playlist = hls.parse(text)
        video, audio, _codec = read_back(directory, text)
        sent = sent_frames(self.clip, log["sends"])
        start, matched, unmatched, missing, tail = match(
            [nal_units_key(nals) for nals in video], sent, stop_at)
        span = [f for f in sent[max(start, 0):] if f.t < stop_at] if start >= 0 else []
        audio_frames, audio_bytes = audio_sent(
            self.clip, log["audio_sends"], span[0].t if span else stop_at, stop_at)
        init = sizes.get(playlist.map_uri or "", 0)
        segment_bytes = sum(sizes.get(s.uri, 0) for s in playlist.segments)
        listed = {playlist.map_uri, *(s.uri for s in playlist.segments)}
        return Archive(
            room=room, id=str(manifest["id"]), status=str(manifest["status"]),
            segments=len(playlist.segments), duration_s=float(manifest["duration_s"]),
            manifest_bytes=int(manifest["bytes"]), init_bytes=init, segment_bytes=segment_bytes,
            other_bytes={n: s for n, s in sizes.items() if n not in listed},
            video_frames=len(video), audio_frames=len(audio),
            video_nal_bytes=sum(len(n) for nals in video for n in nals),
            audio_bytes=sum(audio), matched_frames=matched, unmatched_frames=unmatched,
            missing_frames=missing, tail_frames=tail, sent_video_frames=len(span),
            sent_video_nal_bytes=sum(f.nal_bytes for f in span),
            sent_video_annexb_bytes=sum(f.annexb_bytes for f in span),
            sent_audio_frames=audio_frames, sent_audio_bytes=audio_bytes, finalize_s=finalize_s)

    async def _baseline(self, receiver: Child, log: dict[str, Any], t0: float,
                        t1: float) -> BaselineResult:
        data = await receiver.result()
        mp4 = self.run_dir / f"{receiver.name}.mp4"
        frames, audio_frames, duration, codec = await asyncio.to_thread(read_mp4, mp4)
        size = (await asyncio.to_thread(mp4.stat)).st_size
        taken = [t for t in data["video"] if t0 <= t <= t1]
        taken_audio = [t for t in data["audio"] if t0 <= t <= t1]
        first = data["video"][0] if data["video"] else data["stop_at"]
        sent = [f for f in sent_frames(self.clip, log["sends"])
                if first - 1 / FPS <= f.t < data["stop_at"]]
        _, audio_bytes = audio_sent(self.clip, log["audio_sends"], first, data["stop_at"])
        return BaselineResult(
            join_s=0.0, window_fps=len(taken) / (t1 - t0),
            window_audio_fps=len(taken_audio) / (t1 - t0), backlog_frames=int(data["backlog"]),
            decoder_backlog=int(data["decoder_backlog"]), stop_s=float(data["stop_s"]),
            file_bytes=size, file_video_frames=frames, file_audio_frames=audio_frames,
            file_duration_s=duration, video_codec=codec,
            video_kbps=size * 8 / max(duration, 1e-9) / 1000,
            sent_video_frames=len(sent),
            sent_bytes=sum(f.nal_bytes for f in sent) + audio_bytes)


def _list(bucket: Minio) -> set[str]:
    return {o.object_name for o in bucket.list_objects(BUCKET, "lessons/", recursive=True)
            if o.object_name is not None}


# --- reporting --------------------------------------------------------------------------------
def fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}{suffix}"


@dataclass(frozen=True)
class CpuRow:
    k: int
    off: Run
    on: Run

    @property
    def attributable_pct(self) -> float:
        return self.on.recording_cpu_pct - self.off.server_cpu_pct

    @property
    def per_recording_pct(self) -> float:
        return self.attributable_pct / self.k


def pairs(runs: list[Run]) -> list[CpuRow]:
    off = {r.k: r for r in runs if r.mode == "off"}
    return [CpuRow(r.k, off[r.k], r) for r in runs if r.mode == "on" and r.k in off]


def cpu_table(rows: list[CpuRow]) -> str:
    head = ("| K | server CPU %, recording off | server CPU %, on | ffmpeg CPU %, on | "
            "recording CPU % (all K) | **per recording %** | of which ffmpeg % | "
            "weed CPU % off / on | server RSS MB off / on | ffmpeg RSS MB | "
            "publishers CPU % | other load (cores) off / on |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r.k} | {r.off.server_cpu_pct:.1f} | {r.on.server_cpu_pct:.1f} | "
            f"{r.on.ffmpeg_cpu_pct:.1f} | {r.attributable_pct:.1f} | "
            f"**{r.per_recording_pct:.2f}** | {r.on.ffmpeg_cpu_pct / r.k:.2f} | "
            f"{r.off.weed_cpu_pct:.1f} / {r.on.weed_cpu_pct:.1f} | "
            f"{r.off.server_rss_mb:.0f} / {r.on.server_rss_mb:.0f} | "
            f"{r.on.ffmpeg_rss_mb:.0f} | {r.on.publishers_cpu_pct:.0f} | "
            f"{r.off.other_load_cores:.2f} / {r.on.other_load_cores:.2f} |")
    return "\n".join(lines)


def archive_table(runs: list[Run]) -> str:
    head = ("| K | segments | upload lag p50 / p95 s (server histogram) | uploads <= 3 s | "
            "lag p50 / p95 / max s (spool watch) | sent MB (H264 NAL + Opus) | "
            "stored MB (init + segments) | **stored / sent** | video frames stored "
            "byte-identical / sent | frames lost: gaps / tail | stop -> manifest s (max) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for run in runs:
        if run.mode != "on":
            continue
        a = run.archives
        lag = run.lag or Histogram()
        share = lag.share_le(TARGET_LAG_P95_S)
        watch = run.watch_lags
        sent = sum(x.sent_bytes for x in a)
        stored = sum(x.stored_bytes for x in a)
        gaps = sum(x.missing_frames for x in a)
        tail = sum(x.tail_frames for x in a)
        unmatched = sum(x.unmatched_frames for x in a)
        lines.append(
            f"| {run.k} | {sum(x.segments for x in a)} | {fmt(lag.quantile(0.5), 2)} / "
            f"{fmt(lag.quantile(0.95), 2)} (n = {lag.count:.0f}) | "
            f"{fmt(None if share is None else share * 100, 1, ' %')} | "
            f"{fmt(percentile(watch, 50), 2)} / {fmt(percentile(watch, 95), 2)} / "
            f"{fmt(max(watch) if watch else None, 2)} (n = {len(watch)}) | {sent / 1e6:.2f} | "
            f"{stored / 1e6:.2f} | **{stored / max(sent, 1):.4f}** | "
            f"{sum(x.matched_frames for x in a)} / {sum(x.sent_video_frames for x in a)}"
            + (f" ({unmatched} unmatched)" if unmatched else "") + f" | {gaps} / {tail} | "
            f"{fmt(max((x.finalize_s for x in a), default=None), 1)} |")
    return "\n".join(lines)


def bytes_detail(runs: list[Run]) -> list[str]:
    out = []
    for run in runs:
        if run.mode != "on" or not run.archives:
            continue
        a = run.archives
        sent_v = sum(x.sent_video_nal_bytes for x in a)
        sent_annexb = sum(x.sent_video_annexb_bytes for x in a)
        sent_a = sum(x.sent_audio_bytes for x in a)
        got_v = sum(x.video_nal_bytes for x in a)
        got_a = sum(x.audio_bytes for x in a)
        stored = sum(x.stored_bytes for x in a)
        manifest = sum(x.manifest_bytes for x in a)
        other: dict[str, int] = {}
        for x in a:
            for name, size in x.other_bytes.items():
                other[name] = other.get(name, 0) + size
        out.append(
            f"- K = {run.k}: sent H264 {sent_v:,} B of NAL units ({sent_annexb:,} B as Annex-B "
            f"with start codes) + Opus {sent_a:,} B ({sum(x.sent_audio_frames for x in a)} "
            f"packets); demuxed back from the bucket H264 {got_v:,} B + Opus {got_a:,} B "
            f"({sum(x.audio_frames for x in a)} packets); stored init + segments "
            f"{stored:,} B (manifests say {manifest:,} B), container overhead "
            f"{stored - got_v - got_a:,} B = {(stored - got_v - got_a) / max(got_v + got_a, 1):.2%}"
            f"; besides: " + ", ".join(f"{n} {s:,} B" for n, s in sorted(other.items())))
    return out


def baseline_report(runs: list[Run], rows: list[CpuRow]) -> list[str]:
    base = next((r for r in runs if r.mode == "baseline" and r.baseline), None)
    off = next((r for r in runs if r.mode == "off" and r.k == 1), None)
    ours = next((r for r in rows if r.k == 1), None)
    if base is None or base.baseline is None or off is None:
        return []
    b = base.baseline
    forwarding = base.server_cpu_pct - off.server_cpu_pct
    total = base.receiver_cpu_pct + forwarding
    head = ("| recorder (K = 1) | CPU % of a core | video kept | output | "
            "stored / sent | RSS MB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    if ours is not None:
        a = ours.on.archives
        sent = sum(x.sent_bytes for x in a)
        stored = sum(x.stored_bytes for x in a)
        kbps = stored * 8 / max(sum(x.duration_s for x in a), 1e-9) / 1000
        lines.append(
            f"| ClassCast: relay subscriber -> ffmpeg -c copy -> HLS fMP4 -> S3 | "
            f"{ours.per_recording_pct:.2f} (ffmpeg {ours.on.ffmpeg_cpu_pct:.2f}) | "
            f"{sum(x.matched_frames for x in a)} of {sum(x.sent_video_frames for x in a)} "
            f"frames, byte-identical | H264 as sent, {kbps:.0f} kbps with audio | "
            f"{stored / max(sent, 1):.4f} | "
            f"{ours.on.server_rss_mb - ours.off.server_rss_mb:+.0f} server, "
            f"{ours.on.ffmpeg_rss_mb:.0f} ffmpeg |")
    lines.append(
        f"| aiortc MediaRecorder: decode -> libx264 + AAC -> MP4 | {total:.1f} (receiver "
        f"{base.receiver_cpu_pct:.1f} + relay forwarding {forwarding:.1f}) | "
        f"{b.file_video_frames} of {b.sent_video_frames} frames, re-encoded ({b.window_fps:.1f}"
        f" fps in the window; {b.backlog_frames} decoded / {b.decoder_backlog} undecoded "
        f"frames queued at the stop) | {b.video_codec}, {b.video_kbps:.0f} kbps with audio, "
        f"{b.file_duration_s:.1f} s | {b.file_bytes / max(b.sent_bytes, 1):.4f} | "
        f"{base.receiver_rss_mb:.0f} receiver |")
    if ours is not None and ours.per_recording_pct > 0:
        lines += ["", f"MediaRecorder ÷ ClassCast, CPU per recording: "
                      f"{total / ours.per_recording_pct:.1f}x (receiver process alone: "
                      f"{base.receiver_cpu_pct / ours.per_recording_pct:.1f}x)."]
    return lines


def targets(runs: list[Run], rows: list[CpuRow]) -> list[str]:
    out: list[str] = []

    def check(ok: bool | None, text: str) -> None:
        out.append(f"- [{'n/a' if ok is None else 'PASS' if ok else 'FAIL'}] {text}")

    if rows:
        worst = max(rows, key=lambda r: r.per_recording_pct)
        check(worst.per_recording_pct <= TARGET_CPU_PER_RECORDING,
              f"<= {TARGET_CPU_PER_RECORDING:.0f} % of a core per recording, ffmpeg included: "
              + ", ".join(f"K = {r.k}: {r.per_recording_pct:.2f} %" for r in rows)
              + f" (worst K = {worst.k})")
    recorded = [r for r in runs if r.mode == "on"]
    lags = [(r.k, r.lag.quantile(0.95) if r.lag else None,
             r.lag.share_le(TARGET_LAG_P95_S) if r.lag else None,
             percentile(r.watch_lags, 95)) for r in recorded]
    if lags:
        check(all(share is not None and share >= 0.95 for _k, _p, share, _w in lags)
              and all(w is not None and w <= TARGET_LAG_P95_S for _k, _p, _s, w in lags),
              f"upload lag p95 <= {TARGET_LAG_P95_S:.0f} s: " + ", ".join(
                  f"K = {k}: {fmt(None if s is None else s * 100, 1)} % of uploads <= 3 s "
                  f"(histogram p95 {fmt(p, 2)} s, spool watch p95 {fmt(w, 2)} s)"
                  for k, p, s, w in lags))
        archives = [a for r in recorded for a in r.archives]
        lost = sum(a.missing_frames + a.tail_frames + a.unmatched_frames for a in archives)
        payload_equal = all(a.video_nal_bytes == a.sent_video_nal_bytes
                            and a.audio_bytes == a.sent_audio_bytes for a in archives)
        sent = sum(a.sent_bytes for a in archives)
        stored = sum(a.stored_bytes for a in archives)
        payload = sum(a.payload_bytes for a in archives)
        overhead = (stored - payload) / max(payload, 1)
        check(bool(archives) and lost == 0 and payload_equal,
              f"bytes stored = bytes received: {len(archives)} recordings, "
              f"{sum(a.matched_frames for a in archives)} of "
              f"{sum(a.sent_video_frames for a in archives)} video frames sent while recording "
              f"stored byte-identical, {lost} lost, Opus "
              f"{sum(a.audio_bytes for a in archives):,} of "
              f"{sum(a.sent_audio_bytes for a in archives):,} B; the bucket holds "
              f"{stored / max(sent, 1):.4f}x the payload sent (+{overhead:.2%} fMP4 container "
              f"on what it stored, minus what was lost)")
    return out


def header(options: Options, clip: Clip) -> str:
    return "\n".join([
        f"Machine: {NCPU} cores ({platform.processor() or platform.machine()}), Python "
        f"{platform.python_version()}, aiortc {aiortc.__version__}, PyAV {av.__version__}.",
        "Server: `classcast serve`, CLASSCAST_ICE_ADDRESSES=127.0.0.1, no S3 endpoint (its "
        "embedded SeaweedFS `weed`), recorder settings at their defaults (2 s segments).",
        f"Each recording: its own room and publisher process; pre-encoded {WIDTH}x{HEIGHT} "
        f"{FPS} fps H264 constrained baseline {clip.video_kbps:.0f} kbps, keyframe every "
        f"{KEYINT} frames, + Opus {AUDIO_KBPS} kbps, sent without encoding.",
        f"Windows: {options.warmup_s:.0f} s after every recording runs, then "
        f"{options.seconds:.0f} s measured; a fresh server per run. CPU is % of one core; "
        "other load is cores busy minus the benchmark's own processes.",
    ])


async def run(options: Options) -> int:
    run_dir = Path(tempfile.mkdtemp(prefix="classcast-recbench-"))
    clip_path = await ensure_clip(HERE / ".cache")
    clip = await asyncio.to_thread(load_clip, clip_path)
    bench = RecorderBench(options, run_dir, clip_path, clip)
    started = time.monotonic()

    def progress(text: str) -> None:
        print(f"[{time.monotonic() - started:5.0f} s] {text}", file=sys.stderr, flush=True)

    async def quiet() -> None:
        deadline = time.monotonic() + options.wait_quiet_s
        while options.wait_quiet_s > 0:
            psutil.cpu_percent(None)
            await asyncio.sleep(2.0)
            busy = psutil.cpu_percent(None) / 100 * NCPU
            if busy < NOISE_CORES or time.monotonic() > deadline:
                return
            progress(f"  waiting for a quiet machine: {busy:.2f} cores busy")

    plan = [(mode, k) for k in options.ks for mode in ("off", "on")]
    if options.baseline:
        if 1 not in options.ks:
            plan.insert(0, ("off", 1))
        plan.insert(plan.index(("off", 1)) + 1, ("baseline", 1))
    runs: list[Run] = []
    try:
        for mode, k in plan:
            await quiet()
            progress(f"K = {k}, {'MediaRecorder baseline' if mode == 'baseline' else mode}")
            result = await bench.measure(mode, k)
            runs.append(result)
            progress(f"  server {result.server_cpu_pct:.1f} %, ffmpeg "
                     f"{result.ffmpeg_cpu_pct:.1f} %, receiver {result.receiver_cpu_pct:.1f} %, "
                     f"weed {result.weed_cpu_pct:.1f} %, other load "
                     f"{result.other_load_cores:.2f} cores")
    except BaseException:
        print(f"run directory kept for inspection: {run_dir}", file=sys.stderr)
        raise

    rows = pairs(runs)
    print(f"## Recorder benchmark ({time.strftime('%Y-%m-%d %H:%M')}, "
          f"{time.monotonic() - started:.0f} s)\n")
    print(header(options, clip) + "\n")
    print("CPU (recording CPU = server + ffmpeg with recording on - server with it off):\n")
    print(cpu_table(rows) + "\n")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(f"Marginal CPU per added recording, K = {first.k} -> {last.k}: "
              f"{(last.attributable_pct - first.attributable_pct) / (last.k - first.k):.2f} %"
              f" of a core.\n")
    print("Archive (every recording stopped through the API, then read back from the "
          "bucket):\n")
    print(archive_table(runs) + "\n")
    print("\n".join(bytes_detail(runs)))
    baseline = baseline_report(runs, rows)
    if baseline:
        print("\nBaseline, K = 1:\n")
        print("\n".join(baseline))
    errors = [f"{r.mode} K = {r.k}: {e}" for r in runs for e in r.errors]
    if errors:
        print("\nErrors:\n\n" + "\n".join(f"- {e}" for e in errors))
    noisy = [r for r in runs if r.other_load_cores > NOISE_CORES]
    if noisy:
        print(f"\nWarning: other processes kept up to "
              f"{max(r.other_load_cores for r in noisy):.2f} cores busy during "
              f"{len(noisy)} of {len(runs)} windows; server CPU is the server's own time, "
              "but rerun on a quiet machine to trust lags.")
    failures = {name: value for r in runs for name, value in r.metrics.items()
                if "fail" in name and value}
    if failures:
        print(f"\nWarning: upload failures: {failures}")
    print("\nTargets:\n")
    print("\n".join(targets(runs, rows)))
    if options.json_out is not None:
        await asyncio.to_thread(options.json_out.write_text,
                                json.dumps([asdict(r) for r in runs], indent=1))
    if options.keep:
        print(f"\n(run directory: {run_dir})", file=sys.stderr)
    else:
        await asyncio.to_thread(shutil.rmtree, run_dir, True)
    return 0


# --- entry point ------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["baseline-receiver"]:
        parser = argparse.ArgumentParser(description="aiortc MediaRecorder playing a room")
        parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
        parser.add_argument("--url", required=True)
        parser.add_argument("--token", required=True)
        parser.add_argument("--mp4", required=True)
        parser.add_argument("--out", required=True)
        receiver_args = parser.parse_args(args[1:])
        run_loop(baseline_receiver(receiver_args), receiver_args.loop)
        return 0
    options = parse_options(args)
    return run_loop(run(options), options.loop)


def run_loop(coro: Coroutine[Any, Any, T], loop: str) -> T:
    if loop == "uvloop":
        import uvloop
        return uvloop.run(coro)
    return asyncio.run(coro)


if __name__ == "__main__":
    sys.exit(main())
