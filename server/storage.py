"""The archive bucket on the minio SDK (MinIO in production, the embedded SeaweedFS by default).

Every SDK call blocks, so each runs in a worker thread. Failures become
`recorder.errors.StoreError`, which callers treat as "try again later", never as data loss.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from recorder.errors import StoreError

logger = logging.getLogger(__name__)

T = TypeVar("T")


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
            raise StoreError(f"S3 {what} refused: {exc.code} ({exc.message})") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise StoreError(f"S3 {what} failed: {type(exc).__name__}: {exc}") from exc

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
