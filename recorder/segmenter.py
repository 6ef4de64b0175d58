"""ffmpeg (argv built with ffmpeg-python, `-c copy`): RTP in, HLS with fMP4 segments out."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import ffmpeg

from recorder.rtp import StreamSpec, port_bound, session_sdp

logger = logging.getLogger(__name__)

PLAYLIST = "index.m3u8"
INIT = "init.mp4"
PID_FILE = "ffmpeg.pid"
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


def _terminate_with_parent() -> None:
    """In the child: kill ffmpeg if the service dies (Linux prctl PR_SET_PDEATHSIG).

    SIGKILL, not SIGTERM: measured here, ffmpeg signalled at its parent's death aborted its
    trailer half-way and replaced the playlist with an empty file. Killed outright, it leaves
    the last playlist it wrote (a complete file, renamed into place), which lists every
    complete segment: what the recovery on the next start archives."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


PR_SET_PDEATHSIG = 1


class Segmenter:
    """One ffmpeg process writing one recording's HLS into its spool directory."""

    def __init__(self, spool: Path, streams: list[StreamSpec], segment_s: float) -> None:
        self.spool = spool
        self.streams = streams
        self.segment_s = segment_s
        self._process: asyncio.subprocess.Process | None = None
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        sdp_path = self.spool / "input.sdp"
        await asyncio.to_thread(sdp_path.write_text, session_sdp(self.streams), "ascii")
        log = await asyncio.to_thread(open, self.spool / "ffmpeg.log", "ab")
        try:
            self._process = await asyncio.create_subprocess_exec(
                *argv(sdp_path, self.spool, self.segment_s), stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=log, preexec_fn=_terminate_with_parent)
        finally:
            log.close()
        await asyncio.to_thread((self.spool / PID_FILE).write_text, str(self._process.pid))
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

    async def stop(self, timeout_s: float = 10.0,
                   wake: Callable[[], None] | None = None) -> None:
        """terminate → wait(timeout) → kill; ffmpeg writes the final playlist on SIGTERM.

        Exactly one SIGTERM: ffmpeg aborts its output writes on a second signal, which left
        a 0-byte playlist when two callers stopped it at once. ffmpeg notices the signal only
        when its RTP input wakes it, so `wake` (a repeated packet) is sent until it exits:
        without it, a lesson whose media had stopped lost its last segment to the kill."""
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._stop(timeout_s, wake),
                                                 name="ffmpeg-stop")
        await asyncio.shield(self._stopping)

    async def _stop(self, timeout_s: float, wake: Callable[[], None] | None) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while process.returncode is None:
            if wake is not None:
                wake()
            try:
                await asyncio.wait_for(process.wait(), 0.1)
            except TimeoutError:
                if asyncio.get_running_loop().time() > deadline:
                    logger.warning("ffmpeg in %s ignored SIGTERM; killing it", self.spool)
                    process.kill()
                    await process.wait()


async def wait_for_orphan(spool: Path, timeout_s: float = 15.0) -> None:
    """After a crash, the ffmpeg of `spool` may still be closing its files (it got SIGTERM
    when the service died): wait for it, so the recovery reads a finished playlist."""
    pid = await asyncio.to_thread(_orphan_pid, spool)
    if pid is None:
        return
    deadline = asyncio.get_running_loop().time() + timeout_s
    while _alive(pid):
        if asyncio.get_running_loop().time() > deadline:
            logger.warning("ffmpeg %d of %s is still running after a restart; killing it",
                           pid, spool)
            os.kill(pid, signal.SIGKILL)
            break
        await asyncio.sleep(0.1)


def _orphan_pid(spool: Path) -> int | None:
    try:
        pid = int((spool / PID_FILE).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if str(spool).encode() in cmdline else None  # else the pid was reused


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
