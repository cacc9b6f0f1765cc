"""Healing: every chunk on this node ends up on its owners, and only there.

After every ring change, when told that a member came back with an empty disk
(``wake``), and every ``interval_s`` as a backstop, the healer walks the chunks
on this node's disk. For each one it asks the owners
(``chunk.check``, in batches) whether they hold a *verified* copy, sends the
chunk to those that do not, and, when this node is not an owner itself and
every owner has confirmed its copy, deletes the local one. Of the owners that
hold a copy, only the first in preference order sends it. This one loop
covers re-replication after a node dies, hand-off copies going back to an
owner that recovered (hints), and rebalancing when a node joins.

Only chunks a committed manifest references are healed. Garbage (the chunks of
overwritten or deleted blobs, of failed uploads, of uploads still running) is
the collector's: sending it to owners would hand every owner a fresh copy that
outlives its grace period there, and the copies would hop between the nodes
for ever. Garbage keeps the healer looking again soon (a manifest committed
after this node read its metadata makes a chunk referenced), nothing more.

Safety: a copy is only dropped after each owner has verified its own copy
against the chunk's hash in the same pass; an owner that is unreachable or
unsure counts as not having it. The pace is bounded (``batch`` chunks per
round trip, one pass at a time, a pause between batches) so client traffic
keeps priority.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from node.errors import ChunkUnavailable, InsufficientStorage
from node.ring.ring import Ring
from node.rpc.peers import CallFailed, PeerNet, Refused
from node.store.chunks import DIGEST_SIZE, ChunkStore
from node.store.replicated import NO_UPLOAD, send_chunk

log = logging.getLogger(__name__)

#: Chunk ids per chunk.check call.
BATCH = 256
#: Pause between batches, so a pass never hogs the disk or the event loop.
PAUSE_S = 0.01
#: How often the ring epoch is looked at.
WATCH_S = 0.5
#: First pause before a pass that left work to others (or to a peer's recovery) looks
#: again; it doubles up to ``interval_s`` while work stays pending.
RETRY_S = 1.0


#: Chunk ids in, the ones no committed manifest references out (None: all are referenced).
Unreferenced = Callable[[list[bytes]], Awaitable[list[bytes]]]


class Healer:
    def __init__(self, node_id: str, local: ChunkStore, peers: PeerNet, *,
                 ring: Callable[[], Ring], replicas: int, interval_s: float,
                 unreferenced: Unreferenced | None = None,
                 call_timeout_s: float = 30.0) -> None:
        self.node_id = node_id
        self._unreferenced = unreferenced
        self.local = local
        self._peers = peers
        self._ring = ring
        self._replicas = replicas
        self._interval_s = interval_s
        self._timeout_s = call_timeout_s
        self.passes = 0
        #: Owner copies the last pass found missing and could not send: what is still
        #: under-replicated (a copy sent and confirmed in the pass no longer counts).
        self.under_replicated = 0
        #: Copies here that this node does not own (hand-offs waiting for their owners).
        self.hinted = 0
        #: The last pass left copies to send or drop (another owner's send, a peer down).
        self.pending = False
        #: Copies being sent to owners right now.
        self.in_flight = 0
        #: Copies the last pass left to the collector (no manifest references them).
        self.garbage = 0
        self.counters = {"copies_sent": 0, "copies_dropped": 0, "send_failed": 0}
        self._woken = False
        peers.on_call("chunk.check", self._serve_check)

    def wake(self) -> None:
        """Start a pass soon: a member's disk may have been replaced (back under its old id
        before gossip declared it dead, so the ring did not change) and lacks its copies."""
        self._woken = True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started()
        epoch = -1
        next_pass = 0.0
        retry_s = RETRY_S
        while True:
            ring = self._ring()
            if ring.epoch != epoch or self._woken:
                retry_s = RETRY_S
            if ring.epoch != epoch or self._woken or trio.current_time() >= next_pass:
                epoch, self._woken = ring.epoch, False
                try:
                    await self.heal_once()
                except (OSError, InsufficientStorage) as exc:
                    log.warning("healing pass failed", extra={"why": str(exc)})
                    self.pending = True
                if self.pending:  # copies still to drop or send: look again soon
                    next_pass = trio.current_time() + min(retry_s, self._interval_s)
                    retry_s *= 2
                else:
                    next_pass = trio.current_time() + self._interval_s
                    retry_s = RETRY_S
            await trio.sleep(WATCH_S)

    async def heal_once(self) -> None:
        ring = self._ring()
        digests = [digest for digest, _, _ in await self.local.scan()]
        missing = hinted = garbage = 0
        for start in range(0, len(digests), BATCH):
            batch = digests[start:start + BATCH]
            if self._unreferenced is not None:
                unreferenced = set(await self._unreferenced(batch))
                garbage += len(unreferenced)
                batch = [d for d in batch if d not in unreferenced]
            # (Fewer than R owners when the ring is smaller: replicas_for clamps.)
            owners = {d: ring.replicas_for(d, self._replicas) for d in batch}
            holding = await self._ask_owners(owners)
            for digest in batch:
                lacking = [n for n in owners[digest]
                           if n != self.node_id and digest not in holding.get(n, set())]
                confirmed = 0
                if lacking and self._sends(owners[digest], holding, digest):
                    for node in lacking:
                        if await self._send(node, digest):
                            confirmed += 1
                    missing += len(lacking) - confirmed
                mine = self.node_id in owners[digest]
                if not mine and confirmed == len(lacking) and owners[digest]:
                    # Every owner holds a verified copy now: ours is surplus.
                    if self.local.delete_sync(digest):
                        self.counters["copies_dropped"] += 1
                elif not mine:
                    hinted += 1
            await trio.sleep(PAUSE_S)
        self.under_replicated = missing
        self.hinted = hinted
        self.garbage = garbage
        self.pending = bool(missing or hinted or garbage)
        self.passes += 1

    def _sends(self, owners: tuple[str, ...], holding: dict[str, set[bytes]],
               digest: bytes) -> bool:
        """Whether this node sends the chunk to the owners that lack it: the first owner (in
        preference order) with a copy does, so survivors do not all send the same copy; if
        no owner has one, every node that holds a copy does."""
        for node in owners:
            if node == self.node_id or digest in holding.get(node, set()):
                return node == self.node_id
        return True

    async def _ask_owners(self, owners: dict[bytes, tuple[str, ...]]) -> dict[str, set[bytes]]:
        """For each remote owner: which of its chunks it holds verified (none if it does not
        answer)."""
        asked: dict[str, list[bytes]] = {}
        for digest, nodes in owners.items():
            for node in nodes:
                if node != self.node_id:
                    asked.setdefault(node, []).append(digest)
        holding: dict[str, set[bytes]] = {}

        async def ask(node: str, digests: list[bytes]) -> None:
            try:
                answer = await self._peers.call(node, "chunk.check", b"".join(digests),
                                                timeout_s=self._timeout_s)
            except CallFailed:
                return
            holding[node] = {d for d, flag in zip(digests, answer) if flag == 1}

        async with trio.open_nursery() as nursery:
            for node, digests in asked.items():
                nursery.start_soon(ask, node, digests)
        return holding

    async def _send(self, node: str, digest: bytes) -> bool:
        self.in_flight += 1
        try:
            data = await self.local.get(digest, cache=False)  # a copy, not a client's read
            await send_chunk(self._peers, node, digest, NO_UPLOAD, data,
                             timeout_s=self._timeout_s)
        except (ChunkUnavailable, CallFailed) as exc:  # ours is bad, or they cannot take it
            self.counters["send_failed"] += 1
            log.debug("healing copy not sent", extra={"peer": node, "why": str(exc)})
            return False
        finally:
            self.in_flight -= 1
        self.counters["copies_sent"] += 1
        return True

    async def _serve_check(self, peer: str, body: bytes) -> bytes:
        """One byte per chunk id: 1 if this node holds a copy that verifies."""
        if len(body) % DIGEST_SIZE:
            raise Refused("chunk ids are 32 bytes each")
        flags = bytearray()
        for start in range(0, len(body), DIGEST_SIZE):
            try:
                good = await self.local.verify(body[start:start + DIGEST_SIZE])
            except ChunkUnavailable:
                good = False  # not here
            flags.append(1 if good else 0)
        return bytes(flags)
