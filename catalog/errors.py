"""The catalog package's one base exception and its kinds."""

from __future__ import annotations


class CatalogError(Exception):
    code = "catalog"


class LessonNotFound(CatalogError):
    code = "not_found"


class BadQuery(CatalogError):
    """A search parameter is invalid; `parameter` names it."""

    code = "bad_query"

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


class CorruptManifest(CatalogError):
    code = "corrupt_manifest"


class ArchiveUnavailable(CatalogError):
    code = "archive_unavailable"
