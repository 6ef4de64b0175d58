"""An emulated network for weak-link tests and benchmarks: namespaces, veth links, tbf, a bridge.

The kernel here has no `netem` qdisc, so (DESIGN.md §5):

    server ns            bridge ns (tests/netbridge.py)             classroom ns k
    eth0 198.18.0.1 ==== srv  <- AF_PACKET forwarding, ->  ck ==== eth0 198.18.0.(10+k)
                              loss + delay per direction     tbf (down)  tbf (up) on eth0

- Every namespace is new and named `ccnet-<pid>-<n>-<role>` (pid of the process that made it),
  so parallel runs never clash, and a later run removes the ones whose process is gone
  (`cleanup_leftovers`, called by every `Network` on start).
- One /24 (198.18.0.0/24, the RFC 2544 benchmarking range) for the whole emulated network: the
  bridge forwards Ethernet frames by destination MAC, so all hosts share one L2 segment. Each
  network is isolated in its own namespaces, so two networks' equal addresses never meet.
  MACs are fixed and neighbour entries static: no ARP on the wire, no first-packet delay.
  Each endpoint also has a default route on its eth0 (which leads nowhere: the namespaces have
  no way out): without one Chromium gathers no ICE candidate and multicast (mDNS) fails.
- Rate: `tc tbf` on the bridge's veth end towards the classroom (downstream) and on the
  classroom's own eth0 (upstream), so the rate limiter's queue is where a real modem's is.
- Loss and one-way delay (+ jitter): the bridge process, per direction; loss applies to UDP
  only (media), TCP/ARP/ICMP are delayed and rate-limited but never dropped by the bridge.
- IPv6 is off in every namespace; the endpoints' TX checksum offload (and with it TSO) is off,
  so frames cross the raw-socket bridge complete and MTU-sized (no ethtool needed: the
  SIOCETHTOOL ioctl is issued directly).
- `Link.set(rate_kbit=100, loss=0.05, delay_ms=80)` changes a live link, both directions
  unless `direction="down"|"up"`, other fields kept (tbf replaced in place, the bridge told over
  its control pipe and acknowledged before `set` returns); `Link.apply(down=Profile(...),
  up=...)` sets whole profiles. tbf's queue holds `queue_ms` (default 300 ms) at the rate.
- `Namespace.run/popen/argv` run argv lists inside a namespace (`ip netns exec`, which execs:
  the child's pid is the program's own); `Namespace.socket()` opens a socket there from this
  very process (a thread that entered the namespace), so one clock times both ends;
  `Namespace.entered()` moves the calling thread in for a block (a whole asyncio run);
  `Namespace.chromium()` writes an executable wrapper for Playwright's `executable_path`
  (Playwright drives Chromium over pipes, which cross namespaces untouched); it turns off
  Chromium's mDNS host-name candidates, which the relay cannot resolve (see
  CHROMIUM_DISABLED_FEATURES).
- `Network` is a context manager; on exit (also when the body raised) it ends every process in
  its namespaces (those it started gracefully, then any other by pid) and deletes them.

Needs root, `ip` and `tc` (iproute2), AF_PACKET sockets and veth; fails with `NetemError`
(never skips) when something is missing: CI runs as root on the same kind of machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import fcntl
import itertools
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

import pytest

PREFIX = "ccnet"
NETNS_DIR = Path("/run/netns")
BRIDGE_SCRIPT = Path(__file__).with_name("netbridge.py")
CHROMIUM = "/usr/bin/chromium"
SUBNET = "198.18.0"

# Chromium hides a page's host addresses behind random mDNS names (`<uuid>.local`) unless the
# page is on loopback or has camera permission; a classroom page in a namespace is neither.
# aioice cannot resolve them here: it asks by multicast and Chromium answers (through the
# bridge), but dnspython rejects the answer (DecompressionForbidden: Chromium compresses the
# name in its NSEC record), and an offer whose only candidate is an unresolved .local name
# makes aioice drop the ICE component and gather nothing, so the relay's answer has no
# candidates and ICE never starts. With this feature off, Chromium offers its real address
# (as it does on loopback in the browser tests).
CHROMIUM_DISABLED_FEATURES = ("WebRtcHideLocalIpsWithMdns",)

_CHROMIUM_WRAPPER = """#!{python} -I
# Written by tests/netem.py: Chromium inside network namespace {namespace}.
import os, sys
features = "{features}"
args = sys.argv[1:]
if features:
    merged = [a + "," + features if a.startswith("--disable-features=") else a for a in args]
    args = merged if merged != args else [*args, "--disable-features=" + features]
os.execv("{ip}", ["{ip}", "netns", "exec", "{namespace}", "{chromium}", *args])
"""

SERVER_HOST = 1
CLASSROOM_HOST = 10  # classroom k gets .(10 + k)
MAX_CLASSROOMS = 200
CONTROL_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0

CLONE_NEWNET = 0x40000000
SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17

T = TypeVar("T")
Direction = Literal["both", "down", "up"]


class NetemError(RuntimeError):
    """The emulated network could not be made, changed or removed; says what and why."""


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP = _Keep.KEEP


@dataclass(frozen=True)
class Profile:
    """One direction of a link. A clean link is `Profile()`."""

    rate_kbit: int | None = None  # tbf rate; None: unlimited
    loss: float = 0.0  # probability that a UDP frame is dropped
    delay_ms: float = 0.0  # one-way delay added by the bridge
    jitter_ms: float = 0.0  # delay varies uniformly by +- this much (never reorders)
    queue_ms: float = 300.0  # tbf latency: the longest a frame may wait in the rate limiter

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss is a probability, not {self.loss}")
        if self.rate_kbit is not None and self.rate_kbit < 8:
            raise ValueError(f"rate_kbit must be >= 8 (or None), not {self.rate_kbit}")
        if min(self.delay_ms, self.jitter_ms) < 0 or self.queue_ms <= 0:
            raise ValueError(f"negative delay, jitter or queue: {self}")

    def burst_bytes(self) -> int:
        """tbf bucket: 2 full frames or 10 ms at the rate, whichever is more."""
        assert self.rate_kbit is not None
        return max(2 * 1514, self.rate_kbit * 1000 // 8 // 100)


CLEAN = Profile()


# --- running things inside a namespace ----------------------------------------------------------
def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise NetemError(f"`{name}` (iproute2) is not installed; the emulated network needs it")
    return path


def _check(argv: Sequence[str], *, input: bytes | None = None,
           timeout: float = 30.0) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout,
                            check=False)
    if result.returncode != 0:
        raise NetemError(f"{' '.join(argv)} failed ({result.returncode}): "
                         f"{result.stderr.decode(errors='replace').strip()}")
    return result


_libc = ctypes.CDLL(None, use_errno=True)


def _enter(name: str) -> None:
    """Move the calling thread into network namespace `name`."""
    fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetemError(f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


class Namespace:
    """One network namespace of an emulated network (an endpoint or the bridge)."""

    def __init__(self, name: str, address: str | None, mac: str | None,
                 processes: list[subprocess.Popen[bytes]]) -> None:
        self.name = name
        self.address = address  # IPv4 of its eth0 (None for the bridge)
        self.mac = mac
        self._processes = processes

    def __repr__(self) -> str:
        return f"Namespace({self.name!r}, {self.address!r})"

    def argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` prefixed to run inside this namespace (e.g. for asyncio subprocesses)."""
        return [_tool("ip"), "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True,
            input: bytes | None = None, env: Mapping[str, str] | None = None,
            ) -> subprocess.CompletedProcess[bytes]:
        """Run to completion, capturing stdout and stderr; NetemError if `check` and it fails."""
        result = subprocess.run(self.argv(argv), input=input, capture_output=True,
                                timeout=timeout, check=False,
                                env=None if env is None else dict(env))
        if check and result.returncode != 0:
            raise NetemError(f"{list(argv)} in {self.name} exited {result.returncode}: "
                             f"{result.stderr.decode(errors='replace')[-2000:]}")
        return result

    def popen(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              cwd: str | Path | None = None, stdin: int | IO[Any] | None = subprocess.DEVNULL,
              stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None,
              ) -> subprocess.Popen[bytes]:
        """Start a process here; the network terminates it (then kills it) when it closes."""
        process = subprocess.Popen(self.argv(argv), env=None if env is None else dict(env),
                                   cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr)
        self._processes.append(process)
        return process

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a fresh thread that entered this namespace; sockets it opens stay
        in the namespace after it returns."""
        outcome: list[Any] = []

        def target() -> None:
            try:
                _enter(self.name)
                outcome.append((True, fn(*args)))
            except BaseException as exc:
                outcome.append((False, exc))

        thread = threading.Thread(target=target, name=f"netns-{self.name}", daemon=True)
        thread.start()
        thread.join()
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Move the calling thread into this namespace for the block, then back. Whatever the
        thread opens meanwhile (sockets, listening servers, processes it starts) lives here:
        e.g. a benchmark's main thread enters the server namespace for a whole asyncio run.
        Not across awaits of a loop that other tasks share, unless they all belong here."""
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _enter(self.name)
            try:
                yield
            finally:
                if _libc.setns(original, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise NetemError(f"could not leave {self.name}: {os.strerror(err)}")
        finally:
            os.close(original)

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM,
               ) -> socket.socket:
        """A socket in this namespace, usable from any thread of this process."""
        return self.call(socket.socket, family, kind)

    def chromium(self, directory: Path, executable: str = CHROMIUM,
                 disable_features: Sequence[str] = CHROMIUM_DISABLED_FEATURES) -> Path:
        """An executable that runs `executable` inside this namespace with the arguments it is
        given, plus `disable_features` merged into the --disable-features list (Playwright
        passes its own; Chromium keeps only the last such switch): pass it as Playwright's
        `executable_path`. See CHROMIUM_DISABLED_FEATURES for the default."""
        path = directory / f"chromium-in-{self.name}"
        path.write_text(_CHROMIUM_WRAPPER.format(
            python=sys.executable, ip=_tool("ip"), namespace=self.name, chromium=executable,
            features=",".join(disable_features)))
        path.chmod(0o755)
        return path

    def pids(self) -> list[int]:
        """Every process whose network namespace this is."""
        result = subprocess.run([_tool("ip"), "netns", "pids", self.name], capture_output=True,
                                check=False)
        return [int(p) for p in result.stdout.split()]


def _sysctl(path: str, value: str) -> None:
    with open(f"/proc/sys/{path}", "w") as f:
        f.write(value)


def _disable_tx_checksum(ifname: str) -> None:
    """`ethtool -K ifname tx off` without ethtool (TSO goes with it)."""
    command = struct.pack("II", ETHTOOL_STXCSUM, 0)
    buffer = ctypes.create_string_buffer(command, len(command))
    request = struct.pack("16sP", ifname.encode(), ctypes.addressof(buffer)) + bytes(16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, request)


# --- the bridge process -------------------------------------------------------------------------
class _Bridge:
    """tests/netbridge.py in the bridge namespace, spoken to over its stdin/stdout."""

    def __init__(self, namespace: Namespace, links: Sequence[tuple[str, str]], seed: int,
                 log: Path) -> None:
        argv = [sys.executable, str(BRIDGE_SCRIPT), "--server", "srv", "--seed", str(seed)]
        argv += [arg for ifname, mac in links for arg in ("--link", f"{ifname}={mac}")]
        self.log = log
        with log.open("wb") as stderr:
            self.process = namespace.popen(argv, stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=stderr)
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin = self.process.stdin
        self._stdout = self.process.stdout
        self._buffer = b""
        self._lock = threading.Lock()
        ready = self._read()
        if not ready.get("ready"):
            raise NetemError(f"the bridge did not start: {ready}")

    def _read(self) -> dict[str, Any]:
        deadline = time.monotonic() + CONTROL_TIMEOUT_S
        with selectors.DefaultSelector() as selector:
            selector.register(self._stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise NetemError(f"the bridge did not answer; its log: {self._tail()}")
                chunk = os.read(self._stdout.fileno(), 65536)
                if not chunk:
                    raise NetemError(f"the bridge exited ({self.process.poll()}); "
                                     f"its log: {self._tail()}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def request(self, message: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            try:
                self._stdin.write(json.dumps(message).encode() + b"\n")
                self._stdin.flush()
            except BrokenPipeError as exc:
                raise NetemError(f"the bridge is gone; its log: {self._tail()}") from exc
            answer = self._read()
        if not answer.get("ok"):
            raise NetemError(f"the bridge refused {message}: {answer.get('error')}")
        return answer

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._stdin.close()  # the bridge exits when its control pipe closes
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._stdout.close()


# --- links and the network ----------------------------------------------------------------------
class Link:
    """A classroom's link to the server: `down` (towards the classroom) and `up` profiles."""

    def __init__(self, network: Network, index: int, classroom: Namespace) -> None:
        self.network = network
        self.index = index
        self.classroom = classroom
        self.bridge_ifname = f"c{index}"
        self.down = CLEAN
        self.up = CLEAN

    def __repr__(self) -> str:
        return f"Link({self.index}, down={self.down}, up={self.up})"

    def set(self, *, rate_kbit: int | _Keep | None = KEEP, loss: float | _Keep = KEEP,
            delay_ms: float | _Keep = KEEP, jitter_ms: float | _Keep = KEEP,
            queue_ms: float | _Keep = KEEP, direction: Direction = "both") -> None:
        """Change the given fields of one or both directions; the others keep their values.
        Takes effect before this returns."""
        changes: dict[str, Any] = {name: value for name, value in (
            ("rate_kbit", rate_kbit), ("loss", loss), ("delay_ms", delay_ms),
            ("jitter_ms", jitter_ms), ("queue_ms", queue_ms)) if value is not KEEP}
        down = replace(self.down, **changes) if direction in ("both", "down") else None
        up = replace(self.up, **changes) if direction in ("both", "up") else None
        self.apply(down=down, up=up)

    def apply(self, down: Profile | None = None, up: Profile | None = None) -> None:
        """Set whole profiles (None leaves that direction as it is)."""
        if down is not None:
            self._configure("down", self.down, down)
            self.down = down
        if up is not None:
            self._configure("up", self.up, up)
            self.up = up

    def _configure(self, direction: Literal["down", "up"], old: Profile, new: Profile) -> None:
        if (old.rate_kbit, old.queue_ms) != (new.rate_kbit, new.queue_ms):
            namespace = self.network.bridge if direction == "down" else self.classroom
            ifname = self.bridge_ifname if direction == "down" else "eth0"
            tc = [_tool("tc"), "-n", namespace.name, "qdisc"]
            if new.rate_kbit is None:
                if old.rate_kbit is not None:
                    _check([*tc, "del", "dev", ifname, "root"])
            else:
                _check([*tc, "replace", "dev", ifname, "root", "tbf",
                        "rate", f"{new.rate_kbit}kbit", "burst", str(new.burst_bytes()),
                        "latency", f"{new.queue_ms:g}ms"])
        if (old.loss, old.delay_ms, old.jitter_ms) != (new.loss, new.delay_ms, new.jitter_ms):
            self.network.control({"cmd": "set", "link": self.index, "dir": direction,
                                  "loss": new.loss, "delay_ms": new.delay_ms,
                                  "jitter_ms": new.jitter_ms})

    def stats(self) -> dict[str, dict[str, int]]:
        """The bridge's counters for this link: {"down": {...}, "up": {...}} with frames (seen),
        bytes, udp, udp_lost (dropped on purpose), held (waiting out their delay), sent,
        send_dropped (downstream: refused by the tbf queue), csum_completed."""
        links = self.network.control({"cmd": "stats"})["links"]
        return {"down": links[self.index]["down"], "up": links[self.index]["up"]}

    def queues(self) -> dict[str, dict[str, int]]:
        """The tbf queues: {"down"|"up": {"packets": sent, "drops": ..., "backlog": packets
        waiting}} (zeros where the direction has no rate limit). Upstream, tbf sits before the
        bridge, so its drops never reach the bridge's counters."""
        queues = {}
        for direction, namespace, ifname in (("down", self.network.bridge, self.bridge_ifname),
                                             ("up", self.classroom, "eth0")):
            result = _check([_tool("tc"), "-n", namespace.name, "-s", "-j", "qdisc", "show",
                             "dev", ifname])
            entries = [q for q in json.loads(result.stdout) if q.get("kind") == "tbf"]
            queue = entries[0] if entries else {}
            queues[direction] = {"packets": int(queue.get("packets", 0)),
                                 "drops": int(queue.get("drops", 0)),
                                 "backlog": int(queue.get("qlen", 0))}
        return queues


_sequence = itertools.count()


class Network:
    """A server namespace and `classrooms` classroom namespaces behind emulated links.

    with Network(classrooms=2, down=Profile(rate_kbit=300, loss=0.05, delay_ms=80)) as net:
        net.server.popen([...]); net.links[0].set(rate_kbit=100)
    """

    def __init__(self, classrooms: int = 1, *, down: Profile = CLEAN, up: Profile = CLEAN,
                 seed: int = 0) -> None:
        if not 1 <= classrooms <= MAX_CLASSROOMS:
            raise ValueError(f"1 to {MAX_CLASSROOMS} classrooms, not {classrooms}")
        self._classrooms = classrooms
        self._initial = (down, up)
        self._seed = seed
        self._processes: list[subprocess.Popen[bytes]] = []
        self._namespaces: list[Namespace] = []
        self._bridge: _Bridge | None = None
        self._workdir: Path | None = None
        self.prefix = f"{PREFIX}-{os.getpid()}-{next(_sequence)}"
        self.links: list[Link] = []
        self.closed = False

    # the namespaces
    @property
    def server(self) -> Namespace:
        return self._namespaces[0]

    @property
    def bridge(self) -> Namespace:
        return self._namespaces[1]

    @property
    def classrooms(self) -> list[Namespace]:
        return self._namespaces[2:]

    @property
    def workdir(self) -> Path:
        """A private directory removed with the network (wrappers, logs)."""
        assert self._workdir is not None, "the network is not started"
        return self._workdir

    @property
    def names(self) -> list[str]:
        return [n.name for n in self._namespaces]

    def __enter__(self) -> Network:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        require_capabilities()
        cleanup_leftovers()
        self._workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _add(self, role: str, host: int | None, mac: str | None) -> Namespace:
        address = None if host is None else f"{SUBNET}.{host}"
        namespace = Namespace(f"{self.prefix}-{role}", address, mac, self._processes)
        _check([_tool("ip"), "netns", "add", namespace.name])
        self._namespaces.append(namespace)  # registered at once: close() removes it
        namespace.call(_sysctl, "net/ipv6/conf/all/disable_ipv6", "1")
        namespace.call(_sysctl, "net/ipv6/conf/default/disable_ipv6", "1")
        _check([_tool("ip"), "-n", namespace.name, "link", "set", "lo", "up"])
        return namespace

    def _wire(self, endpoint: Namespace, bridge_ifname: str) -> None:
        ip = _tool("ip")
        assert endpoint.address is not None and endpoint.mac is not None
        _check([ip, "-n", self.bridge.name, "link", "add", "name", bridge_ifname, "type", "veth",
                "peer", "name", "eth0", "netns", endpoint.name])
        _check([ip, "-n", endpoint.name, "link", "set", "eth0", "address", endpoint.mac])
        _check([ip, "-n", endpoint.name, "addr", "add", f"{endpoint.address}/24", "dev",
                "eth0"])
        endpoint.call(_disable_tx_checksum, "eth0")
        _check([ip, "-n", endpoint.name, "link", "set", "eth0", "up"])
        # Everything off the subnet is "on the link" too, so it goes nowhere: the namespaces
        # have no way out. Without any default route Chromium gathers no ICE candidate at all,
        # and joining a multicast group (mDNS) fails with ENODEV.
        _check([ip, "-n", endpoint.name, "route", "add", "default", "dev", "eth0"])
        _check([ip, "-n", self.bridge.name, "link", "set", bridge_ifname, "promisc", "on",
                "up"])

    def _build(self) -> None:
        ip = _tool("ip")
        self._add("srv", SERVER_HOST, "02:cc:00:00:00:01")
        self._add("br", None, None)
        for k in range(self._classrooms):
            self._add(f"c{k}", CLASSROOM_HOST + k, f"02:cc:00:00:01:{k:02x}")
        self._wire(self.server, "srv")
        for k, classroom in enumerate(self.classrooms):
            self._wire(classroom, f"c{k}")
            for a, b in ((self.server, classroom), (classroom, self.server)):
                assert b.address is not None and b.mac is not None
                _check([ip, "-n", a.name, "neigh", "replace", b.address, "lladdr", b.mac,
                        "dev", "eth0", "nud", "permanent"])
        self._bridge = _Bridge(self.bridge,
                               [(f"c{k}", c.mac or "") for k, c in enumerate(self.classrooms)],
                               self._seed, self.workdir / "bridge.log")
        self.links = [Link(self, k, c) for k, c in enumerate(self.classrooms)]
        down, up = self._initial
        for link in self.links:
            link.apply(down=down, up=up)

    def control(self, message: Mapping[str, Any]) -> dict[str, Any]:
        if self._bridge is None:
            raise NetemError("the network is not started")
        return self._bridge.request(message)

    def close(self) -> None:
        """End every process in the namespaces and delete them. Safe to call again, also
        after it raised (it then retries what it could not do)."""
        if self.closed:
            return
        problems: list[str] = []
        for process in self._processes:
            if process is not getattr(self._bridge, "process", None):
                _stop(process)
        if self._bridge is not None:
            self._bridge.stop()
        for namespace in reversed(self._namespaces):
            problem = _remove_namespace(namespace.name)
            if problem:
                problems.append(problem)
        if problems:
            raise NetemError("; ".join(problems))
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self.closed = True


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not: it is dead, only not yet reaped by its parent,
    which may be a Popen of this process; reaping it here would rob that Popen of its status)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _remove_namespace(name: str) -> str | None:
    """Kill what still runs in namespace `name`, then delete it. A problem's text, or None."""
    ip = _tool("ip")
    result = subprocess.run([ip, "netns", "pids", name], capture_output=True, check=False)
    pids = [int(p) for p in result.stdout.split()]
    if os.getpid() in pids:  # this process's main thread is inside (Namespace.entered())
        return f"not deleting namespace {name}: this process is still inside it"
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for pid in pids:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
    result = subprocess.run([ip, "netns", "del", name], capture_output=True, check=False)
    if result.returncode != 0 and (NETNS_DIR / name).exists():
        return f"could not delete namespace {name}: {result.stderr.decode().strip()}"
    return None


def _owner(name: str) -> int | None:
    parts = name.split("-")
    if len(parts) >= 3 and parts[0] == PREFIX and parts[1].isdigit():
        return int(parts[1])
    return None


def cleanup_leftovers() -> list[str]:
    """Delete the namespaces (and their processes) that a run no longer alive left behind."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(os.listdir(NETNS_DIR)):
            pid = _owner(entry)
            if pid is None or pid == os.getpid() or _alive(pid):
                continue
            problem = _remove_namespace(entry)
            if problem:
                raise NetemError(problem)
            removed.append(entry)
    return removed


def require_capabilities() -> None:
    """NetemError naming what is missing: root, iproute2, AF_PACKET."""
    if os.geteuid() != 0:
        raise NetemError("the emulated network needs root (network namespaces, veth, tc); "
                         "run the tests as root, as CI does")
    _tool("ip")
    _tool("tc")
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except OSError as exc:
        raise NetemError(f"AF_PACKET raw sockets are not available: {exc}") from exc


def namespaces() -> list[str]:
    """`ip netns list` names (for checks that nothing was left behind)."""
    result = _check([_tool("ip"), "netns", "list"])
    return [line.split()[0] for line in result.stdout.decode().splitlines() if line.strip()]


# --- pytest -------------------------------------------------------------------------------------
NetworkFactory = Callable[..., Network]


@pytest.fixture(name="netem")
def netem_fixture() -> Iterator[NetworkFactory]:
    """`netem`: makes started `Network`s (same arguments), every one closed at teardown, pass
    or fail. A test module imports it: `from tests.netem import netem_fixture  # noqa: F401`."""
    made: list[Network] = []

    def make(*args: Any, **kwargs: Any) -> Network:
        network = Network(*args, **kwargs)
        made.append(network)
        network.start()
        return network

    yield make
    problems = []
    for network in made:
        try:
            network.close()
        except NetemError as exc:
            problems.append(str(exc))
    assert not problems, problems
