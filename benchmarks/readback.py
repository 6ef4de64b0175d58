"""Reading recordings back for `recorder.py`: demux what the bucket holds, and match it
frame by frame against a publisher's send log; read the baseline's MP4."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from benchmarks.clip import KEYINT, Clip, nal_units
from recorder import hls


def read_back(directory: Path, playlist_text: str) -> tuple[list[list[bytes]], list[int], str]:
    """Demux init + segments (in playlist order): video frames as NAL units, audio sizes."""
    playlist = hls.parse(playlist_text)
    joined = directory / "joined.mp4"
    with joined.open("wb") as out:
        for name in ([playlist.map_uri] if playlist.map_uri else []) + [
                s.uri for s in playlist.segments]:
            out.write((directory / name).read_bytes())
    video: list[list[bytes]] = []
    audio: list[int] = []
    codec = ""
    with av.open(str(joined)) as container:
        length_size = 4
        for stream in container.streams:
            if stream.type == "video":
                codec = stream.codec_context.name
                extradata = stream.codec_context.extradata
                if extradata and len(extradata) > 4 and extradata[0] == 1:  # avcC
                    length_size = (extradata[4] & 0x03) + 1
        for packet in container.demux():
            if packet.size == 0:
                continue
            data = bytes(packet)
            if packet.stream.type == "video":
                video.append(split_avcc(data, length_size))
            elif packet.stream.type == "audio":
                audio.append(len(data))
    joined.unlink()
    return video, audio, codec


def split_avcc(data: bytes, length_size: int) -> list[bytes]:
    nals: list[bytes] = []
    i = 0
    while i + length_size <= len(data):
        n = int.from_bytes(data[i:i + length_size], "big")
        i += length_size
        nals.append(data[i:i + n])
        i += n
    return nals


@dataclass(frozen=True)
class SentFrame:
    key: int
    t: float
    nal_bytes: int
    annexb_bytes: int


def sent_frames(clip: Clip, sends: list[list[Any]]) -> list[SentFrame]:
    sizes = {f.key: (sum(len(n) for n in nal_units(f.data)), len(f.data)) for f in clip.video}
    return [SentFrame(int(key), float(t), *sizes[int(key)]) for key, _pts, t in sends]


def match(stored: list[int], sent: list[SentFrame], stop_at: float,
          lookahead: int = 2 * KEYINT) -> tuple[int, int, int, int, int]:
    """Walk the stored frames along the send log.

    Returns (index of the first stored frame in the log, matched, unmatched, missing, tail).
    The clip loops, so a frame's key recurs every loop: the first stored frame is placed at
    the earliest send after which the first stored frames follow in order."""
    probe = stored[:30]
    start = -1
    for j in range(len(sent) - len(probe) + 1):
        if all(sent[j + i].key == key for i, key in enumerate(probe)):
            start = j
            break
    if start < 0:
        return -1, 0, len(stored), 0, 0
    matched = unmatched = missing = 0
    j = start
    for key in stored:
        ahead = next((x for x in range(j, min(j + lookahead, len(sent))) if sent[x].key == key),
                     None)
        if ahead is None:
            unmatched += 1
            continue
        missing += ahead - j
        matched += 1
        j = ahead + 1
    tail = sum(1 for f in sent[j:] if f.t < stop_at)
    return start, matched, unmatched, missing, tail


def audio_sent(clip: Clip, times: list[float], t0: float, t1: float) -> tuple[int, int]:
    frames = sizes = 0
    for i, t in enumerate(times):
        if t0 <= t < t1:
            frames += 1
            sizes += len(clip.audio[i % len(clip.audio)])
    return frames, sizes


def read_mp4(path: Path) -> tuple[int, int, float, str]:
    """(video frames, audio frames, duration s, video codec) of the baseline's file."""
    video = audio = 0
    codec = ""
    with av.open(str(path)) as container:
        duration = float(container.duration or 0) / 1_000_000
        for stream in container.streams:
            if stream.type == "video":
                codec = stream.codec_context.name
        for packet in container.demux():
            if packet.size == 0:
                continue
            if packet.stream.type == "video":
                video += 1
            elif packet.stream.type == "audio":
                audio += 1
    return video, audio, duration, codec
