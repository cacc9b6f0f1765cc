"""The metadata log: the one way metadata changes.

``MetadataLog`` is the seam between the API and the coordinator. Callers
``submit`` a command and get its result once the command is committed and
applied to this node's state; ``read_barrier`` makes a following local read
linearizable. ``node.meta.replicated.ReplicatedLog`` implements it over Raft
(a node started alone is a Raft group of one voter).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from node.meta.commands import Command
from node.meta.dirty import Key


@dataclass(frozen=True, slots=True)
class LogStatus:
    term: int
    leader: str | None
    commit_index: int
    applied_index: int = 0
    role: str = "none"
    voters: tuple[str, ...] = ()
    learners: tuple[str, ...] = ()
    #: Each follower's match index, as the leader knows it (empty on other nodes).
    match_index: dict[str, int] = field(default_factory=dict)
    #: This node came back with an empty log and may not vote until it is admitted.
    fenced: bool = False
    #: A committed entry this node cannot read stopped it applying (it needs an upgrade).
    stalled: bool = False


class MetadataLog(Protocol):
    async def submit(self, command: Command) -> object:
        """Commit and apply ``command``; return its result or raise its domain error.

        Cancellation: if the caller is cancelled the command may still commit
        (the outcome is unknown to the caller, as after a lost response).
        Raises Unavailable when the log cannot commit (no quorum, node stopping).
        """
        ...

    async def read_barrier(self) -> None:
        """Wait until local reads reflect every write acknowledged before the call."""
        ...

    async def settled(self, keys: Iterable[Key]) -> None:
        """Wait until what was read under ``keys`` may be shown (``node.meta.dirty``)."""
        ...

    def status(self) -> LogStatus: ...


class CommitObserver(Protocol):
    def observe_batch(self, size: int, seconds: float) -> None: ...
