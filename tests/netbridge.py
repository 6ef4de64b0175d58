"""The userspace link emulator that `tests/netem.py` runs in its bridge namespace.

The kernel here has no `netem` qdisc, so random loss and one-way delay are applied by this
process: it holds an AF_PACKET raw socket on each veth end of the bridge namespace (the server's
link and one per classroom) and forwards Ethernet frames between them, by destination MAC
(broadcasts to every other port; a classroom reaches the server only, not other classrooms).

Per direction of each classroom link ("down" = server -> classroom, "up" = classroom -> server):
- loss: each IPv4 UDP frame is dropped with this probability (a seeded RNG per direction).
  Every other frame (TCP, ARP, ICMP, ...) is never dropped by the bridge, so HTTP signalling and
  page loads stay reliable; they still get the delay and the rate limit;
- delay_ms (+ jitter_ms): every frame is held for delay +- a uniform jitter, never reordered
  (a frame is not released before the frame that came before it in the same direction);
- the rate limit is not here: `tc tbf` on the veth ends does it (netem.py).

Checksums: an endpoint's veth hands over CHECKSUM_PARTIAL frames (the L4 checksum not yet
computed) unless its TX checksum offload is off. netem.py turns it off, and this bridge also
completes the UDP/TCP checksum of any IPv4 frame the kernel marks "checksum not ready"
(PACKET_AUXDATA), so a frame never reaches a socket with a bad checksum. The count is in stats.

Control: JSON lines on stdin, one answer line each on stdout:
  {"cmd": "set", "link": 0, "dir": "down", "loss": 0.05, "delay_ms": 80, "jitter_ms": 0}
  {"cmd": "stats"}
The bridge prints {"ready": true} once its sockets are bound, and exits when stdin closes (so it
never outlives the process that started it) or on SIGTERM.

Standard library only: it runs as `python tests/netbridge.py --server IF --link IF=MAC ...`.
"""

from __future__ import annotations

import argparse
import errno
import heapq
import json
import os
import random
import selectors
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_IGNORE_OUTGOING = 23
TP_STATUS_CSUMNOTREADY = 0x8
AUXDATA = struct.Struct("IIIHHHH")  # struct tpacket_auxdata
IPPROTO_TCP, IPPROTO_UDP = 6, 17
BROADCAST_BIT = 0x01  # the I/G bit of the destination MAC's first octet
MAX_HELD = 20_000  # frames held for delay per direction; past that, new frames are dropped
BATCH = 64  # frames read from one socket per wake-up


def checksum(data: bytes) -> int:
    """The Internet checksum's one's complement sum, folded to 16 bits (not inverted)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def complete_l4_checksum(frame: bytearray) -> bool:
    """Fill in the UDP or TCP checksum of an IPv4 Ethernet frame; False if it is neither."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return False
    ihl = (frame[14] & 0x0F) * 4
    proto = frame[23]
    total_len = int.from_bytes(frame[16:18], "big")
    l4 = 14 + ihl
    end = 14 + total_len
    if proto == IPPROTO_UDP:
        offset = l4 + 6
    elif proto == IPPROTO_TCP:
        offset = l4 + 16
    else:
        return False
    if end > len(frame) or offset + 2 > end:
        return False
    frame[offset:offset + 2] = b"\0\0"
    pseudo = bytes(frame[26:34]) + struct.pack("!BBH", 0, proto, end - l4)
    value = 0xFFFF - checksum(pseudo + bytes(frame[l4:end]))
    if proto == IPPROTO_UDP and value == 0:
        value = 0xFFFF
    frame[offset:offset + 2] = value.to_bytes(2, "big")
    return True


def is_udp(frame: bytes | bytearray) -> bool:
    return len(frame) >= 34 and frame[12:14] == b"\x08\x00" and frame[23] == IPPROTO_UDP


@dataclass
class Direction:
    """One direction of one link: its impairments, its held frames' release order, counters."""

    name: str
    rng: random.Random
    loss: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    last_due: float = 0.0
    counters: dict[str, int] = field(default_factory=lambda: {
        "frames": 0, "bytes": 0, "udp": 0, "udp_lost": 0, "held_overflow": 0,
        "sent": 0, "send_dropped": 0, "csum_completed": 0})
    held: int = 0

    def configure(self, loss: float, delay_ms: float, jitter_ms: float) -> None:
        if not 0.0 <= loss <= 1.0 or delay_ms < 0 or jitter_ms < 0:
            raise ValueError(f"bad profile: loss={loss} delay_ms={delay_ms} jitter={jitter_ms}")
        self.loss, self.delay_ms, self.jitter_ms = loss, delay_ms, jitter_ms

    def due(self, now: float) -> float:
        delay = self.delay_ms
        if self.jitter_ms:
            delay += self.rng.uniform(-self.jitter_ms, self.jitter_ms)
        due = max(now + max(delay, 0.0) / 1000.0, self.last_due)
        self.last_due = due
        return due


class Port:
    """One veth end of the bridge namespace, with a raw socket on it."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            pass  # older kernels: outgoing frames are skipped by their packet type below
        for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # *BUFFORCE
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, force, 4 << 20)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        self.sock.bind((ifname, ETH_P_ALL))
        self.sock.setblocking(False)

    def receive(self) -> tuple[bytearray, bool] | None:
        """One frame and whether its L4 checksum is still to be computed; None when drained."""
        try:
            data, ancdata, _flags, address = self.sock.recvmsg(65536, socket.CMSG_SPACE(32))
        except BlockingIOError:
            return None
        if address[2] == socket.PACKET_OUTGOING:
            return bytearray(), False
        partial = False
        for level, kind, payload in ancdata:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(payload) >= AUXDATA.size:
                partial = bool(AUXDATA.unpack_from(payload)[0] & TP_STATUS_CSUMNOTREADY)
        return bytearray(data), partial

    def send(self, frame: bytes | bytearray) -> bool:
        """False when the interface's qdisc (the tbf queue) or buffer refused the frame."""
        try:
            self.sock.send(frame)
        except OSError as exc:
            if exc.errno in (errno.ENOBUFS, errno.EAGAIN, errno.EMSGSIZE):
                return False
            raise
        return True


class Bridge:
    def __init__(self, server_if: str, links: list[tuple[str, bytes]], seed: int) -> None:
        self.server = Port(server_if)
        self.ports = [Port(ifname) for ifname, _ in links]
        self.macs = {mac: index for index, (_, mac) in enumerate(links)}
        self.down = [Direction(f"{i}/down", random.Random(f"{seed}/{i}/down"))
                     for i in range(len(links))]
        self.up = [Direction(f"{i}/up", random.Random(f"{seed}/{i}/up"))
                   for i in range(len(links))]
        self.heap: list[tuple[float, int, Port, bytes | bytearray, Direction]] = []
        self.sequence = 0
        self.unknown_dst = 0
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.server.sock, selectors.EVENT_READ, -1)
        for index, port in enumerate(self.ports):
            self.selector.register(port.sock, selectors.EVENT_READ, index)
        self.selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "control")
        self.control_buffer = b""
        self.running = True

    # --- forwarding ---------------------------------------------------------------------------
    def _enqueue(self, direction: Direction, out: Port, frame: bytearray, partial: bool,
                 now: float) -> None:
        counters = direction.counters
        counters["frames"] += 1
        counters["bytes"] += len(frame)
        if partial and complete_l4_checksum(frame):
            counters["csum_completed"] += 1
        if is_udp(frame):
            counters["udp"] += 1
            if direction.loss and direction.rng.random() < direction.loss:
                counters["udp_lost"] += 1
                return
        if direction.held >= MAX_HELD:
            counters["held_overflow"] += 1
            return
        due = direction.due(now)
        if due <= now and not self.heap:
            self._transmit(direction, out, frame)
            return
        direction.held += 1
        self.sequence += 1
        heapq.heappush(self.heap, (due, self.sequence, out, frame, direction))

    def _transmit(self, direction: Direction, out: Port, frame: bytes | bytearray) -> None:
        if out.send(frame):
            direction.counters["sent"] += 1
        else:
            direction.counters["send_dropped"] += 1

    def _from_server(self, frame: bytearray, partial: bool, now: float) -> None:
        dst = bytes(frame[0:6])
        if dst[0] & BROADCAST_BIT:
            for i, port in enumerate(self.ports):
                self._enqueue(self.down[i], port, bytearray(frame), partial, now)
            return
        index = self.macs.get(dst)
        if index is None:
            self.unknown_dst += 1
            return
        self._enqueue(self.down[index], self.ports[index], frame, partial, now)

    def _release(self, now: float) -> None:
        while self.heap and self.heap[0][0] <= now:
            _, _, out, frame, direction = heapq.heappop(self.heap)
            direction.held -= 1
            self._transmit(direction, out, frame)

    def _drain(self, key: int) -> None:
        port = self.server if key == -1 else self.ports[key]
        for _ in range(BATCH):
            got = port.receive()
            if got is None:
                return
            frame, partial = got
            if not frame:
                continue
            now = time.monotonic()
            if key == -1:
                self._from_server(frame, partial, now)
            else:
                self._enqueue(self.up[key], self.server, frame, partial, now)

    # --- control ------------------------------------------------------------------------------
    def _answer(self, message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    def _command(self, line: bytes) -> None:
        try:
            request = json.loads(line)
            if request["cmd"] == "set":
                link = int(request["link"])
                directions = {"down": self.down, "up": self.up}[request["dir"]]
                directions[link].configure(float(request["loss"]), float(request["delay_ms"]),
                                           float(request.get("jitter_ms", 0.0)))
                self._answer({"ok": True})
            elif request["cmd"] == "stats":
                self._answer({"ok": True, "unknown_dst": self.unknown_dst, "links": [
                    {"down": {**self.down[i].counters, "held": self.down[i].held},
                     "up": {**self.up[i].counters, "held": self.up[i].held}}
                    for i in range(len(self.ports))]})
            else:
                raise ValueError(f"unknown command {request['cmd']!r}")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            self._answer({"ok": False, "error": str(exc)})

    def _control(self) -> None:
        chunk = os.read(sys.stdin.fileno(), 65536)
        if not chunk:
            self.running = False
            return
        self.control_buffer += chunk
        while b"\n" in self.control_buffer:
            line, self.control_buffer = self.control_buffer.split(b"\n", 1)
            if line.strip():
                self._command(line)

    def run(self) -> None:
        self._answer({"ready": True})
        while self.running:
            timeout = None
            if self.heap:
                timeout = max(0.0, self.heap[0][0] - time.monotonic())
            for key, _ in self.selector.select(timeout):
                if key.data == "control":
                    self._control()
                else:
                    self._drain(key.data)
            self._release(time.monotonic())


def parse_link(text: str) -> tuple[str, bytes]:
    ifname, _, mac = text.partition("=")
    return ifname, bytes.fromhex(mac.replace(":", ""))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="interface of the server's link")
    parser.add_argument("--link", action="append", type=parse_link, default=[],
                        help="IFNAME=MAC: a classroom's link and its endpoint's MAC")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # SIGTERM keeps its default action (exit at once): nothing is buffered worth saving.
    Bridge(args.server, args.link, args.seed).run()


if __name__ == "__main__":
    main()
