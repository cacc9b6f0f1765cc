"""Prometheus series of the inter-node streams, read at scrape time.

The counters live where they are counted (the TLS wrapper, the stream router,
PeerNet); this collector only names them. They are what an operator looks at
when a node cannot join: a certificate the cluster CA did not sign shows as
failed TLS handshakes, another cluster key as refused RPC channels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from node.net.router import StreamRouter
from node.net.tls import TlsTransport


class StreamCollector(Collector):
    """``tls`` is None when TLS is off (its series are then absent, not zero)."""

    def __init__(self, router: StreamRouter, tls: TlsTransport | None,
                 rpc_counters: Callable[[], Mapping[str, int]]) -> None:
        self._router = router
        self._tls = tls
        self._rpc_counters = rpc_counters

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "blobstore_streams_dropped",
            "Inbound inter-node streams closed unrouted: silent, broken or over the limit",
            value=self._router.dropped)
        yield CounterMetricFamily(
            "blobstore_rpc_channels_rejected",
            "Inbound RPC channels refused or cut: a failed cluster-key handshake (another "
            "key) or a bad frame", value=self._rpc_counters().get("rejected", 0))
        if self._tls is not None:
            failed = CounterMetricFamily(
                "blobstore_tls_handshakes_failed",
                "Inter-node TLS handshakes that failed (a certificate the cluster CA did not "
                "sign, a wrong name, not TLS), by direction", labels=["direction"])
            failed.add_metric(["in"], self._tls.handshakes_failed_in)
            failed.add_metric(["out"], self._tls.handshakes_failed_out)
            yield failed
