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
cluster key authenticates both ends; one connection per peer is reused). The
chunk's bytes travel as a payload outside the channel's MAC: both ends hash
them against the chunk id anyway, which is under it.

An upload writes through an ``Upload`` (``upload()``): each copy it places on a
peer is *held* there against the collector, keyed by this node and the upload's
random id, and ``run`` renews the holds every third of ``hold_s`` while the
upload runs (see ``node.blobs.pins``; the holds make uploads succeed, the
commit-time check in the metadata makes them safe).

An owner that had to fetch a chunk from a peer keeps the good copy (read
repair). Copies that went to stand-ins return to their owners through the
healer (``node.store.healer``).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import islice

import trio

from node.blobs.pins import ChunkPins
from node.errors import ChunkCorrupt, ChunkUnavailable, InsufficientStorage, Unavailable
from node.gossip.members import MembershipView, MemberState
from node.ring.ring import Ring
from node.rpc.peers import CallFailed, PeerNet, Refused
from node.store.chunks import DIGEST_SIZE, ChunkStore, chunk_id

log = logging.getLogger(__name__)

#: Upload ids, which key the holds on peers; all zeros: a copy no upload waits for.
UPLOAD_ID_BYTES = 16
NO_UPLOAD = bytes(UPLOAD_ID_BYTES)


async def send_chunk(peers: PeerNet, node: str, digest: bytes, upload: bytes,
                     data: bytes | bytearray | memoryview, *, timeout_s: float) -> None:
    """A ``chunk.put`` call: chunk id and upload id (or ``NO_UPLOAD``) under the channel's
    MAC, the bytes as its payload, sent from the caller's buffer (the receiver checks them
    against the id)."""
    await peers.call(node, "chunk.put", digest + upload, payload=data, timeout_s=timeout_s)


class Upload:
    """One upload's chunk writer; remembers the peers that hold its copies."""

    def __init__(self, chunks: ReplicatedChunks) -> None:
        self._chunks = chunks
        self.id = secrets.token_bytes(UPLOAD_ID_BYTES)
        self.peers: set[str] = set()

    async def put(self, digest: bytes, data: bytes | bytearray | memoryview) -> None:
        await self._chunks.put(digest, data, upload=self)


def copies_required(replicas: int, members: int, live: int) -> tuple[int, int]:
    """(copies to aim for, copies a write needs) for ``replicas`` in a cluster of
    ``members`` of which ``live`` are alive."""
    target = max(1, min(replicas, members))
    return target, target if live >= target else target // 2 + 1


class ReplicatedChunks:
    def __init__(self, node_id: str, local: ChunkStore, peers: PeerNet, pins: ChunkPins, *,
                 ring: Callable[[], Ring], view: Callable[[], MembershipView],
                 replicas: int, hold_s: float, timeout_s: float = 30.0) -> None:
        self.node_id = node_id
        self.local = local
        self._pins = pins
        self._hold_s = hold_s
        self._peers = peers
        self._ring = ring
        self._view = view
        self._replicas = replicas
        self._timeout_s = timeout_s
        self.counters = {"copies_sent": 0, "copies_received": 0, "remote_reads": 0,
                         "handoff_copies": 0, "write_shortfalls": 0, "copies_failed": 0,
                         "read_repairs": 0, "holds_lapsed": 0}
        self._uploads: set[Upload] = set()
        peers.on_call("chunk.put", self._serve_put, raw=True, checks_payload=True)
        peers.on_call("chunk.get", self._serve_get, answers_payload=True)
        peers.on_call("chunk.renew", self._serve_renew)

    # -- writing ---------------------------------------------------------------------------

    def copies(self, ring: Ring | None = None) -> tuple[int, int]:
        """(copies a chunk gets, copies a write needs) in the cluster as it is now."""
        members = sum(1 for m in self._view().members if m.state is not MemberState.LEFT)
        return copies_required(self._replicas, max(members, 1),
                               len((ring or self._ring()).node_ids))

    @contextmanager
    def upload(self) -> Iterator[Upload]:
        """An upload's writer; ``run`` renews its holds on peers until the block ends."""
        upload = Upload(self)
        self._uploads.add(upload)
        try:
            yield upload
        finally:
            self._uploads.discard(upload)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Renew the holds of running uploads, every third of ``hold_s``: one call per peer
        carries the ids of all the uploads it holds chunks for."""
        task_status.started()
        while True:
            await trio.sleep(self._hold_s / 3)
            by_peer: dict[str, list[bytes]] = {}
            for upload in self._uploads:
                for peer in upload.peers:
                    by_peer.setdefault(peer, []).append(upload.id)
            async with trio.open_nursery() as nursery:
                for peer, ids in by_peer.items():
                    nursery.start_soon(self._renew_on, peer, ids)

    async def _renew_on(self, peer: str, uploads: list[bytes]) -> None:
        try:
            known = await self._peers.call(peer, "chunk.renew", b"".join(uploads),
                                           timeout_s=self._hold_s / 3)
        except CallFailed as exc:
            log.warning("uploads' chunk holds could not be renewed",
                        extra={"peer": peer, "why": str(exc)})
            return
        if known.count(0):
            self.counters["holds_lapsed"] += known.count(0)
            log.warning("an upload's chunk hold lapsed; its commit may be refused",
                        extra={"peer": peer})

    async def put(self, digest: bytes, data: bytes | bytearray | memoryview,
                  upload: Upload | None = None) -> None:
        ring = self._ring()
        target, required = self.copies(ring)
        # Lazily: the owners, then only as much of the handoff order as failures need.
        walk = ring.preference(digest, target)
        owners = list(islice(walk, target)) or [self.node_id]
        stored: list[str] = []
        errors: list[Exception] = []
        async with trio.open_nursery() as nursery:
            for node in owners:
                nursery.start_soon(self._store_on, node, digest, data, upload, stored, errors)
        for node in walk:  # the handoff order: stand-ins for owners that failed
            if len(stored) >= target:
                break
            if await self._store_on(node, digest, data, upload, stored, errors):
                self.counters["handoff_copies"] += 1
        if len(stored) < required:
            self.counters["write_shortfalls"] += 1
            if errors and all(isinstance(e, InsufficientStorage) for e in errors):
                raise errors[0]  # every disk asked is full: 507, as on a single node
            raise Unavailable(f"only {len(stored)} of the {required} copies a chunk needs "
                              "could be written; retry")

    async def _store_on(self, node: str, digest: bytes, data: bytes | bytearray | memoryview,
                        upload: Upload | None, stored: list[str],
                        errors: list[Exception]) -> bool:
        try:
            if node == self.node_id:
                await self.local.put(digest, data)
            else:
                if upload is not None:
                    upload.peers.add(node)  # before the call: a hold may land even if it fails
                await send_chunk(self._peers, node, digest,
                                 NO_UPLOAD if upload is None else upload.id, data,
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
                data = await self._peers.call(node, "chunk.get", digest, checks_answer=True,
                                              timeout_s=self._timeout_s)
            except CallFailed:
                continue
            if await trio.to_thread.run_sync(chunk_id, data) == digest:
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
        head = DIGEST_SIZE + UPLOAD_ID_BYTES  # a view of the frame (a raw handler)
        digest, upload = bytes(body[:DIGEST_SIZE]), bytes(body[DIGEST_SIZE:head])
        data = memoryview(body)[head:]
        if len(upload) != UPLOAD_ID_BYTES or len(digest) != DIGEST_SIZE:
            raise Refused("a chunk.put starts with a 32-byte chunk id and a 16-byte upload id")
        if upload != NO_UPLOAD:  # held before it is written: the collector must not race it
            self._pins.hold(peer, upload, digest, trio.current_time() + self._hold_s)
        try:
            await self.local.put(digest, data, verify=True)
        except ChunkCorrupt:
            raise Refused("the chunk does not match its digest") from None
        self.counters["copies_received"] += 1
        return b""

    async def _serve_renew(self, peer: str, body: bytes) -> bytes:
        """One byte per upload id: 1 if its hold was still there (and is renewed now)."""
        if not body or len(body) % UPLOAD_ID_BYTES:
            raise Refused("upload ids are 16 bytes each")
        until = trio.current_time() + self._hold_s
        return bytes(self._pins.renew(peer, body[i:i + UPLOAD_ID_BYTES], until)
                     for i in range(0, len(body), UPLOAD_ID_BYTES))

    async def _serve_get(self, peer: str, body: bytes) -> bytes:
        if len(body) != DIGEST_SIZE:
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
