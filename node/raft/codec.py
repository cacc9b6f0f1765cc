"""Raft messages as bytes: a compact, versioned, strict binary encoding.

Integers are unsigned LEB128 varints, strings and blobs a varint length then
bytes. Every message starts with a version byte and a type byte.

Versions: 2 added read leases (``AppendRequest.lease_round``, ``lease_ms``,
``stable`` and the ``Applied`` message). Both versions decode; a message is
encoded in the version its receiver reads (``encode(msg, version)``, the
driver knows it from gossip), so nodes of both versions can share a cluster
during a rolling upgrade. A version-1 receiver gets no lease and sends no
``Applied``, so it never holds one: it reads through ReadIndex. Decoding is
strict: truncated, trailing, unknown or out-of-range input raises
``CodecError`` and nothing else, so a peer's bytes can never crash the node.
Authentication is the channel's job (``node.rpc``), not this module's;
``SnapshotRequest.data`` does not travel here (the driver streams it).
"""

from __future__ import annotations

from node.raft.messages import (AppendRequest, AppendResponse, Applied, Entry, EntryKind,
                                Membership, Message, SnapshotMeta, SnapshotRequest,
                                SnapshotResponse, TimeoutNow, VoteRequest, VoteResponse)

VERSION = 2
VERSIONS = (1, 2)
MAX_VARINT = 2**64 - 1
MAX_ID_BYTES = 64
MAX_DATA_BYTES = 64 * 1024 * 1024

_TYPES: dict[type, int] = {VoteRequest: 1, VoteResponse: 2, AppendRequest: 3,
                           AppendResponse: 4, SnapshotRequest: 5, SnapshotResponse: 6,
                           TimeoutNow: 7, Applied: 8}
#: Message types a version-1 node does not know.
_SINCE_2 = {Applied}
_BY_CODE = {code: cls for cls, code in _TYPES.items()}


class CodecError(ValueError):
    """Bytes that are not a valid message of this version."""


# -- writing ---------------------------------------------------------------------------


def _uint(value: int) -> bytes:
    if not 0 <= value <= MAX_VARINT:
        raise CodecError(f"integer out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _blob(data: bytes) -> bytes:
    return _uint(len(data)) + data


def _text(value: str | None) -> bytes:
    if value is None:
        return b"\x00"
    raw = value.encode()
    if len(raw) > MAX_ID_BYTES:
        raise CodecError("identifier too long")
    return _uint(len(raw) + 1) + raw


def _membership(m: Membership) -> bytes:
    return _blob(m.encode())


def encode(msg: Message, version: int = VERSION) -> bytes:
    """``msg`` as a node of ``version`` reads it; CodecError if it cannot be (an ``Applied``
    for a version-1 node: the caller drops it)."""
    code = _TYPES.get(type(msg))
    if code is None:
        raise CodecError(f"not a Raft message: {type(msg).__name__}")
    if version not in VERSIONS or (version < 2 and type(msg) in _SINCE_2):
        raise CodecError(f"version {version} has no {type(msg).__name__}")
    parts = [bytes((version, code)), _uint(msg.term), _text(msg.source), _text(msg.dest)]
    if isinstance(msg, VoteRequest):
        parts += [_uint(msg.last_index), _uint(msg.last_term),
                  _uint(int(msg.pre_vote) | int(msg.transfer) << 1)]
    elif isinstance(msg, VoteResponse):
        parts += [_uint(int(msg.granted) | int(msg.pre_vote) << 1)]
    elif isinstance(msg, AppendRequest):
        parts += [_uint(msg.prev_index), _uint(msg.prev_term), _uint(msg.commit),
                  _uint(msg.round)]
        if version >= 2:
            parts += [_uint(msg.lease_round), _uint(msg.lease_ms), _uint(msg.stable)]
        parts.append(_uint(len(msg.entries)))
        for e in msg.entries:
            parts += [_uint(e.index), _uint(e.term), _uint(int(e.kind)), _blob(e.data)]
    elif isinstance(msg, AppendResponse):
        parts += [_uint(int(msg.success)), _uint(msg.match_index), _uint(msg.conflict_index),
                  _uint(msg.conflict_term), _uint(msg.prev_index), _uint(msg.round)]
    elif isinstance(msg, SnapshotRequest):
        parts += [_uint(msg.meta.index), _uint(msg.meta.term), _membership(msg.meta.membership)]
    elif isinstance(msg, SnapshotResponse):
        parts += [_uint(msg.match_index)]
    elif isinstance(msg, Applied):
        parts += [_uint(msg.applied)]
    return b"".join(parts)


# -- reading ---------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def uint(self) -> int:
        value = shift = 0
        while True:
            if self.pos >= len(self.data):
                raise CodecError("truncated integer")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 63:
                raise CodecError("integer too long")
        if value > MAX_VARINT:
            raise CodecError("integer out of range")
        return value

    def flag(self, bits: int) -> int:
        value = self.uint()
        if value >> bits:
            raise CodecError("unknown flags")
        return value

    def blob(self, limit: int = MAX_DATA_BYTES) -> bytes:
        size = self.uint()
        if size > limit or self.pos + size > len(self.data):
            raise CodecError("blob truncated or too long")
        out = self.data[self.pos:self.pos + size]
        self.pos += size
        return out

    def text(self) -> str | None:
        size = self.uint()
        if size == 0:
            return None
        if size - 1 > MAX_ID_BYTES or self.pos + size - 1 > len(self.data):
            raise CodecError("identifier truncated or too long")
        raw = self.data[self.pos:self.pos + size - 1]
        self.pos += size - 1
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise CodecError("identifier is not UTF-8") from None

    def ident(self) -> str:
        value = self.text()
        if not value:
            raise CodecError("missing identifier")
        return value


def decode(data: bytes) -> Message:
    try:
        return _decode(bytes(data))
    except CodecError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise CodecError(f"malformed message: {exc}") from None


def _decode(data: bytes) -> Message:
    if len(data) < 2 or data[0] not in VERSIONS:
        raise CodecError("unknown version")
    version = data[0]
    cls = _BY_CODE.get(data[1])
    if cls is None or (version < 2 and cls in _SINCE_2):
        raise CodecError(f"unknown message type {data[1]}")
    r = _Reader(data)
    r.pos = 2
    term, source, dest = r.uint(), r.ident(), r.ident()
    msg: Message
    if cls is VoteRequest:
        last_index, last_term, flags = r.uint(), r.uint(), r.flag(2)
        msg = VoteRequest(term, source, dest, last_index, last_term, bool(flags & 1),
                          bool(flags & 2))
    elif cls is VoteResponse:
        flags = r.flag(2)
        msg = VoteResponse(term, source, dest, bool(flags & 1), bool(flags & 2))
    elif cls is AppendRequest:
        prev_index, prev_term, commit, round_ = r.uint(), r.uint(), r.uint(), r.uint()
        lease_round = lease_ms = stable = 0
        if version >= 2:
            lease_round, lease_ms, stable = r.uint(), r.uint(), r.uint()
        count = r.uint()
        if count > len(data):
            raise CodecError("entry count exceeds the message")
        entries = []
        for _ in range(count):
            index, e_term, kind = r.uint(), r.uint(), EntryKind(r.uint())
            entries.append(Entry(index, e_term, kind, r.blob()))
        msg = AppendRequest(term, source, dest, prev_index, prev_term, tuple(entries), commit,
                            round_, lease_round, lease_ms, stable)
    elif cls is AppendResponse:
        success = r.flag(1)
        msg = AppendResponse(term, source, dest, bool(success), r.uint(), r.uint(), r.uint(),
                             r.uint(), r.uint())
    elif cls is SnapshotRequest:
        index, s_term = r.uint(), r.uint()
        try:
            membership = Membership.decode(r.blob(1024 * 1024))
        except (ValueError, KeyError, TypeError) as exc:
            raise CodecError(f"bad membership: {exc}") from None
        msg = SnapshotRequest(term, source, dest, SnapshotMeta(index, s_term, membership))
    elif cls is SnapshotResponse:
        msg = SnapshotResponse(term, source, dest, r.uint())
    elif cls is Applied:
        msg = Applied(term, source, dest, r.uint())
    else:
        msg = TimeoutNow(term, source, dest)
    if r.pos != len(data):
        raise CodecError("trailing bytes")
    return msg
