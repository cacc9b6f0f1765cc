"""Gossip's Prometheus series, read from the driver at scrape time.

Counters live where they are counted (the core's ``stats``, the driver's
counters, the packet opener); this collector only names them.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from node.gossip.driver import Gossip
from node.gossip.members import MemberState

#: (series name without _total, help, key in Gossip.stats())
COUNTERS = (
    ("blobstore_gossip_probes", "Direct probes sent", "probes_sent"),
    ("blobstore_gossip_probes_failed", "Probes that got no Ack, direct or indirect",
     "probes_failed"),
    ("blobstore_gossip_indirect_probes", "PingReqs sent to helpers", "indirect_probes"),
    ("blobstore_gossip_suspicions_raised", "Members this node began to suspect",
     "suspicions_raised"),
    ("blobstore_gossip_suspicions_refuted", "Suspicions about this node it refuted",
     "suspicions_refuted"),
    ("blobstore_gossip_deaths_declared", "Members this node declared dead", "deaths_declared"),
    ("blobstore_gossip_bytes_in", "Gossip bytes received (datagrams and push-pulls)",
     "bytes_in"),
    ("blobstore_gossip_bytes_out", "Gossip bytes sent (datagrams and push-pulls)", "bytes_out"),
    ("blobstore_gossip_push_pulls", "Full state exchanges this node started and completed",
     "push_pulls"),
    ("blobstore_gossip_push_pulls_failed", "Full state exchanges that failed",
     "push_pulls_failed"),
    ("blobstore_gossip_push_pulls_rejected",
     "Full state exchanges refused: bad MAC (another cluster key), stale or malformed",
     "push_pulls_rejected"),
)

#: Datagrams dropped by the packet opener, by reason.
DROPPED = ("bad_mac", "replayed", "stale", "malformed")


class GossipCollector(Collector):
    def __init__(self, gossip: Gossip) -> None:
        self._gossip = gossip

    def collect(self) -> Iterator[Metric]:
        stats = self._gossip.stats()
        for name, doc, key in COUNTERS:
            yield CounterMetricFamily(name, doc, value=stats.get(key, 0))
        dropped = CounterMetricFamily("blobstore_gossip_datagrams_dropped",
                                      "Datagrams dropped unopened, by reason", labels=["reason"])
        for reason in DROPPED:
            dropped.add_metric([reason], stats.get(reason, 0))
        yield dropped
        members = GaugeMetricFamily("blobstore_gossip_members",
                                    "Members in this node's view, by state", labels=["state"])
        view = self._gossip.view
        for state in MemberState:
            members.add_metric([state.value],
                               sum(1 for m in view.members if m.state is state))
        yield members
        yield GaugeMetricFamily("blobstore_gossip_incarnation", "This node's incarnation",
                                value=self._gossip.swim.incarnation)
        yield GaugeMetricFamily("blobstore_gossip_awareness",
                                "Lifeguard local health (0 is healthy)",
                                value=self._gossip.swim.awareness)
