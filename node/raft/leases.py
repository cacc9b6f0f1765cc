"""Read leases: linearizable reads from any node's own state, without a round trip.

ReadIndex costs every read a round trip to the leader and a heartbeat round to a
quorum. With leases a node reads its own applied state, as long as it holds a
lease; the price is paid by writes, which wait for every lease holder.

**The leader's lease.** A leader that a quorum answered in heartbeat round ``r``
cannot be deposed before ``sent(r) + election_timeout``: every voter of that
quorum heard it at or after ``sent(r)`` and refuses to vote (pre-vote included)
for ``election_timeout`` after hearing a leader; any quorum that elects a new
leader contains one of them. So the leader may read locally until
``sent(r) + election_timeout * (1 - drift)``, ``drift`` covering clocks that run
at slightly different rates. Leadership transfers waive the voters' refusal, so a
leader that starts one gives up its lease. A restarted node does not remember
whom it heard, so it refuses votes for one election timeout after it starts.

**A follower's lease.** The leader promises a follower F: *until my clock reads
``g``, I acknowledge no write that F has not applied*. It sends the promise in an
AppendRequest that names the latest round of F's answers it had received
(``lease_round``) and a length ``D``; F answered that round at ``a`` by its own
clock, before the leader received the answer (at ``r``), and F may read until
``a + D * (1 - drift)``, which is before ``g = r + D``. The leader makes promises
only while its own lease holds, so they end before any successor can be elected;
a new leader still treats every member as a lease holder for ``D`` (it cannot
know what its predecessor promised). A lease covers writes acknowledged after the
promise; for those before it, F reads only once it has applied the leader's
commit index at the time of the promise (``lease_index``).

**Stable.** The leader acknowledges a write only once it is *stable*: applied on
the leader and on every node that still holds a lease (or whose lease has run
out, by the leader's clock). Every AppendRequest carries the stable index, and
nodes serve only *stable* state (see ``node.meta.dirty``): a value that one node
applied but another lease holder has not must not be read anywhere yet, or a
read could see it and a later read on the other node not.

A follower proves it reads leases by sending ``Applied`` (version 2 of the wire
format); the leader makes promises only to nodes that have, so nodes that run an
older version are never waited for. Every AppendRequest carries the leader's
lease length (``lease_ms``, 0 when it grants none, as an older leader does):
reads wait to be stable only under a leader that grants leases, whatever this
node's own setting, so nodes set differently (or of two versions) still agree.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Rounds a follower remembers having answered (enough for any lease in flight).
ROUNDS_KEPT = 64


class FollowerLease:
    """A follower's side: when it answered each round, and the lease that follows."""

    def __init__(self, drift: float) -> None:
        self._drift = drift
        self._answered: dict[int, float] = {}
        self.until = float("-inf")
        self.index = 0

    def reset(self) -> None:
        """A new term or leader: promises of the old one no longer renew."""
        self._answered.clear()
        self.until = float("-inf")
        self.index = 0

    def answered(self, round_: int, now: float) -> None:
        """This node answers the leader's round ``round_`` now (the earliest answer counts)."""
        if round_ and round_ not in self._answered:
            self._answered[round_] = now
            if len(self._answered) > ROUNDS_KEPT:
                del self._answered[min(self._answered)]

    def granted(self, round_: int, length_s: float, commit: int) -> None:
        answered = self._answered.get(round_)
        if answered is None or length_s <= 0:
            return
        self.until = max(self.until, answered + length_s * (1 - self._drift))
        self.index = max(self.index, commit)

    def valid(self, now: float) -> bool:
        return now < self.until


@dataclass(slots=True)
class Holder:
    """The leader's promise to one node: no write it has not applied is acknowledged
    before ``until`` (leader's clock)."""

    until: float = float("-inf")
    applied: int = 0
    #: It has sent ``Applied``: it reads leases, so promises to it are worth making.
    reads_leases: bool = False


class LeaseHolders:
    """The leader's side: its promises, and the stable index they allow."""

    def __init__(self, length_s: float, drift: float) -> None:
        self.length_s = length_s
        self._drift = drift
        self._holders: dict[str, Holder] = {}
        self.stable = 0

    def start_term(self, members: frozenset[str], now: float) -> None:
        """Every member may still hold a predecessor's lease: wait for it, or for D."""
        until = now + self.length_s * (1 + self._drift)
        self._holders = {m: Holder(until) for m in members}
        self.stable = 0

    def grant(self, node: str, answer_arrived: float) -> bool:
        """Whether to promise ``node`` a lease anchored at its answer that arrived at
        ``answer_arrived`` (recording the promise if so). The node answered before that,
        so its lease ends before ``answer_arrived + D``: a node that stopped answering
        holds nothing up for longer than D after its last answer."""
        holder = self._holders.setdefault(node, Holder())
        if not holder.reads_leases or self.length_s <= 0:
            return False
        holder.until = max(holder.until, answer_arrived + self.length_s)
        return True

    def applied(self, node: str, index: int) -> None:
        holder = self._holders.setdefault(node, Holder())
        holder.reads_leases = True
        holder.applied = max(holder.applied, index)

    def advance(self, now: float, own_applied: int) -> bool:
        """Recompute the stable index; True if it moved. Promises that ran out are
        forgotten (a removed member's are kept until then)."""
        candidate = own_applied
        for node in list(self._holders):
            holder = self._holders[node]
            if holder.until <= now:
                if not holder.reads_leases:
                    del self._holders[node]
                continue
            candidate = min(candidate, holder.applied)
        if candidate > self.stable:
            self.stable = candidate
            return True
        return False

    def waiting_on(self, now: float, index: int) -> list[str]:
        """The nodes whose promise keeps ``index`` from being stable (for diagnostics)."""
        return sorted(n for n, h in self._holders.items() if h.until > now and h.applied < index)


def leader_lease_until(sent_at: float, election_timeout_s: float, drift: float) -> float:
    """How long a leader that a quorum answered in a round sent at ``sent_at`` may read."""
    return sent_at + election_timeout_s * (1 - drift)
