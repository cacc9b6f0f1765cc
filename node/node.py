"""The composition root: one node, its services, and the one nursery they run in.

Start-up order: lock the data dir, bind the gossip port (RPC shares it), check
identity, open metadata, the Raft log and chunks, start the RPC network and the
coordinator (``node.coordinator``), serve HTTP, then gossip. A node started as
a cluster of one bootstraps before it serves; a node of a larger cluster serves
at once and answers 503 until the coordinator group has formed. Stopping
(``stop()``, or SIGTERM in the process) drains: the node reports itself
degraded, hands leadership over if it leads, announces its leave, hypercorn
stops accepting and finishes the requests in flight, then the background tasks
are cancelled and the databases are closed.
A crash in simulation is simply cancelling ``run``; nothing acknowledged depends
on the orderly part.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from pathlib import Path
from types import MappingProxyType

import trio
from hypercorn.config import Config as HypercornConfig

from node.api.app import BlobApp, create_app
from node.api.limits import UserLimits
from node.api.server import ConnectionLimits, serve
from node.api.metrics import NodeMetrics
from node.auth.passwords import PasswordHasher
from node.auth.throttle import LoginThrottle
from node.blobs.gc import ChunkCollector
from node.blobs.pins import ChunkPins
from node.clock import SystemClock, WallClock, rfc3339
from node import datadir
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
from node.meta.replicated import ReplicatedLog
from node.meta.state import MetaState
from node.entropy import random_source
from node.net.metrics import StreamCollector
from node.net.tls import TlsContexts, TlsSetupError, TlsTransport, load_tls
from node.net.transport import Transport, TransportError
from node.net.udp_tcp import open_udp_tcp_transport, resolve_address, resolve_host
from node.ring.ring import Ring, single_node_view
from node.services import Services
from node.store.chunks import ChunkStore
from node.store.db import Database
from node.coordinator.service import Coordinator
from node.net.router import StreamRouter
from node.raft import storage as raft_storage
from node.raft.bootstrap import TAG_FENCE
from node.raft.metrics import RaftCollector
from node.rpc import channel
from node.rpc.channel import DEFAULT_MAX_FRAME
from node.rpc.peers import PeerNet
from node.store.healer import Healer
from node.store.scrub import Scrubber
from node.store.replicated import ReplicatedChunks

log = logging.getLogger(__name__)

DEV_ADMIN_PASSWORD = "admin-dev-password"
DEV_CLUSTER_KEY = "blobstore-development-cluster-key"
#: Gossip tag: the metadata command format this node's software reads (``META_FORMAT``).
TAG_META = "meta"
#: Gossip tag: the newest inter-node channel version this node speaks (``node.rpc.channel``).
TAG_RPC = "rpc"
READY_FILE = "node.ready"


def _lock_data_dir(data_dir: Path) -> int:
    try:
        return datadir.lock(data_dir)
    except datadir.DataDirInUse:
        raise ConfigError(f"data dir {data_dir} is in use by another node") from None


def _check_identity(config: NodeConfig) -> None:
    stored = datadir.stored_node_id(config.data_dir)
    if stored is None:
        datadir.write_identity(config.data_dir, config.node_id)
    elif stored != config.node_id:
        raise ConfigError(f"data dir {config.data_dir} belongs to node "
                          f"{stored!r}, not {config.node_id!r}")


def readable_format(view: MembershipView) -> int:
    """The newest metadata command format every member reads: a node uses a newer one only
    once this allows it (a dead member counts, as it may come back; a departed one not)."""
    return min((member.version(TAG_META) for member in view.members
                if member.state is not MemberState.LEFT), default=1)


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
        self.coordinator: Coordinator | None = None
        self.router: StreamRouter | None = None
        self._stop = trio.Event()
        self._bootstrap_lock = trio.Lock()
        self._key = b""
        self._accepted_keys: tuple[bytes, ...] = ()
        self._tls: TlsContexts | None = None
        self.tls_transport: TlsTransport | None = None
        self._group: str | None = None

    def stop(self) -> None:
        """Begin a graceful stop: drain requests, then return from ``run``."""
        if self.services is not None:
            self.services.draining = True
        self._stop.set()

    def _open(self, transport: Transport) -> tuple[Services, ReplicatedLog, PeerNet, Database,
                                                     bool]:
        """Open the databases and stores; build the metadata log over the RPC network."""
        cfg = self.config
        _check_identity(cfg)
        # The Raft log (FULL) replays what a power cut takes back; see node.store.db.
        db = Database(cfg.data_dir / datadir.META_DB, synchronous="NORMAL")
        raft_db = Database(cfg.data_dir / datadir.RAFT_DB, readers=1)
        state = MetaState(cfg.meta_cache_bytes)
        db.write_sync(state.load)
        has_raft = raft_db.write_sync(raft_storage.has_state)
        self._group = raft_db.write_sync(raft_storage.group_id) if has_raft else None
        if not has_raft and state.applied_index > 0:
            raise ConfigError(f"data dir {cfg.data_dir} holds metadata but no coordinator log; "
                              "it was not written by this version")
        if not has_raft and self.config.starts_alone:
            self._admin_password()  # this node will bootstrap: fail now, not later
        # A frame carries at most one chunk (chunk.put / chunk.get) plus a little framing.
        peers = PeerNet(cfg.node_id, transport, self._key, self._gossip_address,
                        accepted_keys=self._accepted_keys,
                        max_frame_bytes=max(DEFAULT_MAX_FRAME, cfg.chunk_size + 64 * 1024),
                        version_of=self._rpc_version)
        metrics = NodeMetrics()
        meta_log = ReplicatedLog(state, db, peers, timeout_s=cfg.meta_timeout_s,
                                 observe_write=metrics.write_latency.observe)
        chunks = ChunkStore(cfg.data_dir / "store", reserve=cfg.disk_reserve.bytes_of)
        pins = ChunkPins()

        async def condemn(batch: list[bytes]) -> list[bytes]:
            condemned = await meta_log.submit(c.CondemnChunks(
                tuple(d.hex() for d in batch), self.clock.now(), cfg.upload_max_s))
            assert isinstance(condemned, tuple)
            return [bytes.fromhex(h) for h in condemned]
        def unreferenced(batch: list[bytes]) -> Awaitable[list[bytes]]:
            return db.read(lambda conn: queries.unreferenced(conn, batch))
        collector = ChunkCollector(chunks, unreferenced, condemn, pins, self.clock,
                                   grace_s=cfg.gc_grace_s, interval_s=cfg.gc_interval_s)
        view = single_node_view(Member(cfg.node_id, str(cfg.http), str(cfg.gossip)))
        svc = Services(
            config=cfg, clock=self.clock, db=db, state=state, log=meta_log, chunks=chunks,
            pins=pins,
            hasher=PasswordHasher(time_cost=cfg.argon2_time_cost,
                                  memory_kib=cfg.argon2_memory_kib,
                                  parallelism=cfg.argon2_parallelism),
            throttle=LoginThrottle(max_failures=cfg.login_max_failures,
                                   window_s=cfg.login_window_s, backoff_s=cfg.login_backoff_s),
            metrics=metrics, collector=collector, membership=view, ring=Ring.build(view),
            user_limits=UserLimits(rate_per_s=cfg.user_requests_per_s,
                                   burst=2 * cfg.user_requests_per_s,
                                   max_uploads=cfg.max_uploads_per_user, clock=trio.current_time),
            connections=ConnectionLimits(total=cfg.max_connections,
                                         per_client=cfg.max_connections_per_client),
            chunk_io=ReplicatedChunks(cfg.node_id, chunks, peers, pins, ring=lambda: svc.ring,
                                      view=lambda: svc.membership, replicas=cfg.replicas,
                                      hold_s=cfg.upload_hold_s),
            healer=Healer(cfg.node_id, chunks, peers, ring=lambda: svc.ring,
                          replicas=cfg.replicas, interval_s=cfg.heal_interval_s,
                          unreferenced=unreferenced),
            scrubber=Scrubber(chunks, lambda digest: svc.chunk_io.get(digest),
                              bytes_per_s=cfg.scrub_bytes_per_s,
                              interval_s=cfg.scrub_interval_s))
        metrics.add_gauges({
            "blobstore_chunks_on_disk": ("Chunk files on this node", lambda: chunks.count),
            "blobstore_chunk_bytes_on_disk": ("Bytes of chunk files", lambda: chunks.bytes),
            "blobstore_chunks_corrupt_found": ("Corrupt chunk copies found",
                                               lambda: chunks.corrupt_found),
            "blobstore_chunks_collected": ("Unreferenced chunks collected",
                                           lambda: collector.collected_total),
            "blobstore_meta_applied_index": ("Last applied metadata entry",
                                             lambda: state.applied_index),
            "blobstore_chunks_under_replicated": (
                "Owner copies the last healing pass found missing and could not send",
                lambda: svc.healer.under_replicated),
            "blobstore_chunks_hinted": ("Copies held for owners that lack them (hand-offs)",
                                        lambda: svc.healer.hinted),
            "blobstore_http_connections_open": ("Open HTTP connections of this node",
                                                lambda: svc.connections.open),
            "blobstore_http_connections_refused": (
                "HTTP connections refused over max_connections(_per_client)",
                lambda: svc.connections.refused),
            "blobstore_user_requests_refused": (
                "Requests refused over user_requests_per_s",
                lambda: svc.user_limits.refused["rate"]),
            "blobstore_uploads_refused": ("Uploads refused over max_uploads_per_user",
                                          lambda: svc.user_limits.refused["uploads"]),
            "blobstore_chunks_awaiting_collection": (
                "Copies no manifest references, left to the collector (last healing pass)",
                lambda: svc.healer.garbage),
            "blobstore_upload_holds": ("Peers' uploads whose chunks are held from the collector",
                                       lambda: pins.holds),
            "blobstore_chunk_copies_healed": ("Chunk copies sent to owners that lacked them",
                                              lambda: svc.healer.counters["copies_sent"]),
            "blobstore_chunk_copies_dropped": ("Surplus copies dropped once owners had theirs",
                                               lambda: svc.healer.counters["copies_dropped"]),
            "blobstore_chunk_read_repairs": ("Copies repaired on read",
                                             lambda: svc.chunk_io.counters["read_repairs"]),
            "blobstore_scrub_passes": ("Completed scrub passes", lambda: svc.scrubber.passes),
            "blobstore_scrub_corrupt_found": ("Corrupt copies the scrubber found",
                                              lambda: svc.scrubber.counters["corrupt"]),
            "blobstore_scrub_repaired": ("Corrupt copies the scrubber replaced",
                                         lambda: svc.scrubber.counters["repaired"]),
            "blobstore_disk_available_bytes": (
                "Bytes the data dir's filesystem has free for this node (statvfs f_bavail)",
                lambda: (fs := os.statvfs(cfg.data_dir)).f_bavail * fs.f_frsize),
            "blobstore_disk_size_bytes": (
                "Size of the data dir's filesystem",
                lambda: (fs := os.statvfs(cfg.data_dir)).f_blocks * fs.f_frsize),
        })
        return svc, meta_log, peers, raft_db, has_raft

    def _admin_password(self) -> str:
        password = self.config.admin_password
        if password is not None:
            return password
        if not self.config.dev:
            raise ConfigError("BLOBSTORE_ADMIN_PASSWORD is required to bootstrap a new "
                              "cluster (or start with --dev for a development default)")
        log.warning("DEVELOPMENT MODE: the admin password is the documented default "
                    "%r; never use --dev for real data", DEV_ADMIN_PASSWORD)
        return DEV_ADMIN_PASSWORD

    async def _bootstrap_metadata(self, svc: Services) -> None:
        """Create the admin user and the token signing key, once per cluster (the command is
        idempotent; the lock only saves this node a second password hash)."""
        async with self._bootstrap_lock:
            if svc.state.signing_key is not None:
                return
            password_hash = await svc.hasher.hash(self._admin_password())
            await svc.log.submit(c.Bootstrap(
                cluster_id=secrets.token_hex(16), signing_key_hex=secrets.token_hex(32),
                admin_password_hash=password_hash, now=rfc3339(self.clock.now())))
            log.info("bootstrapped the metadata", extra={"cluster_id": svc.state.cluster_id})

    def _hypercorn_config(self) -> HypercornConfig:
        hc = HypercornConfig()
        hc.bind = [str(self.config.http)]
        hc.graceful_timeout = self.config.graceful_timeout_s
        hc.accesslog = None
        hc.errorlog = logging.getLogger("hypercorn.error")
        hc.keep_alive_timeout = self.config.keep_alive_timeout_s
        hc.h11_max_incomplete_size = self.config.max_header_bytes
        if self.config.tls:
            hc.certfile, hc.keyfile = str(self.config.tls_cert), str(self.config.tls_key)
            # HTTP/1.1 only, as without TLS: h2 would be negotiated by most clients, and
            # the node's streaming and time-outs are built and tested on HTTP/1.1.
            hc.alpn_protocols = ["http/1.1"]
        return hc

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        node_id_var.set(self.config.node_id)
        if self.config.dev:
            log.warning("DEVELOPMENT MODE (--dev): default secrets are allowed; "
                        "never use it for real data")
        self._tls = self._tls_contexts()
        lock_fd = _lock_data_dir(self.config.data_dir)
        self._key = self._cluster_key()
        self._accepted_keys = tuple(k.encode() for k in dict.fromkeys(
            self.config.cluster_keys_accepted) if k != self.config.cluster_key)
        databases: list[Database] = []
        try:
            async with AsyncExitStack() as stack:
                transport = await self._enter_transport(stack)
                self.router = StreamRouter(transport)
                svc, meta_log, peers, raft_db, has_raft = self._open(self.router.gossip)
                databases += [svc.db, raft_db]
                svc.metrics.registry.register(StreamCollector(self.router, self.tls_transport,
                                                              lambda: peers.counters))
                await svc.chunks.open()
                self.services, self.app = svc, create_app(svc)
                async with trio.open_nursery() as nursery:
                    await nursery.start(peers.run)
                    await nursery.start(self.router.run, peers.serve)
                    coordinator = self._coordinator(svc, meta_log, peers, raft_db, has_raft)
                    nursery.start_soon(coordinator.run)
                    await nursery.start(svc.collector.run)
                    await nursery.start(svc.healer.run)
                    await nursery.start(svc.chunk_io.run)
                    await nursery.start(svc.scrubber.run)
                    if self.config.starts_alone:
                        # A one-node cluster is complete at once: be bootstrapped when ready.
                        await self._bootstrap_metadata(svc)
                    binds = await nursery.start(self._serve)
                    self.http_url = binds[0]
                    self.gossip = await self._start_gossip(nursery, svc, self.router.gossip,
                                                           coordinator, self.http_url)
                    self._write_ready()
                    log.info("node ready", extra={"http": self.http_url,
                                                  "gossip": transport.address})
                    task_status.started(self)
                    await self._stop.wait()
                    svc.draining = True
                    await coordinator.step_down()
                    await self.gossip.leave(self.config.leave_timeout_s)
                    await self._served.wait()
                    nursery.cancel_scope.cancel()
        finally:
            (self.config.data_dir / READY_FILE).unlink(missing_ok=True)
            for db in databases:
                db.close()
            os.close(lock_fd)

    def _coordinator(self, svc: Services, meta_log: ReplicatedLog, peers: PeerNet,
                     raft_db: Database, has_raft: bool) -> Coordinator:
        cfg = self.config
        coordinator = Coordinator(
            cfg, raft_db, meta_log, peers, svc.state, random_source(),
            lambda: svc.membership, has_state=has_raft, group=self._group,
            settle_s=2 * PRESETS[cfg.gossip_preset].probe_interval_s,
            bootstrap_metadata=lambda: self._bootstrap_metadata(svc), observer=svc.metrics)
        self.coordinator = coordinator
        svc.metrics.registry.register(RaftCollector(lambda: coordinator.driver))
        return coordinator

    def _member(self, node_id: str) -> Member | None:
        return self.gossip.swim.member(node_id) if self.gossip is not None else None

    def _gossip_address(self, node_id: str) -> str | None:
        member = self._member(node_id)
        return member.gossip_addr if member is not None else None

    def _rpc_version(self, node_id: str) -> int:
        """The channel version the member announces; 1 (every node speaks it) if unknown."""
        member = self._member(node_id)
        return member.version(TAG_RPC) if member is not None else 1

    async def _enter_transport(self, stack: AsyncExitStack) -> Transport:
        """Bind gossip's UDP and TCP port for the life of ``stack``; a bad address or a
        port in use is a start-up error, like any other bad setting."""
        try:
            host = await resolve_host(self.config.gossip.host)
            transport: Transport = await stack.enter_async_context(
                open_udp_tcp_transport(host, self.config.gossip.port))
        except (TransportError, ValueError) as exc:
            raise ConfigError(f"setting gossip: cannot listen on {self.config.gossip}: "
                              f"{exc}") from None
        if self._tls is not None:  # every inter-node stream in TLS; datagrams as they are
            transport = self.tls_transport = TlsTransport(transport, self._tls)
        return transport

    def _tls_contexts(self) -> TlsContexts | None:
        """The inter-node TLS contexts, checked before anything starts (a bad file, a key
        that does not fit, a certificate the CA did not sign is a start-up error)."""
        cfg = self.config
        if cfg.tls_cert is None or cfg.tls_key is None or cfg.tls_ca is None:
            return None
        try:
            return load_tls(cfg.tls_cert, cfg.tls_key, cfg.tls_ca, own_host=cfg.gossip.host)
        except TlsSetupError as exc:
            raise ConfigError(f"setting {exc.setting}: {exc}") from None

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
                            coordinator: Coordinator, http_url: str) -> Gossip:
        """Members carry the addresses the node really listens on (port 0 picks one)."""
        cfg = self.config
        seeds = []
        for seed in cfg.join:
            try:
                seeds.append(await resolve_address(str(seed)))
            except (TransportError, ValueError) as exc:
                raise ConfigError(f"setting join: {exc}") from None
        own = {TAG_META: str(c.META_FORMAT), TAG_RPC: str(channel.VERSION)}
        me = MemberMeta(cfg.node_id, transport.address, http_url.split("://", 1)[-1],
                        zone=cfg.zone, weight=cfg.weight,
                        tags=MappingProxyType({**coordinator.tags, **own}))
        gossip = Gossip(me, PRESETS[cfg.gossip_preset], transport, self._key,
                        rng=random_source(), wall_ms=lambda: int(self.clock.now() * 1000),
                        seeds=tuple(seeds), on_view=lambda view: self._on_view(svc, view),
                        accepted_keys=self._accepted_keys)
        svc.metrics.registry.register(GossipCollector(gossip))
        self._on_view(svc, gossip.view)
        await nursery.start(gossip.run)
        coordinator.publish = lambda tags: gossip.set_tags({**tags, **own})
        if dict(gossip.swim.own_meta.tags) != {**coordinator.tags, **own}:
            coordinator.publish(coordinator.tags)  # changed while gossip was starting
        return gossip

    def _on_view(self, svc: Services, view: MembershipView) -> None:
        """Publish a new membership view; rebuild the ring when placement would change; heal
        at once when a member came back with an empty disk."""
        before = {m.node_id: m for m in svc.membership.members}
        for member in view.members:
            old = before.get(member.node_id)
            if old is None or old.state is not member.state:
                _log_transition(old, member)
            fence = member.tags.get(TAG_FENCE)
            if fence and member.state is MemberState.ALIVE and member.node_id != \
                    self.config.node_id and (old is None or old.tags.get(TAG_FENCE) != fence):
                svc.healer.wake()  # an empty Raft log: most likely an empty chunk store too
        svc.meta_format = readable_format(view)
        placement = lambda v: {(m.node_id, m.weight, m.zone) for m in v.live()}
        changed = placement(view) != placement(svc.membership)
        svc.membership = view
        if changed:
            svc.ring = Ring.build(view)

    async def _serve(self, *, task_status: trio.TaskStatus[list[str]]) -> None:
        self._served = trio.Event()
        try:
            assert self.app is not None
            assert self.services is not None
            await serve(self.app, self._hypercorn_config(), self.services.connections,
                        shutdown_trigger=self._stop.wait, task_status=task_status)
        finally:
            self._served.set()

    def _write_ready(self) -> None:
        path = self.config.data_dir / READY_FILE
        tmp = path.with_suffix(".tmp")
        gossip = self.gossip.transport.address if self.gossip else None
        tmp.write_text(json.dumps({"http": self.http_url, "gossip": gossip,
                                   "pid": os.getpid(), "node_id": self.config.node_id}))
        os.replace(tmp, path)
