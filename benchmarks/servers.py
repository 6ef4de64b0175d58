"""The servers under test, each run as its own process: `python benchmarks/servers.py ...`.

- `classcast`: the real service, `server.app.create_app(settings)` under `web.run_app`, with
  settings from the CLASSCAST_* environment (used when the `classcast` CLI is not installed, or
  with `relay.py --server app`).
- `baseline`: the naive alternative the relay is compared with: a tiny aiohttp + aiortc server
  taking the same WHIP/WHEP POSTs, which decodes the teacher's tracks and relays the decoded
  frames with `aiortc.contrib.media.MediaRelay`, so every subscriber's sender re-encodes them
  (libx264 for video, libopus for audio). It checks no tokens and keeps no metrics.

  To be fair to it: the teacher's tracks are drained from the moment they arrive (otherwise
  aiortc queues decoded 720p frames without bound until the first classroom joins), and each
  classroom's proxy is unbuffered (`buffered=False`: a busy encoder takes the newest frame
  instead of queueing every one).

  Its frames cannot be matched by content (they are re-encoded), so for the latency figures
  it notes the pts of the first video frame each classroom's encoder takes; decoded frames
  keep the teacher's pts, so a classroom's RTP timestamps map back to the teacher's frames.
  `GET /first-pts` returns {session id: pts}.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # see benchmarks/__init__.py

import argparse
import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError
from av.frame import Frame
from av.packet import Packet

from server import ice

logger = logging.getLogger("baseline")


# --- ClassCast ------------------------------------------------------------------------------
def serve_classcast(args: argparse.Namespace) -> None:
    """The service as `classcast serve` builds it, configured by CLASSCAST_* variables."""
    from server.app import create_app
    from server.settings import load

    settings = load(environ=os.environ)
    web.run_app(create_app(settings), host=settings.http.host, port=settings.http.port,
                print=None, shutdown_timeout=5, loop=_new_loop(args.loop))


# --- baseline -------------------------------------------------------------------------------
class FirstFrameProbe(MediaStreamTrack):
    """Passes a relay proxy's frames through, noting the pts of the first one."""

    def __init__(self, source: MediaStreamTrack, on_first: Callable[[int], None]) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source
        self._on_first: Callable[[int], None] | None = on_first

    async def recv(self) -> Frame | Packet:
        frame = await self._source.recv()
        if self._on_first is not None and frame.pts is not None:
            self._on_first(int(frame.pts))
            self._on_first = None
        return frame

    def stop(self) -> None:
        super().stop()
        self._source.stop()


@dataclass
class NaiveRoom:
    tracks: dict[str, MediaStreamTrack] = field(default_factory=dict)


class NaiveRelay:
    """Decode once, re-encode per subscriber: aiortc's MediaRelay as its docs suggest."""

    def __init__(self, ice_addresses: tuple[str, ...]) -> None:
        self._ice_addresses = ice_addresses
        self.relay = MediaRelay()
        self.rooms: dict[str, NaiveRoom] = {}
        self.pcs: dict[str, RTCPeerConnection] = {}
        self.first_pts: dict[str, int] = {}
        self._drains: set[asyncio.Task[None]] = set()

    async def _answer(self, pc: RTCPeerConnection) -> str:
        with ice.host_addresses(self._ice_addresses):
            await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    def _register(self, pc: RTCPeerConnection) -> str:
        session_id = secrets.token_hex(8)
        self.pcs[session_id] = pc

        @pc.on("connectionstatechange")
        async def state_changed() -> None:
            if pc.connectionState in ("failed", "closed"):
                self.pcs.pop(session_id, None)
                await pc.close()

        return session_id

    async def _drain(self, track: MediaStreamTrack) -> None:
        proxy = self.relay.subscribe(track, buffered=False)
        try:
            while True:
                await proxy.recv()
        except MediaStreamError:
            pass

    async def publish(self, room_name: str, offer: str) -> tuple[str, str]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        room = self.rooms.setdefault(room_name, NaiveRoom())

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            room.tracks[track.kind] = track
            task = asyncio.create_task(self._drain(track))
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)

        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        return self._register(pc), await self._answer(pc)

    async def subscribe(self, room_name: str, offer: str) -> tuple[str, str]:
        room = self.rooms.get(room_name)
        if room is None or not room.tracks:
            raise web.HTTPConflict(text="not live", headers={"Retry-After": "1"})
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        session_id = self._register(pc)

        def first(pts: int) -> None:
            self.first_pts[session_id] = pts

        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        for kind, track in room.tracks.items():
            proxy = self.relay.subscribe(track, buffered=False)
            pc.addTrack(FirstFrameProbe(proxy, first) if kind == "video" else proxy)
        return session_id, await self._answer(pc)

    async def delete(self, session_id: str) -> None:
        pc = self.pcs.pop(session_id, None)
        if pc is None:
            raise web.HTTPNotFound()
        await pc.close()

    async def close(self) -> None:
        await asyncio.gather(*(pc.close() for pc in self.pcs.values()), return_exceptions=True)
        self.pcs.clear()
        for task in list(self._drains):
            task.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)


NAIVE_KEY = web.AppKey("naive", NaiveRelay)


def baseline_app(ice_addresses: tuple[str, ...]) -> web.Application:
    app = web.Application()

    async def post(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        room = request.match_info["room"]
        offer = await request.text()
        relay = request.app[NAIVE_KEY]
        if kind == "whip":
            session_id, answer = await relay.publish(room, offer)
        else:
            session_id, answer = await relay.subscribe(room, offer)
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={"Location": f"/{kind}/{room}/{session_id}"})

    async def delete(request: web.Request) -> web.Response:
        await request.app[NAIVE_KEY].delete(request.match_info["session"])
        return web.Response(status=200)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def first_pts(request: web.Request) -> web.Response:
        return web.json_response(request.app[NAIVE_KEY].first_pts)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        app[NAIVE_KEY] = NaiveRelay(ice_addresses)
        yield
        await app[NAIVE_KEY].close()

    app.router.add_post("/{kind:whip|whep}/{room}", post)
    app.router.add_delete("/{kind:whip|whep}/{room}/{session}", delete)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/first-pts", first_pts)
    app.cleanup_ctx.append(lifetime)
    return app


def serve_baseline(args: argparse.Namespace) -> None:
    web.run_app(baseline_app(tuple(args.ice_address)), host=args.host, port=args.port,
                print=None, shutdown_timeout=5, loop=_new_loop(args.loop))


# --- entry point ----------------------------------------------------------------------------
def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=("classcast", "baseline"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="baseline only")
    parser.add_argument("--ice-address", action="append", default=[], help="baseline only")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    (serve_classcast if args.kind == "classcast" else serve_baseline)(args)


if __name__ == "__main__":
    main()
