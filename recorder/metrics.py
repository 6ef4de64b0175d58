"""The recorder's Prometheus metrics, in a registry the server owns."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class RecorderMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.active = Gauge("classcast_recorder_active_recordings", "Recordings running now.",
                            registry=registry)
        self.recorded = Counter("classcast_recorder_recorded_seconds_total",
                                "Seconds of lesson archived (finalized recordings).",
                                registry=registry)
        self.bytes_uploaded = Counter("classcast_recorder_uploaded_bytes_total",
                                      "Bytes of segments stored in the bucket.",
                                      registry=registry)
        self.failures = Counter("classcast_recorder_upload_failures_total",
                                "Upload passes that failed (the data stays spooled).",
                                registry=registry)
        self.retries = Counter("classcast_recorder_upload_retries_total",
                               "Upload passes retried after a failure.", registry=registry)
        self.spool = Gauge("classcast_recorder_spool_bytes",
                           "Bytes waiting in the local spool.", registry=registry)
        self.spool_budget = Gauge("classcast_recorder_spool_budget_bytes",
                                  "Disk budget of the spool.", registry=registry)
        self.lag = Histogram("classcast_recorder_upload_lag_seconds",
                             "From a segment closed by ffmpeg to it stored in the bucket.",
                             buckets=LAG_BUCKETS, registry=registry)
        self.finished = Counter("classcast_recorder_finished_recordings_total",
                                "Recordings finalized, by status.", ["status"],
                                registry=registry)

    def bind(self, active: Callable[[], int], spool_bytes: Callable[[], int]) -> None:
        self.active.set_function(active)
        self.spool.set_function(spool_bytes)

    def uploaded(self, size: int, lag_s: float) -> None:
        self.bytes_uploaded.inc(size)
        self.lag.observe(max(0.0, lag_s))

    def upload_failed(self) -> None:
        self.failures.inc()

    def upload_retried(self) -> None:
        self.retries.inc()

    def recording_finished(self, status: str, seconds: float) -> None:
        self.finished.labels(status).inc()
        self.recorded.inc(seconds)
