"""SDP as the relay reads and writes it: offer checks, codec choice, answer adjustments, and
trickle-ICE fragments (RFC 8840) for WHIP/WHEP PATCH."""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiortc import RTCIceCandidate
from aiortc.codecs import CODECS
from aiortc.rtcpeerconnection import is_codec_compatible
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.sdp import MediaDescription, SessionDescription, candidate_from_sdp

from server.errors import BadRequest, Unprocessable

ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
SENDING = ("sendonly", "sendrecv")
RECEIVING = ("recvonly", "sendrecv")


@dataclass(frozen=True)
class MediaOffer:
    """One audio or video m-section of an offer, with the codec the relay will use for it."""

    index: int
    kind: str
    mid: str
    direction: str
    codec: RTCRtpCodecParameters | None  # aiortc's codec; None if nothing offered is usable


@dataclass(frozen=True)
class Offer:
    text: str
    media: tuple[MediaOffer, ...]


def parse_offer(text: str) -> Offer:
    """Parse an offer; 400 if it is not SDP a WebRTC peer could have sent."""
    if not text.strip():
        raise BadRequest("the request body is empty; send an SDP offer")
    if not text.lstrip().startswith("v=0"):
        raise BadRequest("the body is not SDP: it must start with 'v=0'")
    text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    try:
        parsed = SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises whatever the bad line provokes
        raise BadRequest(f"the SDP offer could not be parsed: {exc}") from exc
    media: list[MediaOffer] = []
    for index, m in enumerate(parsed.media):
        if m.kind not in ("audio", "video"):
            continue
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
            raise BadRequest(f"m-section {index} ({m.kind}) has no a=ice-ufrag/a=ice-pwd")
        if m.dtls is None or not m.dtls.fingerprints:
            raise BadRequest(f"m-section {index} ({m.kind}) has no a=fingerprint")
        if m.rtp.muxId == "":
            raise BadRequest(f"m-section {index} ({m.kind}) has no a=mid")
        media.append(MediaOffer(index, m.kind, m.rtp.muxId, m.direction or "sendrecv",
                                _choose_codec(m)))
    if not media:
        raise BadRequest("the SDP offer has no audio or video m-section")
    return Offer(text, tuple(media))


def _choose_codec(m: MediaDescription) -> RTCRtpCodecParameters | None:
    """The first codec the peer offered (its preference) that the relay can forward."""
    for offered in m.rtp.codecs:
        if offered.name.lower() == "rtx":
            continue
        for local in CODECS[m.kind]:
            if is_codec_compatible(local, offered):
                return local
    return None


def require_publishable(offer: Offer) -> None:
    """WHIP: every m-section sends, at most one audio and two video (camera and screen),
    codecs we can relay."""
    kinds = [m.kind for m in offer.media]
    for kind, most in (("audio", 1), ("video", 2)):
        if kinds.count(kind) > most:
            raise Unprocessable(f"a WHIP session carries at most {most} {kind} track"
                                f"{'s (camera and screen)' if most > 1 else ''}; "
                                "publish another source as another session")
    for m in offer.media:
        if m.direction not in SENDING:
            raise Unprocessable(f"m-section {m.index} ({m.kind}) is {m.direction}; "
                                "a WHIP offer must be sendonly or sendrecv")
        if m.codec is None:
            raise Unprocessable(f"m-section {m.index} ({m.kind}) offers no codec the relay "
                                "forwards (audio: Opus, G.722, PCMU, PCMA; video: H264, VP8)")


def require_playable(offer: Offer) -> None:
    """WHEP: every m-section receives."""
    for m in offer.media:
        if m.direction not in RECEIVING:
            raise Unprocessable(f"m-section {m.index} ({m.kind}) is {m.direction}; "
                                "a WHEP offer must be recvonly or sendrecv")


def capabilities(codec: RTCRtpCodecParameters) -> list[RTCRtpCodecCapability]:
    """Codec preferences that pin a transceiver to `codec` (plus RTX for video)."""
    caps = [RTCRtpCodecCapability(mimeType=codec.mimeType, clockRate=codec.clockRate,
                                  channels=codec.channels, parameters=codec.parameters)]
    if codec.mimeType.lower().startswith("video/"):
        caps.append(RTCRtpCodecCapability(mimeType="video/rtx", clockRate=codec.clockRate))
    return caps


def without_bandwidth_feedback(text: str) -> str:
    """Drop goog-remb and abs-send-time from a publisher's offer, so the answer has neither.

    aiortc's REMB estimates hold a Chrome publisher at ~725 kbps; without them Chrome ramps to
    its target bitrate on its own (DESIGN.md §5)."""
    ext_ids = set(re.findall(r"^a=extmap:(\d+)(?:/\w+)? " + re.escape(ABS_SEND_TIME) + r"\s*$",
                             text, flags=re.M))
    out = []
    for line in text.split("\r\n"):
        if re.match(r"^a=rtcp-fb:\S+ goog-remb\s*$", line):
            continue
        m = re.match(r"^a=extmap:(\d+)", line)
        if m and m.group(1) in ext_ids:
            continue
        out.append(line)
    return "\r\n".join(out)


def with_bundled_candidates(offer: str) -> str:
    """Give every bundled m-section the candidates of the first one, where it has none.

    Chromium's max-bundle offers put candidates in the first m-section only. aiortc keeps one
    candidate list per transport and takes it from the *last* m-section on that transport, so
    when two m-sections share one (two video lines, or max-bundle) it sees none, prunes the ICE
    component and gathers nothing: the answer has no candidates and ICE never starts (measured
    with Chromium 156 offering camera, screen and audio)."""
    eol = "\r\n"
    head, *sections = offer.split(eol + "m=")
    if not sections:
        return offer
    group = re.search(r"^a=group:BUNDLE (.+)$", head, flags=re.M)
    if group is None:
        return offer
    bundled = group.group(1).split()

    def mid(section: str) -> str | None:
        found = re.search(r"^a=mid:(\S+)", section, flags=re.M)
        return found.group(1) if found else None

    def candidates(section: str) -> list[str]:
        return [line for line in section.split(eol)
                if line.startswith(("a=candidate:", "a=end-of-candidates"))]

    primary = next((s for s in sections if mid(s) == bundled[0]), None)
    if primary is None or not [c for c in candidates(primary) if c.startswith("a=cand")]:
        return offer
    shared = candidates(primary)
    out = []
    for section in sections:
        if mid(section) in bundled[1:] and not [c for c in candidates(section)
                                                if c.startswith("a=cand")]:
            lines = [line for line in section.split(eol) if line != "a=end-of-candidates"]
            tail = [""] if lines and lines[-1] == "" else []
            body = lines[:-1] if tail else lines
            section = eol.join(body + shared + tail)
        out.append(section)
    return (eol + "m=").join([head, *out])


def without_mdns_candidates(offer: str) -> str:
    """Drop host candidates hidden behind mDNS names (`<uuid>.local`), and with them the
    end-of-candidates mark of a section left with none.

    Chromium hides a page's host addresses behind such names unless the page is on loopback
    or has camera permission: a classroom screen offers nothing else (without STUN/TURN).
    The relay cannot resolve them from another network (and aioice fails on Chromium's mDNS
    answers), and given only unusable candidates plus end-of-candidates aiortc gathers none of
    its own: the answer has no candidates and ICE never starts (measured). Without them the
    relay answers with its candidates, the browser checks them, and the relay learns the
    browser's address from those checks (a peer-reflexive candidate)."""
    eol = "\r\n"
    head, *sections = offer.split(eol + "m=")
    out = []
    for section in sections:
        lines = section.split(eol)
        kept = [line for line in lines if not (
            line.startswith("a=candidate:") and len(line.split()) > 4
            and line.split()[4].lower().endswith(".local"))]
        if len(kept) != len(lines) and not any(x.startswith("a=candidate:") for x in kept):
            kept = [line for line in kept if line != "a=end-of-candidates"]
        out.append(eol.join(kept))
    return (eol + "m=").join([head, *out])


def with_opus_fec(answer: str) -> str:
    """Ask the peer for Opus in-band FEC (useinbandfec=1) in an answer aiortc wrote."""
    lines = answer.split("\r\n")
    opus_pts = {m.group(1) for line in lines
                if (m := re.match(r"^a=rtpmap:(\d+) opus/48000", line, flags=re.I))}
    out: list[str] = []
    has_fmtp = {m.group(1) for line in lines
                if (m := re.match(r"^a=fmtp:(\d+) ", line)) and m.group(1) in opus_pts}
    for line in lines:
        m = re.match(r"^a=fmtp:(\d+) (.*)$", line)
        if m and m.group(1) in opus_pts and "useinbandfec" not in m.group(2):
            line = f"{line};useinbandfec=1"
        out.append(line)
        r = re.match(r"^a=rtpmap:(\d+) opus/48000", line, flags=re.I)
        if r and r.group(1) not in has_fmtp:
            out.append(f"a=fmtp:{r.group(1)} useinbandfec=1")
    return "\r\n".join(out)


@dataclass(frozen=True)
class SdpFragment:
    """A trickle-ICE fragment (application/trickle-ice-sdpfrag)."""

    ufrag: str | None
    password: str | None
    candidates: tuple[RTCIceCandidate, ...]
    end_of_candidates: bool


def parse_fragment(text: str) -> SdpFragment:
    ufrag = password = None
    mid: str | None = None
    candidates: list[RTCIceCandidate] = []
    end = False
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("a=ice-ufrag:"):
            ufrag = line.split(":", 1)[1]
        elif line.startswith("a=ice-pwd:"):
            password = line.split(":", 1)[1]
        elif line.startswith("a=mid:"):
            mid = line.split(":", 1)[1]
        elif line.startswith("a=candidate:"):
            try:
                candidate = candidate_from_sdp(line[len("a="):].split(":", 1)[1])
            except (ValueError, IndexError, AssertionError):
                continue  # unusable candidates are dropped silently (RFC 9725 4.3.1)
            candidate.sdpMid = mid
            candidate.sdpMLineIndex = 0 if mid is None else None
            candidates.append(candidate)
        elif line == "a=end-of-candidates":
            end = True
        elif line.startswith(("a=group:", "m=", "a=ice-options:", "c=")):
            continue
        elif not re.match(r"^[a-z]=", line):
            raise BadRequest(f"not a trickle-ice-sdpfrag line: {line[:80]!r}")
    return SdpFragment(ufrag, password, tuple(candidates), end)
