"""Which parts of this node's metadata may not be read yet: applied here, not yet stable.

With read leases (``node.raft.leases``) a node applies a committed entry before
every other lease holder has. If one node showed such a value and a later read
on another lease holder, which had not applied it yet, did not, reads would go
back in time. So reads show only *stable* state: each applied command marks what
it changed with its index (before its transaction commits, so no read can see
the change unmarked), and a read waits while what it read carries an index above
the stable index (``node.meta.replicated.ReplicatedLog.settled``). The wait is
about one round trip, and only for what was just written.

Keys name what reads depend on: every authenticated request reads ``USERS``; a
permission check reads ``container(name)``; a GET reads ``blob(...)``; a listing
``listing(name)``; the container list ``CONTAINERS``. After a restart nothing is
known about what was applied before it, so everything counts as changed at the
applied index it started from (``floor``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

Key = tuple[str, ...]

USERS: Key = ("users",)
CONTAINERS: Key = ("containers",)


def container(name: str) -> Key:
    return ("container", name)


def listing(name: str) -> Key:
    return ("listing", name)


def blob(container_name: str, name: str) -> Key:
    return ("blob", container_name, name)


class DirtyKeys:
    """Keys changed above the last pruned stable index, with the index of their change."""

    def __init__(self) -> None:
        self._changed: dict[Key, int] = {}
        self._lock = threading.Lock()
        self.floor = 0

    def mark(self, keys: Iterable[Key], index: int) -> None:
        """Called by the state machine (on its worker thread) as it applies ``index``."""
        with self._lock:
            for key in keys:
                if self._changed.get(key, 0) < index:
                    self._changed[key] = index

    def needed(self, keys: Iterable[Key]) -> int:
        """The stable index that makes every one of ``keys`` readable."""
        with self._lock:
            return max((self._changed.get(key, 0) for key in keys), default=0)

    def required(self, keys: Iterable[Key]) -> int:
        return max(self.floor, self.needed(keys))

    def prune(self, stable: int) -> None:
        """Forget changes that are stable now."""
        with self._lock:
            if self._changed:
                self._changed = {k: i for k, i in self._changed.items() if i > stable}

    def reset(self, floor: int) -> None:
        """The state was (re)loaded at ``floor``: nothing older is known."""
        with self._lock:
            self._changed.clear()
            self.floor = floor

    def __len__(self) -> int:
        return len(self._changed)
