"""`classcast`: serve, demo, token, ingest. The only place that configures logging."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from aiohttp import web

from catalog.catalog import Catalog
from catalog.errors import CatalogError
from catalog.index import CatalogIndex
from recorder.errors import RecorderError
from recorder.manifest import LessonInfo
from server import settings as settings_mod
from server.app import create_app
from server.errors import ClassCastError
from server.importer import ImportFailed, ImportRequest, import_lesson
from server.ingest import DEMO_SOURCE, IngestError, IngestOptions, ingest
from server.schools.registry import lookup_classroom
from server.schools.service import DB_NAME
from server.settings import Settings
from server.storage import open_archive
from server.tokens import Role, TokenIssuer, classroom_subject, load_or_create_secret, parse_ttl

logger = logging.getLogger("classcast")

DEMO_ROOM = "demo"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="classcast", description="ClassCast live lessons.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="Run the service.")
    settings_mod.add_arguments(serve)

    demo = sub.add_parser("demo", help="Run the service with a synthetic demo lesson.")
    settings_mod.add_arguments(demo)
    demo.add_argument("--room", default=DEMO_ROOM, help="Room of the demo lesson.")

    token = sub.add_parser("token", help="Print a signed access token (alone on stdout).")
    settings_mod.add_arguments(token)
    token.add_argument("--role", required=True, choices=[r.value for r in Role])
    token.add_argument("--room", help="Room the token is for (default: every room).")
    token.add_argument("--ttl", default="8h", help="Lifetime, e.g. 90s, 15m, 8h, 365d.")
    token.add_argument("--subject", default="", help="Who holds it (school, classroom, …).")
    token.add_argument("--classroom", type=int, help="A registered classroom's id: a device "
                       "token (role classroom) that attendance counts for that classroom.")

    cat = sub.add_parser("catalog", help="The lesson catalog.")
    cat_sub = cat.add_subparsers(dest="catalog_command", required=True)
    reindex = cat_sub.add_parser("reindex", help="Rebuild the index from the bucket's manifests.")
    settings_mod.add_arguments(reindex)
    imp = cat_sub.add_parser("import", help="Archive a lesson recorded elsewhere (an MP4).")
    settings_mod.add_arguments(imp)
    imp.add_argument("file", help="The recording (MP4, MKV, …).")
    imp.add_argument("--title", required=True)
    imp.add_argument("--subject", default="")
    imp.add_argument("--grade", default="")
    imp.add_argument("--school", default="")
    imp.add_argument("--county", default="")
    imp.add_argument("--teacher", default="")
    imp.add_argument("--room", default="imported")
    imp.add_argument("--description", default="")
    imp.add_argument("--tag", action="append", default=[], help="A tag (repeatable).")

    ing = sub.add_parser("ingest", help="Publish an RTSP/RTMP URL or a file into a room.")
    settings_mod.add_arguments(ing)
    ing.add_argument("url", help="rtsp://…, rtmp://…, or a file path.")
    ing.add_argument("--room", required=True)
    ing.add_argument("--server", help="ClassCast base URL (default: this machine's settings).")
    ing.add_argument("--token", help="Teacher token (default: minted from the local secret).")
    ing.add_argument("--loop", action="store_true", help="Repeat a file source forever.")
    return parser


def _issuer(settings: Settings) -> TokenIssuer:
    return TokenIssuer(load_or_create_secret(settings.auth.secret, Path(settings.data_dir)))


async def _serve(settings: Settings, demo_room: str | None) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http.host, settings.http.port)
    await site.start()
    logger.info("ClassCast listening on %s", settings.base_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    demo_task: asyncio.Task[None] | None = None
    if demo_room:
        demo_task = asyncio.create_task(_run_demo(settings, demo_room, stop))
    try:
        await stop.wait()
    finally:
        if demo_task is not None:
            demo_task.cancel()
            await asyncio.gather(demo_task, return_exceptions=True)
        await runner.cleanup()


async def _run_demo(settings: Settings, room: str, stop: asyncio.Event) -> None:
    issuer = _issuer(settings)
    base = settings.base_url
    teacher = issuer.mint(Role.TEACHER, room, subject="demo-teacher")
    classroom = issuer.mint(Role.CLASSROOM, room, subject="demo-classroom")
    admin = issuer.mint(Role.ADMIN, subject="demo-admin")
    print("\nClassCast demo lesson is live:", flush=True)
    print(f"  classroom screen  {base}/class/{room}?token={classroom}")
    print(f"  teacher console   {base}/teach/{room}?token={teacher}")
    print(f"  home              {base}/?token={admin}")
    print(f"  rooms API         curl -H 'Authorization: Bearer {admin}' {base}/api/rooms")
    print(f"  metrics           {base}/metrics\n", flush=True)
    while not stop.is_set():
        try:
            await ingest(DEMO_SOURCE, f"{base}/whip/{room}", teacher,
                         ice_addresses=settings.ice.addresses, stop=stop)
        except (IngestError, OSError, ClassCastError) as exc:
            logger.warning("demo source stopped: %s; restarting in 2 s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2.0)


async def _ingest(settings: Settings, args: argparse.Namespace) -> int:
    base = (args.server or settings.base_url).rstrip("/")
    token = args.token or _issuer(settings).mint(Role.TEACHER, args.room, subject="ingest")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await ingest(args.url, f"{base}/whip/{args.room}", token,
                 options=IngestOptions(loop=args.loop), ice_addresses=settings.ice.addresses,
                 stop=stop)
    return 0


async def _import(settings: Settings, args: argparse.Namespace) -> int:
    request = ImportRequest(
        path=Path(args.file), room=args.room, county=args.county,
        description=args.description, tags=tuple(args.tag),
        lesson=LessonInfo(school=args.school, teacher=args.teacher, subject=args.subject,
                          grade=args.grade, title=args.title))
    async with open_archive(settings) as archive:
        manifest = await import_lesson(request, archive.store, settings.recorder.prefix,
                                       settings.recorder.segment_s)
        key = manifest.playlist.rsplit("/", 1)[0] + "/manifest.json"
        token = _issuer(settings).mint(Role.ADMIN, subject="cli", ttl_s=600)
        try:  # the running service owns the index: tell it
            async with aiohttp.ClientSession() as http, http.post(
                    f"{settings.base_url}/api/catalog/manifests", json={"key": key},
                    headers={"Authorization": f"Bearer {token}"}) as response:
                if response.status != 201:
                    print(f"classcast: archived, but not indexed: {await response.text()}",
                          file=sys.stderr)
                    return 1
        except aiohttp.ClientConnectionError:
            index = CatalogIndex(Path(settings.data_dir) / "catalog.sqlite3")
            await index.open()
            try:
                await Catalog(index, archive.store, settings.recorder.prefix).add_manifest(
                    manifest.to_json(), key)
            finally:
                await index.close()
    print(manifest.id)
    return 0


async def _reindex(settings: Settings) -> int:
    """Through the running service if there is one (it owns the index), else directly."""
    token = _issuer(settings).mint(Role.ADMIN, subject="cli", ttl_s=600)
    url = f"{settings.base_url}/api/catalog/reindex"
    try:
        async with aiohttp.ClientSession() as http, http.post(
                url, headers={"Authorization": f"Bearer {token}"}) as response:
            body = await response.json()
            if response.status != 200:
                print(f"classcast: {body.get('message', body)}", file=sys.stderr)
                return 1
            report = (body["indexed"], [(s["manifest"], s["error"]) for s in body["skipped"]])
    except aiohttp.ClientConnectionError:
        async with open_archive(settings) as archive:
            index = CatalogIndex(Path(settings.data_dir) / "catalog.sqlite3")
            await index.open()
            try:
                result = await Catalog(index, archive.store, settings.recorder.prefix).reindex()
            finally:
                await index.close()
            report = (result.indexed, list(result.skipped))
    indexed, skipped = report
    for key, why in skipped:
        print(f"skipped {key}: {why}", file=sys.stderr)
    print(f"indexed {indexed} lessons, skipped {len(skipped)} corrupt manifests")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if not args.verbose:
        for noisy in ("aioice", "aiortc", "aiohttp.access"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = settings_mod.load(args)
        if args.command == "token":
            ttl = parse_ttl(args.ttl)
            subject = args.subject
            if args.classroom is not None:
                subject = _classroom_subject(settings, args)
            print(_issuer(settings).mint(Role(args.role), args.room, ttl, subject))
            return 0
        _use_uvloop()
        if args.command == "serve":
            asyncio.run(_serve(settings, None))
        elif args.command == "demo":
            asyncio.run(_serve(settings, args.room))
        elif args.command == "ingest":
            return asyncio.run(_ingest(settings, args))
        elif args.command == "catalog" and args.catalog_command == "reindex":
            return asyncio.run(_reindex(settings))
        elif args.command == "catalog" and args.catalog_command == "import":
            return asyncio.run(_import(settings, args))
    except (ClassCastError, CatalogError, RecorderError, ImportFailed, IngestError,
            ValueError) as exc:
        print(f"classcast: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _classroom_subject(settings: Settings, args: argparse.Namespace) -> str:
    if args.role != Role.CLASSROOM.value:
        raise ValueError("--classroom needs --role classroom")
    place = lookup_classroom(Path(settings.data_dir) / DB_NAME, args.classroom)
    if place is None:
        raise ValueError(f"no classroom {args.classroom} in the registry of "
                         f"{settings.data_dir}; add it (admin API or CSV import) first")
    return classroom_subject(place.classroom)


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; fall back quietly
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


if __name__ == "__main__":
    sys.exit(main())
