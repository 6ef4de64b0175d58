"""The web pages (from the `player` package) and their static assets."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from aiohttp import web

STATIC = Path(str(resources.files("player") / "static"))


async def _page(request: web.Request, name: str) -> web.FileResponse:
    return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})


async def home(request: web.Request) -> web.FileResponse:
    return await _page(request, "index.html")


async def classroom(request: web.Request) -> web.FileResponse:
    return await _page(request, "class.html")


async def teacher(request: web.Request) -> web.FileResponse:
    return await _page(request, "teach.html")


async def catalog(request: web.Request) -> web.FileResponse:
    return await _page(request, "catalog.html")


async def lesson(request: web.Request) -> web.FileResponse:
    return await _page(request, "lesson.html")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", home)
    app.router.add_get("/class/{room}", classroom)
    app.router.add_get("/teach/{room}", teacher)
    app.router.add_get("/catalog", catalog)
    app.router.add_get("/catalog/{id}", lesson)
    app.router.add_static("/static/", STATIC)
