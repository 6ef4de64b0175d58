"""HTTP plumbing shared by every route: error mapping, CORS, bearer tokens, bounded bodies."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from catalog.errors import CatalogError
from recorder.errors import RecorderError
from server.errors import (
    BadRequest,
    ClassCastError,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from server.keys import ISSUER_KEY, METRICS_KEY
from server.tokens import Claims

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LIBRARY_STATUS = {
    "not_found": 404, "bad_query": 400, "corrupt_manifest": 422, "archive_unavailable": 503,
    "store_unavailable": 503, "unsupported_codec": 422, "disk_budget_exceeded": 507,
    "not_recording": 409,
}

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, Link, ETag, Retry-After, Accept-Post",
    "Access-Control-Max-Age": "86400",
}


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None,
                   details: list[dict[str, object]] | None = None) -> web.Response:
    body: dict[str, object] = {"error": code, "message": message}
    if details is not None:
        body["details"] = details
    return web.json_response(body, status=status, headers={**CORS_HEADERS, **(headers or {})})


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except ClassCastError as exc:
        request.app[METRICS_KEY].requests_rejected.labels(str(exc.status)).inc()
        if exc.status >= 500:
            logger.error("%s %s failed: %s", request.method, request.path, exc.message)
        return error_response(exc.status, exc.code, exc.message, exc.headers, exc.details)
    except (CatalogError, RecorderError) as exc:
        # the libraries' own errors, by their code
        status = LIBRARY_STATUS.get(exc.code, 500)
        request.app[METRICS_KEY].requests_rejected.labels(str(status)).inc()
        if status >= 500:
            logger.error("%s %s failed: %s", request.method, request.path, exc)
        return error_response(status, exc.code, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        request.app[METRICS_KEY].requests_rejected.labels(str(exc.status)).inc()
        return error_response(exc.status, exc.reason.lower().replace(" ", "_"),
                              exc.text or exc.reason,
                              {k: v for k, v in exc.headers.items()
                               if k.lower() not in ("content-type", "content-length")})
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        request.app[METRICS_KEY].requests_rejected.labels("500").inc()
        return error_response(500, "internal", "the server failed on this request; the "
                              "error is in its log")
    if request.path.startswith(("/whip/", "/whep/", "/api/")):
        response.headers.update({k: v for k, v in CORS_HEADERS.items()
                                 if k not in response.headers})
    return response


def claims(request: web.Request) -> Claims:
    """The verified token of a request: `Authorization: Bearer …`, or `?token=` for pages."""
    header = request.headers.get("Authorization", "")
    token = ""
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("use 'Authorization: Bearer <token>'")
        token = value.strip()
    else:
        token = request.query.get("token", "")
    if not token:
        raise Unauthorized("this needs a token: send 'Authorization: Bearer <token>' "
                           "(mint one with 'classcast token')",
                           headers={"WWW-Authenticate": 'Bearer realm="classcast"'})
    return request.app[ISSUER_KEY].verify(token)


async def json_body(request: web.Request, message: str) -> Any:
    """The request's JSON body; BadRequest(`message`) if it is not JSON."""
    try:
        return await request.json()
    except ValueError as exc:
        raise BadRequest(message) from exc


async def read_body(request: web.Request, content_type: str, limit: int) -> str:
    """The request body as text, if it has `content_type` and at most `limit` bytes."""
    actual = request.content_type.lower()
    if actual != content_type:
        raise UnsupportedMediaType(
            f"Content-Type must be {content_type}, not {actual or 'missing'}",
            headers={"Accept-Post": content_type} if content_type == "application/sdp" else {})
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the body is {request.content_length} bytes; at most {limit}")
    data = bytearray()
    async for chunk in request.content.iter_chunked(16384):
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("the body is not UTF-8 text") from exc
