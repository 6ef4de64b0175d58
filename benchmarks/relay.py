"""ClassCast relay benchmark: encoded passthrough vs. a naive decode/re-encode relay.

Run by hand (not a test; every process talks over loopback only; ~7 minutes, `--quick` ~2):

    .venv/bin/python benchmarks/relay.py [--quick] [--n 1,5,10] [--json results.json]

One publisher sends a pre-encoded 720p30 ~1.5 Mbps H264 + Opus clip (no encoder runs) over WHIP
to the server under test, in its own process; N subscribers in one or more other processes
play it over WHEP without decoding (they only reassemble frames). For each N and each server
(ClassCast, and the naive baseline of `servers.py`) it measures, over a steady window after a
warm-up:

- server CPU (user + system time of the server process, % of one core), total and per
  subscriber; "marginal" subtracts the same server's cost with the publisher alone (N = 0);
- delivered video fps: frames each subscriber completed in the window; the minimum is shown;
- join time: from starting the WHEP request (offer creation included) to the subscriber's
  first complete video frame;
- relay-added latency: subscriber arrival time minus the publisher's send time of the same
  frame (ClassCast: matched by a hash of the frame's NAL units; baseline: by RTP timestamp).
  It includes both loopback hops, SRTP, and both client event loops, not just the relay;
- server RSS (largest sample in the window), and the CPU of the client processes and the
  whole machine, so a saturated machine is visible.

Then a stalled-subscriber scenario: healthy classrooms plus one whose process is SIGSTOPped
after it connected and one that completes the WHEP POST but never connects ICE; the server's
RSS is sampled over time.

Prints Markdown tables (paste them into benchmarks/README.md) and checks the issue's targets.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # see benchmarks/__init__.py

import argparse
import asyncio
import bisect
import contextlib
import importlib.util
import itertools
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, Any

import aiohttp
import aiortc
import psutil
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.clip import AUDIO_KBPS, FPS, HEIGHT, KEYINT, WIDTH, ensure_clip, load_clip
from server.tokens import Role, TokenIssuer

HERE = Path(__file__).resolve().parent
ROOM = "bench"
LOOPBACK = "127.0.0.1"
NCPU = psutil.cpu_count() or 1

# The targets.
TARGET_FPS, TARGET_FPS_N = 29.0, 20
TARGET_CPU_PER_SUB = 1.5
TARGET_RATIO, TARGET_RATIO_N = 10.0, 5
TARGET_JOIN_P50_MS = 500.0
TARGET_LATENCY_P50_MS = 20.0

NOISE_CORES = 0.25

SERVER_NAMES = {"classcast": "ClassCast", "classcast+rec": "ClassCast + recording",
                "baseline": "baseline"}


class BenchError(Exception):
    pass


# --- options ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    ns: tuple[int, ...]
    baseline_ns: tuple[int, ...] | None  # None: automatic (see `baseline_plan`)
    baseline: bool
    recording_n: int  # 0: no run with recording on
    idle: bool
    warmup_s: float
    window_s: float
    stagger_s: float
    stall_s: float
    stall_healthy: int
    per_process: int
    server: str
    loop: str
    json_out: Path | None
    keep: bool
    wait_quiet_s: float
    server_env: tuple[tuple[str, str], ...]


def parse_ns(text: str) -> tuple[int, ...]:
    try:
        ns = tuple(sorted({int(p) for p in text.split(",") if p.strip()}))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from exc
    if not ns or min(ns) < 1:
        raise argparse.ArgumentTypeError("subscriber counts are positive numbers, e.g. 1,5,10")
    return ns


def parse_env(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("CLASSCAST_"):
        raise SystemExit(f"--server-env wants CLASSCAST_NAME=VALUE, not {text!r}")
    return name, value


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="N = 1,5, shorter windows and stall scenario (~2 minutes)")
    parser.add_argument("--n", type=parse_ns, help="subscriber counts (default 1,5,10,20,40)")
    parser.add_argument("--baseline-n", type=parse_ns,
                        help="subscriber counts for the baseline (default: every N <= 5, then "
                             "larger N only while the machine is not saturated)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline")
    parser.add_argument("--recording-n", type=int,
                        help="N of one extra ClassCast run with recording on, as shipped "
                             "(default 20, --quick 5; 0: skip). Every other run has "
                             "CLASSCAST_RECORDER_AUTO_START=false: the relay alone")
    parser.add_argument("--no-idle", action="store_true",
                        help="skip the N = 0 (publisher only) runs")
    parser.add_argument("--warmup", type=float, help="seconds after all joined (default 5)")
    parser.add_argument("--window", type=float, help="measured seconds (default 15)")
    parser.add_argument("--stagger", type=float, default=0.1,
                        help="seconds between subscriber joins (default 0.1)")
    parser.add_argument("--stall", type=float,
                        help="seconds of the stalled-subscriber scenario (default 60; 0: skip)")
    parser.add_argument("--stall-healthy", type=int, default=5,
                        help="healthy subscribers in the stall scenario (default 5)")
    parser.add_argument("--per-process", type=int, default=20,
                        help="subscribers per client process (default 20)")
    parser.add_argument("--server", choices=("auto", "cli", "app"), default="auto",
                        help="start ClassCast with the `classcast serve` CLI, or create_app "
                             "under web.run_app (auto: the CLI if it is installed)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="event loop of the benchmark's own processes and of the servers "
                             "it launches itself (default uvloop)")
    parser.add_argument("--wait-quiet", type=float, default=30.0,
                        help="before each run, wait up to this many seconds for other "
                             "processes to leave the machine idle (default 30; 0: don't)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra CLASSCAST_* setting for the ClassCast server, e.g. "
                             "CLASSCAST_RELAY_KEYFRAME_INTERVAL_S=0.25 (repeatable)")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs)")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    return Options(
        ns=args.n or ((1, 5) if quick else (1, 5, 10, 20, 40)),
        baseline_ns=args.baseline_n,
        baseline=not args.no_baseline,
        recording_n=args.recording_n if args.recording_n is not None else (5 if quick else 20),
        idle=not args.no_idle,
        warmup_s=args.warmup if args.warmup is not None else (3.0 if quick else 5.0),
        window_s=args.window if args.window is not None else (6.0 if quick else 15.0),
        stagger_s=args.stagger,
        stall_s=args.stall if args.stall is not None else (30.0 if quick else 60.0),
        stall_healthy=args.stall_healthy,
        per_process=max(1, args.per_process),
        server=args.server,
        loop=args.loop,
        json_out=args.json,
        keep=bool(args.keep),
        wait_quiet_s=args.wait_quiet,
        server_env=tuple(parse_env(e) for e in args.server_env),
    )


# --- child processes --------------------------------------------------------------------------
class Child:
    """A process of the benchmark: JSON-line events on stdout, stderr to a log file."""

    def __init__(self, name: str, argv: list[str], run_dir: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = run_dir / f"{name}.log"
        self.out_path = run_dir / f"{name}.json"
        self._process: asyncio.subprocess.Process | None = None
        self._psutil: psutil.Process | None = None
        self._log: IO[bytes] | None = None
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def start(self) -> None:
        self._log = await asyncio.to_thread(self.log_path.open, "wb")
        self._process = await asyncio.create_subprocess_exec(
            *self.argv, stdout=asyncio.subprocess.PIPE, stderr=self._log, env=self.env)
        self._psutil = psutil.Process(self._process.pid)
        self._reader = asyncio.create_task(self._read(), name=f"read-{self.name}")

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        while line := await self._process.stdout.readline():
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict):
                    await self._events.put(message)

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        exited = asyncio.create_task(self._process.wait())
        try:
            while True:
                remaining = deadline - time.monotonic()
                got = asyncio.create_task(self._events.get())
                done, _ = await asyncio.wait({got, exited}, timeout=max(remaining, 0),
                                             return_when=asyncio.FIRST_COMPLETED)
                if got not in done:
                    got.cancel()
                    await asyncio.gather(got, return_exceptions=True)
                    why = "exited" if exited in done else f"sent no {event!r} in {timeout:.0f} s"
                    raise BenchError(f"{self.name} {why}; see {self.log_path}:\n"
                                     f"{await self.log_tail()}")
                message = got.result()
                if message.get("event") == event:
                    return message
        finally:
            exited.cancel()
            await asyncio.gather(exited, return_exceptions=True)

    async def log_tail(self, lines: int = 15) -> str:
        def tail() -> str:
            try:
                return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
            except OSError:
                return ""
        return await asyncio.to_thread(tail)

    def cpu_s(self) -> float:
        assert self._psutil is not None
        times = self._psutil.cpu_times()
        return float(times.user + times.system)

    def descendants_cpu_s(self) -> dict[int, tuple[str, float]]:
        """{pid: (name, CPU seconds)} of the process's descendants."""
        assert self._psutil is not None
        out: dict[int, tuple[str, float]] = {}
        with contextlib.suppress(psutil.Error):
            for p in self._psutil.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    times = p.cpu_times()
                    out[p.pid] = (p.name(), float(times.user + times.system))
        return out

    def rss_mb(self) -> float:
        assert self._psutil is not None
        return float(self._psutil.memory_info().rss) / 2**20

    def signal(self, sig: signal.Signals) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(sig)

    async def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the children then close their sessions and write results), wait, kill."""
        process = self._process
        if process is not None:
            if process.returncode is None:
                self.signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), timeout)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
        if self._reader is not None:
            await self._reader
            self._reader = None
        if self._log is not None:
            await asyncio.to_thread(self._log.close)
            self._log = None

    async def result(self) -> dict[str, Any]:
        try:
            text = await asyncio.to_thread(self.out_path.read_text)
        except FileNotFoundError as exc:
            raise BenchError(f"{self.name} wrote no results; see {self.log_path}:\n"
                             f"{await self.log_tail()}") from exc
        data: dict[str, Any] = json.loads(text)
        return data


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


# --- statistics -------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def metric_samples(text: str, *names: str) -> dict[str, float]:
    """Selected Prometheus samples as {'name{label=value,...}': value}."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}"] = float(sample.value)
    return out


DETAIL_METRICS = ("classcast_relay_dropped_frames_total",
                  "classcast_relay_keyframe_requests_total",
                  "classcast_relay_sessions_closed_total",
                  "classcast_relay_level_changes_total")


# --- results ----------------------------------------------------------------------------------
@dataclass
class Row:
    server: str
    n: int
    window_s: float
    server_cpu_pct: float
    server_children_cpu_pct: float  # e.g. the recorder's ffmpeg, the embedded S3 server
    server_rss_mb: float
    publisher_cpu_pct: float
    clients_cpu_pct: float
    machine_busy_cores: float
    other_load_cores: float  # machine busy minus the benchmark's own processes
    server_children: list[str] = field(default_factory=list)
    joined: int = 0
    errors: list[str] = field(default_factory=list)
    fps: list[float] = field(default_factory=list)
    join_ms: list[float] = field(default_factory=list)
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_frames: int = 0
    latency_unmatched: int = 0
    keyframes_on_request: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    marginal_cpu_pct: float | None = None  # per subscriber, above the N = 0 run

    @property
    def cpu_per_sub(self) -> float | None:
        return self.server_cpu_pct / self.n if self.n else None

    @property
    def fps_min(self) -> float | None:
        return min(self.fps) if self.fps else None

    @property
    def fps_mean(self) -> float | None:
        return sum(self.fps) / len(self.fps) if self.fps else None

    @property
    def frames_per_s(self) -> float:
        return sum(self.fps)

    @property
    def saturated(self) -> bool:
        fps_min = self.fps_min
        return self.machine_busy_cores >= 0.9 * NCPU or (fps_min is not None
                                                         and fps_min < TARGET_FPS)


@dataclass
class StallSample:
    t_s: float
    rss_mb: float
    sessions: int
    healthy_fps_min: float | None = None


@dataclass
class StallResult:
    healthy: int
    samples: list[StallSample]
    rss_before_mb: float
    server_cpu_pct: float
    metrics: dict[str, float]
    healthy_fps_min: float | None


def latencies_by_key(pub: dict[str, Any], subs: list[dict[str, Any]], t0: float,
                     t1: float) -> tuple[list[float], int]:
    """ClassCast forwards frames unchanged: match each received frame to its latest send."""
    sends: dict[int, list[float]] = {}
    for key, _pts, t in pub["sends"]:
        sends.setdefault(key, []).append(t)
    out: list[float] = []
    unmatched = 0
    for sub in subs:
        for key, _ts, t in sub["video"]:
            if not t0 <= t <= t1:
                continue
            times = sends.get(key, [])
            i = bisect.bisect_right(times, t) - 1
            if i >= 0 and t - times[i] < 5.0:
                out.append((t - times[i]) * 1000)
            else:
                unmatched += 1
    return out, unmatched


def latencies_by_pts(pub: dict[str, Any], subs: list[dict[str, Any]], first_pts: dict[str, int],
                     t0: float, t1: float) -> tuple[list[float], int]:
    """The baseline re-encodes: a subscriber's RTP timestamp is the teacher's pts plus the pts
    of the first frame its encoder took (reported by the baseline server)."""
    sends = {pts: t for _key, pts, t in pub["sends"]}
    out: list[float] = []
    unmatched = 0
    for sub in subs:
        origin = first_pts.get(sub["session"])
        for _key, ts, t in sub["video"]:
            if not t0 <= t <= t1:
                continue
            sent = sends.get(origin + ts) if origin is not None else None
            if sent is not None and 0 <= t - sent < 5.0:
                out.append((t - sent) * 1000)
            else:
                unmatched += 1
    return out, unmatched


# --- the benchmark ----------------------------------------------------------------------------
class Bench:
    def __init__(self, options: Options, run_dir: Path, clip: Path) -> None:
        self.options = options
        self.run_dir = run_dir
        self.clip = clip
        self.secret = secrets.token_urlsafe(48)
        self.issuer = TokenIssuer(self.secret)
        self.python = sys.executable
        self.launch = self._launch_mode()
        self._counter = 0

    def _launch_mode(self) -> str:
        if self.options.server != "auto":
            return self.options.server
        return "cli" if importlib.util.find_spec("server.cli") is not None else "app"

    def describe_launch(self) -> str:
        if self.launch == "cli":
            return "`classcast serve` (the CLI; its own event loop choice)"
        why = ("--server app" if self.options.server == "app"
               else "no `classcast` CLI installed")
        return f"`create_app(settings)` under `web.run_app` on {self.options.loop} ({why})"

    def _name(self, stem: str) -> str:
        self._counter += 1
        return f"{self._counter:02d}-{stem}"

    # children -------------------------------------------------------------------------------
    async def start_server(self, kind: str, record: bool = False) -> tuple[Child, str]:
        port = free_port()
        data_dir = self.run_dir / self._name(f"{kind}-data")
        env = {**os.environ, "CLASSCAST_SECRET": self.secret, "CLASSCAST_HOST": LOOPBACK,
               "CLASSCAST_PORT": str(port), "CLASSCAST_DATA_DIR": str(data_dir),
               "CLASSCAST_ICE_ADDRESSES": LOOPBACK,
               "CLASSCAST_RECORDER_AUTO_START": "true" if record else "false",
               **dict(self.options.server_env)}
        if kind == "classcast" and self.launch == "cli":
            argv = [str(Path(self.python).with_name("classcast")), "serve"]
        elif kind == "classcast":
            argv = [self.python, str(HERE / "servers.py"), "classcast", "--loop",
                    self.options.loop]
        else:
            argv = [self.python, str(HERE / "servers.py"), "baseline", "--host", LOOPBACK,
                    "--port", str(port), "--ice-address", LOOPBACK, "--loop", self.options.loop]
        child = Child(self._name(f"server-{kind}"), argv, self.run_dir, env)
        await child.start()
        url = f"http://{LOOPBACK}:{port}"
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{url}/healthz") as response:
                        if response.status == 200:
                            return child, url
                if time.monotonic() > deadline:
                    await child.stop()
                    raise BenchError(f"{kind} server did not answer /healthz in 30 s; see "
                                     f"{child.log_path}:\n{await child.log_tail()}")
                await asyncio.sleep(0.2)

    async def start_publisher(self, url: str) -> Child:
        child = Child(self._name("publisher"), [
            self.python, str(HERE / "peers.py"), "--loop", self.options.loop, "publish",
            "--url", f"{url}/whip/{ROOM}", "--token", self.issuer.mint(Role.TEACHER, ROOM),
            "--clip", str(self.clip)], self.run_dir)
        child.argv += ["--out", str(child.out_path)]
        await child.start()
        return child

    async def start_subscribers(self, url: str, n: int, stem: str,
                                no_connect: bool = False) -> list[Child]:
        processes = -(-n // self.options.per_process)
        sizes = [n // processes + (1 if j < n % processes else 0) for j in range(processes)]
        join_timeout = 20 + n * self.options.stagger_s
        children = []
        for j, size in enumerate(sizes):
            child = Child(self._name(f"{stem}-{j}"), [
                self.python, str(HERE / "peers.py"), "--loop", self.options.loop, "subscribe",
                "--url", f"{url}/whep/{ROOM}", "--token", self.issuer.mint(Role.CLASSROOM, ROOM),
                "--n", str(size), "--offset", str(j * self.options.stagger_s),
                "--stagger", str(self.options.stagger_s * processes),
                "--join-timeout", str(join_timeout)], self.run_dir)
            child.argv += ["--out", str(child.out_path)]
            if no_connect:
                child.argv.append("--no-connect")
            children.append(child)
        for child in children:
            await child.start()
        return children

    async def get(self, url: str, admin: bool = False) -> str:
        headers = ({"Authorization": f"Bearer {self.issuer.mint(Role.ADMIN)}"} if admin
                   else {})
        async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
            return await response.text()

    # one (server, N) point --------------------------------------------------------------------
    async def measure(self, kind: str, n: int, record: bool = False) -> Row:
        options = self.options
        async with contextlib.AsyncExitStack() as stack:
            server, url = await self.start_server(kind, record)
            stack.push_async_callback(server.stop)
            publisher = await self.start_publisher(url)
            stack.push_async_callback(publisher.stop)
            await publisher.expect("ready", 30)
            subscribers = await self.start_subscribers(url, n, f"{kind}-n{n}") if n else []
            for child in subscribers:
                stack.push_async_callback(child.stop)
            readies = await asyncio.gather(*(c.expect("ready", 40 + n * options.stagger_s)
                                             for c in subscribers))
            await asyncio.sleep(options.warmup_s)

            clients = [publisher, *subscribers]
            t0 = time.time()
            cpu0 = [c.cpu_s() for c in (server, *clients)]
            descendants0 = server.descendants_cpu_s()
            psutil.cpu_percent(None)
            rss = [server.rss_mb()]
            while (left := t0 + options.window_s - time.time()) > 0:
                await asyncio.sleep(min(1.0, left))
                rss.append(server.rss_mb())
            t1 = time.time()
            machine = psutil.cpu_percent(None) / 100 * NCPU
            cpu1 = [c.cpu_s() for c in (server, *clients)]
            pct = [(b - a) / (t1 - t0) * 100 for a, b in zip(cpu0, cpu1, strict=True)]
            descendants1 = server.descendants_cpu_s()
            children_pct = sum(v - descendants0.get(pid, (name, 0.0))[1]
                               for pid, (name, v) in descendants1.items()) / (t1 - t0) * 100
            children = sorted({name for name, _ in descendants1.values()})

            metrics: dict[str, float] = {}
            first_pts: dict[str, int] = {}
            if kind.startswith("classcast"):
                metrics = metric_samples(await self.get(f"{url}/metrics"), *DETAIL_METRICS)
            else:
                first_pts = json.loads(await self.get(f"{url}/first-pts"))
        # every child stopped: subscribers closed their sessions and wrote their records
        pub = await publisher.result()
        subs = [s for child in subscribers for s in (await child.result())["subs"]]
        row = Row(kind + ("+rec" if record else ""), n, t1 - t0, server_cpu_pct=pct[0],
                  server_children_cpu_pct=children_pct, server_rss_mb=max(rss),
                  publisher_cpu_pct=pct[1], clients_cpu_pct=sum(pct[1:]),
                  machine_busy_cores=machine,
                  other_load_cores=max(0.0, machine - (sum(pct) + children_pct) / 100),
                  server_children=children, metrics=metrics,
                  keyframes_on_request=int(pub["keyframes_on_request"]))
        row.joined = sum(int(r["joined"]) for r in readies)
        row.errors = [e for r in readies for e in r["errors"]]
        for sub in subs:
            row.fps.append(sum(1 for _k, _ts, t in sub["video"] if t0 <= t <= t1) / (t1 - t0))
            if sub["join_s"] is not None:
                row.join_ms.append(sub["join_s"] * 1000)
        if n:
            latencies, row.latency_unmatched = (
                latencies_by_key(pub, subs, t0, t1) if kind.startswith("classcast")
                else latencies_by_pts(pub, subs, first_pts, t0, t1))
            row.latency_frames = len(latencies)
            row.latency_p50_ms = percentile(latencies, 50)
            row.latency_p95_ms = percentile(latencies, 95)
        return row

    # the stalled subscriber -------------------------------------------------------------------
    async def stall(self) -> StallResult:
        options = self.options
        interval = 2.0
        async with contextlib.AsyncExitStack() as stack:
            server, url = await self.start_server("classcast")
            stack.push_async_callback(server.stop)
            publisher = await self.start_publisher(url)
            stack.push_async_callback(publisher.stop)
            await publisher.expect("ready", 30)
            healthy = await self.start_subscribers(url, options.stall_healthy, "stall-healthy")
            stopped = await self.start_subscribers(url, 1, "stall-sigstop")
            posted = await self.start_subscribers(url, 1, "stall-noconnect", no_connect=True)
            for child in (*healthy, *stopped, *posted):
                stack.push_async_callback(child.stop)
            await asyncio.gather(*(c.expect("ready", 40) for c in (*healthy, *stopped,
                                                                     *posted)))
            stack.callback(stopped[0].signal, signal.SIGCONT)  # runs before its stop()
            await asyncio.sleep(options.warmup_s)
            rss_before = server.rss_mb()
            stopped[0].signal(signal.SIGSTOP)
            t0 = time.time()
            cpu0 = server.cpu_s()
            samples: list[StallSample] = []
            while True:
                health = json.loads(await self.get(f"{url}/healthz"))
                samples.append(StallSample(round(time.time() - t0, 1), server.rss_mb(),
                                           int(health.get("sessions", -1))))
                if time.time() - t0 >= options.stall_s:
                    break
                await asyncio.sleep(min(interval, t0 + options.stall_s - time.time()))
            t1 = time.time()
            cpu = (server.cpu_s() - cpu0) / (t1 - t0) * 100
            metrics = metric_samples(await self.get(f"{url}/metrics"), *DETAIL_METRICS)
        subs = [s for child in healthy for s in (await child.result())["subs"]]
        for before, sample in itertools.pairwise(samples):
            a, b = t0 + before.t_s, t0 + sample.t_s
            sample.healthy_fps_min = min(
                sum(1 for _k, _ts, t in sub["video"] if a < t <= b) / (b - a) for sub in subs)
        whole = [sum(1 for _k, _ts, t in sub["video"] if t0 <= t <= t1) / (t1 - t0)
                 for sub in subs]
        return StallResult(options.stall_healthy, samples, rss_before, cpu, metrics,
                           min(whole) if whole else None)


# --- planning and reporting -------------------------------------------------------------------
def baseline_plan(options: Options) -> tuple[int, ...]:
    if options.baseline_ns is not None:
        return options.baseline_ns
    return tuple(n for n in options.ns if n <= TARGET_RATIO_N)


def fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def table(rows: list[Row]) -> str:
    head = ("| server | N | server CPU % | children CPU % | CPU %/sub | marginal %/sub | "
            "fps min (mean) | join p50 / p95 ms | latency p50 / p95 ms | RSS MB | clients CPU % | "
            "machine busy | other load |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        fps = "n/a" if r.fps_min is None else f"{r.fps_min:.1f} ({r.fps_mean:.1f})"
        if r.n and r.joined < r.n:
            fps += f" [{r.joined}/{r.n} joined]"
        lines.append(
            f"| {SERVER_NAMES[r.server]} | {r.n} | {r.server_cpu_pct:.1f} | "
            f"{r.server_children_cpu_pct:.1f} | "
            f"{fmt(r.cpu_per_sub, 2)} | {fmt(r.marginal_cpu_pct, 2)} | {fps} | "
            f"{fmt(percentile(r.join_ms, 50), 0)} / {fmt(percentile(r.join_ms, 95), 0)} | "
            f"{fmt(r.latency_p50_ms)} / {fmt(r.latency_p95_ms)} | {r.server_rss_mb:.0f} | "
            f"{r.clients_cpu_pct:.0f} | {r.machine_busy_cores:.2f} / {NCPU} | "
            f"{r.other_load_cores:.2f} |")
    return "\n".join(lines)


def ratios(rows: list[Row]) -> list[str]:
    ours = {r.n: r for r in rows if r.server == "classcast"}
    lines = []
    for base in (r for r in rows if r.server == "baseline" and r.n):
        mine = ours.get(base.n)
        if mine is None or not mine.server_cpu_pct:
            continue
        per_sub = (base.cpu_per_sub or 0) / (mine.cpu_per_sub or 1)
        per_frame = ((base.server_cpu_pct / max(base.frames_per_s, 1e-9))
                     / (mine.server_cpu_pct / max(mine.frames_per_s, 1e-9)))
        marginal = (None if base.marginal_cpu_pct is None or not mine.marginal_cpu_pct
                    else base.marginal_cpu_pct / mine.marginal_cpu_pct)
        lines.append(
            f"- N = {base.n}: CPU per subscriber {per_sub:.1f}x, marginal CPU per subscriber "
            f"{fmt(marginal, 1, 'x')}, CPU per delivered frame {per_frame:.1f}x, RSS "
            f"{base.server_rss_mb / mine.server_rss_mb:.1f}x, latency p50 "
            f"{fmt(base.latency_p50_ms)} vs {fmt(mine.latency_p50_ms)} ms, min fps "
            f"{fmt(base.fps_min)} vs {fmt(mine.fps_min)}"
            + (" (the baseline saturated the machine: its ratios are lower bounds)"
               if base.saturated else ""))
    return lines


def targets(rows: list[Row]) -> list[str]:
    ours = {r.n: r for r in rows if r.server == "classcast" and r.n}
    base = {r.n: r for r in rows if r.server == "baseline" and r.n}
    out = []

    def check(ok: bool | None, text: str) -> None:
        out.append(f"- [{'n/a' if ok is None else 'PASS' if ok else 'FAIL'}] {text}")

    if not ours:
        return out
    fps_n = TARGET_FPS_N if TARGET_FPS_N in ours else max(ours)
    r = ours[fps_n]
    check(r.fps_min is not None and r.fps_min >= TARGET_FPS and r.joined == r.n,
          f"every subscriber >= {TARGET_FPS:.0f} fps at N = {fps_n}: min {fmt(r.fps_min)} fps "
          f"({r.joined}/{r.n} joined)")
    worst = max(ours.values(), key=lambda x: x.cpu_per_sub or 0)
    check(r.cpu_per_sub is not None and r.cpu_per_sub <= TARGET_CPU_PER_SUB,
          f"<= {TARGET_CPU_PER_SUB} % of a core per subscriber at N = {fps_n}: "
          f"{fmt(r.cpu_per_sub, 2)} % (marginal {fmt(r.marginal_cpu_pct, 2)} %; highest over "
          f"all N: {fmt(worst.cpu_per_sub, 2)} % at N = {worst.n})")
    if TARGET_RATIO_N in base and TARGET_RATIO_N in ours:
        mine, theirs = ours[TARGET_RATIO_N], base[TARGET_RATIO_N]
        ratio = (theirs.cpu_per_sub or 0) / (mine.cpu_per_sub or 1)
        check(ratio >= TARGET_RATIO,
              f">= {TARGET_RATIO:.0f}x cheaper than the baseline at N = {TARGET_RATIO_N}: "
              f"{ratio:.1f}x CPU per subscriber"
              + (" (a lower bound: the baseline saturated the machine)"
                 if theirs.saturated else ""))
    else:
        check(None, f">= {TARGET_RATIO:.0f}x cheaper than the baseline at N = {TARGET_RATIO_N}:"
                    " not measured")
    joins = {n: percentile(x.join_ms, 50) for n, x in ours.items()}
    worst_join = max(joins, key=lambda n: joins[n] or 0)
    check(all(v is not None and v <= TARGET_JOIN_P50_MS for v in joins.values()),
          f"join p50 <= {TARGET_JOIN_P50_MS:.0f} ms at every N: worst {fmt(joins[worst_join], 0)}"
          f" ms at N = {worst_join}")
    lats = {n: x.latency_p50_ms for n, x in ours.items()}
    worst_lat = max(lats, key=lambda n: lats[n] or 0)
    check(all(v is not None and v <= TARGET_LATENCY_P50_MS for v in lats.values()),
          f"relay-added latency p50 <= {TARGET_LATENCY_P50_MS:.0f} ms at every N: worst "
          f"{fmt(lats[worst_lat])} ms at N = {worst_lat}")
    return out


def stall_report(result: StallResult) -> str:
    lines = ["| t (s) | server RSS MB | sessions | healthy fps min (since previous) |",
             "|---|---|---|---|"]
    for s in result.samples:
        lines.append(f"| {s.t_s:.0f} | {s.rss_mb:.1f} | {s.sessions} | "
                     f"{fmt(s.healthy_fps_min)} |")
    rss = [s.rss_mb for s in result.samples]
    lines += [
        "",
        f"RSS before the stall {result.rss_before_mb:.1f} MB; during it min {min(rss):.1f}, "
        f"max {max(rss):.1f}, last {rss[-1]:.1f} MB (growth {rss[-1] - rss[0]:+.1f} MB). "
        f"Server CPU {result.server_cpu_pct:.1f} %. Healthy subscribers ({result.healthy}): "
        f"min {fmt(result.healthy_fps_min)} fps over the whole scenario.",
        "",
        "Server counters at the end: " + (", ".join(
            f"{k.replace('classcast_relay_', '')} {v:.0f}"
            for k, v in sorted(result.metrics.items()) if v) or "none"),
    ]
    return "\n".join(lines)


def header(bench: Bench, clip_kbps: float) -> str:
    o = bench.options
    return "\n".join([
        f"Machine: {NCPU} cores ({platform.processor() or platform.machine()}), Python "
        f"{platform.python_version()}, aiortc {aiortc.__version__}.",
        f"ClassCast server: {bench.describe_launch()}. Baseline: aiohttp + aiortc MediaRelay "
        f"of decoded frames, re-encoded per subscriber (libx264 / libopus, aiortc defaults), "
        f"on {o.loop}.",
        f"Publisher: pre-encoded {WIDTH}x{HEIGHT} {FPS} fps H264 constrained baseline "
        f"{clip_kbps:.0f} kbps, keyframe every {KEYINT} frames, + Opus {AUDIO_KBPS} kbps; "
        "sent without encoding, a PLI makes it skip to the next IDR (like an encoder's "
        "forced keyframe). Subscribers: aiortc peers that reassemble frames without decoding, "
        f"{o.per_process} per process, joining {o.stagger_s * 1000:.0f} ms apart.",
        *([f"ClassCast settings changed for this run: "
           f"{', '.join(f'{k}={v}' for k, v in o.server_env)}."] if o.server_env else []),
        f"Windows: warm-up {o.warmup_s:.0f} s after every subscriber's first frame, then "
        f"{o.window_s:.0f} s measured. CPU is % of one core; machine busy is cores busy of "
        f"{NCPU}; other load is machine busy minus the benchmark's processes (anything else "
        "running). Server CPU and RSS are the server process's own. Latency includes both "
        "loopback hops and the client event loops.",
    ])


async def run(options: Options) -> int:
    run_dir = Path(tempfile.mkdtemp(prefix="classcast-bench-"))
    clip_path = await ensure_clip(HERE / ".cache")
    clip = await asyncio.to_thread(load_clip, clip_path)
    bench = Bench(options, run_dir, clip_path)
    started = time.monotonic()
    rows: list[Row] = []
    skipped: list[int] = []
    skip_reason = ""
    stall: StallResult | None = None

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

    try:
        for kind in ("classcast", "baseline") if options.baseline else ("classcast",):
            plan = options.ns if kind == "classcast" else baseline_plan(options)
            auto_more = kind == "baseline" and options.baseline_ns is None
            idle: Row | None = None
            if options.idle:
                await quiet()
                progress(f"{SERVER_NAMES[kind]}: publisher only")
                idle = await bench.measure(kind, 0)
                rows.append(idle)
            todo = list(plan) + ([n for n in options.ns if n not in plan] if auto_more else [])
            for n in todo:
                last = next((r for r in reversed(rows) if r.server == kind and r.n), None)
                if n not in plan and last is not None and last.saturated:
                    skipped.append(n)
                    skip_reason = (f"at N = {last.n} it already kept "
                                   f"{last.machine_busy_cores:.2f} of {NCPU} cores busy and "
                                   f"delivered a min of {fmt(last.fps_min)} fps (saturated)")
                    continue
                await quiet()
                progress(f"{SERVER_NAMES[kind]}: N = {n}")
                row = await bench.measure(kind, n)
                if idle is not None:
                    row.marginal_cpu_pct = (row.server_cpu_pct - idle.server_cpu_pct) / n
                rows.append(row)
                progress(f"  server CPU {row.server_cpu_pct:.1f} %, min fps "
                         f"{fmt(row.fps_min)}, machine {row.machine_busy_cores:.2f} cores")
            if kind == "classcast" and options.recording_n > 0:
                await quiet()
                progress(f"ClassCast with recording on: N = {options.recording_n}")
                row = await bench.measure(kind, options.recording_n, record=True)
                if idle is not None:
                    row.marginal_cpu_pct = None
                rows.append(row)
        if options.stall_s > 0:
            await quiet()
            progress(f"stalled subscriber scenario ({options.stall_s:.0f} s)")
            stall = await bench.stall()
    except BaseException:
        print(f"run directory kept for inspection: {run_dir}", file=sys.stderr)
        raise

    print(f"## Relay benchmark ({time.strftime('%Y-%m-%d %H:%M')}, "
          f"{time.monotonic() - started:.0f} s)\n")
    print(header(bench, clip.video_kbps) + "\n")
    print(table(rows) + "\n")
    print("Baseline ÷ ClassCast:\n")
    print("\n".join(ratios(rows) or ["- no baseline point to compare"]))
    if skipped:
        print(f"\nNote: the baseline was skipped at N = {', '.join(map(str, skipped))}: "
              f"{skip_reason}.")
    unmatched = [r for r in rows if r.latency_unmatched > 0.01 * max(r.latency_frames, 1)]
    if unmatched:
        print("\nWarning: frames without a matching send (latency not counted): " + ", ".join(
            f"{SERVER_NAMES[r.server]} N = {r.n}: {r.latency_unmatched}" for r in unmatched))
    noisy = [r for r in rows if r.other_load_cores > NOISE_CORES]
    if noisy:
        print(f"\nWarning: other processes kept up to "
              f"{max(r.other_load_cores for r in noisy):.2f} cores busy during "
              f"{len(noisy)} of {len(rows)} windows; rerun on a quiet machine to trust them.")
    moved = [f"{SERVER_NAMES[r.server]} N = {r.n}: " + ", ".join(
        f"{k.split('level=')[1].rstrip('}')} {v:.0f}" for k, v in sorted(r.metrics.items())
        if k.startswith("classcast_relay_level_changes_total") and v)
        for r in rows if any(k.startswith("classcast_relay_level_changes_total") and v
                             for k, v in r.metrics.items())]
    print("\nClassrooms moved off the full stream by their link (loopback should move none): "
          + ("; ".join(moved) if moved else "none"))
    children = sorted({c for r in rows for c in r.server_children})
    if children:
        print(f"\nNote: the ClassCast server's child processes ({', '.join(children)}) are "
              "counted in `children CPU %`, not in the server columns.")
    print("\nTargets (ClassCast):\n")
    print("\n".join(targets(rows)))
    if stall is not None:
        print(f"\n### Stalled subscribers ({options.stall_s:.0f} s)\n")
        print(f"{stall.healthy} healthy subscribers, one subscriber SIGSTOPped after it "
              "connected (at t = 0), and one that completed its WHEP POST but never connects "
              f"ICE (posted with the others, ~{options.warmup_s:.0f} s before t = 0). "
              "`sessions` counts the server's peer sessions (publisher included), from "
              "/healthz.\n")
        print(stall_report(stall))
    details = {"rows": [asdict(r) for r in rows],
               "stall": asdict(stall) if stall is not None else None,
               "skipped": skipped, "options": {k: str(v) for k, v in asdict(options).items()}}
    if options.json_out is not None:
        await asyncio.to_thread(options.json_out.write_text, json.dumps(details, indent=1))
    if options.keep:
        print(f"\n(run directory: {run_dir})", file=sys.stderr)
    else:
        await asyncio.to_thread(shutil.rmtree, run_dir, True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    if options.loop == "uvloop":
        import uvloop
        return uvloop.run(run(options))
    return asyncio.run(run(options))


if __name__ == "__main__":
    sys.exit(main())
