"""The server package's one base exception and its HTTP-shaped subclasses.

`server.http.error_middleware` turns each into `{"error": code, "message": text}` with its status
(plus `"details"` when the error has them, e.g. the bad lines of a CSV upload).
"""

from __future__ import annotations


class ClassCastError(Exception):
    """Base of every error the server reports to a client or operator."""

    status = 500
    code = "internal"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None,
                 details: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.details = details  # e.g. the bad lines of an upload, sent as "details"


class ConfigError(ClassCastError):
    code = "config"


class BadRequest(ClassCastError):
    status = 400
    code = "bad_request"


class Unauthorized(ClassCastError):
    status = 401
    code = "unauthorized"


class Forbidden(ClassCastError):
    status = 403
    code = "forbidden"


class NotFound(ClassCastError):
    status = 404
    code = "not_found"


class Conflict(ClassCastError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ClassCastError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ClassCastError):
    status = 415
    code = "unsupported_media_type"


class Unprocessable(ClassCastError):
    status = 422
    code = "unprocessable"


class InsufficientStorage(ClassCastError):
    status = 507
    code = "insufficient_storage"


class ServiceUnavailable(ClassCastError):
    status = 503
    code = "overloaded"
