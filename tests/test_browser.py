"""The pages in a real Chromium (Debian's /usr/bin/chromium, driven by Playwright).

A teacher page publishes Chromium's fake camera and microphone over WHIP and classroom pages
play the room over WHEP, through the real relay on loopback; frames are counted with
`getStats()` inside the classroom page (its quality line keeps the counters in data-*
attributes). Synchronisation is by polling page state with `wait_for_function`, never sleeps.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import BrowserContext, ConsoleMessage, Page, async_playwright

from server.settings import Settings
from tests.conftest import Peers

CHROMIUM = "/usr/bin/chromium"

# No skip when Chromium is missing: `make test` installs it, and a missing browser must fail.

logger = logging.getLogger(__name__)

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-device-for-media-stream",  # a 640x360 20 fps test pattern and a beeping mic
    "--use-fake-ui-for-media-stream",  # getUserMedia is granted without a prompt
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # ICE on loopback. The relay (settings fixture) offers only 127.0.0.1. Chromium leaves
    # loopback out of its host candidates; this switch adds 127.0.0.1 and ::1 (measured with
    # Chromium 156: candidates 127.0.0.1, 192.0.2.2, ::1, fd00::2 instead of the last two
    # alone), so the selected pair is 127.0.0.1 <-> 127.0.0.1.
    # Not needed: disabling mDNS candidates (--disable-features=WebRtcHideLocalIpsWithMdns).
    # Chromium replaces host IPs with random .local names (which aiortc cannot resolve without
    # multicast) on pages without camera permission, but not on loopback origins: measured,
    # a data: page got .local candidates, an http://127.0.0.1 page raw IPs. Passing our own
    # --disable-features would also clash with the list Playwright passes.
    # Not available: --force-webrtc-ip-handling-policy (not a switch in Chromium 156).
    "--allow-loopback-in-peer-connection",
]

WAIT_MS = 30_000

# The classroom page's getStats() counters, as its quality line publishes them.
FRAMES_DECODED = "Number(document.getElementById('quality').dataset.framesDecoded || 0)"
AUDIO_PACKETS = "Number(document.getElementById('quality').dataset.audioPackets || 0)"
STATE = "document.getElementById('state').dataset.state"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Classrooms that join early are told to retry after 1 s (not 5), to keep tests short."""
    return dataclasses.replace(settings,
                               relay=dataclasses.replace(settings.relay, retry_after_s=1))


@pytest.fixture
async def chromium(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile", headless=False, executable_path=CHROMIUM,
            args=CHROMIUM_ARGS)
        context.set_default_timeout(WAIT_MS)
        try:
            yield context
        finally:
            await context.close()


def page_url(client: TestClient, path: str, **query: str) -> str:
    return f"{client.make_url(path)}?{urlencode(query)}"


async def open_page(chromium: BrowserContext, url: str, name: str) -> Page:
    page = await chromium.new_page()

    def log(message: ConsoleMessage) -> None:
        logger.info("%s console %s: %s", name, message.type, message.text)

    page.on("console", log)
    page.on("pageerror", lambda exc: logger.error("%s page error: %s", name, exc))
    await page.goto(url)
    return page


async def go_live(chromium: BrowserContext, client: TestClient, token: Callable[..., str],
                  room: str, **query: str) -> Page:
    """Open the teacher console, wait for the camera preview, click Go live, wait for live."""
    query.setdefault("lang", "zh")
    teach = await open_page(chromium, page_url(client, f"/teach/{room}",
                                               token=token("teacher", room), **query), "teach")
    await teach.wait_for_function(f"{STATE} === 'idle'")
    go_live_name = "Go live" if query.get("lang") == "en" else "开始上课"
    await teach.get_by_role("button", name=go_live_name).click()
    await teach.wait_for_function(f"{STATE} === 'live'")
    return teach


async def wait_playing(classroom: Page, frames: int = 30, audio_packets: int = 0) -> None:
    await classroom.wait_for_function(
        f"{FRAMES_DECODED} > {frames} && {AUDIO_PACKETS} >= {audio_packets}")
    # The <video> itself plays (muted, with an unmute button, if autoplay blocked sound).
    await classroom.wait_for_function(
        "(v => !v.paused && v.readyState >= 2 && v.videoWidth > 0)"
        "(document.getElementById('player'))")


async def test_teacher_page_publishes_and_classroom_page_plays(
        client: TestClient, token: Callable[..., str], chromium: BrowserContext) -> None:
    room = "maths-1"
    teach = await go_live(chromium, client, token, room)
    assert await teach.locator("#state").inner_text() == "直播中"
    classroom = await open_page(chromium, page_url(client, f"/class/{room}",
                                                   token=token("classroom", room)), "class")
    await wait_playing(classroom, frames=30, audio_packets=50)
    assert await classroom.evaluate(STATE) == "live"
    quality = await classroom.locator("#quality").inner_text()
    assert "帧/秒" in quality and "kbps" in quality

    response = await client.get(f"/api/rooms/{room}",
                                headers={"Authorization": f"Bearer {token('admin')}"})
    info = await response.json()
    assert info["live"] and len(info["publishers"]) == 1 and info["subscriber_count"] == 1

    # End lesson: the teacher page DELETEs its session and the relay lets the room go.
    await teach.get_by_role("button", name="下课").click()
    await teach.wait_for_function(f"{STATE} === 'ended'")
    response = await client.get("/api/rooms",
                                headers={"Authorization": f"Bearer {token('admin')}"})
    rooms = {r["name"]: r for r in (await response.json())["rooms"]}
    assert room not in rooms or not rooms[room]["publishers"]


async def test_classroom_opened_early_waits_then_joins_by_itself(
        client: TestClient, token: Callable[..., str], chromium: BrowserContext) -> None:
    room = "physics-2"
    classroom = await open_page(chromium, page_url(client, f"/class/{room}", lang="en",
                                                   token=token("classroom", room)), "class")
    await classroom.wait_for_function(f"{STATE} === 'waiting'")
    assert "The lesson starts soon" in await classroom.locator("#state").inner_text()

    # The teacher's Chromium publishes H264 this time (setCodecPreferences via ?codec=).
    await go_live(chromium, client, token, room, lang="en", codec="h264")
    await wait_playing(classroom, frames=30, audio_packets=50)
    assert await classroom.evaluate(STATE) == "live"


async def test_aiortc_h264_lesson_plays_in_chromium(
        client: TestClient, token: Callable[..., str], chromium: BrowserContext,
        peers: Peers) -> None:
    room = "chem-3"
    await peers.publish(room, codec="video/H264")
    classroom = await open_page(chromium, page_url(client, f"/class/{room}",
                                                   token=token("classroom", room)), "class")
    await wait_playing(classroom, frames=30, audio_packets=50)
    codec = await classroom.evaluate(
        """async () => {
             const stats = await window.classcast.session.pc.getStats();
             for (const s of stats.values()) {
               if (s.type === 'inbound-rtp' && s.kind === 'video') {
                 return stats.get(s.codecId).mimeType;
               }
             }
           }""")
    assert codec == "video/H264"


async def test_pages_reconnect_when_the_relay_drops_them(
        client: TestClient, token: Callable[..., str], chromium: BrowserContext) -> None:
    room = "bio-4"
    teach = await go_live(chromium, client, token, room)
    classroom = await open_page(chromium, page_url(client, f"/class/{room}",
                                                   token=token("classroom", room)), "class")
    await wait_playing(classroom)
    admin = {"Authorization": f"Bearer {token('admin')}"}

    # The relay drops the teacher (an admin DELETEs the session): the page publishes again by
    # itself, and the classroom (still connected) gets pictures from the new session.
    teacher_location = await teach.evaluate("new URL(window.classcast.session.location).pathname")
    frames = int(await classroom.evaluate(FRAMES_DECODED))
    response = await client.delete(teacher_location, headers=admin)
    assert response.status == 200
    await teach.wait_for_function(
        f"{STATE} === 'live' && window.classcast.session"
        f" && !window.classcast.session.location.endsWith({teacher_location!r})")
    await classroom.wait_for_function(f"{FRAMES_DECODED} > {frames + 30}")

    # The relay drops the classroom: it joins again with a new session.
    class_location = await classroom.evaluate(
        "new URL(window.classcast.session.location).pathname")
    response = await client.delete(class_location, headers=admin)
    assert response.status == 200
    await classroom.wait_for_function(
        "window.classcast.session"
        f" && !window.classcast.session.location.endsWith({class_location!r})"
        f" && {FRAMES_DECODED} > 30")
    assert await classroom.evaluate(STATE) == "live"


async def test_whip_module_trickles_and_reports_retry_after(
        client: TestClient, token: Callable[..., str], chromium: BrowserContext,
        peers: Peers) -> None:
    """whip.js on its own: a 409 carries retryAfter; trickle mode PATCHes its candidates."""
    room = "art-5"
    page = await open_page(chromium, page_url(client, "/", lang="en"), "home")
    patches: list[str] = []
    page.on("request", lambda r: patches.append(r.post_data or "") if r.method == "PATCH" else None)
    watch = token("classroom", room)

    early = await page.evaluate(
        """async ([room, token]) => {
             const { play, WhipError } = await import('/static/whip.js');
             try { await play(`/whep/${room}`, token); return 'joined'; }
             catch (err) { return [err instanceof WhipError, err.status, err.retryAfter]; }
           }""", [room, watch])
    assert early == [True, 409, 1]

    await peers.publish(room, codec="video/H264")
    await page.evaluate(
        """async ([room, token]) => {
             const { play } = await import('/static/whip.js');
             window.session = await play(`/whep/${room}`, token, { trickle: true });
             // wait_for_function does not await promises: keep a plain counter to poll.
             window.framesDecoded = 0;
             setInterval(async () => {
               const stats = await window.session.pc.getStats();
               for (const s of stats.values()) {
                 if (s.type === 'inbound-rtp' && s.kind === 'video') {
                   window.framesDecoded = s.framesDecoded;
                 }
               }
             }, 250);
           }""", [room, watch])
    await page.wait_for_function("window.framesDecoded > 30")
    assert any("a=candidate:" in body for body in patches)
    assert any("a=end-of-candidates" in body for body in patches)
    assert await page.evaluate("window.session.close()") == 200
