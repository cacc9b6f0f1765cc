"""Gossip wire format: encoding, datagram authentication and replay, push-pull frames."""

from __future__ import annotations

import hashlib
import hmac
import random
from functools import partial
from types import MappingProxyType

import pytest
import trio
import trio.testing

from node.gossip.messages import (Ack, Alive, Dead, MemberMeta, Nack, Packet, Ping, PingReq,
                                  PushPull, Suspect, Update)
from node.gossip.wire import (MAX_PACKET_BYTES, BadMac, Malformed, Oversize, PacketOpener,
                              Replayed, Stale, TimedOut, Truncated, WireError, datagram_size,
                              decode_packet, decode_push_pull, encode_packet, encode_push_pull,
                              encode_update, fit_updates, open_push_pull, receive_push_pull,
                              seal_packet, seal_push_pull, send_push_pull, update_size)

KEY = b"test-cluster-key-0123456789"
NOW = 1_750_000_000_000
BOOT = 0x0123_4567_89AB_CDEF
#: Short ASCII, two-byte, three-byte and four-byte UTF-8 characters.
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789._-é中😀"


def seal(packet: Packet, counter: int = 0, *, sender: str = "node-1", boot: int = BOOT,
         now_ms: int = NOW, key: bytes = KEY) -> bytes:
    return seal_packet(packet, key=key, sender=sender, boot=boot, counter=counter, now_ms=now_ms)


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def seal_raw(payload: bytes, counter: int = 0, *, sender: bytes = b"node-1",
             boot: int = BOOT, now_ms: int = NOW, key: bytes = KEY) -> bytes:
    """A datagram built from the documented layout, around any payload bytes."""
    body = (b"\xb5\x01P" + varint(len(sender)) + sender + boot.to_bytes(8, "big")
            + counter.to_bytes(8, "big") + now_ms.to_bytes(6, "big") + payload)
    subkey = hmac.new(key, b"blobstore gossip v1", hashlib.sha256).digest()
    return body + hmac.new(subkey, body, hashlib.sha256).digest()[:16]


# -- random values -----------------------------------------------------------------------


def rand_str(rng: random.Random, low: int, high: int) -> str:
    size = rng.choice([low, high, rng.randint(low, high), rng.randint(low, min(high, low + 8))])
    return "".join(rng.choice(ALPHABET) for _ in range(size))


def rand_int(rng: random.Random, low: int, high: int) -> int:
    return rng.choice([low, high, rng.randint(low, high), rng.randint(low, min(high, 300))])


def rand_meta(rng: random.Random) -> MemberMeta:
    tags = {rand_str(rng, 1, 64): rand_str(rng, 0, 256) for _ in range(rng.randint(0, 16))}
    return MemberMeta(rand_str(rng, 1, 64), rand_str(rng, 0, 300), rand_str(rng, 0, 300),
                      rand_str(rng, 0, 64), rand_int(rng, 1, 1000), MappingProxyType(tags))


def rand_update(rng: random.Random) -> Update:
    incarnation = rand_int(rng, 0, 2**63 - 1)
    kind = rng.randrange(3)
    if kind == 0:
        return Alive(incarnation, rand_meta(rng))
    cls = Suspect if kind == 1 else Dead
    return cls(rand_str(rng, 1, 64), incarnation, rand_str(rng, 1, 64))


def rand_message(rng: random.Random) -> Ping | PingReq | Ack | Nack | None:
    seq, source = rand_int(rng, 0, 2**63 - 1), rand_str(rng, 1, 64)
    return rng.choice([
        None, Ping(seq, source, rand_str(rng, 1, 64)), Ack(seq, source), Nack(seq, source),
        PingReq(seq, source, rand_str(rng, 1, 64), rand_str(rng, 0, 300))])


def rand_packet(rng: random.Random, max_updates: int = 4) -> Packet:
    return Packet(rand_message(rng), tuple(rand_update(rng)
                                          for _ in range(rng.randint(0, max_updates))))


def small_update(i: int) -> Update:
    if i % 3 == 0:
        return Alive(i, MemberMeta(f"node-{i}", f"10.0.{i // 250}.{i % 250}:7946",
                                   f"10.0.{i // 250}.{i % 250}:8080", "zone-a"))
    if i % 3 == 1:
        return Suspect(f"node-{i}", i, "node-1")
    return Dead(f"node-{i}", i, f"node-{i}")


# -- encoding ----------------------------------------------------------------------------


def test_every_message_type_round_trips_with_updates_and_tags() -> None:
    rng = random.Random(1)
    for _ in range(500):
        packet = rand_packet(rng)
        data = encode_packet(packet)
        assert decode_packet(data) == packet
        assert encode_packet(decode_packet(data)) == data
    for _ in range(200):
        msg = PushPull(rand_str(rng, 1, 64), rng.random() < 0.5,
                       tuple(rand_update(rng) for _ in range(rng.randint(0, 20))))
        assert decode_push_pull(encode_push_pull(msg)) == msg


def test_sealed_datagrams_round_trip_every_message_type() -> None:
    rng = random.Random(2)
    opener = PacketOpener(KEY)
    meta = MemberMeta("node-2", "10.0.0.2:7946", "10.0.0.2:8080", "z1", 7,
                      MappingProxyType({"rpc": "10.0.0.2:9000", "role": "voter"}))
    updates = (Alive(5, meta), Suspect("node-3", 2, "node-1"), Dead("node-4", 9, "node-4"))
    for counter, message in enumerate([Ping(1, "node-1", "node-2"), Ack(2, "node-2"),
                                       Nack(3, "node-1"), None,
                                       PingReq(4, "node-1", "node-3", "10.0.0.3:7946")]):
        packet = Packet(message, updates)
        assert opener.open(seal(packet, counter), now_ms=NOW) == ("node-1", packet)
    for counter in range(5, 205):
        packet = rand_packet(rng, max_updates=2)
        try:
            data = seal(packet, counter, sender=rand_str(rng, 1, 64))
        except Oversize:
            continue
        assert opener.open(data, now_ms=NOW)[1] == packet
    assert opener.accepted > 100


def test_decoded_tags_are_read_only_and_compare_equal_to_a_dict() -> None:
    meta = MemberMeta("n1", "a:1", "a:2", tags={"b": "2", "a": "1"})
    decoded = decode_packet(encode_packet(Packet(None, (Alive(1, meta),))))
    alive = decoded.updates[0]
    assert isinstance(alive, Alive) and alive.meta == meta
    with pytest.raises(TypeError):
        alive.meta.tags["c"] = "3"  # type: ignore[index]


@pytest.mark.parametrize("bad", [
    Ping(1, "", "n2"), Ping(1, "x" * 65, "n2"), Ping(-1, "n1", "n2"), Ping(2**63, "n1", "n2"),
    Ping(True, "n1", "n2"), Ping(1, "n1", 5), Ack(1.0, "n1"),  # type: ignore[arg-type]
    PingReq(1, "n1", "n2", "a" * 301), Ping(1, "n\udc80", "n2"), "ping",
])
def test_messages_outside_the_limits_do_not_encode(bad: object) -> None:
    with pytest.raises(Malformed):
        encode_packet(Packet(bad))  # type: ignore[arg-type]


@pytest.mark.parametrize("meta", [
    MemberMeta("n1", "a", "b", weight=0), MemberMeta("n1", "a", "b", weight=1001),
    MemberMeta("n1", "a" * 301, "b"), MemberMeta("n1", "a", "b", zone="z" * 65),
    MemberMeta("n1", "a", "b", tags={f"k{i}": "v" for i in range(17)}),
    MemberMeta("n1", "a", "b", tags={"": "v"}), MemberMeta("n1", "a", "b", tags={"k" * 65: "v"}),
    MemberMeta("n1", "a", "b", tags={"k": "v" * 257}),
    # Tags of the wrong types on purpose: the encoder must refuse them, not the type checker.
    MemberMeta("n1", "a", "b", tags={1: "v"}),  # type: ignore[dict-item]
    MemberMeta("n1", "a", "b", tags={"k": 1}),  # type: ignore[dict-item]
    MemberMeta("n1", "a", "b", tags=["k"]),  # type: ignore[arg-type]
])
def test_metas_outside_the_limits_do_not_encode(meta: MemberMeta) -> None:
    with pytest.raises(Malformed):
        encode_update(Alive(1, meta))


def test_limits_are_in_characters_not_bytes() -> None:
    emoji = "😀" * 64
    update = Suspect(emoji, 2**63 - 1, emoji)
    assert decode_packet(encode_packet(Packet(None, (update,)))).updates == (update,)
    widest = MemberMeta("😀" * 64, "é" * 300, "中" * 300, "z" * 64, 1000,
                        {f"{i:02}" + "k" * 62: "v" * 256 for i in range(16)})
    assert decode_push_pull(encode_push_pull(PushPull("n1", True, (Alive(1, widest),)))) \
        == PushPull("n1", True, (Alive(1, widest),))


@pytest.mark.parametrize("payload", [
    b"", b"\x05", b"\x01", b"\x01\x01\x02n1", b"\x03\x80\x00\x02n1", b"\x03\x80",
    b"\x03" + b"\xff" * 10 + b"\x01\x02n1", b"\x03\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01\x02n1",
    b"\x03\x01\x00", b"\x03\x01\x02n\xff", b"\x03\x01\x41" + b"a" * 65, b"\x03\x01\x03n1",
    b"\x00\x04", b"\x00\x02\x02n1\x01", b"\x00\x02\x02n1\x01\x02n2\x00",
    b"\x00\x01\x01\x02n1\x00\x00\x00\x00\x01",
    b"\x00\x01\x01\x02n1\x00\x00\x00\x01\x02\x01b\x00\x01a\x00",
    b"\x00\x01\x01\x02n1\x00\x00\x00\x01\x02\x01a\x00\x01a\x00",
    b"\x00\x01\x01\x02n1\x00\x00\x00\xe9\x07\x00", b"\x00\x01\x01\x02n1\x00\x00\x00\x01\x11",
    b"\x00\x02\x02n1\x01\x02n2\x02",
], ids=repr)
def test_bad_payloads_are_malformed(payload: bytes) -> None:
    with pytest.raises(Malformed):
        decode_packet(payload)
    opener = PacketOpener(KEY)
    with pytest.raises(Malformed):
        opener.open(seal_raw(payload), now_ms=NOW)
    assert opener.malformed == 1 and opener.accepted == 0


@pytest.mark.parametrize("payload", [b"", b"\x02n1", b"\x02n1\x02", b"\x02n1\x01\x04",
                                     b"\x00\x01", b"\x02n1\x00\x03\x02n1"], ids=repr)
def test_bad_push_pull_payloads_are_malformed(payload: bytes) -> None:
    with pytest.raises(Malformed):
        decode_push_pull(payload)


def test_the_layout_is_the_documented_one() -> None:
    packet = Packet(Ping(300, "n1", "n2"), (Dead("n3", 1, "n3"),))
    payload = b"\x01\xac\x02\x02n1\x02n2" + b"\x03\x02n3\x01\x02n3"
    assert encode_packet(packet) == payload
    assert seal(packet, 9) == seal_raw(payload, 9)


# -- sizes -------------------------------------------------------------------------------


def test_sizes() -> None:
    bare = seal(Packet(Ping(12345, "node-17", "node-23")), 1_000_000, sender="node-17")
    print(f"\nbare Ping, 7-char ids: {len(bare)} bytes")
    assert len(bare) < 80
    uuid = "3f2a9c4e-1b7d-4e8a-9c3f-5d2e1a7b9c0d"
    print(f"bare Ping, 36-char ids: {len(seal(Packet(Ping(1, uuid, uuid)), sender=uuid))} bytes")
    updates = [small_update(i) for i in range(1, 200)]
    print("update sizes: " + ", ".join(f"{type(u).__name__} {update_size(u)}"
                                       for u in updates[:3]))
    packet, left = fit_updates(Ping(12345, "node-17", "node-23"), updates, sender="node-17")
    full = seal(packet, sender="node-17")
    print(f"full datagram: {len(packet.updates)} updates in {len(full)} bytes")
    assert len(full) <= MAX_PACKET_BYTES and len(packet.updates) > 30


def test_update_size_is_what_an_update_adds_to_a_datagram() -> None:
    rng = random.Random(3)
    for _ in range(200):
        message, update = rand_message(rng), rand_update(rng)
        with_it = datagram_size(Packet(message, (update,)), sender="node-1")
        assert with_it - datagram_size(Packet(message), sender="node-1") == update_size(update)
    packet = Packet(Ping(1, "node-1", "node-2"), (small_update(3), small_update(4)))
    assert datagram_size(packet, sender="node-1") == len(seal(packet))


def test_fit_updates_fills_close_to_but_under_the_limit() -> None:
    rng = random.Random(4)
    for _ in range(100):
        message = Ack(rng.randrange(2**40), "node-1")
        ids = rng.sample(range(1, 10_000), rng.randint(0, 150))
        updates = [small_update(i) for i in ids]
        packet, left = fit_updates(message, updates, sender="node-1")
        size = len(seal(packet))
        assert size <= MAX_PACKET_BYTES
        taken_at = [updates.index(u) for u in packet.updates]
        left_at = [updates.index(u) for u in left]
        assert taken_at == sorted(taken_at) and left_at == sorted(left_at)
        assert sorted(taken_at + left_at) == list(range(len(updates)))
        if left:
            assert size > MAX_PACKET_BYTES - min(map(update_size, left))


def test_fit_updates_takes_exactly_what_measuring_each_update_would() -> None:
    rng = random.Random(9)
    for _ in range(300):
        message = rand_message(rng)
        updates = [rand_update(rng) if rng.random() < 0.2 else small_update(rng.randrange(999))
                   for _ in range(rng.randint(0, 80))]
        budget = rng.randint(700, 3000)
        try:
            packet, left = fit_updates(message, updates, sender="node-1", budget=budget)
        except Oversize:
            continue
        used, taken = datagram_size(Packet(message), sender="node-1"), []
        for update in updates:
            if used + update_size(update) <= budget:
                used += update_size(update)
                taken.append(update)
        assert packet == Packet(message, tuple(taken))
        assert len(left) == len(updates) - len(taken)


def test_fit_updates_skips_what_cannot_fit_and_keeps_going() -> None:
    huge = Alive(1, MemberMeta("big", "a" * 300, "b" * 300,
                               tags={f"k{i:02}": "v" * 256 for i in range(16)}))
    assert update_size(huge) > MAX_PACKET_BYTES
    small = Dead("n2", 1, "n2")
    packet, left = fit_updates(None, [huge, small], sender="n1")
    assert packet.updates == (small,) and left == (huge,)
    packet, left = fit_updates(Ping(1, "n1", "n2"), [small] * 20, sender="n1", budget=120)
    assert len(packet.updates) == 8 and len(left) == 12
    assert len(seal(packet, sender="n1")) <= 120 < len(seal(Packet(packet.message,
                                                                   packet.updates + (small,)),
                                                            sender="n1"))
    with pytest.raises(Oversize):
        fit_updates(Ping(1, "n1", "n2"), [], sender="n1", budget=40)


def test_oversize() -> None:
    huge = Alive(1, MemberMeta("big", "a" * 300, "b" * 300,
                               tags={f"k{i:02}": "v" * 256 for i in range(16)}))
    with pytest.raises(Oversize):
        seal(Packet(None, (huge,)))
    opener = PacketOpener(KEY)
    with pytest.raises(Oversize):
        opener.open(b"\xb5\x01P" + bytes(MAX_PACKET_BYTES), now_ms=NOW)
    assert opener.oversize == 1
    bigger = PacketOpener(KEY, max_bytes=9000)
    data = seal_packet(Packet(None, (huge,)), key=KEY, sender="n1", boot=1, counter=1,
                       now_ms=NOW, max_bytes=9000)
    assert bigger.open(data, now_ms=NOW) == ("n1", Packet(None, (huge,)))


@pytest.mark.parametrize("args", [{"boot": -1}, {"boot": 2**64}, {"counter": -1},
                                  {"counter": 2**64}, {"now_ms": -1}, {"now_ms": 2**48},
                                  {"key": b""}])
def test_seal_rejects_header_values_out_of_range(args: dict[str, object]) -> None:
    values: dict[str, object] = {"key": KEY, "sender": "n1", "boot": 1, "counter": 1,
                                 "now_ms": NOW, **args}
    with pytest.raises(ValueError):
        seal_packet(Packet(None), **values)  # type: ignore[arg-type]


# -- authentication ----------------------------------------------------------------------


def test_every_tampered_byte_is_rejected() -> None:
    opener = PacketOpener(KEY)
    data = seal(Packet(Ping(7, "node-1", "node-2"), (small_update(3), small_update(4))), 5)
    for i in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            tampered = data[:i] + bytes((data[i] ^ flip,)) + data[i + 1:]
            with pytest.raises(BadMac if i >= 3 else Malformed):
                opener.open(tampered, now_ms=NOW)
    for size in range(len(data)):
        with pytest.raises(WireError):
            opener.open(data[:size], now_ms=NOW)
    with pytest.raises(BadMac):
        opener.open(data + b"\x00", now_ms=NOW)
    assert opener.accepted == 0
    assert opener.bad_mac == 3 * (len(data) - 3) + len(data) - 19 + 1
    assert opener.open(data, now_ms=NOW)[0] == "node-1"


def test_wrong_key_is_a_bad_mac() -> None:
    opener = PacketOpener(b"another-cluster-key-456789")
    with pytest.raises(BadMac):
        opener.open(seal(Packet(Ack(1, "node-1"))), now_ms=NOW)
    assert (opener.bad_mac, opener.accepted) == (1, 0)


def test_a_datagram_is_not_a_stream_frame_and_back() -> None:
    datagram = seal(Packet(None, (Dead("n2", 1, "n2"),)))
    as_frame = b"\xb5\x01S" + datagram[3:]
    with pytest.raises(BadMac):
        open_push_pull(as_frame, key=KEY)
    frame = seal_push_pull(PushPull("node-1", False, ()), key=KEY)[4:]
    with pytest.raises(BadMac):
        PacketOpener(KEY).open(b"\xb5\x01P" + frame[3:], now_ms=NOW)
    with pytest.raises(Malformed):
        PacketOpener(KEY).open(frame, now_ms=NOW)


def test_stale_timestamps_are_rejected() -> None:
    opener = PacketOpener(KEY, window_ms=60_000)
    packet = Packet(Ack(1, "node-1"))
    assert opener.open(seal(packet, 1, now_ms=NOW - 60_000), now_ms=NOW)
    assert opener.open(seal(packet, 2, now_ms=NOW + 60_000), now_ms=NOW)
    for counter, stamp in enumerate([NOW - 60_001, NOW + 60_001, 0], start=3):
        with pytest.raises(Stale):
            opener.open(seal(packet, counter, now_ms=stamp), now_ms=NOW)
    assert (opener.accepted, opener.stale) == (2, 3)
    assert opener.open(seal(packet, 3, now_ms=NOW - 60_001), now_ms=NOW - 1) is not None


# -- replay ------------------------------------------------------------------------------


def test_duplicates_are_rejected_and_reordering_within_64_is_accepted_once() -> None:
    rng = random.Random(5)
    opener = PacketOpener(KEY)
    datagrams = {c: seal(Packet(Ack(c, "node-1")), c) for c in range(1000)}
    order: list[int] = []
    for start in range(0, 1000, 40):  # shuffle within blocks: displacement stays under 64
        block = list(range(start, start + 40))
        rng.shuffle(block)
        order += block
    accepted: list[int] = []
    for counter in order:
        assert opener.open(datagrams[counter], now_ms=NOW)[1].message == Ack(counter, "node-1")
        accepted.append(counter)
        for earlier in [counter, *rng.sample(accepted[-70:], min(3, len(accepted)))]:
            with pytest.raises(Replayed):
                opener.open(datagrams[earlier], now_ms=NOW)
    assert opener.accepted == 1000 and opener.replayed == 4 * 1000 - 2 - 1


def test_the_replay_window_edges() -> None:
    opener = PacketOpener(KEY)
    packet = Packet(Nack(1, "node-1"))
    assert opener.open(seal(packet, 1000), now_ms=NOW)
    assert opener.open(seal(packet, 937), now_ms=NOW)  # 63 behind: inside the window
    with pytest.raises(Replayed):
        opener.open(seal(packet, 936), now_ms=NOW)  # 64 behind: outside
    with pytest.raises(Replayed):
        opener.open(seal(packet, 0), now_ms=NOW)
    assert opener.open(seal(packet, 1064), now_ms=NOW)  # 1000 is now 64 behind
    with pytest.raises(Replayed):
        opener.open(seal(packet, 1000), now_ms=NOW)
    assert opener.open(seal(packet, 1001), now_ms=NOW)
    assert opener.open(seal(packet, 2**64 - 1), now_ms=NOW)  # a jump clears the bitmap
    for counter in (2**64 - 1, 1064, 1001):
        with pytest.raises(Replayed):
            opener.open(seal(packet, counter), now_ms=NOW)
    assert (opener.accepted, opener.replayed) == (5, 6)


def test_a_new_boot_starts_its_own_counters() -> None:
    opener = PacketOpener(KEY, max_boots=4)
    packet = Packet(Ack(1, "node-1"))
    old = seal(packet, 500, boot=1)
    assert opener.open(old, now_ms=NOW)
    assert opener.open(seal(packet, 0, boot=2), now_ms=NOW)  # restarted: counter from 0
    assert opener.open(seal(packet, 1, boot=2), now_ms=NOW)
    with pytest.raises(Replayed):
        opener.open(old, now_ms=NOW)  # the old boot is still remembered
    with pytest.raises(Replayed):
        opener.open(seal(packet, 0, boot=2), now_ms=NOW)
    for boot in range(3, 10):
        assert opener.open(seal(packet, 0, boot=boot), now_ms=NOW)
        assert opener.tracked_boots("node-1") == min(4, boot)
    assert opener.tracked_senders == 1


def test_senders_are_bounded_least_recently_seen_forgotten_first() -> None:
    opener = PacketOpener(KEY, max_senders=3)
    packet = Packet(None, (Dead("x", 1, "x"),))
    replay_a = seal(packet, 1, sender="a")
    assert opener.open(replay_a, now_ms=NOW)
    for counter, sender in enumerate("bcadef", start=2):
        assert opener.open(seal(packet, counter, sender=sender), now_ms=NOW)[0] == sender
        assert opener.tracked_senders == min(3, counter)
    # "a" was refreshed after "b" and "c", then "d", "e", "f" pushed everyone out.
    assert opener.open(replay_a, now_ms=NOW)  # forgotten, so accepted again (documented)
    opener = PacketOpener(KEY, max_senders=3)
    for counter, sender in enumerate("abcad", start=1):
        opener.open(seal(packet, counter, sender=sender), now_ms=NOW)
    with pytest.raises(Replayed):
        opener.open(replay_a, now_ms=NOW)  # "a" was recent, so "b" went instead
    assert opener.open(seal(packet, 2, sender="b"), now_ms=NOW)


def test_a_malformed_authentic_datagram_does_not_consume_its_counter() -> None:
    opener = PacketOpener(KEY)
    with pytest.raises(Malformed):
        opener.open(seal_raw(b"\x09", 4), now_ms=NOW)
    assert opener.tracked_senders == 0
    assert opener.open(seal_raw(b"\x00", 4), now_ms=NOW) == ("node-1", Packet(None))


# -- fuzz --------------------------------------------------------------------------------


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[pos % len(buf)] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[pos % len(buf)] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif op == 2:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 3:
            del buf[pos:pos + rng.randint(1, 8)]
        else:
            del buf[pos:]
    return bytes(buf)


def test_random_garbage_only_ever_raises_wire_errors() -> None:
    rng = random.Random(6)
    opener = PacketOpener(KEY)
    for i in range(10_000):
        size = rng.choice([rng.randrange(40), rng.randrange(1500)])
        data = rng.randbytes(size)
        if i % 2:
            data = b"\xb5\x01P" + data
        with pytest.raises(WireError):
            opener.open(data, now_ms=NOW)
    assert opener.accepted == 0


def test_mutated_datagrams_only_ever_raise_wire_errors() -> None:
    rng = random.Random(7)
    opener = PacketOpener(KEY)
    valid: list[bytes] = []
    while len(valid) < 40:
        try:
            valid.append(seal(rand_packet(rng, 2), len(valid)))
        except Oversize:
            pass
    for _ in range(10_000):
        data = _mutate(rng, rng.choice(valid))
        try:
            opener.open(data, now_ms=NOW)
        except WireError:
            continue
        assert data in valid  # only an unchanged datagram can pass, and only once


def test_mutated_authentic_payloads_decode_canonically_or_are_malformed() -> None:
    """Behind a valid MAC: the decoder itself meets every mutation."""
    rng = random.Random(8)
    payloads = [encode_packet(rand_packet(rng, 3)) for _ in range(100)]
    opener = PacketOpener(KEY)
    outcomes = {"ok": 0, "malformed": 0}
    for counter in range(10_000):
        payload = _mutate(rng, rng.choice(payloads))
        try:
            packet = decode_packet(payload)
        except Malformed:
            outcomes["malformed"] += 1
            if len(payload) < 1300:
                with pytest.raises(Malformed):
                    opener.open(seal_raw(payload, counter), now_ms=NOW)
            continue
        outcomes["ok"] += 1
        assert encode_packet(packet) == payload
        if len(payload) < 1300:
            assert opener.open(seal_raw(payload, counter), now_ms=NOW)[1] == packet
    push_pulls = [encode_push_pull(PushPull(rand_str(rng, 1, 64), rng.random() < 0.5, tuple(
        rand_update(rng) for _ in range(rng.randrange(4))))) for _ in range(50)]
    for _ in range(2000):
        payload = _mutate(rng, rng.choice(push_pulls))
        try:
            assert encode_push_pull(decode_push_pull(payload)) == payload
        except Malformed:
            pass
    print(f"\nmutated payloads: {outcomes}")
    assert outcomes["ok"] > 100 and outcomes["malformed"] > 1000


# -- push-pull over a stream -------------------------------------------------------------


def big_push_pull(count: int = 3000) -> PushPull:
    return PushPull("node-1", True, tuple(small_update(i) for i in range(1, count)))


async def test_push_pull_round_trips_over_a_stream() -> None:
    left, right = trio.testing.memory_stream_pair()
    request, reply = big_push_pull(), PushPull("node-2", False, (Dead("n9", 3, "node-2"),))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(send_push_pull, left, request, key=KEY))
        assert await receive_push_pull(right, key=KEY) == request
        nursery.start_soon(partial(send_push_pull, right, reply, key=KEY))
        assert await receive_push_pull(left, key=KEY) == reply
    size = len(seal_push_pull(request, key=KEY))
    print(f"\npush-pull of {len(request.states)} states: {size} bytes")


async def test_two_frames_back_to_back_are_read_one_at_a_time() -> None:
    left, right = trio.testing.memory_stream_pair()
    first, second = PushPull("a", True, ()), PushPull("b", False, (Suspect("c", 1, "b"),))
    await left.send_all(seal_push_pull(first, key=KEY) + seal_push_pull(second, key=KEY))
    assert await receive_push_pull(right, key=KEY) == first
    assert await receive_push_pull(right, key=KEY) == second


@pytest.mark.parametrize("cut", [0, 1, 3, 4, 5, 30, -1])
async def test_a_peer_closing_early_is_truncated(cut: int) -> None:
    left, right = trio.testing.memory_stream_pair()
    frame = seal_push_pull(big_push_pull(50), key=KEY)
    await left.send_all(frame[:cut] if cut >= 0 else frame[:-1])
    await left.send_eof()
    with pytest.raises(Truncated):
        await receive_push_pull(right, key=KEY)


async def test_a_broken_stream_is_truncated() -> None:
    class Broken(trio.abc.ReceiveStream):
        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            raise trio.BrokenResourceError("reset by peer")

        async def aclose(self) -> None:
            pass

    with pytest.raises(Truncated):
        await receive_push_pull(Broken(), key=KEY)


async def test_an_oversize_length_prefix_is_rejected_before_reading_the_body() -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all((2**32 - 1).to_bytes(4, "big"))  # no body follows
    with pytest.raises(Oversize):
        await receive_push_pull(right, key=KEY)
    frame = seal_push_pull(big_push_pull(50), key=KEY)
    await left.send_all(frame)
    with pytest.raises(Oversize):
        await receive_push_pull(right, key=KEY, max_bytes=len(frame) - 5)
    with pytest.raises(Oversize):
        await send_push_pull(left, big_push_pull(50), key=KEY, max_bytes=1000)


@pytest.mark.parametrize("frame", [b"\x00\x00\x00\x00", b"\x00\x00\x00\x05hello",
                                   b"\x00\x00\x00\x20" + b"\xb5\x01S" + bytes(29),
                                   b"\x00\x00\x00\x20" + b"\xb5\x02S" + bytes(29)], ids=repr)
async def test_bad_frames_are_rejected(frame: bytes) -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(frame)
    with pytest.raises(WireError):
        await receive_push_pull(right, key=KEY)


async def test_a_frame_with_the_wrong_key_or_a_flipped_byte_is_a_bad_mac() -> None:
    frame = seal_push_pull(big_push_pull(20), key=KEY)
    for i in range(7, len(frame), 37):
        left, right = trio.testing.memory_stream_pair()
        await left.send_all(frame[:i] + bytes((frame[i] ^ 0x10,)) + frame[i + 1:])
        with pytest.raises(BadMac):
            await receive_push_pull(right, key=KEY)
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(frame)
    with pytest.raises(BadMac):
        await receive_push_pull(right, key=b"another-cluster-key-456789")


async def test_a_silent_peer_times_out(autojump_clock: trio.testing.MockClock) -> None:
    left, right = trio.testing.memory_stream_pair()
    await left.send_all(seal_push_pull(big_push_pull(5), key=KEY)[:20])
    start = trio.current_time()
    with pytest.raises(TimedOut):
        await receive_push_pull(right, key=KEY, timeout_s=10.0)
    assert trio.current_time() - start == pytest.approx(10.0)


async def test_stamped_frames_can_be_checked_for_staleness() -> None:
    msg = PushPull("node-1", False, ())
    left, right = trio.testing.memory_stream_pair()
    await send_push_pull(left, msg, key=KEY, now_ms=NOW)
    assert await receive_push_pull(right, key=KEY, now_ms=NOW + 60_000) == msg
    for sent, received in [(NOW, NOW + 60_001), (None, NOW)]:
        await send_push_pull(left, msg, key=KEY, now_ms=sent)
        with pytest.raises(Stale):
            await receive_push_pull(right, key=KEY, now_ms=received)
    await send_push_pull(left, msg, key=KEY)
    assert await receive_push_pull(right, key=KEY) == msg  # unchecked without now_ms


# -- rotating the cluster key ------------------------------------------------------------

NEW_KEY = b"the-next-cluster-key-0123456789"
THIRD_KEY = b"a-third-cluster-key-0123456789"


def test_a_receiver_accepts_its_current_and_its_accepted_keys_only() -> None:
    """The middle of a rotation: datagrams sealed with either key open, and each counts
    against the same replay window (the key is not part of a datagram's identity)."""
    opener = PacketOpener(KEY, accepted_keys=(NEW_KEY,))
    packet = Packet(Ack(1, "node-1"))
    assert opener.open(seal(packet, 1, key=KEY), now_ms=NOW)[1] == packet
    assert opener.open(seal(packet, 2, key=NEW_KEY), now_ms=NOW)[1] == packet
    with pytest.raises(Replayed):
        opener.open(seal(packet, 2, key=KEY), now_ms=NOW)
    with pytest.raises(BadMac):
        opener.open(seal(packet, 3, key=THIRD_KEY), now_ms=NOW)
    assert (opener.accepted, opener.replayed, opener.bad_mac) == (2, 1, 1)
    # Without the accepted key (a rotation finished), the other key is refused.
    with pytest.raises(BadMac):
        PacketOpener(KEY).open(seal(packet, 4, key=NEW_KEY), now_ms=NOW)


def test_every_accepted_key_is_tried_even_after_a_match(monkeypatch: pytest.MonkeyPatch) -> None:
    """Verification does the same work whichever key matches, or none."""
    import node.gossip.wire as wire
    calls: list[bytes] = []
    real_mac = wire._mac

    def counting_mac(subkey: bytes, body: bytes) -> bytes:
        calls.append(subkey)
        return real_mac(subkey, body)

    opener = PacketOpener(KEY, accepted_keys=(NEW_KEY, THIRD_KEY))
    data = {key: seal(Packet(Ack(1, "node-1")), i, key=key)
            for i, key in enumerate((KEY, NEW_KEY, THIRD_KEY, b"no-such-key-0123456789"))}
    monkeypatch.setattr(wire, "_mac", counting_mac)
    for key, datagram in data.items():
        calls.clear()
        try:
            opener.open(datagram, now_ms=NOW)
        except BadMac:
            assert key == b"no-such-key-0123456789"
        assert len(calls) == 3, key


async def test_push_pull_frames_open_under_an_accepted_key() -> None:
    msg = PushPull("node-1", True, (small_update(1),))
    frame = seal_push_pull(msg, key=NEW_KEY, now_ms=NOW)
    assert open_push_pull(frame[4:], key=KEY, accepted_keys=(NEW_KEY,)) == msg
    with pytest.raises(BadMac):
        open_push_pull(frame[4:], key=KEY, accepted_keys=(THIRD_KEY,))
    send, receive = trio.testing.memory_stream_one_way_pair()
    await send_push_pull(send, msg, key=NEW_KEY, now_ms=NOW)
    assert await receive_push_pull(receive, key=KEY, accepted_keys=(NEW_KEY,),
                                   now_ms=NOW) == msg
