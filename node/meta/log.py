"""The metadata log: the one way metadata changes.

``MetadataLog`` is the seam between the API and the coordinator. Callers
``submit`` a command and get its result once the command is committed and
applied to this node's state; ``read_barrier`` makes a following local read
linearizable. ``LocalLog`` is the single-node implementation: commands are
committed as soon as they are applied to the local sqlite. The Raft log of the
coordinator issue implements the same protocol and feeds the same
``MetaState``.

Group commit: ``LocalLog.run`` takes every command waiting at the moment and
applies them as one batch, one transaction and one fsync, so many concurrent
writers share each fsync instead of queueing for their own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import trio

from node.errors import Unavailable
from node.meta.commands import Command
from node.meta.state import MetaState
from node.store.db import Database, DatabaseError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LogStatus:
    term: int
    leader: str | None
    commit_index: int


class MetadataLog(Protocol):
    async def submit(self, command: Command) -> object:
        """Commit and apply ``command``; return its result or raise its domain error.

        Cancellation: if the caller is cancelled the command may still commit
        (the outcome is unknown to the caller, as after a lost response).
        Raises Unavailable when the log cannot commit (no quorum, node stopping).
        """
        ...

    async def read_barrier(self) -> None:
        """Wait until local reads reflect every write committed before the call."""
        ...

    def status(self) -> LogStatus: ...


class _Pending:
    __slots__ = ("command", "done", "result")

    def __init__(self, command: Command) -> None:
        self.command = command
        self.done = trio.Event()
        self.result: object = None


class CommitObserver(Protocol):
    def observe_batch(self, size: int, seconds: float) -> None: ...


class LocalLog:
    """The single-node log: applies batches of commands straight to the local state."""

    def __init__(self, state: MetaState, db: Database, node_id: str, *,
                 batch_max: int = 256, observer: CommitObserver | None = None) -> None:
        self._state = state
        self._db = db
        self._node_id = node_id
        self._batch_max = batch_max
        self._observer = observer
        self._send, self._receive = trio.open_memory_channel[_Pending](10_000)
        self._closed = False

    async def submit(self, command: Command) -> object:
        if self._closed:
            raise Unavailable("the node is shutting down")
        pending = _Pending(command)
        try:
            await self._send.send(pending)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise Unavailable("the node is shutting down") from None
        await pending.done.wait()
        if isinstance(pending.result, BaseException):
            raise pending.result
        return pending.result

    async def read_barrier(self) -> None:
        """On one node every committed write is already applied locally."""

    def status(self) -> LogStatus:
        return LogStatus(term=1, leader=self._node_id, commit_index=self._state.applied_index)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The batcher task; runs until cancelled, then fails what is still queued."""
        task_status.started()
        try:
            async for first in self._receive:
                batch = [first]
                while len(batch) < self._batch_max:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                await self._commit(batch)
        finally:
            self._closed = True
            self._send.close()
            for pending in self._drain():
                pending.result = Unavailable("the node is shutting down")
                pending.done.set()

    def _drain(self) -> list[_Pending]:
        drained = []
        while True:
            try:
                drained.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return drained

    async def _commit(self, batch: list[_Pending]) -> None:
        base = self._state.applied_index
        entries = [(base + i + 1, p.command) for i, p in enumerate(batch)]
        started = trio.current_time()
        try:
            with trio.CancelScope(shield=True):
                results = await self._db.write(
                    lambda conn: self._state.apply_batch(conn, entries))
        except DatabaseError as exc:
            results = [Unavailable(f"metadata write failed: {exc}") for _ in batch]
        except Exception as exc:  # noqa: BLE001 - a bug must fail its batch, not the log
            log.error("metadata batch failed", exc_info=exc)
            results = [Unavailable("metadata write failed; see the node's log") for _ in batch]
        if self._observer is not None:
            self._observer.observe_batch(len(batch), trio.current_time() - started)
        for pending, result in zip(batch, results):
            pending.result = result
            pending.done.set()
