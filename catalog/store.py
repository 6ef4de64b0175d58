"""What the catalog needs from the archive bucket (the server wires an S3 implementation)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class ArchiveStore(Protocol):
    """Every method raises `catalog.errors.ArchiveUnavailable` when the bucket fails."""

    async def get_bytes(self, key: str) -> bytes: ...

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None: ...

    async def put_file(self, key: str, path: Path, content_type: str) -> int: ...

    async def list_keys(self, prefix: str) -> list[str]: ...

    async def delete_keys(self, keys: list[str]) -> None: ...

    async def size(self, key: str) -> int | None:
        """The object's size, or None if there is no such object."""
        ...

    async def read_range(self, key: str, offset: int, length: int) -> bytes: ...

    def presigned_url(self, key: str, expires_s: int) -> str: ...
