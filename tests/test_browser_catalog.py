"""The catalog pages (/catalog and /catalog/{id}) in a real Chromium, driven by Playwright.

Lessons are seeded into the real S3 server and index (`tests.test_catalog.seed`), or recorded
for real from an aiortc publisher; the pages talk to the real app on loopback. Synchronisation
is by polling page state with `wait_for_function`, never sleeps. Screenshots of both pages, in
Chinese and English, at 1280x720 and phone size, go to `test-artifacts/catalog/` (ignored by
git; `CLASSCAST_TEST_ARTIFACTS` moves it) for a person to look at.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import BrowserContext, Page, ViewportSize, async_playwright

from server.keys import CATALOG_KEY, RECORDINGS_KEY, STORE_KEY
from server.settings import Settings
from tests.conftest import eventually
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, page_url
from tests.test_catalog import api, manifest, seed
from tests.test_questions import receive
from tests.test_recorder import recorder_app, recording_settings

# No skip when Chromium is missing: `make test` installs it, and a missing browser must fail.

ARTIFACTS = Path(os.environ.get("CLASSCAST_TEST_ARTIFACTS")
                 or Path(__file__).resolve().parent.parent / "test-artifacts") / "catalog"
PHONE = ViewportSize(width=390, height=844)
DESKTOP = ViewportSize(width=1280, height=720)

READY = "document.body.dataset.state === 'ready'"
CARDS = "#lessons > li"
PLAYER = "document.getElementById('player')"


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile", headless=False, executable_path=CHROMIUM,
            args=CHROMIUM_ARGS, viewport=DESKTOP)
        context.set_default_timeout(WAIT_MS)
        try:
            yield context
        finally:
            await context.close()


class Console:
    """A page's console errors and uncaught exceptions (a working page has none)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Page) -> Page:
        page.on("console", lambda m: self.errors.append(f"console: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        return page


async def open_page(browser: BrowserContext, url: str, console: Console) -> Page:
    page = console.watch(await browser.new_page())
    await page.goto(url)
    return page


async def phone_shots(browser: BrowserContext, url: str, console: Console, name: str,
                      ready: str) -> None:
    """Open `url` as a phone would (390x844 from the start) in each language; screenshot."""
    for lang in ("zh", "en"):
        parts = urlparse(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()} | {"lang": lang}
        page = console.watch(await browser.new_page())
        await page.set_viewport_size(PHONE)
        await page.goto(parts._replace(query=urlencode(query)).geturl())
        await page.wait_for_function(ready)
        await shoot(page, f"{name}-{lang}-phone")
        await page.close()


async def shoot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path))
    return path


async def card_titles(page: Page) -> list[str]:
    return await page.locator(f"{CARDS} h3").all_inner_texts()


async def chip_count(page: Page, facet: str, value: str) -> int | None:
    chip = page.locator(f'[data-facet="{facet}"] .chip[data-value="{value}"]')
    if not await chip.count():
        return None
    return int(await chip.get_attribute("data-count") or "-1")


async def search_done(tab: Page, **fields: str | int) -> None:
    """Wait until the page's search has these fields and its answer is on screen."""
    checks = " && ".join(f"window.classcast.state[{k!r}] === {v!r}" for k, v in fields.items())
    await tab.wait_for_function(f"window.classcast && {checks or 'true'} && {READY}")


async def test_search_facets_filters_and_paging(
        client: TestClient, token: Callable[..., str], browser: BrowserContext) -> None:
    await seed(client.app[STORE_KEY], 30)
    await client.app[CATALOG_KEY].reindex()
    viewer = token("viewer")
    console = Console()
    page = await open_page(browser, page_url(client, "/catalog", token=viewer, lang="zh"),
                           console)
    await search_done(page, q="")
    assert await page.locator(CARDS).count() == 12  # the first page of 30
    assert await page.locator("#page").inner_text() == "第 1 / 3 页"

    # Search 分数: the ten fraction lessons, with facet counts as the API gives them.
    await page.get_by_role("searchbox", name="搜索课程").fill("分数")
    await page.get_by_role("button", name="搜索", exact=True).click()
    await search_done(page, q="分数")
    titles = await card_titles(page)
    assert len(titles) == 10 and all("分数" in title for title in titles), titles
    assert await page.locator("#status").inner_text() == "共 10 节课"
    assert await page.locator("#paging").is_hidden()
    _, expected = await api(client, viewer, "/api/lessons", q="分数")
    for facet, counts in expected["facets"].items():
        for value, count in counts.items():
            assert await chip_count(page, facet, value) == count, (facet, value)
    assert await chip_count(page, "school", "乐山市第一小学") == 5
    assert await chip_count(page, "subject", "语文") is None  # no 语文 lesson matches
    await shoot(page, "catalog-zh-1280x720")

    # A filter narrows the cards; the other schools keep their counts so one can switch.
    await page.locator('[data-facet="school"] .chip[data-value="乐山市第一小学"]').click()
    await search_done(page, q="分数", school="乐山市第一小学")
    assert len(await card_titles(page)) == 5
    metas = await page.locator(f"{CARDS} .meta").all_inner_texts()
    assert sum("乐山市第一小学" in m for m in metas) == 5
    assert await chip_count(page, "school", "成都七中") == 5
    assert await chip_count(page, "county", "市中区") == 5
    assert await chip_count(page, "county", "锦江区") is None
    query = parse_qs(urlparse(page.url).query)
    assert query["q"] == ["分数"] and query["school"] == ["乐山市第一小学"]

    # The address is the search: opening it elsewhere shows the same cards.
    shared = await open_page(browser, page.url, console)
    await search_done(shared, q="分数", school="乐山市第一小学")
    assert await card_titles(shared) == await card_titles(page)
    await shared.close()

    # The back button returns to the unfiltered search.
    await page.go_back()
    await search_done(page, q="分数", school="")
    assert len(await card_titles(page)) == 10

    # Keyboard: arrow keys move through a facet's choices, each one a search; focus stays on
    # the chosen value although the chips are redrawn with the answer.
    await page.locator('#facets input[name="school"][value=""]').focus()
    await page.keyboard.press("ArrowRight")
    await page.wait_for_function(
        f"window.classcast.state.school !== '' && {READY} && document.activeElement.name"
        " === 'school' && document.activeElement.value === window.classcast.state.school"
        " && document.activeElement.checked")
    assert len(await card_titles(page)) == 5
    await shoot(page, "catalog-keyboard-focus-zh")  # the focused chip has a visible ring
    await page.keyboard.press("ArrowLeft")
    await search_done(page, q="分数", school="")

    # English, by the toggle; the search stays.
    await page.get_by_role("button", name="English").click()
    await page.wait_for_function("document.documentElement.lang === 'en'")
    assert await page.locator("#status").inner_text() == "10 lessons"
    assert await page.get_by_role("searchbox", name="Search lessons").input_value() == "分数"
    await shoot(page, "catalog-en-1280x720")
    await phone_shots(browser, page.url, console, "catalog", READY)
    await page.get_by_role("button", name="中文").click()
    await page.wait_for_function("document.documentElement.lang === 'zh-CN'")

    # Clear, then a date range (the schools' days, Asia/Shanghai), then paging through it all.
    await page.get_by_role("button", name="清除全部条件").click()
    await search_done(page, q="", page=1)
    await page.locator("#from").fill("2026-08-30")
    await page.locator("#to").fill("2026-08-30")
    await search_done(page, **{"from": "2026-08-30", "to": "2026-08-30"})
    day = datetime(2026, 8, 30, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
    in_day = sum(day <= m.started_at < day + 86400 for m in (manifest(i) for i in range(30)))
    assert await page.locator("#status").inner_text() == f"共 {in_day} 节课"
    await page.get_by_role("button", name="清除全部条件").click()
    await search_done(page, q="", page=1, to="")
    first = await card_titles(page)
    await page.get_by_role("button", name="下一页").click()
    await search_done(page, page=2)
    assert await page.locator("#page").inner_text() == "第 2 / 3 页"
    second = await page.locator(CARDS).evaluate_all("cards => cards.map(c => c.dataset.id)")
    assert len(second) == 12 and len(first) == 12
    await page.get_by_role("button", name="下一页").click()
    await search_done(page, page=3)
    assert await page.locator(CARDS).count() == 6
    assert await page.get_by_role("button", name="下一页").is_disabled()
    # keyboard: the results heading takes focus after a page turn
    assert await page.evaluate("document.activeElement.id") == "results-title"

    assert console.errors == []


async def test_a_recorded_lesson_plays(
        aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings,
        browser: BrowserContext) -> None:
    settings = dataclasses.replace(recording_settings(settings, grace_s=0.5),
                                   catalog=dataclasses.replace(settings.catalog,
                                                               playback="proxy"))
    client, peers = await recorder_app(aiohttp_client, settings)
    service = client.app[RECORDINGS_KEY]
    room = "maths-5a"
    try:
        await peers.publish(room)
        await eventually(lambda: service.status(room)[0] is not None, what="recording")
        recording = service._rooms[room].recording
        # A classroom asks during the lesson (over the room channel); it is kept with the
        # recording and shown on the lesson page.
        asking = await client.ws_connect(f"/ws/{room}", params={
            "token": peers.token("classroom", room, subject="南山小学")})
        await receive(asking, "hello")
        await asking.send_json({"type": "ask", "text": "分母为什么不能是 0？"})
        await receive(asking, "asked")
        await asking.close()
        # ~6 s of a 30 fps lesson
        await eventually(lambda: recording._streams["video"].frames > 210, timeout=30)
        teacher = peers.token("teacher", room)
        await client.post(f"/api/rooms/{room}/recording", json={"action": "stop"},
                          headers={"Authorization": f"Bearer {teacher}"})
        await service.recorder.wait_finished()
    finally:
        await peers.close()
    viewer = peers.token("viewer")
    _, body = await api(client, viewer, "/api/lessons", room=room)
    assert body["total"] == 1 and body["lessons"][0]["duration_s"] > 5, body
    lesson_id = body["lessons"][0]["id"]
    # The teacher names the lesson (the recorder knows only the room).
    resp = await client.patch(f"/api/lessons/{lesson_id}", headers={
        "Authorization": f"Bearer {teacher}"}, json={
        "title": "分数的意义（录播）", "description": "五年级数学公开课：认识分数。",
        "tags": ["分数", "公开课"]})
    assert resp.status == 200, await resp.text()

    console = Console()
    # The card, with the recording's real thumbnail.
    catalog = await open_page(browser, page_url(client, "/catalog", token=viewer, lang="zh"),
                              console)
    await search_done(catalog)
    await catalog.wait_for_function(
        "(img => img && img.complete && img.naturalWidth > 0)"
        "(document.querySelector('#lessons .thumb img'))")
    await shoot(catalog, "catalog-recorded-zh-1280x720")
    await catalog.locator(f"{CARDS} h3 a").click()
    await catalog.wait_for_url(f"**/catalog/{lesson_id}?*")
    await catalog.wait_for_function(READY)
    await catalog.close()

    for engine in ("auto", "hls.js"):
        page = await open_page(browser, page_url(
            client, f"/catalog/{lesson_id}", token=viewer, lang="zh", engine=engine), console)
        await page.wait_for_function(f"{READY} && {PLAYER}.dataset.engine")
        assert await page.locator("#lesson-title").inner_text() == "分数的意义（录播）"
        # auto: the browser's own HLS where it says it has it (Chromium 156 does), else hls.js
        native = await page.evaluate(f"{PLAYER}.canPlayType('application/vnd.apple.mpegurl')")
        expected = "native" if engine == "auto" and native else "hls.js"
        assert await page.evaluate(f"{PLAYER}.dataset.engine") == expected
        await page.locator("body").press("Space")  # the shortcut starts playback
        await page.wait_for_function(f"{PLAYER}.currentTime > 1 && !{PLAYER}.error")
        assert await page.evaluate("document.body.dataset.state") == "ready", engine
        await page.locator("body").press("m")
        await page.wait_for_function(f"{PLAYER}.muted")
        await page.locator("#speed").select_option("1.5")
        await page.wait_for_function(f"{PLAYER}.playbackRate === 1.5")
        await page.locator("body").press("Space")
        await page.wait_for_function(f"{PLAYER}.paused")
        at = await page.evaluate(f"{PLAYER}.currentTime")
        await page.locator("body").press("ArrowLeft")
        await page.wait_for_function(f"{PLAYER}.currentTime === {max(0.0, at - 10)}")
        assert await page.locator("#feedback").inner_text() == "−10 秒（0:00）"
        await page.locator("body").press("ArrowRight")
        await page.wait_for_function(  # +10 s from the start: the end of this short lesson
            f"Math.abs({PLAYER}.currentTime - {PLAYER}.duration) < 0.5")
        download = await page.get_by_role("link", name="下载录像（MP4）").get_attribute("href")
        assert download and download.startswith(f"/api/lessons/{lesson_id}/download?token=")
        assert await page.evaluate(f"{PLAYER}.error") is None
        if engine == "auto":
            questions = await page.locator("#questions li").all_inner_texts()
            assert len(questions) == 1 and "分母为什么不能是 0？" in questions[0] \
                and "南山小学" in questions[0] and "未回答" in questions[0], questions
            await shoot(page, "lesson-zh-1280x720")
            await page.get_by_role("button", name="English").click()
            await page.wait_for_function("document.documentElement.lang === 'en'")
            assert await page.get_by_role("heading", name="Keyboard shortcuts").is_visible()
            await shoot(page, "lesson-en-1280x720")
            await phone_shots(browser, page.url, console, "lesson",
                              f"{READY} && {PLAYER}.readyState >= 2")
        await page.close()
    assert console.errors == []


async def test_errors_show_a_message(client: TestClient, token: Callable[..., str],
                                     browser: BrowserContext) -> None:
    manifests = await seed(client.app[STORE_KEY], 2)
    await client.app[CATALOG_KEY].reindex()
    console = Console()
    page = await open_page(browser, page_url(client, "/catalog/no-such-id",
                                             token=token("viewer"), lang="zh"), console)
    await page.wait_for_function("document.body.dataset.error === 'notfound'")
    alert = page.get_by_role("alert")
    assert "找不到这节课" in await alert.inner_text()
    assert await alert.get_by_role("link", name="返回课程列表").is_visible()
    await shoot(page, "lesson-notfound-zh")

    expired = token("viewer", ttl_s=-60)
    page = await open_page(browser, page_url(client, "/catalog/no-such-id", token=expired,
                                             lang="en"), console)
    await page.wait_for_function("document.body.dataset.error === 'auth'")
    assert "has expired" in await page.get_by_role("alert").inner_text()
    page = await open_page(browser, page_url(client, "/catalog", token=expired, lang="zh"),
                           console)
    await page.wait_for_function("document.body.dataset.state === 'error'")
    assert "访问令牌无效或已过期" in await page.get_by_role("alert").inner_text()

    # A lesson whose recording is gone from the bucket: its details and why it cannot play.
    gone = manifests[0]
    await client.app[STORE_KEY].delete_keys([gone.playlist])
    page = await open_page(browser, page_url(client, f"/catalog/{gone.id}",
                                             token=token("viewer"), lang="zh"), console)
    await page.wait_for_function(READY)
    assert "不在存档中" in await page.locator("#lesson-notice").inner_text()
    assert await page.locator("#lesson-title").inner_text() == gone.lesson.title
    assert await page.locator("video").is_hidden()

    # The server is down: the request fails; the page says so and offers to retry.
    page = await browser.new_page()
    console.watch(page)
    await page.route("**/api/lessons**", lambda route: route.abort("connectionrefused"))
    await page.goto(page_url(client, "/catalog", token=token("viewer"), lang="zh"))
    await page.wait_for_function("document.getElementById('problem').dataset.kind === 'network'")
    assert "无法连接服务器" in await page.get_by_role("alert").inner_text()
    await page.unroute("**/api/lessons**")
    await page.get_by_role("button", name="重试").click()
    await page.wait_for_function(f"{READY} && document.querySelectorAll('{CARDS}').length === 2")
    # Failed requests log themselves as console errors; nothing else may.
    assert all("Failed to load resource" in e for e in console.errors), console.errors
