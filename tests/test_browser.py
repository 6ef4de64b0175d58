"""The pages in a real Chromium (Debian's /usr/bin/chromium, driven by Playwright).

A teacher page publishes Chromium's fake camera and microphone over WHIP and classroom pages
play the room over WHEP, through the real relay on loopback; frames are counted with
`getStats()` inside the classroom page (its quality line keeps the counters in data-*
attributes). Synchronisation is by polling page state with `wait_for_function`, never sleeps.
Every page's console is watched: a test fails on any console error or uncaught exception
(except the browser's own network lines where a test takes the server away on purpose).
Screenshots of the teacher and classroom pages, in Chinese and English, go to
`test-artifacts/pages/` for a person to look at.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from playwright.async_api import BrowserContext, ConsoleMessage, Page, async_playwright

from server.app import create_app
from server.keys import ISSUER_KEY
from server.settings import Settings
from server.tokens import Role
from tests.conftest import Peers

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("CLASSCAST_TEST_ARTIFACTS")
                 or Path(__file__).resolve().parent.parent / "test-artifacts") / "pages"
# What Chromium itself logs as console errors when a request fails on the network or is
# refused; pages cannot prevent these, and tests that cause them on purpose allow them.
NETWORK_LINE = re.compile(r"^console: (Failed to load resource|WebSocket connection to )")

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


class Console:
    """Console errors and uncaught exceptions of every page a test opens."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Page, name: str) -> None:
        def log(message: ConsoleMessage) -> None:
            logger.info("%s console %s: %s", name, message.type, message.text)
            if message.type == "error":
                self.errors.append(f"console: {message.text}")

        def crash(exc: Exception) -> None:
            logger.error("%s page error: %s", name, exc)
            self.errors.append(f"page error: {exc}")

        page.on("console", log)
        page.on("pageerror", crash)

    def beyond_network(self) -> list[str]:
        return [e for e in self.errors if not NETWORK_LINE.match(e)]


@pytest.fixture
def console() -> Iterator[Console]:
    """Fails the test at teardown if any page it watched logged a console error (tests that
    take the server away on purpose check `beyond_network()` and clear the list)."""
    watched = Console()
    yield watched
    assert watched.errors == [], watched.errors


async def open_page(chromium: BrowserContext, url: str, name: str,
                    console: Console | None = None) -> Page:
    page = await chromium.new_page()
    if console is not None:
        console.watch(page, name)
    else:
        def log(message: ConsoleMessage) -> None:
            logger.info("%s console %s: %s", name, message.type, message.text)

        page.on("console", log)
        page.on("pageerror", lambda exc: logger.error("%s page error: %s", name, exc))
    await page.goto(url)
    return page


async def shoot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path))
    return path


async def go_live(chromium: BrowserContext, client: TestClient, token: Callable[..., str],
                  room: str, console: Console | None = None, **query: str) -> Page:
    """Open the teacher console, wait for the camera preview, click Go live, wait for live."""
    query.setdefault("lang", "zh")
    teach = await open_page(chromium, page_url(client, f"/teach/{room}",
                                               token=token("teacher", room), **query), "teach",
                            console)
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


async def test_teacher_page_publishes_and_classroom_pages_play(
        client: TestClient, token: Callable[..., str], chromium: BrowserContext,
        console: Console) -> None:
    room = "maths-1"
    teach = await go_live(chromium, client, token, room, console)
    assert await teach.locator("#state").inner_text() == "直播中"
    classrooms = [await open_page(chromium, page_url(client, f"/class/{room}", token=token(
        "classroom", room, subject=school)), f"class-{school}", console)
        for school in ("north-school", "south-school")]
    for classroom in classrooms:
        await wait_playing(classroom, frames=30, audio_packets=50)
        assert await classroom.evaluate(STATE) == "live"
        quality = await classroom.locator("#quality").inner_text()
        assert "帧/秒" in quality and "kbps" in quality

    # The teacher console lists both classrooms with the relay's measurements (RTT, loss,
    # bitrate) and what each classroom's player reports (frames per second, freezes).
    await teach.wait_for_function(
        "[...document.querySelectorAll('#classrooms li')].length === 2 &&"
        " [...document.querySelectorAll('#classrooms li')].every(li =>"
        "   li.dataset.grade === 'good' && /kbps/.test(li.textContent)"
        "   && /帧\\/秒/.test(li.textContent))")
    assert await teach.locator("#classrooms-title").inner_text() == "正在收看的课堂（2）"
    names = await teach.locator("#classrooms li .who").all_inner_texts()
    assert sorted(n.split()[0] for n in names) == ["north-school", "south-school"]

    # Another microphone while live: the sender's track is replaced in the same session, and
    # the classrooms keep hearing the lesson.
    await teach.get_by_text("摄像头、麦克风和视频编码").click()  # open the settings
    mics = await teach.locator("#mic-device option").all()
    assert len(mics) >= 2 and await teach.locator("#camera-device option").count() >= 1
    location = await teach.evaluate("window.classcast.session.location")
    before = await teach.evaluate("window.classcast.stream.getAudioTracks()[0].id")
    await teach.get_by_label("麦克风").select_option(await mics[-1].get_attribute("value"))
    await teach.wait_for_function(
        f"window.classcast.stream.getAudioTracks()[0].id !== {before!r} &&"
        " window.classcast.session?.pc.getSenders().some(s => s.track &&"
        " s.track === window.classcast.stream.getAudioTracks()[0])")
    assert await teach.evaluate("window.classcast.session.location") == location
    await teach.get_by_text("摄像头、麦克风和视频编码").click()  # close the settings again
    packets = int(await classrooms[0].evaluate(AUDIO_PACKETS))
    await classrooms[0].wait_for_function(f"{AUDIO_PACKETS} > {packets + 50}")

    response = await client.get(f"/api/rooms/{room}",
                                headers={"Authorization": f"Bearer {token('admin')}"})
    info = await response.json()
    assert info["live"] and len(info["publishers"]) == 1 and info["subscriber_count"] == 2
    assert all(c["link"]["rtt_ms"] is not None for c in info["classrooms"])

    for lang in ("zh", "en"):
        if lang == "en":
            for page in (teach, classrooms[0]):
                await page.locator("#lang").click()
            await teach.wait_for_function("document.documentElement.lang === 'en'")
            await teach.wait_for_function(
                "/Classrooms watching \\(2\\)/.test(document.body.textContent)")
        await shoot(teach, f"teach-live-{lang}")
        await shoot(classrooms[0], f"class-live-{lang}")
    assert await teach.locator("#state").inner_text() == "Live"

    # End lesson: the teacher page DELETEs its session and the relay lets the room go.
    await teach.get_by_role("button", name="End lesson").click()
    await teach.wait_for_function(f"{STATE} === 'ended'")
    response = await client.get("/api/rooms",
                                headers={"Authorization": f"Bearer {token('admin')}"})
    rooms = {r["name"]: r for r in (await response.json())["rooms"]}
    assert room not in rooms or not rooms[room]["publishers"]


async def test_classroom_opened_early_waits_then_joins_by_itself(
        client: TestClient, token: Callable[..., str], chromium: BrowserContext,
        console: Console) -> None:
    room = "physics-2"
    # The home page first: no lesson yet; then a classroom page that waits for the lesson.
    home = await open_page(chromium, page_url(client, "/", lang="zh", token=token("admin")),
                           "home", console)
    await home.wait_for_function("/现在没有正在直播的课堂/.test(document.body.textContent)")
    await shoot(home, "home-empty-zh")
    classroom = await open_page(chromium, page_url(client, f"/class/{room}", lang="en",
                                                   token=token("classroom", room)), "class",
                                console)
    await classroom.wait_for_function(f"{STATE} === 'waiting'")
    assert "The lesson starts soon" in await classroom.locator("#state").inner_text()
    await shoot(classroom, "class-waiting-en")
    await classroom.locator("#lang").click()
    await classroom.wait_for_function("/课程即将开始/.test(document.getElementById('notice')"
                                      ".textContent)")
    await shoot(classroom, "class-waiting-zh")

    # The teacher's Chromium publishes H264 this time (setCodecPreferences via ?codec=).
    await go_live(chromium, client, token, room, console, lang="en", codec="h264")
    await wait_playing(classroom, frames=30, audio_packets=50)
    assert await classroom.evaluate(STATE) == "live"

    # The home page lists the live lesson and the classroom watching it.
    for lang in ("zh", "en"):
        home = await open_page(chromium, page_url(client, "/", lang=lang, token=token("admin")),
                               f"home-{lang}", console)
        await home.wait_for_function(
            f"document.body.textContent.includes({room!r})"
            f" && /{'1 个课堂在看' if lang == 'zh' else '1 watching'}/"
            ".test(document.body.textContent)")
        await shoot(home, f"home-live-{lang}")
    # While it waited, the classroom's WHEP requests were answered 409 + Retry-After (the
    # protocol), which Chromium logs as failed loads; nothing else may be logged.
    assert all("status of 409" in e for e in console.errors), console.errors
    console.errors.clear()


async def test_aiortc_h264_lesson_plays_in_chromium(
        client: TestClient, token: Callable[..., str], chromium: BrowserContext,
        peers: Peers, console: Console) -> None:
    room = "chem-3"
    await peers.publish(room, codec="video/H264")
    classroom = await open_page(chromium, page_url(client, f"/class/{room}",
                                                   token=token("classroom", room)), "class",
                                console)
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
        client: TestClient, token: Callable[..., str], chromium: BrowserContext,
        console: Console) -> None:
    room = "bio-4"
    teach = await go_live(chromium, client, token, room, console)
    classroom = await open_page(chromium, page_url(client, f"/class/{room}",
                                                   token=token("classroom", room)), "class",
                                console)
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
    # The pages' own DELETEs of the sessions the relay had already ended answer 404, which
    # Chromium logs; nothing else may be logged.
    assert console.beyond_network() == [], console.errors
    console.errors.clear()


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


async def open_classroom(chromium: BrowserContext, client: TestClient | Site,
                         token: Callable[..., str], room: str, console: Console,
                         subject: str = "", **query: str) -> Page:
    query.setdefault("lang", "zh")
    return await open_page(chromium, page_url(client, f"/class/{room}", token=token(
        "classroom", room, subject=subject), **query), f"class-{subject or room}", console)


async def test_raised_hand_and_question_reach_the_teacher_and_answered_reaches_the_classroom(
        client: TestClient, token: Callable[..., str], chromium: BrowserContext,
        console: Console) -> None:
    room = "chinese-6"
    teach = await go_live(chromium, client, token, room, console)
    classroom = await open_classroom(chromium, client, token, room, console, "east-school")
    await wait_playing(classroom)

    await classroom.get_by_role("button", name="举手").click()
    await teach.wait_for_function(
        "/east-school 举手了/.test(document.getElementById('questions').textContent)")
    await classroom.wait_for_function(
        "document.getElementById('hand').getAttribute('aria-pressed') === 'true'")

    await classroom.get_by_label("向老师提问").fill("为什么分母不能是 0？")
    await classroom.get_by_label("向老师提问").press("Enter")
    await teach.wait_for_function(
        "/为什么分母不能是 0？/.test(document.getElementById('questions').textContent)")
    assert await teach.locator("#questions-title").inner_text() == "举手和提问（2 个待回答）"
    await classroom.wait_for_function(
        "document.querySelectorAll('#my-questions li').length === 2")
    await shoot(teach, "teach-questions-zh")
    await shoot(classroom, "class-questions-zh")

    question = teach.locator("#questions li", has_text="为什么分母不能是 0？")
    await question.get_by_role("button", name="标记为已回答").click()
    await classroom.wait_for_function(
        "[...document.querySelectorAll('#my-questions li')].some(li =>"
        " li.dataset.answered === 'true' && /为什么分母不能是 0？/.test(li.textContent)"
        " && /老师已回答/.test(li.textContent))")
    await teach.wait_for_function(
        "document.getElementById('questions-title').textContent === '举手和提问（1 个待回答）'")
    for page in (teach, classroom):
        await page.locator("#lang").click()
    await teach.wait_for_function(
        "/Raised hands and questions \\(1 open\\)/.test(document.body.textContent)")
    await shoot(teach, "teach-questions-en")
    await shoot(classroom, "class-questions-en")
    # On a phone (390x844) too, in both languages.
    for page in (teach, classroom):
        await page.set_viewport_size({"width": 390, "height": 844})
    for lang in ("en", "zh"):
        if lang == "zh":
            for page in (teach, classroom):
                await page.locator("#lang").click()
            await teach.wait_for_function("document.documentElement.lang === 'zh-CN'")
        await shoot(teach, f"teach-phone-{lang}")
        await shoot(classroom, f"class-phone-{lang}")


async def test_screen_share_reaches_the_classroom_as_a_second_picture(
        client: TestClient, token: Callable[..., str], chromium: BrowserContext,
        console: Console) -> None:
    room = "geo-7"
    teach = await go_live(chromium, client, token, room, console)
    classroom = await open_classroom(chromium, client, token, room, console)
    await wait_playing(classroom)

    # Chromium's fake capture stands in for the screen; the page publishes camera + screen
    # as two video m-lines in one WHIP session.
    await teach.get_by_role("button", name="共享屏幕").click()
    await teach.wait_for_function(
        f"window.classcast.screen && {STATE} === 'live' &&"
        " window.classcast.session?.pc.getSenders().filter(s => s.track?.kind === 'video')"
        ".length === 2")
    await classroom.wait_for_function(
        "Number(document.getElementById('quality').dataset.screenFrames || 0) > 20"
        " && !document.getElementById('screen').hidden"
        " && document.getElementById('theatre').classList.contains('has-screen')")
    frames = int(await classroom.evaluate(FRAMES_DECODED))
    await classroom.wait_for_function(f"{FRAMES_DECODED} > {frames + 20}")  # camera goes on
    await shoot(teach, "teach-screen-zh")
    await shoot(classroom, "class-screen-zh")
    info = await (await client.get(f"/api/rooms/{room}", headers={
        "Authorization": f"Bearer {token('admin')}"})).json()
    assert {t["slot"] for t in info["tracks"] if t["live"]} == {"audio", "video", "screen"}

    # Stop sharing: the classroom goes back to the camera alone.
    await teach.get_by_role("button", name="停止共享屏幕").click()
    await classroom.wait_for_function(
        "document.getElementById('screen').hidden"
        " && !document.getElementById('theatre').classList.contains('has-screen')")


async def test_recording_is_switched_on_and_off_from_the_teacher_console(
        client: TestClient, token: Callable[..., str], chromium: BrowserContext,
        console: Console) -> None:
    room = "music-8"
    teach = await go_live(chromium, client, token, room, console, codec="h264")
    record_state = "document.getElementById('record-state')"
    await teach.wait_for_function(f"{record_state}.textContent === '未录制'")
    await teach.get_by_role("button", name="开始录制").click()
    await teach.wait_for_function(f"{record_state}.dataset.recording === 'true'"
                                  f" && {record_state}.textContent === '正在录制'")
    status = await (await client.get(f"/api/rooms/{room}/recording", headers={
        "Authorization": f"Bearer {token('teacher', room)}"})).json()
    assert status["recording"]["status"] == "recording"
    await teach.get_by_role("button", name="停止录制").click()
    await teach.wait_for_function(f"{record_state}.textContent === '未录制'")


async def test_pages_explain_an_expired_token_and_a_missing_camera(
        client: TestClient, token: Callable[..., str], chromium: BrowserContext,
        console: Console) -> None:
    room = "art-9"
    expired = token("classroom", room, ttl_s=-60)
    classroom = await open_page(chromium, page_url(client, f"/class/{room}", token=expired),
                                "class-expired", console)
    await classroom.wait_for_function(f"{STATE} === 'error'")
    text = await classroom.locator("#state").inner_text()
    assert "已过期" in text and "索取新的链接" in text and "expired" in text

    teach = await open_page(chromium, page_url(client, f"/teach/{room}", lang="en",
                                               token=token("teacher", room, ttl_s=-60)),
                            "teach-expired", console)
    await teach.wait_for_function(f"{STATE} === 'idle'")
    await teach.get_by_role("button", name="Go live").click()
    await teach.wait_for_function(f"{STATE} === 'error'")
    assert "has expired" in await teach.locator("#state").inner_text()
    await shoot(classroom, "class-expired-zh")
    await shoot(teach, "teach-expired-en")

    # No camera, or a denied one: getUserMedia fails as it does on such a PC.
    for error, message in (("NotFoundError", "Requested device not found"),
                           ("NotAllowedError", "Permission denied")):
        nocam = await chromium.new_page()
        console.watch(nocam, f"teach-{error}")
        await nocam.add_init_script(
            "navigator.mediaDevices.getUserMedia = () => Promise.reject("
            f"new DOMException({message!r}, {error!r}));")
        await nocam.goto(page_url(client, f"/teach/{room}", token=token("teacher", room)))
        await nocam.wait_for_function(f"{STATE} === 'error'")
        text = await nocam.locator("#state").inner_text()
        assert "没有找到摄像头" in text and "允许访问" in text and message in text
        assert await nocam.get_by_role("button", name="开始上课").is_enabled()  # a way forward
        await shoot(nocam, f"teach-{error}-zh")
        await nocam.close()
    # The refused requests (401) are logged by Chromium itself; nothing else is.
    assert console.beyond_network() == []
    console.errors.clear()


class Site:
    """A ClassCast server on a fixed loopback port that a test can stop and start again."""

    def __init__(self, settings: Settings, port: int) -> None:
        self.settings = settings
        self.port = port
        self.runner: web.AppRunner | None = None

    def make_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self.runner = web.AppRunner(create_app(self.settings))
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def token(self, role: str, room: str | None = None, ttl_s: int = 3600,
              subject: str = "") -> str:
        assert self.runner is not None
        return self.runner.app[ISSUER_KEY].mint(Role(role), room, ttl_s, subject)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_classroom_plays_again_after_the_server_restarts(
        settings: Settings, chromium: BrowserContext, console: Console) -> None:
    room = "history-10"
    site = Site(settings, free_port())
    await site.start()
    try:
        teach = await go_live(chromium, site, site.token, room, console)
        classroom = await open_classroom(chromium, site, site.token, room, console)
        await wait_playing(classroom, audio_packets=20)
        first = await classroom.evaluate("window.classcast.session.location")

        # The server goes away: the page says so plainly and keeps trying.
        await site.stop()
        await classroom.wait_for_function(
            "/无法连接服务器/.test(document.getElementById('state').textContent)")
        assert await classroom.locator("#notice").is_visible()
        await shoot(classroom, "class-server-down-zh")

        # A new server on the same port (same data dir, so the same token secret): the teacher
        # page publishes again and the classroom joins again, both without a click.
        await site.start()
        await teach.wait_for_function(f"{STATE} === 'live'")
        await classroom.wait_for_function(
            f"window.classcast.session && window.classcast.session.location !== {first!r}"
            f" && {FRAMES_DECODED} > 30 && {AUDIO_PACKETS} > 20")
        await wait_playing(classroom)
        assert await classroom.evaluate(STATE) == "live"
        # While the server was down Chromium logged the refused connections; nothing else.
        assert console.beyond_network() == [], console.errors
        console.errors.clear()
    finally:
        await site.stop()


async def test_a_waiting_classroom_joins_as_soon_as_the_lesson_starts(
        aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings,
        chromium: BrowserContext, console: Console) -> None:
    """Retry-After is 60 s here: the classroom joins within seconds of Go live because the
    room channel tells it the lesson started, not because its wait ran out."""
    slow = dataclasses.replace(settings, relay=dataclasses.replace(settings.relay,
                                                                    retry_after_s=60))
    client = await aiohttp_client(create_app(slow))

    def token(role: str, room: str | None = None, ttl_s: int = 3600, subject: str = "") -> str:
        return client.app[ISSUER_KEY].mint(Role(role), room, ttl_s, subject)

    room = "maths-11"
    classroom = await open_classroom(chromium, client, token, room, console)
    await classroom.wait_for_function(
        f"{STATE} === 'waiting' && /5\\d 秒后/.test(document.getElementById('state')"
        ".textContent)")
    await classroom.wait_for_function("!document.getElementById('hand').disabled")  # channel up
    await go_live(chromium, client, token, room, console)
    await classroom.wait_for_function(f"{FRAMES_DECODED} > 10", timeout=15_000)
    assert await classroom.evaluate(STATE) == "live"
    # The first WHEP attempt was answered 409 (the protocol); Chromium logs that load.
    assert all("status of 409" in e for e in console.errors), console.errors
    console.errors.clear()


async def test_low_data_mode_moves_a_classroom_to_the_low_rendition(
        client: TestClient, token: Callable[..., str], chromium: BrowserContext,
        console: Console) -> None:
    """低流量模式: the classroom pins the low rendition (made by the relay from the teacher's
    stream), keeps playing, says so, and a deeper jitter buffer is set; off, it climbs back."""
    room = "chem-8"
    await go_live(chromium, client, token, room, console)
    classroom = await open_classroom(chromium, client, token, room, console)
    await wait_playing(classroom)
    await classroom.get_by_role("button", name="低流量模式").click()
    await classroom.wait_for_function(
        "window.classcast.level?.level === 'low' && window.classcast.level.pinned === 'low'")
    frames = int(await classroom.evaluate(FRAMES_DECODED))
    await classroom.wait_for_function(f"{FRAMES_DECODED} > {frames + 40}")  # low frames play
    assert await classroom.get_by_role("button", name="低流量模式：开").get_attribute(
        "aria-pressed") == "true"
    assert await classroom.locator("#level").inner_text() == "低流量模式：流畅画质"
    assert await classroom.evaluate(
        "window.classcast.session.pc.getReceivers().every(r => r.jitterBufferTarget === 400)")
    info = await (await client.get(f"/api/rooms/{room}", headers={
        "Authorization": f"Bearer {token('admin')}"})).json()
    assert [s["level"]["level"] for s in info["subscribers"]] == ["low"]
    await shoot(classroom, "class-lowdata-zh")
    # off again: the link is clean, so after the quiet period it is back on the full stream
    await classroom.get_by_role("button", name="低流量模式：开").click()
    await classroom.wait_for_function("window.classcast.level?.level === 'full'",
                                      timeout=30_000)
    assert await classroom.locator("#level").is_hidden()
