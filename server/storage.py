"""The archive bucket on the minio SDK (MinIO in production, the embedded SeaweedFS by default).

Every SDK call blocks, so each runs in a worker thread. Failures become
`recorder.errors.StoreError`, which callers treat as "try again later", never as data loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error

from catalog.errors import ArchiveUnavailable
from recorder.errors import StoreError
from server.s3server import EmbeddedS3
from server.settings import Settings
from server.tokens import load_or_create_secret

logger = logging.getLogger(__name__)

T = TypeVar("T")


class StorageError(StoreError, ArchiveUnavailable):
    """The bucket failed; both the recorder and the catalog know this as theirs."""


class S3Store:
    def __init__(self, endpoint: str, access_key: str, secret_key: str, bucket: str,
                 secure: bool = False, region: str = "us-east-1") -> None:
        self.bucket = bucket
        self.endpoint = endpoint
        # Short timeouts and no SDK-level retries: the uploader owns retrying with backoff.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=3.0, read=30.0), maxsize=8,
            retries=urllib3.Retry(total=0, connect=0, read=0, redirect=0))
        self._client = Minio(endpoint, access_key=access_key, secret_key=secret_key,
                             secure=secure, region=region, http_client=http)

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except S3Error as exc:
            raise StorageError(f"S3 {what} refused: {exc.code} ({exc.message})") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise StorageError(f"S3 {what} failed: {type(exc).__name__}: {exc}") from exc

    async def ensure_bucket(self) -> None:
        def make() -> None:
            if not self._client.bucket_exists(self.bucket):
                self._client.make_bucket(self.bucket)
                logger.info("created bucket %s on %s", self.bucket, self.endpoint)

        await self._call(f"bucket check of {self.bucket}", make)

    async def put_file(self, key: str, path: Path, content_type: str) -> int:
        def put() -> int:
            size = path.stat().st_size
            self._client.fput_object(self.bucket, key, str(path), content_type=content_type)
            return size

        return await self._call(f"upload of {key}", put)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        await self._call(f"upload of {key}", lambda: self._client.put_object(
            self.bucket, key, io.BytesIO(data), len(data), content_type=content_type))

    async def get_bytes(self, key: str) -> bytes:
        def get() -> bytes:
            response = self._client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return await self._call(f"download of {key}", get)

    async def list_keys(self, prefix: str) -> list[str]:
        return await self._call(f"listing of {prefix}", lambda: [
            o.object_name for o in self._client.list_objects(self.bucket, prefix, recursive=True)
            if o.object_name is not None])

    async def delete_keys(self, keys: list[str]) -> None:
        def delete() -> None:
            errors = list(self._client.remove_objects(
                self.bucket, [DeleteObject(k) for k in keys]))
            if errors:
                raise StorageError(f"S3 delete failed for {len(errors)} objects: {errors[0]}")

        await self._call(f"delete of {len(keys)} objects", delete)

    async def size(self, key: str) -> int | None:
        def stat() -> int | None:
            try:
                return self._client.stat_object(self.bucket, key).size
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                    return None
                raise

        return await self._call(f"stat of {key}", stat)

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        def get() -> bytes:
            response = self._client.get_object(self.bucket, key, offset=offset, length=length)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return await self._call(f"download of {key}", get)

    def presigned_url(self, key: str, expires_s: int) -> str:
        """A URL anyone can GET the object with until it expires (computed locally)."""
        return self._client.presigned_get_object(self.bucket, key,
                                                 expires=timedelta(seconds=expires_s))


@dataclass(frozen=True)
class Archive:
    store: S3Store
    embedded: bool


@contextlib.asynccontextmanager
async def open_archive(settings: Settings) -> AsyncIterator[Archive]:
    """The configured bucket, or the embedded S3 server's (started here and stopped after)."""
    s3 = settings.s3
    data_dir = Path(settings.data_dir)
    endpoint, secret_key = s3.endpoint, s3.secret_key
    embedded: EmbeddedS3 | None = None
    if not endpoint:
        secret_key = load_or_create_secret(secret_key, data_dir, "s3-secret")
        embedded = EmbeddedS3(data_dir / "s3", s3.access_key, secret_key)
        endpoint = (await embedded.start()).endpoint
    try:
        store = S3Store(endpoint, s3.access_key, secret_key, s3.bucket, secure=s3.secure)
        try:
            await store.ensure_bucket()
        except StorageError as exc:
            # Not fatal: recordings spool locally and upload once the archive answers.
            logger.error("the archive bucket %s at %s is not usable: %s; recordings will be "
                         "spooled until it is", s3.bucket, endpoint, exc)
        yield Archive(store, embedded is not None)
    finally:
        if embedded is not None:
            await embedded.stop()
