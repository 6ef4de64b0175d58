"""The resource cloud's index of recorded lessons, kept in step with the bucket.

The bucket is the truth: a lesson is indexed from its `manifest.json` (when the recorder
finishes, or by `reindex`), edits are written to the manifest first and then to the index,
and a lesson whose playlist has vanished from the bucket shows as `missing`."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

from catalog.download import Downloads
from catalog.errors import ArchiveUnavailable, CorruptManifest
from catalog.index import CatalogIndex, Page, Query
from catalog.models import Lesson, edited_manifest, lesson_from_manifest
from catalog.store import ArchiveStore

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ReindexReport:
    indexed: int
    skipped: tuple[tuple[str, str], ...]  # (manifest key, why)


class Catalog:
    def __init__(self, index: CatalogIndex, store: ArchiveStore, prefix: str = "lessons") -> None:
        self.index = index
        self.store = store
        self.prefix = prefix.strip("/") + "/"
        self.downloads = Downloads(store)

    async def close(self) -> None:
        await self.downloads.close()
        await self.index.close()

    def manifest_key(self, lesson: Lesson) -> str:
        return lesson.prefix + MANIFEST

    # --- filling the index ------------------------------------------------------------------
    async def add_manifest(self, raw: bytes, key: str = MANIFEST) -> Lesson:
        lesson = lesson_from_manifest(raw, key)
        await self.index.upsert(lesson)
        logger.info("catalog: lesson %s (%s) indexed", lesson.id, lesson.title or lesson.room)
        return lesson

    async def reindex(self) -> ReindexReport:
        """Rebuild the index from every manifest in the bucket; corrupt ones are reported."""
        keys = [k for k in await self.store.list_keys(self.prefix) if k.endswith("/" + MANIFEST)]
        lessons: list[Lesson] = []
        skipped: list[tuple[str, str]] = []
        semaphore = asyncio.Semaphore(8)

        async def read(key: str) -> None:
            async with semaphore:
                try:
                    lessons.append(lesson_from_manifest(await self.store.get_bytes(key), key))
                except CorruptManifest as exc:
                    logger.warning("catalog reindex: skipping %s", exc)
                    skipped.append((key, str(exc)))

        await asyncio.gather(*(read(k) for k in keys))
        count = await self.index.replace_all(sorted(lessons, key=lambda x: x.started_at))
        return ReindexReport(count, tuple(sorted(skipped)))

    # --- reading ----------------------------------------------------------------------------
    async def search(self, query: Query) -> Page:
        return await self.index.search(query)

    async def get(self, lesson_id: str, check: bool = True) -> Lesson:
        """The lesson; with `check`, one whose playlist left the bucket is marked missing."""
        lesson = await self.index.get(lesson_id)
        if check and lesson.status != "missing":
            try:
                present = await self.store.size(lesson.playlist) is not None
            except ArchiveUnavailable:
                return lesson  # cannot tell now; do not mark anything
            if not present:
                logger.warning("catalog: the objects of lesson %s are gone from the bucket",
                               lesson.id)
                await self.index.set_status(lesson.id, "missing")
                lesson = dataclasses.replace(lesson, status="missing")
        return lesson

    async def playlist(self, lesson: Lesson, url_for: Callable[[str], str]) -> str:
        """The lesson's playlist with every URI (init file, segments) made fetchable."""
        text = (await self.store.get_bytes(lesson.playlist)).decode("utf-8")
        lines = []
        for line in text.splitlines():
            if line.startswith("#EXT-X-MAP:") and 'URI="' in line:
                head, _, rest = line.partition('URI="')
                uri, _, tail = rest.partition('"')
                line = f'{head}URI="{url_for(lesson.prefix + uri)}"{tail}'
            elif line and not line.startswith("#"):
                line = url_for(lesson.prefix + line)
            lines.append(line)
        return "\n".join(lines) + "\n"

    # --- changing ---------------------------------------------------------------------------
    async def edit(self, lesson_id: str, *, title: str | None = None,
                   description: str | None = None,
                   tags: tuple[str, ...] | None = None) -> Lesson:
        lesson = await self.index.get(lesson_id)
        key = self.manifest_key(lesson)
        raw = edited_manifest(await self.store.get_bytes(key), title=title,
                              description=description, tags=tags)
        await self.store.put_bytes(key, raw, "application/json")  # the bucket first
        updated = lesson_from_manifest(raw, key)
        await self.index.upsert(updated)
        return updated

    async def delete(self, lesson_id: str) -> None:
        lesson = await self.index.get(lesson_id)
        keys = await self.store.list_keys(lesson.prefix)
        # The manifest goes last, so a half-finished delete is still found by a reindex.
        rest = [k for k in keys if not k.endswith("/" + MANIFEST)]
        if rest:
            await self.store.delete_keys(rest)
        await self.store.delete_keys([k for k in keys if k.endswith("/" + MANIFEST)])
        await self.index.delete(lesson_id)
        logger.info("catalog: lesson %s deleted (%d objects)", lesson_id, len(keys))
