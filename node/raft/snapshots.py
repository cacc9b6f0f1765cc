"""Snapshot files: kept at compaction, streamed to followers, received from the leader.

A snapshot is a copy of the metadata database taken when it had applied
exactly ``meta.index`` (sqlite's online backup, so it is consistent while the
node serves). Each file is named by its index and term, so the Raft log's
snapshot record always names the one file that matches it, even after a
crash between writing a new file and recording it.

Transfer: the Raft core only emits ``SnapshotRequest(meta)``; the driver hands
it here. The leader streams the file to the follower as ``raft.snapshot``
calls of ``CHUNK_BYTES`` each (one at a time, so the follower's disk paces
it), then ``raft.snapshot_done`` with the size and SHA-256. Only then does the
Raft message go out; the follower's driver looks up the received file by
(index, term) and gives it to its core, which installs it. One transfer per
follower at a time; a failed one is simply retried when the core asks again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import trio

from node.raft.messages import SnapshotMeta
from node.rpc.peers import CallFailed, PeerNet
from node.store.files import fsync_dir, replace_durably

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
#: A chunk that takes longer than this to be acknowledged ends the transfer.
CHUNK_TIMEOUT_S = 10.0
#: Files received but never installed are kept for at most this many (index, term)s.
RECEIVED_KEPT = 2


def file_name(meta: SnapshotMeta) -> str:
    return f"snapshot-{meta.index}-{meta.term}.sqlite3"


class _Incoming:
    def __init__(self, key: tuple[int, int], path: Path) -> None:
        self.key = key
        self.path = path
        self.size = 0
        self.digest = hashlib.sha256()


class SnapshotFiles:
    def __init__(self, directory: Path, peers: PeerNet) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._peers = peers
        self._incoming: dict[str, _Incoming] = {}
        self._received: dict[tuple[int, int], Path] = {}
        self._sending: set[str] = set()
        self.counters = {"sent": 0, "send_failed": 0, "received": 0, "rejected": 0}
        peers.on_call("raft.snapshot", self._on_chunk)
        peers.on_call("raft.snapshot_done", self._on_done)

    # -- this node's own snapshot ----------------------------------------------------------

    def path_for(self, meta: SnapshotMeta) -> Path:
        return self.directory / file_name(meta)

    def adopt(self, meta: SnapshotMeta, source: Path | None = None) -> None:
        """Make the file of ``meta`` this node's snapshot (moving ``source``, a received
        file, into place if given) and delete every other snapshot file."""
        target = self.path_for(meta)
        self._received.pop((meta.index, meta.term), None)
        if source is not None and source != target:
            os.replace(source, target)
            fsync_dir(self.directory)
        for path in self.directory.glob("snapshot-*.sqlite3"):
            if path != target:
                path.unlink(missing_ok=True)

    def size_of(self, meta: SnapshotMeta) -> int:
        """Bytes of the snapshot file of ``meta`` (0 if there is none)."""
        try:
            return self.path_for(meta).stat().st_size
        except FileNotFoundError:
            return 0

    def clean(self, keep: SnapshotMeta | None) -> None:
        """At start-up: drop partial transfers and files no snapshot record names."""
        for path in self.directory.glob("*.part"):
            path.unlink(missing_ok=True)
        for path in self.directory.glob("received-*.sqlite3"):
            path.unlink(missing_ok=True)
        if keep is not None:
            self.adopt(keep)

    def received(self, meta: SnapshotMeta) -> Path | None:
        return self._received.get((meta.index, meta.term))

    # -- sending ---------------------------------------------------------------------------

    def send(self, nursery: trio.Nursery, dest: str, meta: SnapshotMeta,
             then: Callable[[], object]) -> bool:
        """Stream our snapshot of ``meta`` to ``dest`` in the background, then call ``then``
        (which sends the Raft message). False if a transfer to ``dest`` is already running
        or there is no such file."""
        path = self.path_for(meta)
        if dest in self._sending or not path.exists():
            return False
        self._sending.add(dest)
        nursery.start_soon(self._send, dest, meta, path, then)
        return True

    async def _send(self, dest: str, meta: SnapshotMeta, path: Path,
                    then: Callable[[], object]) -> None:
        head = f"{meta.index} {meta.term}"
        digest = hashlib.sha256()
        offset = 0
        try:
            # Opened once: a compaction may replace the file meanwhile; this copy stays.
            async with await trio.open_file(path, "rb") as f:
                while chunk := await f.read(CHUNK_BYTES):
                    digest.update(chunk)
                    await self._peers.call(dest, "raft.snapshot",
                                           f"{head} {offset}\n".encode() + chunk,
                                           timeout_s=CHUNK_TIMEOUT_S)
                    offset += len(chunk)
            await self._peers.call(dest, "raft.snapshot_done",
                                   f"{head} {offset} {digest.hexdigest()}".encode(),
                                   timeout_s=CHUNK_TIMEOUT_S)
            self.counters["sent"] += 1
            log.info("snapshot sent", extra={"peer": dest, "index": meta.index,
                                             "bytes": offset})
            then()
        except (CallFailed, OSError) as exc:
            self.counters["send_failed"] += 1
            log.warning("snapshot transfer failed", extra={"peer": dest, "why": str(exc)})
        finally:
            self._sending.discard(dest)

    # -- receiving -------------------------------------------------------------------------

    async def _on_chunk(self, peer: str, body: bytes) -> bytes:
        line, _, chunk = body.partition(b"\n")
        index, term, offset = (int(x) for x in line.split())
        incoming = self._incoming.get(peer)
        if offset == 0:
            path = self.directory / f"received-{index}-{term}.sqlite3.part"
            incoming = self._incoming[peer] = _Incoming((index, term), path)
            await trio.to_thread.run_sync(path.write_bytes, b"")
        if incoming is None or incoming.key != (index, term) or incoming.size != offset:
            self.counters["rejected"] += 1
            raise ValueError("snapshot chunk out of order; start again")
        await trio.to_thread.run_sync(_append, incoming.path, chunk)
        incoming.size += len(chunk)
        incoming.digest.update(chunk)
        return b""

    async def _on_done(self, peer: str, body: bytes) -> bytes:
        index, term, size, digest = body.decode().split()
        incoming = self._incoming.pop(peer, None)
        if incoming is None or incoming.key != (int(index), int(term)) \
                or incoming.size != int(size) or incoming.digest.hexdigest() != digest:
            self.counters["rejected"] += 1
            if incoming is not None:
                incoming.path.unlink(missing_ok=True)
            raise ValueError("snapshot size or digest does not match; start again")
        final = incoming.path.with_suffix("")  # drop ".part"
        await trio.to_thread.run_sync(replace_durably, incoming.path, final)
        self._received[incoming.key] = final
        while len(self._received) > RECEIVED_KEPT:
            old = min(self._received)
            self._received.pop(old).unlink(missing_ok=True)
        self.counters["received"] += 1
        return b""


def _append(path: Path, chunk: bytes) -> None:
    with open(path, "ab") as f:
        f.write(chunk)
