"""Gossip messages: the nouns of SWIM, as frozen values.

Protocol messages travel one per UDP datagram, each with a bounded list of
piggybacked membership updates (``Alive``, ``Suspect``, ``Dead``). The full
state exchange (``PushPull``) travels over a reliable stream. Encoding,
authentication and replay protection live in ``node.gossip.wire``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Union


@dataclass(frozen=True, slots=True)
class MemberMeta:
    """What a member says about itself; only the member changes it (with a new incarnation)."""

    node_id: str
    gossip_addr: str
    http_addr: str
    zone: str = ""
    weight: int = 1
    #: Free-form tags for later roles (e.g. the coordinator's RPC address).
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


# -- membership updates (piggybacked, and the records of a push-pull) -------------------


@dataclass(frozen=True, slots=True)
class Alive:
    incarnation: int
    meta: MemberMeta

    @property
    def node_id(self) -> str:
        return self.meta.node_id


@dataclass(frozen=True, slots=True)
class Suspect:
    node_id: str
    incarnation: int
    by: str


@dataclass(frozen=True, slots=True)
class Dead:
    """Declared dead by ``by``; when ``by`` is the node itself, it left gracefully."""

    node_id: str
    incarnation: int
    by: str

    @property
    def left(self) -> bool:
        return self.by == self.node_id


Update = Union[Alive, Suspect, Dead]


# -- protocol messages (one per datagram) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    seq: int
    source: str
    #: The node id the sender believes lives at the address (a restarted node under
    #: another id, or a stale address, must not answer for it).
    target: str


@dataclass(frozen=True, slots=True)
class PingReq:
    """Ask the receiver to ping ``target`` at ``target_addr`` on ``source``'s behalf."""

    seq: int
    source: str
    target: str
    target_addr: str


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    source: str


@dataclass(frozen=True, slots=True)
class Nack:
    """Lifeguard: the intermediary of a PingReq got no answer (so it is itself healthy)."""

    seq: int
    source: str


ProtocolMessage = Union[Ping, PingReq, Ack, Nack]


@dataclass(frozen=True, slots=True)
class Packet:
    """One datagram: at most one protocol message plus piggybacked updates."""

    message: ProtocolMessage | None
    updates: tuple[Update, ...] = ()


@dataclass(frozen=True, slots=True)
class PushPull:
    """The full state exchange: every member this node knows, in its latest known state."""

    source: str
    join: bool
    states: tuple[Update, ...]
