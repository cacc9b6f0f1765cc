"""The metadata log over Raft: ``MetadataLog`` for a node of a cluster.

A write from any node reaches the leader: on the leader it is proposed
directly; elsewhere it is forwarded (the ``meta.propose`` call), the leader
answers with the committed entry's index and term, and this node waits until
it has applied that entry itself and takes the result of its own application.
Every node applies the same commands in the same order, so the result is the
same, and it never has to travel.

Reads that decide correctness call ``read_barrier``: the leader's ReadIndex
(one heartbeat round to a quorum), then wait until this node applied it. Reads
that arrive together share one ReadIndex (``node.meta.read_points``).

Without a leader or a quorum every call gives up with ``Unavailable`` (503)
after ``timeout_s``; it never hangs. A write that timed out may still commit:
its outcome is unknown to the client, as after a lost response.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TypeVar

import trio

from node.errors import Unavailable
from node.meta import commands as c
from node.meta import dirty
from node.meta.log import LogStatus
from node.meta.read_points import ReadPoints
from node.meta.state import MetaState
from node.raft.core import NotLeader
from node.raft.driver import ProposalLost, RaftDriver
from node.raft.messages import Entry, EntryKind
from node.rpc.peers import CallFailed, CallNotSent, CallRefused, PeerNet, Refused
from node.store.db import Database, until_stored

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Pause before asking again when there is no leader (an election takes about this long).
RETRY_S = 0.05
#: A forwarded write's call gives up this long before the caller's budget ends.
ANSWER_MARGIN_S = 0.05


class ReplicatedLog:
    def __init__(self, state: MetaState, db: Database, peers: PeerNet, *,
                 timeout_s: float = 5.0,
                 observe_write: Callable[[float], object] | None = None) -> None:
        self._state = state
        self._observe_write = observe_write
        self._db = db
        self._peers = peers
        self._timeout_s = timeout_s
        self.driver: RaftDriver | None = None
        #: A committed entry could not be decoded: nothing after it is applied here.
        self.stalled = False
        self._pruned_at = 0
        self.counters = {"lease_reads": 0, "unsettled_reads": 0}
        #: Reads that arrive together share one ReadIndex (see ``node.meta.read_points``).
        self.read_points = ReadPoints(self._read_index)
        peers.on_call("meta.propose", self._serve_propose)
        peers.on_call("meta.read_index", self._serve_read_index)

    def attach(self, driver: RaftDriver) -> None:
        self.driver = driver

    # -- the state machine -----------------------------------------------------------------

    async def apply(self, entries: list[Entry]) -> list[object]:
        """The driver's apply: commands go to the metadata state in one transaction."""
        commands: list[tuple[int, c.Command]] = []
        positions: list[int] = []
        results: list[object] = [None] * len(entries)
        unreadable: tuple[Entry, Exception] | None = None
        for i, entry in enumerate(entries):
            if entry.kind is not EntryKind.COMMAND:
                continue
            try:
                commands.append((entry.index, c.decode(entry.data)))
            except (ValueError, KeyError, TypeError) as exc:
                unreadable = entry, exc  # apply what comes before it, then stop
                break
            positions.append(i)
        if commands:
            # Every node must apply every committed entry, in order: on a full disk, wait.
            applied = await until_stored(
                lambda: self._db.write(lambda conn: self._state.apply_batch(conn, commands)),
                "applying committed metadata")
            for i, result in zip(positions, applied):
                results[i] = result
        if unreadable is not None:
            await self._cannot_apply(*unreadable)
        return results

    async def _cannot_apply(self, entry: Entry, exc: Exception) -> None:
        """A committed entry this node cannot read: skipping it would leave this node's
        metadata apart from every other node's for good, so it stops applying (and so
        serving) until it runs software that can. Only nodes write entries, so this means
        a newer node's command reached an older one, or a damaged log."""
        log.error("cannot apply committed metadata entry %d (%s): this node stops applying "
                  "until it runs the cluster's newer version; upgrade it", entry.index, exc,
                  extra={"index": entry.index})
        self.stalled = True
        await trio.sleep_forever()

    async def take(self, path: Path) -> None:
        """The driver's snapshot: a consistent copy of the metadata database. The log it
        covers is dropped next, so the database is made durable first (its commits do not
        fsync: a power cut may take back the last of them, which the log replays)."""
        await self._db.backup_to(path)
        await self._db.make_durable()

    async def install(self, path: Path) -> None:
        """A snapshot from the leader replaces the metadata; the view is rebuilt from it."""
        await self._db.restore_from(path)
        await self._db.write(self._state.load)
        await self._db.make_durable()  # before the driver records the snapshot and cuts its log

    # -- MetadataLog -----------------------------------------------------------------------

    async def submit(self, command: c.Command) -> object:
        data = c.encode(command)

        async def remote(driver: RaftDriver, leader: str, deadline: float) -> object:
            # Ends just before the caller's budget, so a lost answer reads "outcome unknown".
            answer = await self._peers.call(leader, "meta.propose", data, timeout_s=max(
                0.01, deadline - trio.current_time() - ANSWER_MARGIN_S))
            index, term = (int(x) for x in answer.split(b" "))
            return await driver.result_of(index, term)

        started = trio.current_time()
        # Retried only when the write surely was not appended: a forward that timed out may
        # have been, and a second copy could apply twice (a 409 for a write that worked).
        try:
            result = await self._at_leader(lambda driver: driver.propose(data), remote,
                                           (NotLeader, CallNotSent, CallRefused),
                                           "no coordinator could commit the write in time")
        except ProposalLost as exc:
            raise Unavailable(f"the write did not commit: {exc}") from None
        except CallFailed as exc:
            raise Unavailable(f"the write's outcome is unknown ({exc}); it may have been "
                              "applied") from None
        if self._observe_write is not None:
            self._observe_write(trio.current_time() - started)
        if isinstance(result, BaseException):
            raise result
        return result

    async def read_barrier(self) -> None:
        give_up = trio.current_time() + self._timeout_s
        with trio.move_on_at(give_up):
            driver = self.driver
            index = driver.lease_read_index() if driver is not None else None
            if index is not None:
                self.counters["lease_reads"] += 1
            else:
                index = await self.read_points.get()
            await self._ready_driver().wait_applied(index)
            return
        raise Unavailable("this node did not catch up with the coordinator in time; retry")

    async def settled(self, keys: Iterable[dirty.Key]) -> None:
        """Wait until what this request read under ``keys`` is stable: applied on every
        node holding a read lease, so no later read anywhere can miss it
        (``node.meta.dirty``). Instant unless it was written a moment ago."""
        driver = self.driver
        # A leader that grants no leases (leases off, or an older version): nobody reads
        # under one, so nothing read here can be missed by a later read elsewhere.
        if driver is None or driver.raft is None or driver.raft.leader_lease_s <= 0:
            return
        stable = driver.stable
        if stable > self._pruned_at:
            self._state.dirty.prune(stable)
            self._pruned_at = stable
        needed = self._state.dirty.required(keys)
        if needed <= stable:
            return
        self.counters["unsettled_reads"] += 1
        with trio.move_on_after(self._timeout_s):
            await driver.wait_stable(needed)
            return
        raise Unavailable("a change this request depends on is not yet applied everywhere "
                          "(a node is slow or cut off); retry")

    async def _read_index(self) -> int:
        """One ReadIndex from the leader (shared by the reads gathered in ``read_points``)."""
        async def remote(driver: RaftDriver, leader: str, deadline: float) -> int:
            # Reads are safe to repeat: a leader that does not answer soon is asked again
            # (or its successor is), instead of spending the whole budget on one attempt.
            attempt = min(deadline - trio.current_time(), max(0.5, self._timeout_s / 4))
            return int(await self._peers.call(leader, "meta.read_index", b"",
                                              timeout_s=max(0.01, attempt)))

        return await self._at_leader(lambda driver: driver.read_index(), remote,
                                     (NotLeader, CallFailed, ValueError),
                                     "no coordinator confirmed a read point in time")

    async def _at_leader(self, here: Callable[[RaftDriver], Awaitable[T]],
                         there: Callable[[RaftDriver, str, float], Awaitable[T]],
                         retry_on: tuple[type[Exception], ...], give_up: str) -> T:
        """Run ``here`` on the leader or ``there`` against it from a follower, waiting out
        elections and retrying ``retry_on``, until ``timeout_s``: then Unavailable."""
        deadline = trio.current_time() + self._timeout_s
        with trio.move_on_at(deadline):
            while True:
                driver = self.driver
                raft = driver.raft if driver is not None else None
                try:
                    if driver is not None and raft is not None and raft.is_leader:
                        return await here(driver)
                    if driver is not None and raft is not None and raft.leader is not None:
                        return await there(driver, raft.leader, deadline)
                except retry_on as exc:
                    log.debug("not taken; retrying", extra={"why": repr(exc)})
                await trio.sleep(RETRY_S)
        raise Unavailable(f"{give_up}; retry")

    def status(self) -> LogStatus:
        driver = self.driver
        raft = driver.raft if driver is not None else None
        if driver is None or raft is None:
            return LogStatus(term=0, leader=None, commit_index=0,
                             applied_index=self._state.applied_index, stalled=self.stalled)
        return LogStatus(term=raft.term, leader=raft.leader, commit_index=raft.commit_index,
                         applied_index=driver.applied, role=raft.role.value,
                         voters=tuple(sorted(raft.membership.voters)),
                         learners=tuple(sorted(raft.membership.learners)),
                         match_index=dict(sorted(raft.progress().items())),
                         fenced=raft.fenced, stalled=self.stalled)

    def _ready_driver(self) -> RaftDriver:
        if self.driver is None:
            raise Unavailable("the coordinator is not running yet")
        return self.driver

    # -- what the leader answers -----------------------------------------------------------

    async def _serve_propose(self, peer: str, body: bytes) -> bytes:
        if self.driver is None:
            raise Refused("the coordinator is not running here yet")
        try:
            with trio.fail_after(self._timeout_s):  # then the caller's outcome is unknown
                entry, _ = await self.driver.propose_entry(body)
        except NotLeader as exc:
            raise Refused(str(exc)) from None  # nothing was appended: the caller may retry
        return f"{entry.index} {entry.term}".encode()

    async def _serve_read_index(self, peer: str, body: bytes) -> bytes:
        with trio.fail_after(self._timeout_s):
            return str(await self._ready_driver().read_index()).encode()
