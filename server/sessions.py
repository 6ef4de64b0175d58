"""Peer sessions: one RTCPeerConnection per WHIP/WHEP resource, and who ends it.

A session ends on DELETE, on ICE/DTLS failure (aioice's consent freshness closes dead peers),
when it has not connected within the connect timeout, or at shutdown. Every task here has an
owner: the session's watchdog is cancelled and awaited by `close()`, and the registry awaits
every close it starts.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

logger = logging.getLogger(__name__)


class Role(enum.StrEnum):
    PUBLISHER = "publisher"
    SUBSCRIBER = "subscriber"


CloseHook = Callable[["PeerSession"], Awaitable[None]]


class PeerSession:
    def __init__(self, room: str, role: Role, subject: str, connect_timeout_s: float,
                 max_bundle: bool = False) -> None:
        self.id = secrets.token_hex(16)
        self.room = room
        self.role = role
        self.subject = subject
        self.created_at = time.monotonic()
        self.connected_at: float | None = None
        # Two video m-lines (camera and screen) negotiate only with max-bundle (DESIGN §5).
        self.pc = RTCPeerConnection(RTCConfiguration(
            iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE if max_bundle
            else RTCBundlePolicy.BALANCED))
        # A subscriber's media lines: those it asked for, and those the relay sends it with
        # the codec each is pinned to.
        self.wanted_slots: frozenset[str] = frozenset()
        self.sent_codecs: dict[str, RTCRtpCodecParameters] = {}
        self.close_cause: str | None = None
        self._on_close: list[CloseHook] = []
        self._connect_timeout_s = connect_timeout_s
        self._watchdog: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self.pc.on("connectionstatechange", self._state_changed)

    @property
    def state(self) -> str:
        return str(self.pc.connectionState)

    @property
    def closed(self) -> bool:
        return self._closing is not None

    def on_close(self, hook: CloseHook) -> None:
        self._on_close.append(hook)

    def start_watchdog(self) -> None:
        self._watchdog = asyncio.create_task(self._watch(), name=f"watchdog-{self.id[:8]}")

    async def _watch(self) -> None:
        await asyncio.sleep(self._connect_timeout_s)
        if self.connected_at is None:
            logger.info("%s %s in room %s did not connect in %.0f s; closing", self.role,
                        self.id[:8], self.room, self._connect_timeout_s)
            self.begin_close("timeout")

    def _state_changed(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and self.connected_at is None:
            self.connected_at = time.monotonic()
            logger.info("%s %s in room %s connected in %.0f ms", self.role, self.id[:8],
                        self.room, (self.connected_at - self.created_at) * 1000)
        elif state in ("failed", "closed"):
            self.begin_close("ice_failed" if state == "failed" else "peer_closed")

    def begin_close(self, cause: str) -> asyncio.Task[None]:
        """Start closing (idempotent); the returned task finishes when everything is freed."""
        if self._closing is None:
            self.close_cause = cause
            self._closing = asyncio.create_task(self._close(), name=f"close-{self.id[:8]}")
        return self._closing

    async def close(self, cause: str) -> None:
        await asyncio.shield(self.begin_close(cause))

    async def _close(self) -> None:
        watchdog = self._watchdog
        if watchdog is not None and watchdog is not asyncio.current_task():
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
        for hook in self._on_close:
            try:
                await hook(self)
            except Exception:
                logger.exception("close hook of session %s failed", self.id[:8])
        await self.pc.close()
        logger.info("%s %s in room %s closed (%s)", self.role, self.id[:8], self.room,
                    self.close_cause)
