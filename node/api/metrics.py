"""The node's Prometheus metrics, in a registry of its own.

One ``CollectorRegistry`` per node object (never the global default), so many
nodes can live in one test process without their series colliding.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                   30, 60)
COMMIT_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _Callback(Collector):
    """Gauges read at scrape time from the objects that own the numbers."""

    def __init__(self, gauges: dict[str, tuple[str, Callable[[], float]]]) -> None:
        self._gauges = gauges

    def collect(self):  # type: ignore[no-untyped-def]
        for name, (doc, read) in self._gauges.items():
            yield GaugeMetricFamily(name, doc, value=read())


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("blobstore_http_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("blobstore_http_request_duration_seconds",
                                 "Time to answer (headers sent for streams)",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.bytes_in = Counter("blobstore_http_body_bytes_received",
                                "Request body bytes received", registry=r)
        self.bytes_out = Counter("blobstore_http_body_bytes_sent",
                                 "Response body bytes sent for blob reads", registry=r)
        self.commit_latency = Histogram("blobstore_meta_commit_duration_seconds",
                                        "Time to persist one batch of Raft log entries "
                                        "(one transaction, one fsync)",
                                        buckets=COMMIT_BUCKETS, registry=r)
        self.commit_batch = Histogram("blobstore_meta_commit_batch_size",
                                      "Log entries per fsync (group commit)",
                                      buckets=BATCH_BUCKETS, registry=r)
        self.write_latency = Histogram("blobstore_meta_write_duration_seconds",
                                       "A metadata write from this node until committed and "
                                       "applied here (forwarding included)",
                                       buckets=COMMIT_BUCKETS, registry=r)
        self.login_failures = Counter("blobstore_login_failures", "Failed logins", registry=r)
        self.login_throttled = Counter("blobstore_login_throttled",
                                       "Logins refused by the throttle", registry=r)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.commit_batch.observe(size)
        self.commit_latency.observe(seconds)

    def add_gauges(self, gauges: dict[str, tuple[str, Callable[[], float]]]) -> None:
        self.registry.register(_Callback(gauges))

    def render(self) -> bytes:
        return generate_latest(self.registry)
