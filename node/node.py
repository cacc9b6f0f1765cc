"""The composition root: one node, its services, and the one nursery they run in.

Start-up order: lock the data dir, check identity, open metadata and chunks,
start the metadata log, bootstrap a new cluster if the metadata is empty, then
serve HTTP. Stopping (``stop()``, or SIGTERM in the process) drains: the node
reports itself degraded, hypercorn stops accepting and finishes the requests in
flight, then the background tasks are cancelled and the database is closed.
A crash in simulation is simply cancelling ``run``; nothing acknowledged depends
on the orderly part.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
from pathlib import Path

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from node.api.app import BlobApp, create_app
from node.api.metrics import NodeMetrics
from node.auth.passwords import PasswordHasher
from node.auth.throttle import LoginThrottle
from node.blobs.gc import ChunkCollector
from node.blobs.pins import ChunkPins
from node.clock import SystemClock, WallClock, rfc3339
from node.config import NodeConfig
from node.errors import ConfigError
from node.gossip.members import Member
from node.logs import node_id_var
from node.meta import commands as c
from node.meta import queries
from node.meta.log import LocalLog
from node.meta.state import MetaState
from node.ring.ring import Ring, single_node_view
from node.services import Services
from node.store.chunks import ChunkStore
from node.store.db import Database

log = logging.getLogger(__name__)

DEV_ADMIN_PASSWORD = "admin-dev-password"
IDENTITY_FILE = "node.json"
READY_FILE = "node.ready"


def _lock_data_dir(data_dir: Path) -> int:
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "node.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"data dir {data_dir} is in use by another node") from None
    return fd


def _check_identity(config: NodeConfig) -> None:
    path = config.data_dir / IDENTITY_FILE
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("node_id") != config.node_id:
            raise ConfigError(f"data dir {config.data_dir} belongs to node "
                              f"{stored.get('node_id')!r}, not {config.node_id!r}")
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"node_id": config.node_id, "format": 1}))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Node:
    """One blob store node. ``await node.run()`` serves until ``stop()`` or cancellation."""

    def __init__(self, config: NodeConfig, *, clock: WallClock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.http_url: str | None = None
        self.services: Services | None = None
        self.app: BlobApp | None = None
        self._stop = trio.Event()

    def stop(self) -> None:
        """Begin a graceful stop: drain requests, then return from ``run``."""
        if self.services is not None:
            self.services.draining = True
        self._stop.set()

    def _open(self) -> tuple[Services, LocalLog]:
        cfg = self.config
        _check_identity(cfg)
        db = Database(cfg.data_dir / "meta.sqlite3")
        state = MetaState()
        db.write_sync(state.load)
        metrics = NodeMetrics()
        meta_log = LocalLog(state, db, cfg.node_id, batch_max=cfg.commit_batch_max,
                            observer=metrics)
        chunks = ChunkStore(cfg.data_dir / "store")
        pins = ChunkPins()
        collector = ChunkCollector(
            chunks, lambda batch: db.read(lambda conn: queries.unreferenced(conn, batch)),
            pins, self.clock, grace_s=cfg.gc_grace_s, interval_s=cfg.gc_interval_s)
        view = single_node_view(Member(cfg.node_id, str(cfg.http), str(cfg.gossip)))
        svc = Services(
            config=cfg, clock=self.clock, db=db, state=state, log=meta_log, chunks=chunks,
            pins=pins,
            hasher=PasswordHasher(time_cost=cfg.argon2_time_cost,
                                  memory_kib=cfg.argon2_memory_kib,
                                  parallelism=cfg.argon2_parallelism),
            throttle=LoginThrottle(max_failures=cfg.login_max_failures,
                                   window_s=cfg.login_window_s, backoff_s=cfg.login_backoff_s),
            metrics=metrics, collector=collector, membership=view, ring=Ring.build(view))
        metrics.add_gauges({
            "blobstore_chunks_on_disk": ("Chunk files on this node", lambda: chunks.count),
            "blobstore_chunk_bytes_on_disk": ("Bytes of chunk files", lambda: chunks.bytes),
            "blobstore_chunks_corrupt_found": ("Corrupt chunk copies found",
                                               lambda: chunks.corrupt_found),
            "blobstore_chunks_collected": ("Unreferenced chunks collected",
                                           lambda: collector.collected_total),
            "blobstore_members": ("Members by this node's view",
                                  lambda: len(svc.membership.alive())),
            "blobstore_meta_applied_index": ("Last applied metadata entry",
                                             lambda: state.applied_index),
        })
        return svc, meta_log

    async def _bootstrap(self, svc: Services) -> None:
        if svc.state.signing_key is not None:
            return
        password = self.config.admin_password
        if password is None:
            if not self.config.dev:
                raise ConfigError("BLOBSTORE_ADMIN_PASSWORD is required to bootstrap a new "
                                  "cluster (or start with --dev for a development default)")
            password = DEV_ADMIN_PASSWORD
            log.warning("DEVELOPMENT MODE: the admin password is the documented default "
                        "%r; never use --dev for real data", DEV_ADMIN_PASSWORD)
        await svc.log.submit(c.Bootstrap(
            cluster_id=secrets.token_hex(16), signing_key_hex=secrets.token_hex(32),
            admin_password_hash=await svc.hasher.hash(password),
            now=rfc3339(self.clock.now())))
        log.info("bootstrapped a new cluster", extra={"cluster_id": svc.state.cluster_id})

    def _hypercorn_config(self) -> HypercornConfig:
        hc = HypercornConfig()
        hc.bind = [str(self.config.http)]
        hc.graceful_timeout = self.config.graceful_timeout_s
        hc.accesslog = None
        hc.errorlog = logging.getLogger("hypercorn.error")
        hc.keep_alive_timeout = 75.0
        return hc

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        node_id_var.set(self.config.node_id)
        if self.config.dev:
            log.warning("DEVELOPMENT MODE (--dev): default secrets are allowed; "
                        "never use it for real data")
        lock_fd = _lock_data_dir(self.config.data_dir)
        db: Database | None = None
        try:
            svc, meta_log = self._open()
            db = svc.db
            await svc.chunks.open()
            self.services, self.app = svc, create_app(svc)
            async with trio.open_nursery() as nursery:
                await nursery.start(meta_log.run)
                await self._bootstrap(svc)
                await nursery.start(svc.collector.run)
                binds = await nursery.start(self._serve)
                self.http_url = binds[0]
                self._advertise(svc, self.http_url)
                self._write_ready()
                log.info("node ready", extra={"http": self.http_url})
                task_status.started(self)
                await self._stop.wait()
                svc.draining = True
                await self._served.wait()
                nursery.cancel_scope.cancel()
        finally:
            (self.config.data_dir / READY_FILE).unlink(missing_ok=True)
            if db is not None:
                db.close()
            os.close(lock_fd)

    def _advertise(self, svc: Services, http_url: str) -> None:
        """Members carry the address the node really listens on (port 0 picks one)."""
        me = Member(self.config.node_id, http_url.split("://", 1)[-1], str(self.config.gossip))
        svc.membership = single_node_view(me)
        svc.ring = Ring.build(svc.membership)

    async def _serve(self, *, task_status: trio.TaskStatus[list[str]]) -> None:
        self._served = trio.Event()
        try:
            assert self.app is not None
            await serve(self.app, self._hypercorn_config(), shutdown_trigger=self._stop.wait,
                        task_status=task_status)
        finally:
            self._served.set()

    def _write_ready(self) -> None:
        path = self.config.data_dir / READY_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"http": self.http_url, "pid": os.getpid(),
                                   "node_id": self.config.node_id}))
        os.replace(tmp, path)
