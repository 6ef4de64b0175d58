"""ffmpeg (argv built with ffmpeg-python, `-c copy`): RTP in, HLS with fMP4 segments out."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import ffmpeg

from recorder.rtp import StreamSpec, port_bound, session_sdp

logger = logging.getLogger(__name__)

PLAYLIST = "index.m3u8"
INIT = "init.mp4"
READY_TIMEOUT_S = 10.0


def argv(sdp_path: Path, spool: Path, segment_s: float) -> list[str]:
    source = ffmpeg.input(str(sdp_path), protocol_whitelist="file,udp,rtp",
                          reorder_queue_size=500, analyzeduration=1_000_000)
    out = ffmpeg.output(
        source, str(spool / PLAYLIST), c="copy", f="hls", hls_time=segment_s,
        hls_segment_type="fmp4", hls_playlist_type="event",
        hls_flags="independent_segments+temp_file", hls_fmp4_init_filename=INIT,
        hls_segment_filename=str(spool / "seg_%05d.m4s"))
    return list(out.global_args("-hide_banner", "-loglevel", "warning", "-nostdin")
                .overwrite_output().compile())


class Segmenter:
    """One ffmpeg process writing one recording's HLS into its spool directory."""

    def __init__(self, spool: Path, streams: list[StreamSpec], segment_s: float) -> None:
        self.spool = spool
        self.streams = streams
        self.segment_s = segment_s
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        sdp_path = self.spool / "input.sdp"
        await asyncio.to_thread(sdp_path.write_text, session_sdp(self.streams), "ascii")
        log = await asyncio.to_thread(open, self.spool / "ffmpeg.log", "ab")
        try:
            self._process = await asyncio.create_subprocess_exec(
                *argv(sdp_path, self.spool, self.segment_s), stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=log)
        finally:
            log.close()
        # Media sent before ffmpeg binds its ports would be lost: wait until it listens.
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_S
        while not all(port_bound(s.port) for s in self.streams):
            if self._process.returncode is not None:
                raise RuntimeError(f"ffmpeg exited early: {self.log_tail()}")
            if asyncio.get_running_loop().time() > deadline:
                await self.stop()
                raise RuntimeError("ffmpeg did not open its RTP ports")
            await asyncio.sleep(0.02)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def log_tail(self) -> str:
        try:
            return (self.spool / "ffmpeg.log").read_text(errors="replace")[-500:].strip()
        except OSError:
            return ""

    async def wait(self) -> int:
        assert self._process is not None
        return await self._process.wait()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """terminate → wait(timeout) → kill; ffmpeg writes the final playlist on SIGTERM."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            logger.warning("ffmpeg in %s ignored SIGTERM; killing it", self.spool)
            process.kill()
            await process.wait()
