"""Chunks on R nodes: the cluster's ``ChunkWriter`` and ``ChunkReader``.

A chunk's copies go to its owners on the placement ring (``Ring.preference``);
an owner that cannot take it is replaced by the next node of the handoff order,
so while R nodes are alive every acknowledged chunk has R copies on R distinct
live nodes. The number of copies a write must reach follows API.md: R, clamped
to the cluster's size (members gossip knows, dead ones included); with fewer
than that alive, a majority of it. Fewer copies than required: ``Unavailable``
(503), and the upload fails without a manifest.

A read takes the local copy if there is a good one, else asks the owners and
then the other nodes in preference order, checking every copy's SHA-256; a
corrupt local copy is quarantined by the local store and the read moves on.

Transfer is one ``chunk.put`` / ``chunk.get`` call per chunk over PeerNet (the
cluster key authenticates both ends; one connection per peer is reused).

An owner that had to fetch a chunk from a peer keeps the good copy (read
repair). Not yet: hints that send handoff copies back to recovered owners, and
the healing workers; they come with the rest of the replication issue.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from itertools import islice

import trio

from node.errors import ChunkCorrupt, ChunkUnavailable, InsufficientStorage, Unavailable
from node.gossip.members import MembershipView, MemberState
from node.ring.ring import Ring
from node.rpc.peers import CallFailed, PeerNet, Refused
from node.store.chunks import ChunkStore

log = logging.getLogger(__name__)

DIGEST_BYTES = 32


def copies_required(replicas: int, members: int, live: int) -> tuple[int, int]:
    """(copies to aim for, copies a write needs) for ``replicas`` in a cluster of
    ``members`` of which ``live`` are alive."""
    target = max(1, min(replicas, members))
    return target, target if live >= target else target // 2 + 1


class ReplicatedChunks:
    def __init__(self, node_id: str, local: ChunkStore, peers: PeerNet, *,
                 ring: Callable[[], Ring], view: Callable[[], MembershipView],
                 replicas: int, timeout_s: float = 30.0) -> None:
        self.node_id = node_id
        self.local = local
        self._peers = peers
        self._ring = ring
        self._view = view
        self._replicas = replicas
        self._timeout_s = timeout_s
        self.counters = {"copies_sent": 0, "copies_received": 0, "remote_reads": 0,
                         "handoff_copies": 0, "write_shortfalls": 0, "copies_failed": 0,
                         "read_repairs": 0}
        peers.on_call("chunk.put", self._serve_put)
        peers.on_call("chunk.get", self._serve_get)

    # -- writing ---------------------------------------------------------------------------

    async def put(self, digest: bytes, data: bytes | bytearray | memoryview) -> None:
        ring = self._ring()
        members = sum(1 for m in self._view().members if m.state is not MemberState.LEFT)
        target, required = copies_required(self._replicas, max(members, 1),
                                           len(ring.node_ids))
        # Lazily: the owners, then only as much of the handoff order as failures need.
        walk = ring.preference(digest, target)
        owners = list(islice(walk, target)) or [self.node_id]
        stored: list[str] = []
        errors: list[Exception] = []
        async with trio.open_nursery() as nursery:
            for node in owners:
                nursery.start_soon(self._store_on, node, digest, data, stored, errors)
        for node in walk:  # the handoff order: stand-ins for owners that failed
            if len(stored) >= target:
                break
            if await self._store_on(node, digest, data, stored, errors):
                self.counters["handoff_copies"] += 1
        if len(stored) < required:
            self.counters["write_shortfalls"] += 1
            if errors and all(isinstance(e, InsufficientStorage) for e in errors):
                raise errors[0]  # every disk asked is full: 507, as on a single node
            raise Unavailable(f"only {len(stored)} of the {required} copies a chunk needs "
                              "could be written; retry")

    async def _store_on(self, node: str, digest: bytes, data: bytes | bytearray | memoryview,
                        stored: list[str], errors: list[Exception]) -> bool:
        try:
            if node == self.node_id:
                await self.local.put(digest, data)
            else:
                await self._peers.call(node, "chunk.put", b"".join((digest, data)),
                                       timeout_s=self._timeout_s)
                self.counters["copies_sent"] += 1
        except (CallFailed, InsufficientStorage, OSError) as exc:
            errors.append(exc)
            self.counters["copies_failed"] += 1
            log.warning("a chunk copy could not be written",
                        extra={"peer": node, "why": str(exc)})
            return False
        stored.append(node)
        return True

    # -- reading ---------------------------------------------------------------------------

    async def get(self, digest: bytes) -> bytes:
        try:
            return await self.local.get(digest)
        except ChunkUnavailable:
            pass  # missing here, or corrupt (and now quarantined): ask the others
        ring = self._ring()
        for node in ring.preference(digest, self._replicas):
            if node == self.node_id:
                continue
            try:
                data = await self._peers.call(node, "chunk.get", digest,
                                              timeout_s=self._timeout_s)
            except CallFailed:
                continue
            if hashlib.sha256(data).digest() == digest:
                self.counters["remote_reads"] += 1
                if self.node_id in ring.replicas_for(digest, self._replicas):
                    await self._repair(digest, data)
                return data
            log.warning("a peer sent a chunk that fails its hash", extra={"peer": node})
        raise ChunkUnavailable(f"no good copy of chunk {digest.hex()} is reachable")

    async def _repair(self, digest: bytes, data: bytes) -> None:
        """Read repair: this node owns the chunk but had no good copy; keep the one it just
        fetched (best effort: the read succeeds either way)."""
        try:
            await self.local.put(digest, data)
        except (InsufficientStorage, OSError) as exc:
            log.warning("read repair failed", extra={"why": str(exc)})
            return
        self.counters["read_repairs"] += 1

    # -- serving peers ---------------------------------------------------------------------

    async def _serve_put(self, peer: str, body: bytes) -> bytes:
        digest, data = body[:DIGEST_BYTES], memoryview(body)[DIGEST_BYTES:]
        if len(digest) != DIGEST_BYTES or hashlib.sha256(data).digest() != digest:
            raise Refused("the chunk does not match its digest")
        await self.local.put(digest, data)
        self.counters["copies_received"] += 1
        return b""

    async def _serve_get(self, peer: str, body: bytes) -> bytes:
        if len(body) != DIGEST_BYTES:
            raise Refused("a chunk id is 32 bytes")
        try:
            return await self.local.get(body)
        except ChunkCorrupt:
            # Our copy was bad (and is quarantined now): fetch a good one for both of us;
            # read repair keeps it here if we own it. Each bad copy recurses at most once:
            # after quarantine it is missing, which is refused without looking further.
            try:
                return await self.get(body)
            except ChunkUnavailable as exc:
                raise Refused(str(exc)) from None
        except ChunkUnavailable as exc:
            raise Refused(str(exc)) from None
