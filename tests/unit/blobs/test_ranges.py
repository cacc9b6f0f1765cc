"""parse_range: single byte ranges, clamping, 416 and malformed headers."""

from __future__ import annotations

import pytest

from node.blobs.ranges import parse_range
from node.errors import InvalidRequest, RangeNotSatisfiable


@pytest.mark.parametrize(("header", "size", "span"), [
    ("bytes=0-0", 10, (0, 1)),
    ("bytes=0-9", 10, (0, 10)),
    ("bytes=2-5", 10, (2, 6)),
    ("bytes=9-9", 10, (9, 10)),
    ("bytes=5-", 10, (5, 10)),
    ("bytes=0-", 10, (0, 10)),
    ("bytes=9-", 10, (9, 10)),
    ("bytes=0-100", 10, (0, 10)),       # end clamped
    ("bytes=9-100", 10, (9, 10)),
    ("bytes=-1", 10, (9, 10)),
    ("bytes=-3", 10, (7, 10)),
    ("bytes=-10", 10, (0, 10)),
    ("bytes=-11", 10, (0, 10)),         # suffix longer than the blob: all of it
    ("bytes=0-0", 1, (0, 1)),
    ("bytes=-1", 1, (0, 1)),
    ("bytes=00-01", 10, (0, 2)),
    (" bytes=1-2 ", 10, (1, 3)),
    ("bytes= 1 - 2", 10, (1, 3)),
    ("bytes=0-" + "9" * 20, 10, (0, 10)),
    ("bytes=-" + "9" * 20, 10, (0, 10)),
    ("bytes=" + "0" * 19 + "3-", 10, (3, 10)),
    ("bytes=4294967296-4294967300", 2**33, (2**32, 2**32 + 5)),
])
def test_satisfiable(header: str, size: int, span: tuple[int, int]) -> None:
    assert parse_range(header, size) == span


@pytest.mark.parametrize(("header", "size"), [
    ("bytes=10-", 10),
    ("bytes=10-20", 10),
    ("bytes=11-", 10),
    ("bytes=-0", 10),
    ("bytes=0-", 0),         # nothing of an empty blob is satisfiable
    ("bytes=0-0", 0),
    ("bytes=0-10", 0),
    ("bytes=-1", 0),
    ("bytes=-0", 0),
    ("bytes=" + "1" * 21 + "-", 10),
    ("bytes=" + "1" * 21 + "-" + "2" * 21, 10),
])
def test_not_satisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, size)
    assert info.value.size == size
    assert info.value.status == 416


@pytest.mark.parametrize("header", [
    "bytes=0-" + "9" * 21,   # end past any blob: clamped, like any end past the blob
    "bytes=-" + "9" * 21,    # suffix longer than any blob: the whole blob
])
def test_huge_end_or_suffix_is_still_satisfiable(header: str) -> None:
    """RFC 9110 14.1.2: a last-pos at or past the length means "to the end"."""
    assert parse_range(header, 10) == (0, 10)


@pytest.mark.parametrize("header", [
    "", " ", "bytes", "bytes=", "bytes=-", "bytes=--1", "bytes=0--1", "bytes=a-b",
    "bytes=0-1,2-3", "bytes=0-1, 4-5", "bits=0-1", "bytes 0-1", "bytes=0-1-2", "=0-1",
    "bytes=1-0", "bytes=5-3", "bytes=0x10-", "bytes=+1-2", "bytes=1.5-2", "bytes=\t0-1",
    "bytes=0-1;x", "x" * 1000,
])
def test_malformed(header: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_range(header, 10)


def test_malformed_wins_over_empty_blob() -> None:
    with pytest.raises(InvalidRequest):
        parse_range("bytes=3-1", 0)
    with pytest.raises(InvalidRequest):
        parse_range("bytes=a", 0)


def test_error_message_is_bounded() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_range("bytes=" + "x" * 10_000, 10)
    assert len(str(info.value)) < 400


def test_exhaustive_small_sizes() -> None:
    """Every a-b, a- and -n header on blobs of 0..6 bytes against the RFC's arithmetic."""
    for size in range(7):
        for first in range(9):
            for last in range(9):
                header = f"bytes={first}-{last}"
                if last < first:
                    with pytest.raises(InvalidRequest):
                        parse_range(header, size)
                elif first >= size:
                    with pytest.raises(RangeNotSatisfiable):
                        parse_range(header, size)
                else:
                    assert parse_range(header, size) == (first, min(last + 1, size)), header
            header = f"bytes={first}-"
            if first >= size:
                with pytest.raises(RangeNotSatisfiable):
                    parse_range(header, size)
            else:
                assert parse_range(header, size) == (first, size)
            header = f"bytes=-{first}"
            if first == 0 or size == 0:
                with pytest.raises(RangeNotSatisfiable):
                    parse_range(header, size)
            else:
                assert parse_range(header, size) == (max(0, size - first), size)
