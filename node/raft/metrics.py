"""The coordinator's Prometheus series, read from the Raft driver at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from node.raft.core import Role
from node.raft.driver import RaftDriver


class RaftCollector(Collector):
    """Reads whichever driver ``source`` returns (None: this node has no Raft group yet)."""

    def __init__(self, source: Callable[[], RaftDriver | None]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        driver = self._source()
        raft = driver.raft if driver is not None else None
        if driver is None or raft is None:
            return
        gauges = {
            "blobstore_raft_term": ("Current Raft term", raft.term),
            "blobstore_raft_is_leader": ("1 if this node is the coordinator",
                                         int(raft.role is Role.LEADER)),
            "blobstore_raft_commit_index": ("Highest log index known committed",
                                            raft.commit_index),
            "blobstore_raft_last_index": ("Last index in this node's log", raft.log.last_index),
            "blobstore_raft_snapshot_index": ("Index the log was compacted to",
                                              raft.log.snapshot.index),
            "blobstore_raft_log_entries": ("Entries held in the log (after the snapshot)",
                                           raft.log.last_index - raft.log.snapshot.index),
            "blobstore_raft_snapshot_bytes": ("Size of this node's latest snapshot file",
                                              driver.snapshot_bytes()),
            "blobstore_raft_voters": ("Voters in the membership", len(raft.membership.voters)),
            "blobstore_raft_learners": ("Learners in the membership",
                                        len(raft.membership.learners)),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)
        counters = {
            "blobstore_raft_leader_changes": ("Leaders this node has seen take over",
                                              raft.stats["leader_changes"]),
            "blobstore_raft_elections": ("Elections this node started", raft.stats["elections"]),
            "blobstore_raft_snapshots_sent": ("InstallSnapshots sent",
                                              raft.stats["snapshots_sent"]),
            "blobstore_raft_snapshots_installed": ("Snapshots installed from a leader",
                                                   raft.stats["snapshots_installed"]),
            "blobstore_raft_bad_messages": ("Raft messages dropped: undecodable or spoofed",
                                            driver.counters["bad_messages"]),
            "blobstore_raft_entries_persisted": ("Log entries written to disk",
                                                 driver.counters["entries_persisted"]),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)
