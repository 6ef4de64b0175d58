"""What the recorder needs from object storage (the server wires an S3 implementation)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class ObjectStore(Protocol):
    """An S3-like bucket. Every method raises `recorder.errors.StoreError` when it fails."""

    async def put_file(self, key: str, path: Path, content_type: str) -> int:
        """Upload a local file; returns its size in bytes."""
        ...

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None: ...

    async def get_bytes(self, key: str) -> bytes: ...

    async def list_keys(self, prefix: str) -> list[str]: ...
