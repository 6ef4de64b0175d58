"""A WHIP/WHEP client on aiortc: what `classcast ingest`, the tests and the benchmarks use.

It gathers all candidates before the POST (no trickle), follows RFC 9725 for the resource
URL, and DELETEs the session when closed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import urljoin

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from server import ice

logger = logging.getLogger(__name__)


class WhipError(Exception):
    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


class WhipSession:
    """One WHIP (publish) or WHEP (play) session; `pc` is set up by the caller before `start`."""

    def __init__(self, endpoint: str, token: str, *,
                 ice_addresses: Sequence[str] = (), pc: RTCPeerConnection | None = None) -> None:
        self.endpoint = endpoint
        self.token = token
        self.pc = pc or RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.location: str | None = None
        self._ice_addresses = tuple(ice_addresses)
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        with ice.host_addresses(self._ice_addresses):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        self._http = aiohttp.ClientSession()
        async with self._http.post(
            self.endpoint, data=self.pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp",
                     "Authorization": f"Bearer {self.token}"}) as response:
            body = await response.text()
            if response.status != 201:
                retry = response.headers.get("Retry-After")
                raise WhipError(response.status, body, float(retry) if retry else None)
            self.location = urljoin(self.endpoint, response.headers["Location"])
        await self.pc.setRemoteDescription(RTCSessionDescription(body, "answer"))

    async def close(self) -> None:
        try:
            if self.location and self._http is not None:
                try:
                    async with self._http.delete(
                            self.location,
                            headers={"Authorization": f"Bearer {self.token}"}) as response:
                        await response.read()
                except aiohttp.ClientError as exc:
                    logger.info("DELETE %s failed: %s", self.location, exc)
                self.location = None
        finally:
            await self.pc.close()
            if self._http is not None:
                await self._http.close()
                self._http = None
