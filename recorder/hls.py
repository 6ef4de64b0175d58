"""Reading the HLS playlists ffmpeg writes (fMP4 segments, EVENT type)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    uri: str
    duration_s: float


@dataclass(frozen=True)
class Playlist:
    map_uri: str | None
    segments: tuple[Segment, ...]
    ended: bool

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.segments)


def parse(text: str) -> Playlist:
    map_uri: str | None = None
    segments: list[Segment] = []
    pending: float | None = None
    ended = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXT-X-MAP:"):
            for part in line[len("#EXT-X-MAP:"):].split(","):
                key, _, value = part.partition("=")
                if key.strip() == "URI":
                    map_uri = value.strip().strip('"')
        elif line.startswith("#EXTINF:"):
            pending = float(line[len("#EXTINF:"):].split(",")[0])
        elif line == "#EXT-X-ENDLIST":
            ended = True
        elif line and not line.startswith("#") and pending is not None:
            segments.append(Segment(line, pending))
            pending = None
    return Playlist(map_uri, tuple(segments), ended)


def with_end(text: str) -> str:
    """The playlist closed for playback (used when a crash left it open)."""
    if "#EXT-X-ENDLIST" in text:
        return text
    return text.rstrip("\n") + "\n#EXT-X-ENDLIST\n"
