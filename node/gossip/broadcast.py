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
        #: The order ``take`` goes by: (transmissions, -age), i.e. least sent, then newest.
        self._rank: dict[str, tuple[int, int]] = {}
        #: Encoded sizes, measured once per queued update (``take`` runs per datagram).
        self._sizes: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def put(self, update: Update, size: int | None = None) -> None:
        """Queue ``update``, replacing whatever was queued about the same member.

        ``size``: its encoded size, if the caller already measured it.
        """
        node_id = update.node_id
        self._items[node_id] = (update, 0)
        self._order += 1
        self._rank[node_id] = (0, -self._order)
        if size is None:
            self._sizes.pop(node_id, None)
        else:
            self._sizes[node_id] = size

    def take(self, budget_bytes: int, size_of: Callable[[Update], int],
             limit: int) -> list[Update]:
        """Updates that fit in ``budget_bytes``, least transmitted (then newest) first.

        Each taken update counts one transmission; one that reaches ``limit`` leaves.
        """
        items, rank, sizes = self._items, self._rank, self._sizes
        # With every size known, nothing fits once the room left is below the smallest.
        smallest = min(sizes.values()) if sizes and len(sizes) == len(items) else None
        taken: list[Update] = []
        used = 0
        for node_id in sorted(items, key=rank.__getitem__):
            if smallest is not None and budget_bytes - used < smallest:
                break
            update, sent = items[node_id]
            size = sizes.get(node_id)
            if size is None:
                size = sizes[node_id] = size_of(update)
            if used + size > budget_bytes:
                continue
            used += size
            taken.append(update)
            if sent + 1 >= limit:
                del items[node_id]
                del rank[node_id]
                del sizes[node_id]
            else:
                items[node_id] = (update, sent + 1)
                rank[node_id] = (sent + 1, rank[node_id][1])
        return taken
