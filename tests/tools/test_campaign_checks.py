"""The campaign's verdict and schedule on made-up histories: each check can fail."""

from __future__ import annotations

import hashlib

from tools.campaign import checks
from tools.campaign.checks import ABSENT, Read, Verdict
from tools.campaign.faults import ALL_KINDS, ISOLATE_COORDINATOR, schedule
from tools.campaign.workload import (CHUNK_SIZE, FAIL, INLINE_MAX, OK, UNKNOWN, Call, History,
                                     Write, body_of)

NODES = ["n1", "n2", "n3"]
KEY = ("alpha", "obj-01")


def put(history: History, wid: int, invoked: float, returned: float | None,
        outcome: str = OK, status: int = 201, client: int = 0) -> Call:
    body = body_of(wid, 100)
    write = Write(wid, *KEY, len(body), hashlib.md5(body).hexdigest(),
                  hashlib.sha256(body).hexdigest())
    history.writes[write.etag] = write
    call = Call(client, "put", *KEY, "n1", invoked, returned, outcome, status, write.etag, wid)
    history.calls.append(call)
    return call


def delete(history: History, invoked: float, returned: float | None, outcome: str = OK,
           status: int = 204) -> Call:
    call = Call(1, "delete", *KEY, "n2", invoked, returned, outcome, status)
    history.calls.append(call)
    return call


def read(history: History, invoked: float, returned: float, etag: str | None) -> None:
    history.calls.append(Call(2, "get", *KEY, "n3", invoked, returned, OK,
                              200 if etag else 404, etag))


def finals(value: str) -> dict[tuple[str, str], list[Read]]:
    return {KEY: [Read(n, 404 if value == ABSENT else 200, value) for n in NODES]}


def listings(value: str) -> dict[str, dict[str, dict[str, str]]]:
    return {n: {KEY[0]: {} if value == ABSENT else {KEY[1]: value}} for n in NODES}


def judged(history: History, value: str) -> Verdict:
    verdict = Verdict()
    reads = finals(value)
    checks.judge(history, reads, listings(value), verdict)
    checks.check_linearizable(history, reads, [KEY[0]], verdict, timeout_s=10.0)
    return verdict


def test_the_last_acknowledged_write_read_back_passes() -> None:
    history = History()
    put(history, 1, 0.0, 1.0)
    last = put(history, 2, 2.0, 3.0)
    verdict = judged(history, last.etag or "")
    assert verdict.passed, verdict


def test_an_acknowledged_write_that_reads_back_absent_is_counted_lost() -> None:
    history = History()
    put(history, 1, 0.0, 1.0)
    verdict = judged(history, ABSENT)
    assert verdict.acked_writes_lost == 1 and not verdict.passed
    assert verdict.linearizability == "not linearizable"


def test_an_overwritten_value_coming_back_is_a_violation() -> None:
    history = History()
    first = put(history, 1, 0.0, 1.0)
    put(history, 2, 2.0, 3.0)
    verdict = judged(history, first.etag or "")
    assert not verdict.passed
    assert any("does not allow" in v for v in verdict.violations)


def test_a_deleted_blob_coming_back_is_a_violation() -> None:
    history = History()
    first = put(history, 1, 0.0, 1.0)
    delete(history, 2.0, 3.0)
    assert not judged(history, first.etag or "").passed
    assert judged(history, ABSENT).passed


def test_an_unknown_write_may_be_there_or_not() -> None:
    history = History()
    put(history, 1, 0.0, 1.0)
    maybe = put(history, 2, 2.0, None, outcome=UNKNOWN, status=503)
    assert judged(history, maybe.etag or "").passed
    first = history.calls[0].etag or ""
    assert judged(history, first).passed


def test_a_failed_write_must_leave_no_trace() -> None:
    history = History()
    put(history, 1, 0.0, 1.0)
    failed = put(history, 2, 2.0, 3.0, outcome=FAIL, status=507)
    verdict = judged(history, failed.etag or "")
    assert not verdict.passed


def test_nodes_that_disagree_and_listings_that_disagree_are_violations() -> None:
    history = History()
    one = put(history, 1, 0.0, 1.0)
    verdict = Verdict()
    reads = finals(one.etag or "")
    reads[KEY][2] = Read("n3", 404)
    checks.judge(history, reads, listings(one.etag or ""), verdict)
    assert any("disagree" in v for v in verdict.violations)
    assert any("n3 lists" in v for v in verdict.violations)


def test_a_stale_read_during_the_run_is_not_linearizable() -> None:
    history = History()
    first = put(history, 1, 0.0, 1.0)
    second = put(history, 2, 2.0, 3.0)
    read(history, 4.0, 5.0, first.etag)
    verdict = judged(history, second.etag or "")
    assert verdict.linearizability == "not linearizable", verdict


def test_the_schedule_replays_from_its_seed_and_covers_every_kind_in_a_round() -> None:
    a = schedule(3, NODES, ALL_KINDS, 200.0)
    assert a == schedule(3, NODES, ALL_KINDS, 200.0)
    assert a != schedule(4, NODES, ALL_KINDS, 200.0)
    assert {f.kind for f in a[:len(ALL_KINDS)]} == set(ALL_KINDS)
    for before, after in zip(a, a[1:]):
        assert after.at >= before.at + before.hold_s  # faults never overlap
    assert a[-1].at + a[-1].hold_s <= 200.0
    assert all(f.targets or f.kind == ISOLATE_COORDINATOR for f in a)


def test_only_blobs_over_the_nodes_inline_max_are_expected_in_chunk_files() -> None:
    """The placement check looks for the chunk files of blobs stored in chunks; a blob of
    at most INLINE_MAX bytes lives in its manifest and has none (expecting them failed
    every campaign once nodes began storing small blobs inline)."""
    def write(size: int) -> Write:
        body = body_of(7, size)
        return Write(7, *KEY, size, hashlib.md5(body).hexdigest(),
                     hashlib.sha256(body).hexdigest())

    assert checks.chunk_ids(write(100)) == checks.chunk_ids(write(INLINE_MAX)) == []
    body = body_of(7, 2 * CHUNK_SIZE + 1)
    assert checks.chunk_ids(write(len(body))) == [
        hashlib.sha256(body[i:i + CHUNK_SIZE]).hexdigest() for i in (0, CHUNK_SIZE,
                                                                     2 * CHUNK_SIZE)]
