"""Suspicion timeouts as pure functions (SWIM with Lifeguard's dynamic suspicion).

A suspected member is declared dead when its suspicion times out. The timeout
starts at ``max_s`` and shrinks towards ``min_s`` as independent members
confirm the suspicion, logarithmically in the number of confirmations: a
member suspected by many is dead sooner, one suspected by a single (perhaps
unhealthy) node gets the most time to refute.

When the timeout runs out, the SWIM core probes the suspect once more itself
(directly and through k others) before it declares it dead: a member that
merely missed the suspect's refutation in the epidemic gets it from the Ack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def suspicion_bounds(n: int, probe_interval_s: float, mult: float,
                     max_mult: float) -> tuple[float, float]:
    """(min, max) suspicion timeout for a cluster of ``n`` members."""
    minimum = mult * max(1.0, math.log10(max(1, n))) * probe_interval_s
    return minimum, minimum * max_mult


def suspicion_timeout(confirmations: int, expected: int, min_s: float, max_s: float) -> float:
    """Lifeguard: max - (max - min) * log(C + 1) / log(K + 1), never below min."""
    if expected < 1:
        return min_s
    fraction = math.log(confirmations + 1) / math.log(expected + 1)
    return max(min_s, max_s - (max_s - min_s) * fraction)


@dataclass(slots=True)
class Suspicion:
    """One running suspicion: when it started, who raised it and who confirmed it.

    The member that raised the suspicion is remembered but not counted: only
    *independent* confirmations shorten the timeout.
    """

    incarnation: int
    started_s: float
    min_s: float
    max_s: float
    expected: int
    origin: str = ""
    confirmed_by: set[str] = field(default_factory=set)
    #: The final check: the sequence number of our own probe of the suspect, sent when
    #: the timeout ran out, and when that probe ends (then, with no answer, it is dead).
    check_seq: int | None = None
    check_ends_s: float = 0.0
    #: ``deadline()`` before a final check, for this many confirmations: the core asks for
    #: it whenever it looks for its next timer, and only a confirmation changes it.
    _deadline_for: int = field(default=-1, init=False, repr=False, compare=False)
    _deadline_s: float = field(default=0.0, init=False, repr=False, compare=False)

    def deadline(self) -> float:
        if self.check_seq is not None:
            return self.check_ends_s
        confirmations = len(self.confirmed_by)
        if confirmations != self._deadline_for:
            self._deadline_s = self.started_s + suspicion_timeout(
                confirmations, self.expected, self.min_s, self.max_s)
            self._deadline_for = confirmations
        return self._deadline_s

    def confirm(self, by: str) -> bool:
        """Count an independent confirmation; False if ``by`` raised or already confirmed it."""
        if by in self.confirmed_by or by == self.origin:
            return False
        self.confirmed_by.add(by)
        return True
