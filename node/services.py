"""What the API needs from the rest of the node, wired by ``node.node``."""

from __future__ import annotations

from dataclasses import dataclass, field

from node.api.limits import UserLimits
from node.api.metrics import NodeMetrics
from node.api.server import ConnectionLimits
from node.auth.passwords import PasswordHasher
from node.auth.throttle import LoginThrottle
from node.blobs.gc import ChunkCollector
from node.blobs.pins import ChunkPins
from node.clock import WallClock
from node.config import NodeConfig
from node.gossip.members import MembershipView
from node.meta.log import MetadataLog
from node.meta.state import MetaState
from node.ring.ring import Ring
from node.store.chunks import ChunkStore
from node.store.healer import Healer
from node.store.scrub import Scrubber
from node.store.replicated import ReplicatedChunks
from node.store.db import Database


@dataclass
class Services:
    config: NodeConfig
    clock: WallClock
    db: Database
    state: MetaState
    log: MetadataLog
    chunks: ChunkStore
    pins: ChunkPins
    hasher: PasswordHasher
    throttle: LoginThrottle
    metrics: NodeMetrics
    collector: ChunkCollector
    membership: MembershipView
    ring: Ring
    #: Each user's request rate and uploads in flight on this node.
    user_limits: UserLimits
    #: Open HTTP connections, of the node and of each client address.
    connections: ConnectionLimits
    #: Chunk reads and writes across the cluster (``chunks`` is this node's own disk).
    chunk_io: ReplicatedChunks
    healer: Healer
    scrubber: Scrubber
    draining: bool = field(default=False)
    #: The newest metadata command format every member reads (``node.meta.commands``).
    meta_format: int = field(default=1)
