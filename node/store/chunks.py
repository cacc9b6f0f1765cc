"""Content-addressed chunk files on local disk.

A chunk is an immutable byte string named by its SHA-256, stored as
``chunks/<hex[0:2]>/<hex>``: 256 directories, each made durable once per
process, so small writes do not pay for new directories. Writes go to ``tmp/``
first, are fsynced, then renamed into place, so a crash leaves at most a stray
temp file (removed at the next start), never a partial chunk under its final
name.

Every read is re-hashed: bytes that do not match their name are moved to
``quarantine/`` (kept as evidence, never deleted) and reported as
``ChunkCorrupt`` so the caller fetches another replica instead.

Lifecycle: ``ChunkStore(root)`` creates the directories and clears ``tmp/``;
``await store.open()`` then counts what is on disk (in a worker thread, so a
large store does not stall the event loop). Every other method except
``scan`` requires ``open()`` first, so the accounting can never be half-built.
One ``ChunkStore`` per root: a second one would delete the first's temp files.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio

from node.errors import ChunkCorrupt, ChunkUnavailable, InsufficientStorage
from node.store.files import fsync_dir

T = TypeVar("T")

DIGEST_SIZE = 32
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX2 = re.compile(r"[0-9a-f]{2}")
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})

#: (st_dev, st_ino): tells "the file we read" apart from one a put renamed over it.
FileIdentity = tuple[int, int]


def chunk_id(data: bytes | bytearray | memoryview) -> bytes:
    """The name of a chunk: the SHA-256 digest of its bytes."""
    return hashlib.sha256(data).digest()


def hex_id(digest: bytes) -> str:
    """The digest as the lowercase hex used in file names and logs."""
    return _checked(digest).hex()


def map_os_error(exc: OSError) -> Exception:
    """A full disk or quota becomes ``InsufficientStorage`` (507); anything else stays."""
    if exc.errno in _NO_SPACE:
        return InsufficientStorage(f"chunk store out of space: {exc.strerror}")
    return exc


def _checked(digest: bytes) -> bytes:
    """Paths are built only from the hex of a real 32-byte digest, never from anything else."""
    if not isinstance(digest, bytes) or len(digest) != DIGEST_SIZE:
        raise ValueError(f"chunk digest must be {DIGEST_SIZE} bytes, got {digest!r:.80}")
    return digest


def _forget_cached(fd: int) -> None:
    """Tell the kernel a chunk just made durable (or checked) need not stay in memory.

    Every byte a PUT stores lands on R nodes, and only a read wants it back in
    memory: kept, the copies fill the page cache with write-once data and push out
    what readers use (OpenStack Swift drops its object writes from the cache for the
    same reason). Growing the page cache is also the dearest part of a write on a VM
    that hands free memory back to its host: writing 1 MiB files with fsync took
    2.4 ms of kernel CPU per MiB kept, 0.25 ms dropped, on the benchmark machine.
    Reads still go through the cache, so chunks that are read stay warm.
    """
    if hasattr(os, "posix_fadvise"):  # Linux; elsewhere the kernel decides alone
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _read_exactly(f: io.FileIO, size: int) -> bytes:
    """One allocation and normally one syscall; the copying loop runs only on a short read."""
    data = f.read(size)
    while len(data) < size:
        more = f.read(size - len(data))
        if not more:
            break  # truncated under us: the hash check will fail
        data += more
    return data


def _chunks_in(path: str, prefix: str) -> list[tuple[bytes, float, int]]:
    """Chunk files in one leaf directory; a misplaced name is unreachable, so not a chunk."""
    found: list[tuple[bytes, float, int]] = []
    with os.scandir(path) as it:
        for entry in it:
            if not (_HEX64.fullmatch(entry.name) and entry.name.startswith(prefix)):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted while we looked
            if stat.S_ISREG(st.st_mode):
                found.append((bytes.fromhex(entry.name), st.st_mtime, st.st_size))
    return found


def _hex_dirs(path: str) -> list[os.DirEntry[str]]:
    """The two-hex-character fan-out directories under ``path``, skipping junk."""
    with os.scandir(path) as it:
        return [e for e in it if _HEX2.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]


class ChunkStore:
    """Chunks under one root directory; blocking I/O always runs in worker threads.

    ``count``, ``bytes`` and ``corrupt_found`` are changed only under a
    ``threading.Lock`` held just around the stat and rename/unlink (never an
    fsync), so concurrent puts of the same chunk count it once.
    """

    def __init__(self, root: Path, *, fsync: bool = True,
                 io_limiter: trio.CapacityLimiter | None = None,
                 reserve: Callable[[int], int] | None = None) -> None:
        self.root = Path(root)
        #: Bytes to keep free on the filesystem, given its size: new chunks are refused
        #: (InsufficientStorage, 507) rather than let the disk fill under the metadata.
        self._reserve = reserve
        self._chunks_dir = self.root / "chunks"
        self._tmp_dir = self.root / "tmp"
        self._quarantine_dir = self.root / "quarantine"
        self._fsync = fsync
        self._limiter = io_limiter
        self._lock = threading.Lock()
        self._durable_dirs: set[Path] = set()
        self._opened = False
        self.count = 0
        self.bytes = 0
        self.corrupt_found = 0
        for d in (self._chunks_dir, self._tmp_dir, self._quarantine_dir):
            d.mkdir(parents=True, exist_ok=True)
        for stale in self._tmp_dir.iterdir():
            stale.unlink(missing_ok=True)

    async def open(self) -> None:
        """Initialise the accounting from what is on disk; call once, before any other use."""
        if self._opened:
            raise RuntimeError("ChunkStore.open() called twice")
        found = await self.scan()
        self.count = len(found)
        self.bytes = sum(size for _, _, size in found)
        self._opened = True

    def path_for(self, digest: bytes) -> Path:
        """Where the chunk lives (tests use it to damage a file on purpose)."""
        name = hex_id(digest)
        return self._chunks_dir / name[0:2] / name

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if not self._opened:
            raise RuntimeError("ChunkStore used before open()")
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def put(self, digest: bytes, data: bytes | bytearray | memoryview, *,
                  verify: bool = False) -> None:
        """Store ``data`` durably under ``digest`` (trusted to be its SHA-256 unless
        ``verify``: then ChunkCorrupt if it is not, checked on the worker thread that
        writes it, so a peer's chunk is never hashed on the event loop)."""
        path = self.path_for(digest)
        try:
            await self._run(self._put_sync, path, data, digest if verify else None)
        except OSError as exc:
            mapped = map_os_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    async def get(self, digest: bytes, *, cache: bool = True) -> bytes:
        """The chunk's bytes, verified; corrupt copies are quarantined, never returned.
        ``cache=False`` for a read no client waits on (a copy the healer sends): it
        leaves the chunk out of the page cache, as a scrub check does."""
        path = self.path_for(digest)
        data = await self._run(self._read_verified, path, digest, cache)
        if data is None:
            raise ChunkCorrupt(f"chunk {path.name} failed its hash check; quarantined")
        return data

    async def verify(self, digest: bytes) -> bool:
        """For the scrubber: False (and quarantined) if the copy on disk is corrupt. A
        check is no reason to cache the chunk: a scrub pass would push every chunk
        through memory and the readers' chunks out of it."""
        path = self.path_for(digest)
        return await self._run(self._read_verified, path, digest, False) is not None

    async def has(self, digest: bytes) -> bool:
        return await self._run(os.path.isfile, self.path_for(digest))

    async def delete(self, digest: bytes) -> bool:
        """True if it existed. Not fsynced: a chunk a crash brings back is just garbage again."""
        return await self._run(self.delete_sync, digest)

    def delete_sync(self, digest: bytes) -> bool:
        """``delete`` without a thread hop, for the GC, which must not checkpoint mid-decision."""
        if not self._opened:
            raise RuntimeError("ChunkStore used before open()")
        path = self.path_for(digest)
        with self._lock:
            try:
                size = os.stat(path).st_size
                os.unlink(path)
            except FileNotFoundError:
                return False
            self.count -= 1
            self.bytes -= size
        return True

    async def scan(self) -> list[tuple[bytes, float, int]]:
        """(digest, mtime in seconds, size) of every chunk file; junk names are ignored."""
        return await trio.to_thread.run_sync(self._scan_sync, limiter=self._limiter)

    def _scan_sync(self) -> list[tuple[bytes, float, int]]:
        found: list[tuple[bytes, float, int]] = []
        for top in _hex_dirs(str(self._chunks_dir)):
            found.extend(_chunks_in(top.path, top.name))
        return found

    def _put_sync(self, path: Path, data: bytes | bytearray | memoryview,
                  expected: bytes | None = None) -> None:
        if expected is not None and hashlib.sha256(data).digest() != expected:
            raise ChunkCorrupt(f"chunk {path.name} does not match its digest")
        self._check_room(len(data))
        tmp = self._tmp_dir / f"{path.name}.{secrets.token_hex(8)}"
        try:
            written = self._write_temp(tmp, data)
            self._ensure_dir(path.parent)
            created = self._install(tmp, path, written.st_size)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if not self._fsync:
            return
        try:
            fsync_dir(path.parent)
        except BaseException:
            if created:  # not known durable: take back what this put created
                self._remove_if_same(path, (written.st_dev, written.st_ino))
            raise

    def _check_room(self, size: int) -> None:
        if self._reserve is None:
            return
        st = os.statvfs(self.root)
        free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
        keep = self._reserve(total)
        if free - size < keep:
            raise InsufficientStorage(f"this node keeps {keep} bytes of its disk free and has "
                                      f"{free}: no room for a chunk of {size} bytes")

    def _write_temp(self, tmp: Path, data: bytes | bytearray | memoryview) -> os.stat_result:
        """Write all of ``data`` from a view (no copy), fsync it, and return its fstat."""
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            with memoryview(data) as view, view.cast("B") as flat:
                pos, end = 0, len(flat)
                while pos < end:
                    written = self._os_write(fd, flat[pos:])
                    if written <= 0:
                        raise OSError(errno.ENOSPC, "write made no progress")
                    pos += written
            if self._fsync:
                os.fsync(fd)
                _forget_cached(fd)
            return os.fstat(fd)
        finally:
            os.close(fd)

    def _os_write(self, fd: int, view: memoryview) -> int:
        """The one write call: a seam for tests to simulate a full disk or short writes."""
        return os.write(fd, view)

    def _ensure_dir(self, directory: Path) -> None:
        """Create the fan-out directories once, making their entries durable too."""
        if directory in self._durable_dirs:
            return
        directory.mkdir(parents=True, exist_ok=True)
        if self._fsync:
            fsync_dir(directory.parent)
        self._durable_dirs.add(directory)

    def _install(self, tmp: Path, path: Path, size: int) -> bool:
        """Atomically rename into place; True if the chunk was not there before."""
        with self._lock:
            old = _stat_or_none(path)
            os.replace(tmp, path)
            if old is None:
                self.count += 1
            self.bytes += size - (old.st_size if old else 0)
        return old is None

    def _remove_if_same(self, path: Path, ident: FileIdentity) -> None:
        with self._lock:
            st = _stat_or_none(path)
            if st is not None and (st.st_dev, st.st_ino) == ident:
                os.unlink(path)
                self.count -= 1
                self.bytes -= st.st_size

    def _read_verified(self, path: Path, digest: bytes, cache: bool) -> bytes | None:
        """The verified bytes, or None after quarantining a corrupt copy."""
        try:
            f = open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise ChunkUnavailable(f"chunk {path.name} is not on this node") from None
        with f:
            st = os.fstat(f.fileno())
            data = _read_exactly(f, st.st_size)
            if not cache:
                _forget_cached(f.fileno())
        if hashlib.sha256(data).digest() == digest:
            return data
        self._quarantine(path, (st.st_dev, st.st_ino))
        return None

    def _quarantine(self, path: Path, ident: FileIdentity) -> None:
        """Move the bad file aside as evidence, unless a put has already replaced it."""
        with self._lock:
            self.corrupt_found += 1
            st = _stat_or_none(path)
            if st is None or (st.st_dev, st.st_ino) != ident:
                return
            n = 0
            while (dest := self._quarantine_dir / f"{path.name}.{n}").exists():
                n += 1
            os.rename(path, dest)
            self.count -= 1
            self.bytes -= st.st_size
