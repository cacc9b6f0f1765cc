"""The Raft wire codec: every message round-trips; no input raises anything but CodecError."""

from __future__ import annotations

import random

import pytest

from node.raft.codec import CodecError, decode, encode
from node.raft.messages import (AppendRequest, AppendResponse, Entry, EntryKind, Membership,
                                Message, SnapshotMeta, SnapshotRequest, SnapshotResponse,
                                TimeoutNow, VoteRequest, VoteResponse)

M = Membership(frozenset({"a", "b", "c"}), frozenset({"d"}))
MESSAGES: list[Message] = [
    VoteRequest(7, "a", "b", 120, 6),
    VoteRequest(8, "a", "b", 120, 6, pre_vote=True),
    VoteRequest(9, "a", "b", 0, 0, transfer=True),
    VoteResponse(7, "b", "a", True),
    VoteResponse(8, "b", "a", False, pre_vote=True),
    AppendRequest(7, "a", "b", 10, 6, (), 9, 3),
    AppendRequest(2**40, "a", "b", 10, 6,
                  (Entry(11, 7, EntryKind.COMMAND, b"\x00\xff" * 1000),
                   Entry(12, 7, EntryKind.MEMBERSHIP, M.encode()),
                   Entry(13, 7, EntryKind.NOOP, b"")), 12, 2**63),
    AppendResponse(7, "b", "a", True, 13, prev_index=10, round=3),
    AppendResponse(7, "b", "a", False, 0, 5, 4, 10, 3),
    SnapshotRequest(7, "a", "b", SnapshotMeta(500, 6, M)),
    SnapshotResponse(7, "b", "a", 500),
    TimeoutNow(7, "a", "b"),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(msg: Message) -> None:
    assert decode(encode(msg)) == msg


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_truncation_and_any_trailing_byte_is_rejected(msg: Message) -> None:
    data = encode(msg)
    for end in range(len(data)):
        with pytest.raises(CodecError):
            decode(data[:end])
    with pytest.raises(CodecError):
        decode(data + b"\x00")


def test_random_and_mutated_bytes_raise_only_codec_errors() -> None:
    rng = random.Random(4)
    samples = [encode(m) for m in MESSAGES]
    for _ in range(5000):
        if rng.random() < 0.3:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        else:
            mutated = bytearray(rng.choice(samples))
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            data = bytes(mutated)
        try:
            decode(data)
        except CodecError:
            pass


def test_bad_memberships_are_rejected() -> None:
    for bad in (b"[]", b'{"voters": "abc", "learners": []}', b'{"voters": [1], "learners": []}',
                b'{"voters": [], "learners": [], "x": 1}', b"\xff",
                b'{"voters": ["a"], "learners": [], "admitted": {}}',
                b'{"voters": ["a"], "learners": [], "admitted": {"a": ""}}',
                b'{"voters": ["a"], "learners": [], "admitted": {"a": 1}}',
                b'{"voters": ["a"], "learners": [], "admitted": ["a"]}',
                b'{"voters": ["a"], "learners": [], "admitted": {"b": "f"}}'):
        with pytest.raises(ValueError):
            Membership.decode(bad)


def test_admissions_round_trip_and_are_left_out_when_there_are_none() -> None:
    assert M.encode() == b'{"voters": ["a", "b", "c"], "learners": ["d"]}'
    admitted = M.admit("d", "f1").admit("a", "f0").admit("d", "f2")
    assert admitted.admitted == {("a", "f0"), ("d", "f2")}
    assert admitted.fence_of("d") == "f2" and admitted.fence_of("b") is None
    assert Membership.decode(admitted.encode()) == admitted
    # A change keeps the admissions of the members that stay.
    changed = admitted.change(frozenset({"b", "c", "d"}), frozenset())
    assert changed.admitted == {("d", "f2")}
    with pytest.raises(ValueError):
        Membership(frozenset({"a"}), admitted=frozenset({("b", "f")}))


def test_out_of_range_values_cannot_be_encoded() -> None:
    with pytest.raises(CodecError):
        encode(VoteResponse(-1, "a", "b", True))
    with pytest.raises(CodecError):
        encode(TimeoutNow(1, "x" * 65, "b"))
