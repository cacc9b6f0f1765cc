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
from contextlib import AsyncExitStack
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
from node.gossip.config import PRESETS
from node.gossip.driver import Gossip
from node.gossip.members import Member, MembershipView, MemberState
from node.gossip.messages import MemberMeta
from node.gossip.metrics import GossipCollector
from node.logs import node_id_var
from node.meta import commands as c
from node.meta import queries
from node.meta.log import LocalLog
from node.meta.state import MetaState
from node.entropy import random_source
from node.net.transport import Transport, TransportError
from node.net.udp_tcp import open_udp_tcp_transport, resolve_address, resolve_host
from node.ring.ring import Ring, single_node_view
from node.services import Services
from node.store.chunks import ChunkStore
from node.store.db import Database

log = logging.getLogger(__name__)

DEV_ADMIN_PASSWORD = "admin-dev-password"
DEV_CLUSTER_KEY = "blobstore-development-cluster-key"
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


def _log_transition(old: Member | None, new: Member) -> None:
    level = {MemberState.ALIVE: logging.INFO, MemberState.SUSPECT: logging.DEBUG,
             MemberState.DEAD: logging.WARNING, MemberState.LEFT: logging.INFO}[new.state]
    log.log(level, "member %s is %s", new.node_id, new.state.value,
            extra={"member": new.node_id, "state": new.state.value,
                   "was": old.state.value if old else None, "incarnation": new.incarnation})


class Node:
    """One blob store node. ``await node.run()`` serves until ``stop()`` or cancellation."""

    def __init__(self, config: NodeConfig, *, clock: WallClock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.http_url: str | None = None
        self.services: Services | None = None
        self.app: BlobApp | None = None
        self.gossip: Gossip | None = None
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
                                  lambda: len(svc.membership.live())),
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
            async with AsyncExitStack() as stack:
                transport = await self._enter_transport(stack)
                async with trio.open_nursery() as nursery:
                    await nursery.start(meta_log.run)
                    await self._bootstrap(svc)
                    await nursery.start(svc.collector.run)
                    binds = await nursery.start(self._serve)
                    self.http_url = binds[0]
                    self.gossip = await self._start_gossip(nursery, svc, transport, self.http_url)
                    self._write_ready()
                    log.info("node ready", extra={"http": self.http_url,
                                                  "gossip": transport.address})
                    task_status.started(self)
                    await self._stop.wait()
                    svc.draining = True
                    await self.gossip.leave(self.config.leave_timeout_s)
                    await self._served.wait()
                    nursery.cancel_scope.cancel()
        finally:
            (self.config.data_dir / READY_FILE).unlink(missing_ok=True)
            if db is not None:
                db.close()
            os.close(lock_fd)

    async def _enter_transport(self, stack: AsyncExitStack) -> Transport:
        """Bind gossip's UDP and TCP port for the life of ``stack``; a bad address or a
        port in use is a start-up error, like any other bad setting."""
        try:
            host = await resolve_host(self.config.gossip.host)
            return await stack.enter_async_context(
                open_udp_tcp_transport(host, self.config.gossip.port))
        except (TransportError, ValueError) as exc:
            raise ConfigError(f"setting gossip: cannot listen on {self.config.gossip}: "
                              f"{exc}") from None

    def _cluster_key(self) -> bytes:
        if self.config.cluster_key is not None:
            return self.config.cluster_key.encode()
        if self.config.dev:
            log.warning("DEVELOPMENT MODE: gossip uses the documented development cluster "
                        "key; set BLOBSTORE_CLUSTER_KEY for anything else")
            return DEV_CLUSTER_KEY.encode()
        # A lone node without a key: gossip runs, but nobody can join it.
        return secrets.token_bytes(32)

    async def _start_gossip(self, nursery: trio.Nursery, svc: Services, transport: Transport,
                            http_url: str) -> Gossip:
        """Members carry the addresses the node really listens on (port 0 picks one)."""
        cfg = self.config
        seeds = []
        for seed in cfg.join:
            try:
                seeds.append(await resolve_address(str(seed)))
            except (TransportError, ValueError) as exc:
                raise ConfigError(f"setting join: {exc}") from None
        me = MemberMeta(cfg.node_id, transport.address, http_url.split("://", 1)[-1],
                        zone=cfg.zone, weight=cfg.weight)
        gossip = Gossip(me, PRESETS[cfg.gossip_preset], transport, self._cluster_key(),
                        rng=random_source(), wall_ms=lambda: int(self.clock.now() * 1000),
                        seeds=tuple(seeds), on_view=lambda view: self._on_view(svc, view))
        svc.metrics.registry.register(GossipCollector(gossip))
        self._on_view(svc, gossip.view)
        await nursery.start(gossip.run)
        return gossip

    def _on_view(self, svc: Services, view: MembershipView) -> None:
        """Publish a new membership view; rebuild the ring when placement would change."""
        before = {m.node_id: m for m in svc.membership.members}
        for member in view.members:
            old = before.get(member.node_id)
            if old is None or old.state is not member.state:
                _log_transition(old, member)
        placement = lambda v: {(m.node_id, m.weight, m.zone) for m in v.live()}
        changed = placement(view) != placement(svc.membership)
        svc.membership = view
        if changed:
            svc.ring = Ring.build(view)

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
        gossip = self.gossip.transport.address if self.gossip else None
        tmp.write_text(json.dumps({"http": self.http_url, "gossip": gossip,
                                   "pid": os.getpid(), "node_id": self.config.node_id}))
        os.replace(tmp, path)
