"""Gossip parameters, with presets whose comments give their scaling formulas.

Times are in seconds. ``N`` is the number of members a node currently knows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class GossipConfig:
    #: One probe per member per period, so failure detection work per node is O(1) in N.
    probe_interval_s: float = 1.0
    #: Wait for a direct Ack before asking others; above the network's p99 round trip.
    probe_timeout_s: float = 0.5
    #: k in SWIM: intermediaries asked to ping a silent member (false positives fall as k grows).
    indirect_checks: int = 3
    #: λ: each update is piggybacked retransmit_mult * ceil(log10(N + 1)) times.
    retransmit_mult: int = 4
    #: Suspicion lasts at least suspicion_mult * max(1, log10(N)) * probe_interval_s ...
    suspicion_mult: float = 4.0
    #: ... and at most suspicion_max_mult times that, shrinking as others confirm (Lifeguard).
    suspicion_max_mult: float = 6.0
    #: Lifeguard local health: probe interval and timeout are scaled by (1 + awareness).
    awareness_max: int = 8
    #: Updates are also pushed to gossip_nodes random members every gossip_interval_s.
    gossip_interval_s: float = 0.2
    gossip_nodes: int = 3
    #: Full state exchange with one random member; scaled by push_pull_scale(N) above 32 nodes.
    push_pull_interval_s: float = 30.0
    #: Every this many push-pulls, try a dead member or a seed instead, so partitions heal.
    reconnect_every: int = 3
    #: Dead and left members are forgotten after this long.
    reap_after_s: float = 24 * 3600.0
    #: Bytes of a datagram that piggybacked updates may use.
    piggyback_budget_bytes: int = 1200

    def retransmit_limit(self, n: int) -> int:
        return self.retransmit_mult * max(1, math.ceil(math.log10(n + 1)))

    def push_pull_interval(self, n: int) -> float:
        """memberlist's pushPullScale: double the interval each time N doubles past 32."""
        if n <= 32:
            return self.push_pull_interval_s
        return self.push_pull_interval_s * (math.ceil(math.log2(n) - math.log2(32)) + 1)


#: A data-centre LAN (memberlist's DefaultLANConfig timings).
LAN = GossipConfig()

#: A cluster on one machine: loopback round trips are microseconds.
LOCAL = replace(LAN, probe_interval_s=0.5, probe_timeout_s=0.2, gossip_interval_s=0.1,
                push_pull_interval_s=10.0, reap_after_s=3600.0)

#: Real-process tests: fast detection, still well above loopback latency.
TESTS = replace(LAN, probe_interval_s=0.2, probe_timeout_s=0.1, gossip_interval_s=0.05,
                push_pull_interval_s=2.0, reap_after_s=60.0)

PRESETS = {"lan": LAN, "local": LOCAL, "tests": TESTS}
