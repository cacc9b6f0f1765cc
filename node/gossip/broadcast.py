"""The piggyback queue: membership updates waiting to ride on outgoing datagrams.

Like memberlist's TransmitLimitedQueue: each update is sent at most
``limit`` times (λ·log N, from the config), the least-sent first, and a newer
update about a member replaces any older one still queued, so the queue holds
at most one update per member.
"""

from __future__ import annotations

from collections.abc import Callable

from node.gossip.messages import Update


class BroadcastQueue:
    def __init__(self) -> None:
        self._items: dict[str, tuple[Update, int]] = {}
        self._order = 0
        self._born: dict[str, int] = {}
        #: Encoded sizes, measured once per queued update (``take`` runs per datagram).
        self._sizes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def put(self, update: Update, size: int | None = None) -> None:
        """Queue ``update``, replacing whatever was queued about the same member.

        ``size``: its encoded size, if the caller already measured it.
        """
        self._items[update.node_id] = (update, 0)
        self._order += 1
        self._born[update.node_id] = self._order
        if size is None:
            self._sizes.pop(update.node_id, None)
        else:
            self._sizes[update.node_id] = size

    def take(self, budget_bytes: int, size_of: Callable[[Update], int],
             limit: int) -> list[Update]:
        """Updates that fit in ``budget_bytes``, least transmitted (then newest) first.

        Each taken update counts one transmission; one that reaches ``limit`` leaves.
        """
        ranked = sorted(self._items.items(),
                        key=lambda kv: (kv[1][1], -self._born[kv[0]]))
        taken: list[Update] = []
        used = 0
        for node_id, (update, sent) in ranked:
            size = self._sizes.get(node_id)
            if size is None:
                size = self._sizes[node_id] = size_of(update)
            if used + size > budget_bytes:
                continue
            used += size
            taken.append(update)
            if sent + 1 >= limit:
                del self._items[node_id]
                del self._born[node_id]
                del self._sizes[node_id]
            else:
                self._items[node_id] = (update, sent + 1)
        return taken
