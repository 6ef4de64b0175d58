"""Weak-link benchmark (issue 7): what a classroom behind a weak rural link gets from a lesson.

Run by hand, as root (it makes network namespaces; nothing leaves the machine):

    .venv/bin/python benchmarks/weak_link.py [--window 30] [--profiles clean,300k] [--sequential]

The emulated network of `tests/netem.py`: `classcast serve` runs in a server namespace
(CLASSCAST_HOST and CLASSCAST_ICE_ADDRESSES = that namespace's address, a fresh data dir,
recording off), the publisher (`peers.py publish`: the relay benchmark's pre-encoded 720p30
~1.5 Mbps H264 + Opus clip) beside it, and one aiortc classroom (`peers.py subscribe`, frames
reassembled, never decoded) per link profile, each in its own namespace behind its own link.
A profile applies to both directions of its link (the classroom's RTCP goes up the same link).

By default every classroom watches at once (one lesson, classrooms on different links, like a
real one); `--sequential` runs them one at a time (each alone with the server). Per profile,
over a window after a warm-up:

- assembled fps: video frames the classroom's `FrameAssembler` handed out, per second (what
  relay.py counts);
- foreign: assembled frames whose NAL units match no frame of the clip (damaged on the way);
- playable fps: assembled frames a decoder could show: a frame of the clip that is a keyframe
  or the clip's next frame after a playable one (the clip is constrained baseline with one
  reference frame, so a missing frame breaks the chain until the next keyframe, every 2 s or
  on request); frames are placed in the clip by content, not by RTP timestamp;
- freezes: gaps longer than 0.5 s between playable frames (the window's edges count), their
  number and total time, scaled to seconds per minute;
- audio: share of the 20 ms Opus packets (50 per second) that arrived in the window;
- link drops: share of the downstream frames the link dropped (the bridge's random UDP loss,
  plus frames the tbf queue refused), over the whole run;
- join: seconds from the classroom's WHEP request to its first assembled frame;
- server CPU over the window (% of one core), for the later comparison with adaptation.

- decodable fps: frames a decoder could show, from the frames' order alone: a keyframe, or a
  frame that follows a decodable one with nothing skipped between (both the clip and the
  relay's low rendition use one reference frame). Unlike "playable" it needs no clip to match
  against, so it also counts the low rendition's re-encoded frames; freezes are counted on it;
- levels: the share of the window each classroom spent at each level (full stream, low
  rendition, audio only), from `GET /api/rooms/{room}` once a second;
- low rendition CPU: the server's `classcast_relay_low_rendition_cpu_seconds_total` over the
  window (% of one core): the extra cost of adapting, for the one room.

Both relays run in the same invocation (`--mode both`, the default), each with a fresh server
and network: the plain relay (CLASSCAST_RELAY_ADAPT=false, every classroom gets the teacher's
stream as it is) is the baseline, the adaptive relay (the default settings) is ClassCast.
"foreign" counts the low rendition's frames too (re-encoded, they match no clip frame).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # see benchmarks/__init__.py

import argparse
import asyncio
import contextlib
import itertools
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.clip import AUDIO_FRAME_S, FPS, Clip, ensure_clip, load_clip
from benchmarks.relay import BenchError, Child, free_port, parse_env
from server.tokens import Role, TokenIssuer
from tests.netem import Link, NetemError, Network, Profile

HERE = Path(__file__).resolve().parent
ROOM = "weak"
FREEZE_S = 0.5
MODES = {"plain": (("CLASSCAST_RELAY_ADAPT", "false"),),
         "adaptive": (("CLASSCAST_RELAY_ADAPT", "true"),)}
LEVELS = ("full", "low", "audio")

PROFILES: dict[str, tuple[str, Profile]] = {
    "clean": ("clean", Profile()),
    "1m": ("1 Mbit/s, 1 % loss", Profile(rate_kbit=1000, loss=0.01)),
    "300k": ("300 kbit/s, 5 % loss, 80 ms", Profile(rate_kbit=300, loss=0.05, delay_ms=80)),
    "150k": ("150 kbit/s, 10 % loss", Profile(rate_kbit=150, loss=0.10)),
}


@dataclass(frozen=True)
class Options:
    profiles: tuple[str, ...]
    window_s: float
    warmup_s: float
    join_timeout_s: float
    sequential: bool
    keep: bool
    modes: tuple[str, ...]
    server_env: tuple[tuple[str, str], ...]


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", default=",".join(PROFILES),
                        help=f"comma-separated, of {', '.join(PROFILES)} (default: all)")
    parser.add_argument("--window", type=float, default=30.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds between the classrooms' joining and the window")
    parser.add_argument("--join-timeout", type=float, default=15.0,
                        help="seconds a classroom may take to its first frame")
    parser.add_argument("--sequential", action="store_true",
                        help="one classroom at a time instead of all at once")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs)")
    parser.add_argument("--mode", choices=("both", *MODES), default="both",
                        help="plain relay (the baseline), adaptive relay, or both (default)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a further CLASSCAST_* setting for the server (repeatable)")
    args = parser.parse_args(argv)
    names = tuple(p.strip() for p in args.profiles.split(",") if p.strip())
    unknown = [p for p in names if p not in PROFILES]
    if unknown or not names:
        parser.error(f"unknown profiles {unknown}; choose from {', '.join(PROFILES)}")
    modes = tuple(MODES) if args.mode == "both" else (args.mode,)
    return Options(names, args.window, args.warmup, args.join_timeout, args.sequential,
                   args.keep, modes, tuple(parse_env(e) for e in args.server_env))


# --- measures -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Result:
    profile: str
    join_s: float | None
    assembled_fps: float
    foreign_frames: int
    playable_fps: float
    decodable_fps: float
    levels: dict[str, float]  # share of the window at each level
    low_cpu_pct: float
    freezes: int
    freeze_s: float
    audio_share: float
    link_drop_share: float | None
    server_cpu_pct: float


def playable_times(video: list[list[Any]], order: dict[int, int],
                   keyframes: set[int]) -> list[float]:
    """Arrival times of the frames a decoder could show (see the module's docstring). Frames
    are placed in the clip by their key (`order`: key -> index), not by RTP timestamp: the
    relay keeps a classroom's timestamps continuous across the frames it skips."""
    times: list[float] = []
    previous: int | None = None
    chain = False
    for key, _ts, arrived in video:
        index = order.get(key)
        if key in keyframes:
            chain = True
        elif index is None or previous is None or index != (previous + 1) % len(order):
            chain = False
        previous = index
        if chain:
            times.append(arrived)
    return times


def freezes(times: list[float], t0: float, t1: float) -> tuple[int, float]:
    """(count, seconds) of gaps longer than FREEZE_S between `times` inside [t0, t1]."""
    edges = [t0, *[t for t in times if t0 <= t <= t1], t1]
    gaps = [b - a for a, b in itertools.pairwise(edges) if b - a > FREEZE_S]
    return len(gaps), sum(gaps)


def measure(profile: str, record: dict[str, Any], clip: Clip, t0: float, t1: float,
            drops: float | None, cpu_pct: float, levels: dict[str, float],
            low_cpu_pct: float) -> Result:
    window = t1 - t0
    video = record["video"]
    order = {f.key: i for i, f in enumerate(clip.video)}
    assembled = [(key, t) for key, _, t in video if t0 <= t <= t1]
    keyframes = {f.key for f in clip.video if f.keyframe}
    playable = [t for t in playable_times(video, order, keyframes) if t0 <= t <= t1]
    decodable = [t for (_, _, t), ok in zip(video, record["decodable"], strict=True)
                 if ok and t0 <= t <= t1]
    count, frozen = freezes(decodable, t0, t1)
    audio = [t for t in record.get("audio_times", []) if t0 <= t <= t1]
    return Result(profile=profile, join_s=record.get("join_s"),
                  assembled_fps=len(assembled) / window,
                  foreign_frames=sum(1 for key, _ in assembled if key not in order),
                  playable_fps=len(playable) / window,
                  decodable_fps=len(decodable) / window, levels=levels,
                  low_cpu_pct=low_cpu_pct, freezes=count,
                  freeze_s=frozen, audio_share=min(1.0, len(audio) * AUDIO_FRAME_S / window),
                  link_drop_share=drops, server_cpu_pct=cpu_pct)


def link_drop_share(link: Link) -> float | None:
    down = link.stats()["down"]
    if not down["frames"]:
        return None
    return (down["udp_lost"] + down["send_dropped"]) / down["frames"]


# --- the run ------------------------------------------------------------------------------------
class WeakLinkBench:
    def __init__(self, options: Options, net: Network, run_dir: Path, clip: Path,
                 mode: str) -> None:
        self.options = options
        self.server_env = (*MODES[mode], *options.server_env)
        self.net = net
        self.run_dir = run_dir
        self.clip = clip
        self.secret = secrets.token_urlsafe(48)
        self.issuer = TokenIssuer(self.secret)
        address = net.server.address
        assert address is not None
        self.address = address
        self.url = ""

    async def start_server(self) -> Child:
        port = free_port()
        env = {**os.environ, "CLASSCAST_SECRET": self.secret, "CLASSCAST_HOST": self.address,
               "CLASSCAST_PORT": str(port), "CLASSCAST_DATA_DIR": str(self.run_dir / "data"),
               "CLASSCAST_ICE_ADDRESSES": self.address,
               "CLASSCAST_RECORDER_AUTO_START": "false", **dict(self.server_env)}
        cli = Path(sys.executable).with_name("classcast")
        argv = ([str(cli), "serve"] if cli.exists()
                else [sys.executable, str(HERE / "servers.py"), "classcast"])
        child = Child("server", self.net.server.argv(argv), self.run_dir, env)
        await child.start()
        self.url = f"http://{self.address}:{port}"
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as http:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return child
                if time.monotonic() > deadline:
                    raise BenchError(f"the server did not answer /healthz in 60 s:\n"
                                     f"{await child.log_tail()}")
                await asyncio.sleep(0.2)  # polling a starting server

    async def start_publisher(self) -> Child:
        child = Child("publisher", self.net.server.argv([
            sys.executable, str(HERE / "peers.py"), "--ice-address", self.address, "publish",
            "--url", f"{self.url}/whip/{ROOM}", "--token", self.issuer.mint(Role.TEACHER, ROOM),
            "--clip", str(self.clip)]), self.run_dir)
        child.argv += ["--out", str(child.out_path)]
        await child.start()
        await child.expect("ready", 30)
        return child

    def subscriber(self, index: int) -> Child:
        classroom = self.net.classrooms[index]
        assert classroom.address is not None
        child = Child(f"classroom-{index}", classroom.argv([
            sys.executable, str(HERE / "peers.py"), "--ice-address", classroom.address,
            "subscribe", "--url", f"{self.url}/whep/{ROOM}",
            "--token", self.issuer.mint(Role.CLASSROOM, ROOM), "--n", "1", "--audio-times",
            "--join-timeout", str(self.options.join_timeout_s)]), self.run_dir)
        child.argv += ["--out", str(child.out_path)]
        return child

    async def watch(self, indexes: list[int], server: Child,
                    clip: Clip) -> list[Result]:
        """Classrooms `indexes` join, warm up, are measured over the window, and leave."""
        children = {i: self.subscriber(i) for i in indexes}
        try:
            for child in children.values():
                await child.start()
            for child in children.values():
                await child.expect("ready", self.options.join_timeout_s + 15)
            await asyncio.sleep(self.options.warmup_s)  # the warm-up is a span of time
            low0 = await self.low_rendition_cpu_s()
            cpu0, t0 = server.cpu_s(), time.time()
            seen: list[dict[str, str]] = []  # session id -> level, once a second
            while time.time() < t0 + self.options.window_s:  # the measured window
                seen.append(await self.levels())
                await asyncio.sleep(min(1.0, max(0.0, t0 + self.options.window_s - time.time())))
            cpu1, t1 = server.cpu_s(), time.time()
            low1 = await self.low_rendition_cpu_s()
        finally:
            for child in children.values():
                await child.stop()
        cpu_pct = (cpu1 - cpu0) / (t1 - t0) * 100
        low_pct = (low1 - low0) / (t1 - t0) * 100
        results = []
        for i, child in children.items():
            record = (await child.result())["subs"][0]
            label = PROFILES[self.options.profiles[i]][0]
            mine = [sample.get(record["session"], "") for sample in seen]
            shares = {level: mine.count(level) / len(mine) for level in LEVELS
                      if mine and mine.count(level)}
            results.append(measure(label, record, clip, t0, t1,
                                   link_drop_share(self.net.links[i]), cpu_pct, shares,
                                   low_pct))
        return results

    async def levels(self) -> dict[str, str]:
        """Each classroom session's level now (the plain relay has none: "full")."""
        admin = self.issuer.mint(Role.ADMIN)
        async with aiohttp.ClientSession() as http, http.get(
                f"{self.url}/api/rooms/{ROOM}",
                headers={"Authorization": f"Bearer {admin}"}) as response:
            info = await response.json()
        return {s["id"]: (s["level"] or {}).get("level", "full")
                for s in info.get("subscribers", [])}

    async def low_rendition_cpu_s(self) -> float:
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/metrics") as response:
            text = await response.text()
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "classcast_relay_low_rendition_cpu_seconds_total")

    async def run(self, clip: Clip) -> list[Result]:
        results: list[Result] = []
        async with contextlib.AsyncExitStack() as stack:
            server = await self.start_server()
            stack.push_async_callback(server.stop)
            publisher = await self.start_publisher()
            stack.push_async_callback(publisher.stop)
            indexes = list(range(len(self.options.profiles)))
            groups = [[i] for i in indexes] if self.options.sequential else [indexes]
            for group in groups:
                progress(f"classrooms on: {', '.join(self.options.profiles[i] for i in group)}")
                results += await self.watch(group, server, clip)
        return results


def table(results: list[Result], window_s: float) -> str:
    per_minute = 60.0 / window_s
    lines = ["| link (both directions) | join s | assembled fps | foreign | playable fps | "
             "decodable fps | freezes | freeze s/min | audio | levels | link drops | "
             "server CPU |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in results:
        drops = "–" if r.link_drop_share is None else f"{r.link_drop_share * 100:.1f} %"
        join = "never" if r.join_s is None else f"{r.join_s:.1f}"
        levels = ", ".join(f"{k} {v * 100:.0f} %" for k, v in r.levels.items()) or "–"
        lines.append(
            f"| {r.profile} | {join} | {r.assembled_fps:.1f} | {r.foreign_frames} | "
            f"{r.playable_fps:.1f} | {r.decodable_fps:.1f} | {r.freezes} | "
            f"{r.freeze_s * per_minute:.1f} | {r.audio_share * 100:.1f} % | {levels} | "
            f"{drops} | {r.server_cpu_pct:.1f} % |")
    return "\n".join(lines)


def comparison(plain: list[Result], adaptive: list[Result], window_s: float) -> str:
    per_minute = 60.0 / window_s
    lines = ["| link | decodable fps plain → adaptive | freeze s/min plain → adaptive | "
             "audio plain → adaptive |", "|---|---|---|---|"]
    for p, a in zip(plain, adaptive, strict=True):
        lines.append(f"| {p.profile} | {p.decodable_fps:.1f} → {a.decodable_fps:.1f} | "
                     f"{p.freeze_s * per_minute:.1f} → {a.freeze_s * per_minute:.1f} | "
                     f"{p.audio_share * 100:.0f} % → {a.audio_share * 100:.0f} % |")
    server = (f"Server CPU: plain {plain[0].server_cpu_pct:.1f} %, adaptive "
              f"{adaptive[0].server_cpu_pct:.1f} % of a core, of which the room's low "
              f"rendition {adaptive[0].low_cpu_pct:.1f} %.")
    return "\n".join(lines) + "\n\n" + server


_started = time.monotonic()


def progress(text: str) -> None:
    print(f"[{time.monotonic() - _started:5.0f} s] {text}", file=sys.stderr, flush=True)


def run_mode(options: Options, mode: str, clip_path: Path, clip: Clip,
             run_dir: Path) -> list[Result]:
    """One relay (plain or adaptive): a fresh network and server, every classroom measured."""
    with Network(classrooms=len(options.profiles)) as net:
        for link, name in zip(net.links, options.profiles, strict=True):
            profile = PROFILES[name][1]
            link.apply(down=profile, up=profile)
        bench = WeakLinkBench(options, net, run_dir / mode, clip_path, mode)
        (run_dir / mode).mkdir(parents=True, exist_ok=True)
        progress(f"{mode} relay: network {net.prefix}, server {net.server.address}, "
                 f"{len(net.classrooms)} classrooms")
        with net.server.entered():  # this process talks to the server from its namespace
            return asyncio.run(bench.run(clip))


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    clip_path = asyncio.run(ensure_clip(HERE / ".cache"))
    clip = load_clip(clip_path)
    run_dir = Path(tempfile.mkdtemp(prefix="classcast-weak-link-"))
    results: dict[str, list[Result]] = {}
    try:
        for mode in options.modes:
            results[mode] = run_mode(options, mode, clip_path, clip, run_dir)
    except NetemError as exc:
        print(f"weak_link: the emulated network failed: {exc}", file=sys.stderr)
        return 2
    except BaseException:
        print(f"run directory kept for inspection: {run_dir}", file=sys.stderr)
        raise
    how = "one classroom at a time" if options.sequential else "all classrooms at once"
    extra = ", ".join(f"{k}={v}" for k, v in options.server_env) or "none"
    print(f"## Weak-link benchmark ({time.strftime('%Y-%m-%d %H:%M')})\n")
    print(f"Clip: 1280x720 {FPS} fps H264 ~{clip.video_kbps:.0f} kbit/s + Opus; {how}; "
          f"{options.warmup_s:.0f} s warm-up, {options.window_s:.0f} s window; freezes are "
          f"gaps > {FREEZE_S} s between decodable frames. Further server settings: {extra}.\n")
    for mode, rows in results.items():
        print(f"### {'Plain relay (baseline)' if mode == 'plain' else 'Adaptive relay'}\n")
        print(table(rows, options.window_s) + "\n")
    if "plain" in results and "adaptive" in results:
        print("### Plain → adaptive\n")
        print(comparison(results["plain"], results["adaptive"], options.window_s))
    if options.keep:
        print(f"\n(run directory: {run_dir})", file=sys.stderr)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
