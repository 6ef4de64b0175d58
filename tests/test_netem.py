"""The emulated network of tests/netem.py, measured with real packets.

UDP probes carry a sequence number and their send time (`time.monotonic_ns`); both ends are
sockets of this process opened inside the namespaces, so one clock times the one-way delay.
The bridge's counters say exactly which frames it dropped (loss) or the tbf queue refused, so
the tests wait for exactly the frames that must arrive (polling, no sleeps) and can tell the
emulated loss from any other. Senders pace themselves with sleeps: sending at a rate is the
point there, and rate measurements are over a time window by nature.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import async_playwright

from tests.netem import (
    NETNS_DIR,
    PREFIX,
    Link,
    Namespace,
    NetemError,
    Network,
    NetworkFactory,
    Profile,
    cleanup_leftovers,
    namespaces,
    netem_fixture,  # noqa: F401  (the `netem` fixture)
)

HEADER = struct.Struct("!Iq")  # sequence number, send time (monotonic ns)
FRAME_OVERHEAD = 14 + 20 + 8  # Ethernet + IPv4 + UDP headers: what tbf counts besides payload


@dataclass(frozen=True)
class Arrival:
    seq: int
    sent_ns: int
    received_ns: int
    size: int

    @property
    def delay_ms(self) -> float:
        return (self.received_ns - self.sent_ns) / 1e6


class Receiver:
    """A UDP socket in a namespace, read by a thread that records every probe's arrival."""

    def __init__(self, namespace: Namespace) -> None:
        assert namespace.address is not None
        self.sock = namespace.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((namespace.address, 0))
        self.sock.settimeout(0.05)
        self.address = self.sock.getsockname()
        self.arrivals: list[Arrival] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            now = time.monotonic_ns()
            seq, sent = HEADER.unpack_from(data)
            self.arrivals.append(Arrival(seq, sent, now, len(data)))

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Arrival]:
        deadline = time.monotonic() + timeout
        while len(self.arrivals) < count:
            assert time.monotonic() < deadline, \
                f"{len(self.arrivals)} of {count} expected packets arrived"
            time.sleep(0.01)
        return list(self.arrivals)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def send(namespace: Namespace, to: tuple[str, int], count: int, interval_s: float,
         size: int = 200) -> None:
    """`count` probes of `size` bytes (UDP payload), one every `interval_s`."""
    sock = namespace.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    start = time.monotonic()
    padding = bytes(size - HEADER.size)
    try:
        for seq in range(count):
            wait = start + seq * interval_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # pacing: the send rate is what is being set
            sock.sendto(HEADER.pack(seq, time.monotonic_ns()) + padding, to)
    finally:
        sock.close()


def send_both(link: Link, server: Namespace, down: tuple[Receiver, int, float, int],
              up: tuple[Receiver, int, float, int]) -> None:
    """Send downstream (server -> classroom) and upstream at once, each as (receiver,
    count, interval, size)."""
    threads = [
        threading.Thread(target=send, args=(server, down[0].address, *down[1:])),
        threading.Thread(target=send, args=(link.classroom, up[0].address, *up[1:])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def settled(link: Link, down_offered: int, up_offered: int) -> dict[str, dict[str, int]]:
    """The bridge's counters for the link once every frame offered (sent by a socket, this
    many since the network started) went through: the tbf queues are empty and the bridge has
    seen each frame that upstream's tbf let through and released everything it held."""
    deadline = time.monotonic() + 10
    while True:
        queues = link.queues()  # first: a frame leaving a queue reaches the bridge at once
        stats = link.stats()
        if (queues["down"]["backlog"] == queues["up"]["backlog"] == 0
                and stats["down"]["frames"] >= down_offered
                and stats["up"]["frames"] >= up_offered - queues["up"]["drops"]
                and stats["down"]["held"] == stats["up"]["held"] == 0):
            return stats
        assert time.monotonic() < deadline, f"frames still in flight: {stats} {queues}"
        time.sleep(0.01)


def wire_kbit(arrivals: list[Arrival]) -> tuple[float, float]:
    """(rate on the wire, UDP payload goodput) in kbit/s between the first and last arrival."""
    arrivals = sorted(arrivals, key=lambda a: a.received_ns)
    seconds = (arrivals[-1].received_ns - arrivals[0].received_ns) / 1e9
    later = arrivals[1:]  # the first arrival opens the window
    payload = sum(a.size for a in later) * 8 / seconds / 1000
    wire = sum(a.size + FRAME_OVERHEAD for a in later) * 8 / seconds / 1000
    return wire, payload


@pytest.fixture
def receivers() -> Iterator[Callable[[Namespace], Receiver]]:
    made: list[Receiver] = []

    def make(namespace: Namespace) -> Receiver:
        receiver = Receiver(namespace)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()


# --- loss, delay, rate --------------------------------------------------------------------------
def test_udp_loss_per_direction(netem: NetworkFactory,
                                receivers: Callable[[Namespace], Receiver]) -> None:
    net = netem(down=Profile(loss=0.05), up=Profile(loss=0.10), seed=7)
    link = net.links[0]
    at_classroom, at_server = receivers(link.classroom), receivers(net.server)
    n = 3000
    send_both(link, net.server, (at_classroom, n, 0.0005, 200), (at_server, n, 0.0005, 200))
    stats = settled(link, n, n)
    down = at_classroom.wait_for(stats["down"]["sent"])
    up = at_server.wait_for(stats["up"]["sent"])
    # exactly the frames the bridge dropped on purpose are missing, nothing else
    assert len(down) == n - stats["down"]["udp_lost"]
    assert len(up) == n - stats["up"]["udp_lost"]
    assert stats["down"]["send_dropped"] == stats["up"]["send_dropped"] == 0
    down_loss, up_loss = 1 - len(down) / n, 1 - len(up) / n
    print(f"loss measured: down {down_loss:.4f} (set 0.05), up {up_loss:.4f} (set 0.10), n={n}")
    assert 0.035 <= down_loss <= 0.065  # +-0.015 is 3.8 standard deviations at n = 3000
    assert 0.08 <= up_loss <= 0.12
    assert len({a.seq for a in down}) == len(down)  # no duplicates


def test_one_way_delay_and_jitter(netem: NetworkFactory,
                                  receivers: Callable[[Namespace], Receiver]) -> None:
    net = netem(down=Profile(delay_ms=80), up=Profile(delay_ms=30))
    link = net.links[0]
    at_classroom, at_server = receivers(link.classroom), receivers(net.server)
    n = 100
    send_both(link, net.server, (at_classroom, n, 0.01, 200), (at_server, n, 0.01, 200))
    down = [a.delay_ms for a in at_classroom.wait_for(n)]
    up = [a.delay_ms for a in at_server.wait_for(n)]
    print(f"delay down: min {min(down):.2f} median {statistics.median(down):.2f} "
          f"max {max(down):.2f} ms (set 80); up: min {min(up):.2f} "
          f"median {statistics.median(up):.2f} max {max(up):.2f} ms (set 30)")
    # never early; late only by scheduling (a shared 2-core machine: generous upper bounds)
    assert 80 <= min(down) and statistics.median(down) < 86 and max(down) < 130
    assert 30 <= min(up) and statistics.median(up) < 36 and max(up) < 80

    link.set(jitter_ms=20, direction="down")
    at_classroom.arrivals.clear()
    send(net.server, at_classroom.address, n, 0.01)
    arrivals = at_classroom.wait_for(n)
    jittered = [a.delay_ms for a in arrivals]
    print(f"delay with 20 ms jitter: min {min(jittered):.2f} median "
          f"{statistics.median(jittered):.2f} max {max(jittered):.2f} "
          f"stdev {statistics.stdev(jittered):.2f} ms")
    assert 60 <= min(jittered) and max(jittered) < 150
    assert statistics.stdev(jittered) > 5
    assert [a.seq for a in arrivals] == sorted(a.seq for a in arrivals)  # never reordered


def test_rate_limit_per_direction(netem: NetworkFactory,
                                  receivers: Callable[[Namespace], Receiver]) -> None:
    net = netem(down=Profile(rate_kbit=300), up=Profile(rate_kbit=150))
    link = net.links[0]
    at_classroom, at_server = receivers(link.classroom), receivers(net.server)
    size = 1200  # offered: 1242-byte frames every 16 ms = 621 kbit/s, twice the down rate
    send_both(link, net.server, (at_classroom, 180, 0.016, size),
              (at_server, 90, 0.032, size))
    stats = settled(link, 180, 90)
    down = at_classroom.wait_for(stats["down"]["sent"])
    up = at_server.wait_for(stats["up"]["sent"])
    down_wire, down_goodput = wire_kbit(down)
    up_wire, up_goodput = wire_kbit(up)
    print(f"rate down: wire {down_wire:.1f} kbit/s, UDP goodput {down_goodput:.1f} (tbf 300); "
          f"up: wire {up_wire:.1f}, goodput {up_goodput:.1f} (tbf 150); "
          f"down frames refused by tbf {stats['down']['send_dropped']}")
    assert 300 * 0.9 <= down_wire <= 300 * 1.1
    assert 300 * 0.85 <= down_goodput <= 300 * 1.15
    assert 150 * 0.85 <= up_goodput <= 150 * 1.15
    assert stats["down"]["send_dropped"] > 0  # offered twice the rate: the queue overflowed


def test_profile_changes_at_run_time(netem: NetworkFactory,
                                     receivers: Callable[[Namespace], Receiver]) -> None:
    net = netem()
    link = net.links[0]
    at_classroom = receivers(link.classroom)

    def measure(count: int, interval: float, size: int = 200) -> list[Arrival]:
        at_classroom.arrivals.clear()
        before = link.stats()["down"]
        send(net.server, at_classroom.address, count, interval, size)
        after = settled(link, before["frames"] + count, 0)["down"]
        return at_classroom.wait_for(after["sent"] - before["sent"])

    clean = measure(200, 0.002)
    assert len(clean) == 200 and statistics.median(a.delay_ms for a in clean) < 10

    link.set(loss=0.5, delay_ms=120)
    lossy = measure(400, 0.002)
    assert 0.40 <= 1 - len(lossy) / 400 <= 0.60
    assert min(a.delay_ms for a in lossy) >= 120

    link.set(rate_kbit=200, loss=0.0, delay_ms=0)
    limited = measure(100, 0.016, 1200)
    wire, _ = wire_kbit(limited)
    assert 200 * 0.85 <= wire <= 200 * 1.15

    link.set(rate_kbit=None)
    assert link.down == Profile() and link.up == Profile()
    back = measure(200, 0.002)
    assert len(back) == 200 and statistics.median(a.delay_ms for a in back) < 10
    print(f"run-time changes: clean {len(clean)}/200, 50 % loss -> {len(lossy)}/400 "
          f"min delay {min(a.delay_ms for a in lossy):.1f} ms, 200 kbit -> {wire:.1f} kbit/s, "
          f"clean again {len(back)}/200")


def test_a_thread_enters_a_namespace_and_comes_back(netem: NetworkFactory) -> None:
    net = netem()
    server = net.server.address
    with net.server.entered():
        inside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        inside.bind((server or "", 0))  # the address exists only in the server namespace
        child = subprocess.run(["ip", "-br", "addr", "show", "eth0"], capture_output=True,
                               check=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as outside, \
            pytest.raises(OSError, match="Cannot assign requested address"):
        outside.bind((server or "", 0))
    assert f"{server}/24".encode() in child.stdout  # processes started inside are inside
    classroom = net.classrooms[0]
    receiver = classroom.socket()
    receiver.bind((classroom.address or "", 0))
    receiver.settimeout(5)
    inside.sendto(b"from inside", receiver.getsockname())
    assert receiver.recvfrom(100) == (b"from inside", (server, inside.getsockname()[1]))
    inside.close()
    receiver.close()
    with net.server.entered(), pytest.raises(NetemError, match="this process is still inside"):
        net.close()  # would kill this very process
    net.close()
    assert not set(net.names) & set(namespaces())


# --- cleanup ------------------------------------------------------------------------------------
def test_nothing_is_left_after_the_context_even_on_failure() -> None:
    with pytest.raises(RuntimeError, match="the test body failed"), \
            Network(classrooms=2) as net:
        names = net.names
        assert set(names) <= set(namespaces())
        sleeper = net.classrooms[1].popen(["sleep", "60"])
        # not started through popen: found by `ip netns pids` and killed by pid
        stray = subprocess.Popen(net.server.argv(["sleep", "60"]))
        bridge_pid = net.bridge.pids()[0]
        raise RuntimeError("the test body failed")
    assert not set(names) & set(namespaces())
    assert sleeper.poll() is not None and stray.wait(5) is not None
    assert not Path(f"/proc/{bridge_pid}").exists()
    assert not net.workdir.exists()


FAILING_TEST = """
from pathlib import Path
from tests.netem import netem_fixture  # noqa: F401

def test_fails(netem):
    net = netem(classrooms=2)
    net.classrooms[0].popen(["sleep", "60"])
    Path({names!r}).write_text(" ".join(net.names))
    assert False, "this test fails on purpose"
"""


def test_the_fixture_cleans_up_after_a_failing_test(tmp_path: Path) -> None:
    names_file = tmp_path / "names"
    (tmp_path / "test_inner.py").write_text(FAILING_TEST.format(names=str(names_file)))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
         str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, env={**os.environ, "PYTHONPATH": str(root)}, timeout=60,
        check=False)
    assert result.returncode == 1, result.stdout.decode()[-2000:]
    assert b"this test fails on purpose" in result.stdout
    names = names_file.read_text().split()
    assert len(names) == 4 and not set(names) & set(namespaces())


def test_leftovers_of_a_dead_run_are_removed() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid now names no process: a crashed run's
    name = f"{PREFIX}-{dead.pid}-0-srv"
    subprocess.run(["ip", "netns", "add", name], check=True)
    orphan = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "60"])
    deadline = time.monotonic() + 5
    while not subprocess.run(["ip", "netns", "pids", name], capture_output=True).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert name in cleanup_leftovers()
    assert name not in namespaces() and not (NETNS_DIR / name).exists()
    assert orphan.wait(5) == -9


def test_missing_capability_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(NetemError, match="needs root"):
        Network().start()


# --- real clients across the emulated network ---------------------------------------------------
async def start_http(net: Network, handler: Callable[[web.Request], object]
                     ) -> tuple[web.AppRunner, str]:
    """An aiohttp server of this process, listening in the server namespace."""
    app = web.Application()
    app.router.add_get("/", handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = net.server.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((net.server.address or "", 0))
    await web.SockSite(runner, sock).start()
    return runner, f"http://{net.server.address}:{sock.getsockname()[1]}/"


GATHER = """async () => {
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", {direction: "recvonly"});
  await pc.setLocalDescription(await pc.createOffer());
  while (pc.iceGatheringState !== "complete") {
    await new Promise((done) => { pc.onicegatheringstatechange = done; });
  }
  const sdp = pc.localDescription.sdp;
  pc.close();
  return sdp;
}"""
PAGE = "<!doctype html><title>netem</title><p id=who>{remote}</p>"


async def test_http_get_from_a_classroom_on_a_weak_link(netem: NetworkFactory) -> None:
    net = netem(down=Profile(rate_kbit=300, loss=0.05, delay_ms=80),
                up=Profile(rate_kbit=300, loss=0.05, delay_ms=80))

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.remote}")

    runner, url = await start_http(net, hello)
    try:
        fetch = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read())"
        started = time.monotonic()
        result = await asyncio.to_thread(net.classrooms[0].run, [sys.executable, "-c", fetch,
                                                                  url])
        elapsed = time.monotonic() - started
    finally:
        await runner.cleanup()
    assert f"hello {net.classrooms[0].address}".encode() in result.stdout
    print(f"HTTP GET over 300 kbit/s, 5 % UDP loss, 80 ms each way: {elapsed:.2f} s "
          "(with the Python start-up)")


async def test_chromium_in_a_classroom_namespace_loads_a_page_and_gathers(netem: NetworkFactory,
                                                              tmp_path: Path) -> None:
    net = netem(down=Profile(delay_ms=40), up=Profile(delay_ms=40))
    classroom = net.classrooms[0]

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE.format(remote=request.remote), content_type="text/html")

    runner, url = await start_http(net, page)
    try:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                tmp_path / "profile", headless=False,
                executable_path=classroom.chromium(net.workdir),
                args=["--headless=new", "--no-sandbox", "--disable-gpu",
                      "--disable-background-networking", "--disable-component-update",
                      "--disable-sync", "--no-first-run"])
            try:
                browser_pids = classroom.pids()
                tab = await context.new_page()
                await tab.goto(url, timeout=20_000)
                who = await tab.text_content("#who")
                rtt_ms = await tab.evaluate(
                    "async (u) => { const t = performance.now(); await fetch(u); "
                    "return performance.now() - t; }", url)
                offer = await tab.evaluate(GATHER)
            finally:
                await context.close()
    finally:
        await runner.cleanup()
    assert browser_pids, "Chromium is not running in the classroom namespace"
    assert who == classroom.address  # the request came from the classroom's address
    assert rtt_ms >= 80  # a fetch crossed the 40 ms + 40 ms link
    # WebRTC: a host candidate with the classroom's own address, not an mDNS name (which the
    # relay could not resolve: see netem.CHROMIUM_DISABLED_FEATURES)
    candidates = [line for line in offer.splitlines() if line.startswith("a=candidate:")]
    assert candidates and all(f" {classroom.address} " in c for c in candidates), candidates
    print(f"Chromium in {classroom.name}: page loaded, remote {who}, fetch {rtt_ms:.0f} ms, "
          f"{len(browser_pids)} browser processes in the namespace")
