"""Gossip on the wire: a compact binary encoding, authentication and replay protection.

Two framings carry the messages of ``node.gossip.messages``:

* **Datagrams** (one ``Packet`` each, best effort, at most ``MAX_PACKET_BYTES``)::

      magic 0xB5 | version 1 | kind 'P' | sender (str) | boot u64 | counter u64 |
      timestamp_ms u48 | payload | MAC (16 bytes)

  ``seal_packet`` builds one; a ``PacketOpener`` checks and opens them and
  remembers, per sender and boot, which counters it has accepted.

* **Stream frames** (one ``PushPull`` each, over a reliable byte stream)::

      length u32 | magic 0xB5 | version 1 | kind 'S' | timestamp_ms u48 | payload | MAC

  written by ``send_push_pull`` and read by ``receive_push_pull``.

The MAC is HMAC-SHA256, truncated to 16 bytes, over everything before it, keyed
with ``HMAC(cluster_key, b"blobstore gossip v1")`` so the cluster key itself is
never used directly. The kind byte sits under the MAC, so a datagram cannot be
replayed as a stream frame or the other way round. The MAC is verified (with
``hmac.compare_digest``) before anything after the three header bytes is parsed.

Rotating the cluster key: a sender always seals with its one current key; a
receiver given ``accepted_keys`` also takes what verifies under one of those.
Every key is tried, whichever matches, so a forgery costs the same time however
close it comes; with no accepted keys that is the one MAC it always was.

Header integers are fixed-width big-endian, so a datagram's size depends only on
its sender and payload. The payload's integers are unsigned LEB128 varints (in
minimal form only) and its strings a varint byte length then UTF-8::

    packet    = message-kind u8 (0 none, 1 Ping, 2 PingReq, 3 Ack, 4 Nack)
                message fields, then updates until the end of the payload
    Ping      = seq, source, target          Ack / Nack = seq, source
    PingReq   = seq, source, target, target_addr
    update    = kind u8 (1 Alive, 2 Suspect, 3 Dead), then
                Alive: incarnation, node_id, gossip_addr, http_addr, zone, weight,
                       tag count, (key, value) * count with keys strictly ascending
                Suspect / Dead: node_id, incarnation, by
    push-pull = source, join u8 (0 or 1), then updates until the end of the payload

Updates carry no count, so an update costs exactly ``update_size(update)`` bytes
wherever it goes, and ``fit_updates`` can size a datagram by adding numbers. The
format is flat (no nesting), so decoding needs no recursion. Decoding is strict:
any truncated, trailing, out-of-range, wrongly typed, non-minimal or unknown
input raises ``Malformed``; nothing else escapes. Encoding checks the same
limits, so whatever encodes also decodes.

Errors (all ``WireError``)::

    WireError
    ├── BadMac       the MAC does not verify (wrong key, tampering, corruption)
    ├── Replayed     a datagram counter already seen, or older than the 64-wide window
    ├── Stale        timestamp further than window_ms from the receiver's clock
    ├── Malformed    cannot be decoded, or a value outside its limits
    │   └── Truncated  a stream ended (or broke) in the middle of a frame
    ├── Oversize     larger than the datagram or frame limit
    └── TimedOut     a stream frame did not arrive within timeout_s

What this module does *not* do: choose the boot, count datagrams or read a clock
(the caller passes ``boot``, ``counter`` and ``now_ms``); send or receive
datagrams; protect push-pull frames against replay into a new connection unless
both ends pass ``now_ms`` (then the same ±window check as datagrams applies).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import trio

from node.gossip.messages import (Ack, Alive, Dead, MemberMeta, Nack, Packet, Ping, PingReq,
                                  ProtocolMessage, PushPull, Suspect, Update)

#: A UDP payload that fits a 1500-byte Ethernet MTU with room for IP/UDP and tunnel headers.
MAX_PACKET_BYTES = 1400
#: Largest push-pull frame accepted by default (length prefix not included).
MAX_PUSH_PULL_BYTES = 16 * 1024 * 1024
MAC_BYTES = 16
VERSION = 1

MAX_NODE_ID_CHARS = 64
MAX_ADDR_CHARS = 300
MAX_ZONE_CHARS = 64
MAX_TAGS = 16
MAX_TAG_KEY_CHARS = 64
MAX_TAG_VALUE_CHARS = 256
MAX_WEIGHT = 1000
MAX_INT63 = 2**63 - 1
MAX_U64 = 2**64 - 1
MAX_TIMESTAMP_MS = 2**48 - 1  # u48 milliseconds: past the year 10,000

_MAGIC = 0xB5
_PACKET_HEADER = bytes((_MAGIC, VERSION, ord("P")))
_STREAM_HEADER = bytes((_MAGIC, VERSION, ord("S")))
_SUBKEY_LABEL = b"blobstore gossip v1"
#: A stream frame body is at least its header, timestamp, source, join byte and MAC.
_MIN_FRAME_BYTES = len(_STREAM_HEADER) + 6 + 2 + 1 + MAC_BYTES


class WireError(Exception):
    """Gossip bytes that cannot be accepted; the subclass says why."""


class BadMac(WireError):
    pass


class Replayed(WireError):
    pass


class Stale(WireError):
    pass


class Malformed(WireError):
    pass


class Truncated(Malformed):
    pass


class Oversize(WireError):
    pass


class TimedOut(WireError):
    pass


# -- primitives --------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _int(value: object, low: int, high: int, what: str) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise Malformed(f"{what} must be an int in {low}..{high}, not {value!r:.80}")
    return _varint(value)


def _str(value: object, low: int, high: int, what: str) -> bytes:
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise Malformed(f"{what} must be a str of {low}..{high} characters, not {value!r:.80}")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Malformed(f"{what} is not valid unicode") from exc
    return _varint(len(raw)) + raw


class _Reader:
    """Reads primitives from ``data[pos:end]``; every failure is ``Malformed``."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def more(self) -> bool:
        return self.pos < self.end

    def u8(self, what: str) -> int:
        if self.pos >= self.end:
            raise Malformed(f"truncated before {what}")
        self.pos += 1
        return self.data[self.pos - 1]

    def fixed(self, size: int, what: str) -> int:
        if self.end - self.pos < size:
            raise Malformed(f"truncated in {what}")
        self.pos += size
        return int.from_bytes(self.data[self.pos - size:self.pos], "big")

    def varint(self, low: int, high: int, what: str) -> int:
        data, pos, result = self.data, self.pos, 0
        if pos < self.end and data[pos] < 0x80:  # the common one-byte case
            result = data[pos]
            if not low <= result <= high:
                raise Malformed(f"{what} {result} outside {low}..{high}")
            self.pos = pos + 1
            return result
        for i in range(10):
            if pos >= self.end:
                raise Malformed(f"truncated in {what}")
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                if byte == 0 and i > 0:
                    raise Malformed(f"non-minimal varint in {what}")
                break
        else:
            raise Malformed(f"varint too long in {what}")
        if not low <= result <= high:
            raise Malformed(f"{what} {result} outside {low}..{high}")
        self.pos = pos
        return result

    def string(self, low: int, high: int, what: str) -> str:
        size = self.varint(low, 4 * high, what)
        if self.end - self.pos < size:
            raise Malformed(f"truncated in {what}")
        raw = self.data[self.pos:self.pos + size]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Malformed(f"{what} is not valid UTF-8") from exc
        if not low <= len(text) <= high:
            raise Malformed(f"{what} must have {low}..{high} characters")
        self.pos += size
        return text


# -- updates -----------------------------------------------------------------------------

_NONE, _PING, _PING_REQ, _ACK, _NACK = range(5)
_ALIVE, _SUSPECT, _DEAD = 1, 2, 3


def _node_id(value: object, what: str = "node id") -> bytes:
    return _str(value, 1, MAX_NODE_ID_CHARS, what)


def _encode_meta(meta: MemberMeta) -> list[bytes]:
    if not isinstance(meta, MemberMeta):
        raise Malformed(f"meta must be a MemberMeta, not {type(meta).__name__}")
    tags = meta.tags
    if not isinstance(tags, Mapping) or len(tags) > MAX_TAGS:
        raise Malformed(f"tags must be a mapping of at most {MAX_TAGS} entries")
    parts = [_node_id(meta.node_id), _str(meta.gossip_addr, 0, MAX_ADDR_CHARS, "gossip_addr"),
             _str(meta.http_addr, 0, MAX_ADDR_CHARS, "http_addr"),
             _str(meta.zone, 0, MAX_ZONE_CHARS, "zone"),
             _int(meta.weight, 1, MAX_WEIGHT, "weight"), _varint(len(tags))]
    keys = list(tags)
    if not all(isinstance(k, str) for k in keys):
        raise Malformed("tag keys must be str")
    for key in sorted(keys):
        parts.append(_str(key, 1, MAX_TAG_KEY_CHARS, "tag key"))
        parts.append(_str(tags[key], 0, MAX_TAG_VALUE_CHARS, "tag value"))
    return parts


#: Most metadata a node encodes is the same few members' (their Alives go out again and
#: again, and every push-pull carries all of them), so each ``MemberMeta`` is encoded once:
#: id -> (the meta, its tags when encoded, its bytes). Holding the meta keeps its id from
#: being reused; the tags are compared on each use, as a mapping could change under it.
_META_BYTES: dict[int, tuple[MemberMeta, tuple[tuple[object, object], ...], bytes]] = {}
#: Entries in each of the two metadata caches before it starts afresh.
META_CACHE_LIMIT = 4096


def _meta_bytes(meta: MemberMeta) -> bytes:
    """``_encode_meta`` joined, encoded once per meta object (see ``_META_BYTES``)."""
    hit = _META_BYTES.get(id(meta))
    if hit is not None and hit[0] is meta and tuple(meta.tags.items()) == hit[1]:
        return hit[2]
    encoded = b"".join(_encode_meta(meta))
    if len(_META_BYTES) >= META_CACHE_LIMIT:
        _META_BYTES.clear()
    _META_BYTES[id(meta)] = (meta, tuple(meta.tags.items()), encoded)
    return encoded


def encode_update(update: Update) -> bytes:
    """The bytes of one update, exactly as they appear in a datagram or a push-pull.

    Raises:
        Malformed: not an update, or a field outside its limits.
    """
    if isinstance(update, Alive):
        return b"".join((bytes((_ALIVE,)), _int(update.incarnation, 0, MAX_INT63, "incarnation"),
                         _meta_bytes(update.meta)))
    if isinstance(update, (Suspect, Dead)):
        kind = _SUSPECT if isinstance(update, Suspect) else _DEAD
        return b"".join((bytes((kind,)), _node_id(update.node_id),
                         _int(update.incarnation, 0, MAX_INT63, "incarnation"),
                         _node_id(update.by, "by")))
    raise Malformed(f"not an update: {type(update).__name__}")


def update_size(update: Update) -> int:
    """Bytes ``update`` adds to a datagram or push-pull (the ``size_of`` of the broadcast queue)."""
    return len(encode_update(update))


#: Metadata decoded before, by its exact bytes: the same few members' Alives arrive again
#: and again, and a ``MemberMeta`` is immutable (its tags a read-only view of a dict that
#: only it holds), so one object serves for every copy.
_METAS: dict[bytes, MemberMeta] = {}


def _meta_end(data: bytes, pos: int, end: int) -> int:
    """Where the encoded meta at ``data[pos:]`` ends, found from its length bytes alone, if
    every length in it, its weight and its tag count are one byte long; -1 if not (or if it
    would run past ``end``). Only says which bytes to look up in ``_METAS``: nothing is
    checked here, ``_read_meta`` checks what it has not seen before."""
    try:
        for _ in range(4):  # node id, gossip_addr, http_addr, zone
            size = data[pos]
            if size >= 0x80:
                return -1
            pos += 1 + size
        if data[pos] >= 0x80:  # weight
            return -1
        count = data[pos + 1]
        if count >= 0x80:
            return -1
        pos += 2
        for _ in range(2 * count):  # tag keys and values
            size = data[pos]
            if size >= 0x80:
                return -1
            pos += 1 + size
    except IndexError:
        return -1
    return pos if pos <= end else -1


def _read_meta(r: _Reader) -> MemberMeta:
    start, data = r.pos, r.data
    # (Only bytes in: decoding needs what a slice of them has, ``.decode``.)
    end = _meta_end(data, start, r.end) if isinstance(data, (bytes, bytearray)) else -1
    if end < 0:
        return _decode_meta(r)
    raw = bytes(data[start:end])
    meta = _METAS.get(raw)
    if meta is not None:
        # These exact bytes decoded before, to this meta and ending at ``end``.
        r.pos = end
        return meta
    meta = _decode_meta(r)
    if r.pos == end:
        if len(_METAS) >= META_CACHE_LIMIT:
            _METAS.clear()
        _METAS[raw] = meta
    return meta


def _decode_meta(r: _Reader) -> MemberMeta:
    node_id = r.string(1, MAX_NODE_ID_CHARS, "node id")
    gossip_addr = r.string(0, MAX_ADDR_CHARS, "gossip_addr")
    http_addr = r.string(0, MAX_ADDR_CHARS, "http_addr")
    zone = r.string(0, MAX_ZONE_CHARS, "zone")
    weight = r.varint(1, MAX_WEIGHT, "weight")
    count = r.varint(0, MAX_TAGS, "tag count")
    tags: dict[str, str] = {}
    previous = None
    for _ in range(count):
        key = r.string(1, MAX_TAG_KEY_CHARS, "tag key")
        if previous is not None and key <= previous:
            raise Malformed("tag keys must be unique and in ascending order")
        tags[key] = r.string(0, MAX_TAG_VALUE_CHARS, "tag value")
        previous = key
    return MemberMeta(node_id, gossip_addr, http_addr, zone, weight, MappingProxyType(tags))


def _read_update(r: _Reader) -> Update:
    kind = r.u8("update kind")
    if kind == _ALIVE:
        incarnation = r.varint(0, MAX_INT63, "incarnation")
        return Alive(incarnation, _read_meta(r))
    if kind in (_SUSPECT, _DEAD):
        node_id = r.string(1, MAX_NODE_ID_CHARS, "node id")
        incarnation = r.varint(0, MAX_INT63, "incarnation")
        by = r.string(1, MAX_NODE_ID_CHARS, "by")
        return (Suspect if kind == _SUSPECT else Dead)(node_id, incarnation, by)
    raise Malformed(f"unknown update kind {kind}")


def _read_updates(r: _Reader) -> tuple[Update, ...]:
    updates = []
    while r.more():
        updates.append(_read_update(r))
    return tuple(updates)


def _encode_updates(updates: object) -> bytes:
    if not isinstance(updates, (tuple, list)):
        raise Malformed("updates must be a tuple")
    return b"".join(encode_update(u) for u in updates)


# -- packets and push-pulls --------------------------------------------------------------


def _encode_message(message: ProtocolMessage | None) -> bytes:
    if message is None:
        return bytes((_NONE,))
    if isinstance(message, (Ping, PingReq, Ack, Nack)):
        kind = (_PING if isinstance(message, Ping) else _PING_REQ if isinstance(message, PingReq)
                else _ACK if isinstance(message, Ack) else _NACK)
        parts = [bytes((kind,)), _int(message.seq, 0, MAX_INT63, "seq"),
                 _node_id(message.source, "source")]
        if isinstance(message, (Ping, PingReq)):
            parts.append(_node_id(message.target, "target"))
        if isinstance(message, PingReq):
            parts.append(_str(message.target_addr, 0, MAX_ADDR_CHARS, "target_addr"))
        return b"".join(parts)
    raise Malformed(f"not a protocol message: {type(message).__name__}")


def _read_message(r: _Reader) -> ProtocolMessage | None:
    kind = r.u8("message kind")
    if kind == _NONE:
        return None
    if not _PING <= kind <= _NACK:
        raise Malformed(f"unknown message kind {kind}")
    seq = r.varint(0, MAX_INT63, "seq")
    source = r.string(1, MAX_NODE_ID_CHARS, "source")
    if kind == _ACK:
        return Ack(seq, source)
    if kind == _NACK:
        return Nack(seq, source)
    target = r.string(1, MAX_NODE_ID_CHARS, "target")
    if kind == _PING:
        return Ping(seq, source, target)
    return PingReq(seq, source, target, r.string(0, MAX_ADDR_CHARS, "target_addr"))


def encode_packet(packet: Packet) -> bytes:
    """The payload of a datagram (no header, no MAC). Raises ``Malformed``."""
    if not isinstance(packet, Packet):
        raise Malformed(f"not a Packet: {type(packet).__name__}")
    return _encode_message(packet.message) + _encode_updates(packet.updates)


def decode_packet(data: bytes) -> Packet:
    """Inverse of ``encode_packet``; use only on authenticated bytes. Raises ``Malformed``."""
    r = _Reader(data)
    message = _read_message(r)
    return Packet(message, _read_updates(r))


def encode_push_pull(msg: PushPull) -> bytes:
    """The payload of a push-pull frame (no header, no MAC). Raises ``Malformed``."""
    if not isinstance(msg, PushPull) or not isinstance(msg.join, bool):
        raise Malformed("not a PushPull with a bool join")
    return b"".join((_node_id(msg.source, "source"), bytes((int(msg.join),)),
                     _encode_updates(msg.states)))


def decode_push_pull(data: bytes) -> PushPull:
    """Inverse of ``encode_push_pull``; use only on authenticated bytes. Raises ``Malformed``."""
    r = _Reader(data)
    source = r.string(1, MAX_NODE_ID_CHARS, "source")
    join = r.u8("join")
    if join > 1:
        raise Malformed(f"join must be 0 or 1, not {join}")
    return PushPull(source, bool(join), _read_updates(r))


# -- authentication ----------------------------------------------------------------------


def _subkey(key: bytes) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or not key:
        raise ValueError("the cluster key must be non-empty bytes")
    return hmac.digest(key, _SUBKEY_LABEL, "sha256")


def _mac(subkey: bytes, body: bytes) -> bytes:
    return hmac.new(subkey, body, hashlib.sha256).digest()[:MAC_BYTES]


def _subkeys(key: bytes, accepted_keys: Iterable[bytes]) -> tuple[bytes, ...]:
    """The MAC keys a receiver checks: the current key's, then each accepted key's."""
    return tuple(_subkey(k) for k in (key, *accepted_keys))


def _verify(subkeys: tuple[bytes, ...], data: bytes, header: bytes) -> bytes:
    """``data`` without its MAC, after checking the header bytes and then the MAC under
    each of ``subkeys`` (all of them, without stopping at a match)."""
    if data[:len(header)] != header:
        raise Malformed("not a gossip message of this version and kind")
    body, tag = data[:-MAC_BYTES], data[-MAC_BYTES:]
    verified = False
    for subkey in subkeys:
        verified |= hmac.compare_digest(_mac(subkey, body), tag)
    if not verified:
        raise BadMac("message authentication failed")
    return body


def _check_range(value: int, high: int, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
        raise ValueError(f"{what} must be an int in 0..{high}, not {value!r}")


# -- datagrams ---------------------------------------------------------------------------


def datagram_overhead(sender: str) -> int:
    """Bytes of a datagram from ``sender`` that are not payload: header, ids, counters, MAC."""
    return len(_PACKET_HEADER) + len(_node_id(sender, "sender")) + 8 + 8 + 6 + MAC_BYTES


def datagram_size(packet: Packet, *, sender: str) -> int:
    """The exact size of ``packet`` sealed by ``sender``."""
    return datagram_overhead(sender) + len(encode_packet(packet))


def seal_packet(packet: Packet, *, key: bytes, sender: str, boot: int, counter: int,
                now_ms: int, max_bytes: int = MAX_PACKET_BYTES) -> bytes:
    """Encode and authenticate one datagram.

    Args:
        key: the cluster key (the MAC uses a subkey derived from it).
        sender: this node's id; receivers track replay state per sender.
        boot: a random u64 the caller picks once per process start.
        counter: a u64 the caller increases for every datagram of this boot.
        now_ms: the wall clock in milliseconds (u48).

    Raises:
        Malformed: a value in ``packet`` (or ``sender``) is outside its limits.
        Oversize: the datagram would be larger than ``max_bytes``.
        ValueError: ``key``, ``boot``, ``counter`` or ``now_ms`` is out of range.
    """
    _check_range(boot, MAX_U64, "boot")
    _check_range(counter, MAX_U64, "counter")
    _check_range(now_ms, MAX_TIMESTAMP_MS, "now_ms")
    subkey = _subkey(key)
    body = b"".join((_PACKET_HEADER, _node_id(sender, "sender"), boot.to_bytes(8, "big"),
                     counter.to_bytes(8, "big"), now_ms.to_bytes(6, "big"),
                     encode_packet(packet)))
    if len(body) + MAC_BYTES > max_bytes:
        raise Oversize(f"datagram of {len(body) + MAC_BYTES} bytes exceeds {max_bytes}")
    return body + _mac(subkey, body)


def _size_floor(update: Update) -> int:
    """A lower bound of ``update_size`` from string lengths alone (0 if unsure)."""
    try:
        if isinstance(update, Alive):
            meta = update.meta
            return 8 + len(meta.node_id) + len(meta.gossip_addr) + len(meta.http_addr) \
                + len(meta.zone)
        if isinstance(update, (Suspect, Dead)):
            return 4 + len(update.node_id) + len(update.by)
    except (AttributeError, TypeError):
        pass
    return 0


def fit_updates(message: ProtocolMessage | None, updates: Iterable[Update], *, sender: str,
                budget: int = MAX_PACKET_BYTES) -> tuple[Packet, tuple[Update, ...]]:
    """The packet of ``message`` plus as many of ``updates`` as fit in ``budget`` bytes sealed.

    Updates are taken in order, skipping any that does not fit in what is left (a
    later, smaller one may still fit). Each update is encoded at most once, and not
    at all when its string lengths alone show it cannot fit; the packet is never
    re-encoded to measure it. Returns the packet and the updates left out, in
    their order. An update larger than a datagram's room is always left out: the
    caller must spread it another way (push-pull).

    Raises:
        Malformed: the message, or an update it measures, is outside the limits.
        Oversize: the message alone does not fit in ``budget``.
    """
    used = datagram_overhead(sender) + len(_encode_message(message))
    if used > budget:
        raise Oversize(f"the message alone takes {used} bytes, more than {budget}")
    taken: list[Update] = []
    left: list[Update] = []
    for update in updates:
        if _size_floor(update) > budget - used:  # cheap: no encoding once nearly full
            left.append(update)
            continue
        size = update_size(update)
        if used + size <= budget:
            taken.append(update)
            used += size
        else:
            left.append(update)
    return Packet(message, tuple(taken)), tuple(left)


@dataclass(slots=True)
class _Window:
    """IPsec-style anti-replay window: bit i of ``seen`` is counter ``highest - i``."""

    highest: int
    seen: int = 1

    WIDTH = 64

    def check(self, counter: int) -> None:
        if counter > self.highest:
            return
        offset = self.highest - counter
        if offset >= self.WIDTH:
            raise Replayed(f"counter {counter} is older than the replay window")
        if self.seen >> offset & 1:
            raise Replayed(f"counter {counter} already seen")

    def mark(self, counter: int) -> None:
        if counter > self.highest:
            shift = counter - self.highest
            self.seen = (self.seen << shift | 1) & ((1 << self.WIDTH) - 1) if shift < self.WIDTH \
                else 1
            self.highest = counter
        else:
            self.seen |= 1 << (self.highest - counter)


class PacketOpener:
    """Checks, opens and de-duplicates the datagrams of one receiving node.

    Each accepted datagram has a valid MAC (under ``key`` or one of ``accepted_keys``,
    see the module docstring), a timestamp within ``window_ms`` of the
    receiver's clock, and a (sender, boot, counter) not accepted before. Per sender
    it keeps the ``max_boots`` most recently seen boots, each with the highest
    counter and a 64-wide bitmap, so datagrams reordered by up to 64 are accepted
    once each. At most ``max_senders`` senders are tracked, the least recently seen
    forgotten first.

    Limits: a forgotten sender or boot starts afresh, so its datagrams still inside
    the time window could be replayed once. With the defaults that needs more than
    ``max_senders`` live senders, or more than ``max_boots`` restarts of one node
    within ``window_ms`` - and the attacker still needs datagrams sealed with the key.

    The counters ``accepted``, ``bad_mac``, ``replayed``, ``stale``, ``malformed``
    and ``oversize`` count the outcomes of ``open``.
    """

    def __init__(self, key: bytes, *, accepted_keys: Iterable[bytes] = (),
                 window_ms: int = 60_000, max_senders: int = 10_000,
                 max_boots: int = 4, max_bytes: int = MAX_PACKET_BYTES) -> None:
        if window_ms < 0 or max_senders < 1 or max_boots < 1 or max_bytes < 1:
            raise ValueError("window_ms must be >= 0 and the limits >= 1")
        self._subkeys = _subkeys(key, accepted_keys)
        self.window_ms = window_ms
        self.max_senders = max_senders
        self.max_boots = max_boots
        self.max_bytes = max_bytes
        self._senders: OrderedDict[str, OrderedDict[int, _Window]] = OrderedDict()
        self.accepted = 0
        self.bad_mac = 0
        self.replayed = 0
        self.stale = 0
        self.malformed = 0
        self.oversize = 0

    @property
    def tracked_senders(self) -> int:
        return len(self._senders)

    def tracked_boots(self, sender: str) -> int:
        return len(self._senders.get(sender, ()))

    def open(self, data: bytes, *, now_ms: int) -> tuple[str, Packet]:
        """The sender's id and the packet of one datagram.

        Raises (and counts): ``Oversize``, ``Malformed``, ``BadMac``, ``Stale``,
        ``Replayed`` - and nothing else, whatever ``data`` holds.
        """
        try:
            result = self._open(bytes(data), now_ms)
        except WireError as exc:
            counter = {BadMac: "bad_mac", Replayed: "replayed", Stale: "stale",
                       Oversize: "oversize"}.get(type(exc), "malformed")
            setattr(self, counter, getattr(self, counter) + 1)
            raise
        self.accepted += 1
        return result

    def _open(self, data: bytes, now_ms: int) -> tuple[str, Packet]:
        if len(data) > self.max_bytes:
            raise Oversize(f"datagram of {len(data)} bytes exceeds {self.max_bytes}")
        if len(data) < len(_PACKET_HEADER) + MAC_BYTES:
            raise Malformed("datagram too short")
        body = _verify(self._subkeys, data, _PACKET_HEADER)
        r = _Reader(body, len(_PACKET_HEADER))
        sender = r.string(1, MAX_NODE_ID_CHARS, "sender")
        boot = r.fixed(8, "boot")
        counter = r.fixed(8, "counter")
        timestamp_ms = r.fixed(6, "timestamp")
        if abs(timestamp_ms - now_ms) > self.window_ms:
            raise Stale(f"timestamp {timestamp_ms} is {timestamp_ms - now_ms} ms from now")
        boots = self._senders.get(sender)
        window = boots.get(boot) if boots is not None else None
        if window is not None:
            window.check(counter)
        message = _read_message(r)
        packet = Packet(message, _read_updates(r))
        self._remember(sender, boots, boot, window, counter)
        return sender, packet

    def _remember(self, sender: str, boots: OrderedDict[int, _Window] | None, boot: int,
                  window: _Window | None, counter: int) -> None:
        if boots is None:
            boots = self._senders[sender] = OrderedDict()
            if len(self._senders) > self.max_senders:
                self._senders.popitem(last=False)
        else:
            self._senders.move_to_end(sender)
        if window is None:
            boots[boot] = _Window(counter)
            if len(boots) > self.max_boots:
                boots.popitem(last=False)
        else:
            window.mark(counter)
            boots.move_to_end(boot)


# -- stream frames -----------------------------------------------------------------------


def seal_push_pull(msg: PushPull, *, key: bytes, now_ms: int | None = None,
                   max_bytes: int = MAX_PUSH_PULL_BYTES) -> bytes:
    """One length-prefixed, authenticated push-pull frame (see ``send_push_pull``)."""
    timestamp_ms = 0 if now_ms is None else now_ms
    _check_range(timestamp_ms, MAX_TIMESTAMP_MS, "now_ms")
    subkey = _subkey(key)
    body = _STREAM_HEADER + timestamp_ms.to_bytes(6, "big") + encode_push_pull(msg)
    size = len(body) + MAC_BYTES
    if size > max_bytes:
        raise Oversize(f"push-pull frame of {size} bytes exceeds {max_bytes}")
    return size.to_bytes(4, "big") + body + _mac(subkey, body)


def open_push_pull(body: bytes, *, key: bytes, accepted_keys: Iterable[bytes] = (),
                   now_ms: int | None = None, window_ms: int = 60_000) -> PushPull:
    """The push-pull of one frame body (without its length prefix), MAC'ed under ``key``
    or one of ``accepted_keys``."""
    if len(body) < _MIN_FRAME_BYTES:
        raise Malformed("push-pull frame too short")
    payload = _verify(_subkeys(key, accepted_keys), body, _STREAM_HEADER)
    timestamp_ms = int.from_bytes(payload[len(_STREAM_HEADER):len(_STREAM_HEADER) + 6], "big")
    if now_ms is not None and abs(timestamp_ms - now_ms) > window_ms:
        raise Stale(f"push-pull timestamp {timestamp_ms} is {timestamp_ms - now_ms} ms from now")
    return decode_push_pull(payload[len(_STREAM_HEADER) + 6:])


async def send_push_pull(stream: trio.abc.SendStream, msg: PushPull, *, key: bytes,
                         now_ms: int | None = None,
                         max_bytes: int = MAX_PUSH_PULL_BYTES) -> None:
    """Write one push-pull frame to ``stream``.

    ``now_ms`` stamps the frame so a receiver that passes its own ``now_ms`` can
    reject old frames replayed into a new connection; without it the stamp is 0.

    Raises:
        Malformed: a value of ``msg`` is outside its limits.
        Oversize: the frame would exceed ``max_bytes``.

    Transport errors (``trio.BrokenResourceError``...) propagate unchanged; this
    function sets no timeout of its own (wrap it in ``trio.move_on_after``).
    """
    await stream.send_all(seal_push_pull(msg, key=key, now_ms=now_ms, max_bytes=max_bytes))


async def _receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    buffer = bytearray()
    while len(buffer) < size:
        try:
            chunk = await stream.receive_some(min(size - len(buffer), 65536))
        except trio.BrokenResourceError as exc:
            raise Truncated(f"stream broke after {len(buffer)} of {size} bytes") from exc
        if not chunk:
            raise Truncated(f"stream ended after {len(buffer)} of {size} bytes")
        buffer += chunk
    return bytes(buffer)


async def receive_push_pull(stream: trio.abc.ReceiveStream, *, key: bytes,
                            accepted_keys: Iterable[bytes] = (),
                            max_bytes: int = MAX_PUSH_PULL_BYTES, timeout_s: float = 10.0,
                            now_ms: int | None = None, window_ms: int = 60_000) -> PushPull:
    """Read one push-pull frame from ``stream``; bytes after it stay in the stream.

    The length prefix is checked against ``max_bytes`` before the body is read,
    and the body is buffered only as it arrives. The MAC may be under ``key`` or
    one of ``accepted_keys``. With ``now_ms``, a frame stamped
    further than ``window_ms`` from it is ``Stale``.

    Raises:
        Oversize: the announced length exceeds ``max_bytes``.
        Truncated: the stream ended or broke before the frame was complete.
        TimedOut: the whole frame did not arrive within ``timeout_s``.
        BadMac, Stale, Malformed: as for datagrams.
    """
    with trio.move_on_after(timeout_s):
        size = int.from_bytes(await _receive_exactly(stream, 4), "big")
        if size > max_bytes:
            raise Oversize(f"push-pull frame of {size} bytes exceeds {max_bytes}")
        if size < _MIN_FRAME_BYTES:
            raise Malformed(f"push-pull frame of {size} bytes is too short")
        body = await _receive_exactly(stream, size)
        return open_push_pull(body, key=key, accepted_keys=accepted_keys, now_ms=now_ms,
                              window_ms=window_ms)
    raise TimedOut(f"no complete push-pull frame within {timeout_s} s")


class WireSizer:
    """Exact encoded sizes for the SWIM core's piggyback budget (see ``swim.Sizer``)."""

    max_datagram_bytes = MAX_PACKET_BYTES

    def __init__(self, sender: str) -> None:
        self._sender = sender
        self._overhead: int | None = None  # datagram_overhead(sender), once it is asked for

    def update(self, update: Update) -> int:
        return update_size(update)

    def datagram(self, message: ProtocolMessage | None) -> int:
        """``datagram_size(Packet(message), sender=...)``: the overhead, the same for every
        datagram of this sender, is measured once."""
        if self._overhead is None:
            self._overhead = datagram_overhead(self._sender)
        return self._overhead + len(_encode_message(message))
