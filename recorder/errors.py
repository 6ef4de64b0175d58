"""The recorder package's one base exception and its kinds."""

from __future__ import annotations


class RecorderError(Exception):
    """Base of every error the recorder reports."""

    code = "recorder"


class StoreError(RecorderError):
    """The object store refused or could not be reached; the data stays spooled."""

    code = "store_unavailable"


class UnsupportedCodec(RecorderError):
    code = "unsupported_codec"


class DiskBudgetExceeded(RecorderError):
    code = "disk_budget_exceeded"


class NotRecording(RecorderError):
    code = "not_recording"
