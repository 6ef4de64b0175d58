"""The catalog's HTTP API: search, detail with playback, the playable playlist, media (proxied
with byte ranges, or presigned), edits and deletion."""

from __future__ import annotations

import dataclasses
import logging
import re
from urllib.parse import quote
from zoneinfo import ZoneInfo

from aiohttp import web

from catalog.errors import CatalogError
from catalog.index import Page, Query
from catalog.models import Lesson, questions_from_manifest
from server.errors import BadRequest, Forbidden, NotFound
from server.http import claims, json_body
from server.keys import CATALOG_KEY, PROXY_PLAYBACK_KEY, SETTINGS_KEY
from server.tokens import Claims, Role

logger = logging.getLogger(__name__)

M3U8 = "application/vnd.apple.mpegurl"
MEDIA_NAME = re.compile(r"^(init\.mp4|seg_\d{5,}\.m4s|thumb\.jpg|lesson\.mp4)$")
CHUNK = 1 << 20


def _token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    return header.partition(" ")[2].strip() if header else request.query.get("token", "")


def _lesson_json(lesson: Lesson) -> dict[str, object]:
    data = dataclasses.asdict(lesson)
    data["tags"] = list(lesson.tags)
    return data


def _playback(request: web.Request, lesson: Lesson) -> dict[str, str | None]:
    token = quote(_token(request), safe="")
    base = f"/api/lessons/{lesson.id}"
    thumb = None
    if lesson.thumbnail:
        thumb = _media_url(request, lesson, lesson.thumbnail)
    return {"playlist": f"{base}/playlist.m3u8?token={token}", "thumbnail": thumb,
            "download": f"{base}/download?token={token}"}


def _media_url(request: web.Request, lesson: Lesson, key: str) -> str:
    if request.app[PROXY_PLAYBACK_KEY]:
        name = key.rsplit("/", 1)[-1]
        return f"/api/lessons/{lesson.id}/media/{name}?token={quote(_token(request), safe='')}"
    ttl = request.app[SETTINGS_KEY].catalog.presign_ttl_s
    return request.app[CATALOG_KEY].store.presigned_url(key, ttl)


async def search(request: web.Request) -> web.Response:
    claims(request)
    tz = ZoneInfo(request.app[SETTINGS_KEY].catalog.timezone)
    query = Query.from_params(dict(request.query), tz)
    page: Page = await request.app[CATALOG_KEY].search(query)
    return web.json_response({
        "lessons": [{**_lesson_json(lesson), "playback": _playback(request, lesson)}
                    for lesson in page.lessons],
        "total": page.total, "limit": page.query.limit, "offset": page.query.offset,
        "sort": page.query.sort, "facets": page.facets})


async def detail(request: web.Request) -> web.Response:
    claims(request)
    catalog = request.app[CATALOG_KEY]
    lesson = await catalog.get(request.match_info["id"])
    return web.json_response({"lesson": _lesson_json(lesson),
                              "playback": _playback(request, lesson),
                              "questions": await _questions(request, lesson)})


async def _questions(request: web.Request, lesson: Lesson) -> list[dict[str, object]] | None:
    """The lesson's questions, read from its manifest (the index does not keep them); None
    when the manifest cannot be read now (the page says so instead of showing none)."""
    catalog = request.app[CATALOG_KEY]
    key = catalog.manifest_key(lesson)
    try:
        raw = await catalog.store.get_bytes(key)
        return [dataclasses.asdict(q) for q in questions_from_manifest(raw, key)]
    except CatalogError as exc:
        logger.warning("lesson %s: questions not shown: %s", lesson.id, exc)
        return None


async def playlist(request: web.Request) -> web.Response:
    claims(request)
    catalog = request.app[CATALOG_KEY]
    lesson = await catalog.get(request.match_info["id"], check=False)
    text = await catalog.playlist(lesson, lambda key: _media_url(request, lesson, key))
    return web.Response(text=text, content_type=M3U8, headers={"Cache-Control": "no-cache"})


async def media(request: web.Request) -> web.StreamResponse:
    """One object of a lesson, through this server, with `Range` requests honoured."""
    claims(request)
    name = request.match_info["name"]
    if not MEDIA_NAME.match(name):
        raise NotFound(f"a lesson has no object {name!r}")
    catalog = request.app[CATALOG_KEY]
    lesson = await catalog.get(request.match_info["id"], check=False)
    key = lesson.prefix + name
    size = await catalog.store.size(key)
    if size is None:
        raise NotFound(f"{name} of lesson {lesson.id} is not in the archive")
    start, end = 0, size - 1
    status = 200
    if "Range" in request.headers:
        try:
            ranges = request.http_range
        except ValueError:
            ranges = slice(None)
        if ranges.start is not None or ranges.stop is not None:
            start = ranges.start if ranges.start is not None else 0
            if start < 0:  # a suffix range: the last N bytes
                start = max(size + start, 0)
            end = min((ranges.stop if ranges.stop is not None else size) - 1, size - 1)
            if start > end:
                raise web.HTTPRequestRangeNotSatisfiable(headers={
                    "Content-Range": f"bytes */{size}"})
            status = 206
    content_type = {"m4s": "video/iso.segment", "mp4": "video/mp4", "jpg": "image/jpeg"}[
        name.rsplit(".", 1)[1]]
    response = web.StreamResponse(status=status, headers={
        "Content-Type": content_type, "Accept-Ranges": "bytes",
        "Content-Length": str(end - start + 1), "Cache-Control": "private, max-age=86400"})
    if status == 206:
        response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    if name == "lesson.mp4":
        response.headers["Content-Disposition"] = f'attachment; filename="{lesson.id}.mp4"'
    await response.prepare(request)
    offset = start
    while offset <= end:
        length = min(CHUNK, end - offset + 1)
        await response.write(await catalog.store.read_range(key, offset, length))
        offset += length
    await response.write_eof()
    return response


def _may_edit(who: Claims, lesson: Lesson) -> bool:
    return who.role is Role.ADMIN or (who.role is Role.TEACHER and who.room in (None, lesson.room))


async def edit(request: web.Request) -> web.Response:
    who = claims(request)
    catalog = request.app[CATALOG_KEY]
    lesson = await catalog.get(request.match_info["id"], check=False)
    if not _may_edit(who, lesson):
        raise Forbidden("only the lesson's teacher or an admin may edit it")
    body = await json_body(request, 'the body must be JSON, e.g. {"title": "…"}')
    if not isinstance(body, dict) or not body or set(body) - {"title", "description", "tags"}:
        raise BadRequest('send any of "title", "description", "tags"')
    title = body.get("title")
    description = body.get("description")
    tags = body.get("tags")
    if title is not None and (not isinstance(title, str) or not 0 < len(title.strip()) <= 200):
        raise BadRequest('"title" must be text of 1 to 200 characters')
    if description is not None and (not isinstance(description, str) or len(description) > 5000):
        raise BadRequest('"description" must be text of at most 5000 characters')
    if tags is not None and (not isinstance(tags, list) or len(tags) > 30 or not all(
            isinstance(t, str) and 0 < len(t.strip()) <= 40 for t in tags)):
        raise BadRequest('"tags" must be a list of at most 30 short texts')
    updated = await catalog.edit(
        lesson.id, title=title.strip() if title else None, description=description,
        tags=tuple(t.strip() for t in tags) if tags is not None else None)
    return web.json_response({"lesson": _lesson_json(updated)})


async def delete(request: web.Request) -> web.Response:
    who = claims(request)
    if who.role is not Role.ADMIN:
        raise Forbidden("only an admin may delete a lesson from the archive")
    await request.app[CATALOG_KEY].delete(request.match_info["id"])
    return web.Response(status=204)


async def download(request: web.Request) -> web.Response:
    """The whole lesson as one MP4 (joined on first request, then kept in the bucket)."""
    claims(request)
    catalog = request.app[CATALOG_KEY]
    lesson = await catalog.get(request.match_info["id"])
    if lesson.status == "missing":
        raise NotFound(f"the recording of lesson {lesson.id} is gone from the archive")
    key = await catalog.downloads.ensure(lesson)
    raise web.HTTPFound(_media_url(request, lesson, key))


async def reindex(request: web.Request) -> web.Response:
    """Rebuild the index from the bucket's manifests (admin)."""
    claims(request).require_admin()
    report = await request.app[CATALOG_KEY].reindex()
    return web.json_response({"indexed": report.indexed, "skipped": [
        {"manifest": key, "error": why} for key, why in report.skipped]})


async def add_manifest(request: web.Request) -> web.Response:
    """Index one manifest already in the bucket, e.g. after `classcast catalog import` (admin)."""
    claims(request).require_admin()
    body = await json_body(request, 'the body must be JSON: {"key": "lessons/<id>/manifest.json"}')
    key = body.get("key") if isinstance(body, dict) else None
    if not isinstance(key, str) or not key.endswith("/manifest.json"):
        raise BadRequest('"key" must be the object key of a manifest.json')
    catalog = request.app[CATALOG_KEY]
    lesson = await catalog.add_manifest(await catalog.store.get_bytes(key), key)
    return web.json_response({"lesson": _lesson_json(lesson)}, status=201)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/catalog/reindex", reindex)
    app.router.add_post("/api/catalog/manifests", add_manifest)
    app.router.add_get("/api/lessons", search)
    app.router.add_get("/api/lessons/{id}", detail)
    app.router.add_patch("/api/lessons/{id}", edit)
    app.router.add_delete("/api/lessons/{id}", delete)
    app.router.add_get("/api/lessons/{id}/playlist.m3u8", playlist)
    app.router.add_get("/api/lessons/{id}/media/{name}", media)
    app.router.add_get("/api/lessons/{id}/download", download)
