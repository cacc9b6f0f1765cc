"""ETag lists and the read conditions of GET and HEAD."""

from __future__ import annotations

import pytest

from node.blobs.conditions import MAX_ETAGS, matches, parse_etag_list, read_condition
from node.errors import InvalidRequest

ETAG = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(("header", "tags"), [
    ('"abc"', ("abc",)),
    ('W/"abc"', ("W/abc",)),
    ("abc", ("abc",)),                   # bare tags are accepted leniently
    ("*", ("*",)),
    (' * ', ("*",)),
    ('"a", "b"', ("a", "b")),
    ('"a",W/"b",c', ("a", "W/b", "c")),
    (' "a" ,, "b" , ', ("a", "b")),
    ('"a", *', ("a", "*")),
    ('"' + "x" * 200 + '"', ("x" * 200,)),
])
def test_parse_etag_list(header: str, tags: tuple[str, ...]) -> None:
    assert parse_etag_list(header) == tags


@pytest.mark.parametrize("header", [
    "", " ", ",", " , ,", '""', '"', 'W/', 'W/""', '"a"b"', 'a"b', '"abc', "x" * 201,
    '"' + "x" * 201 + '"', ", ".join(['"t"'] * (MAX_ETAGS + 1)),
])
def test_malformed_etag_lists(header: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_etag_list(header)


def test_max_etags_is_allowed() -> None:
    assert len(parse_etag_list(", ".join(f'"t{i}"' for i in range(MAX_ETAGS)))) == MAX_ETAGS


def test_matches() -> None:
    for strong in (True, False):
        assert matches(("*",), ETAG, strong=strong)
        assert matches(("x", ETAG), ETAG, strong=strong)
        assert not matches(("x", "y"), ETAG, strong=strong)
    assert matches((f"W/{ETAG}",), ETAG, strong=False)
    assert not matches((f"W/{ETAG}",), ETAG, strong=True)
    assert not matches((), ETAG, strong=True)
    assert not matches((ETAG.upper(),), ETAG, strong=True)  # ETags compare exactly


@pytest.mark.parametrize(("if_match", "if_none_match", "status"), [
    (None, None, None),
    (f'"{ETAG}"', None, None),
    ("*", None, None),
    ('"other"', None, 412),
    (f'"other", "{ETAG}"', None, None),
    (None, f'"{ETAG}"', 304),
    (None, f'W/"{ETAG}"', 304),          # If-None-Match uses the weak comparison
    (f'W/"{ETAG}"', None, 412),          # If-Match uses the strong comparison
    (None, "*", 304),
    (None, '"other"', None),
    ('"other"', f'"{ETAG}"', 412),       # If-Match is evaluated first
    (f'"{ETAG}"', f'"{ETAG}"', 304),
    (f'"{ETAG}"', '"other"', None),
])
def test_read_condition(if_match: str | None, if_none_match: str | None,
                        status: int | None) -> None:
    assert read_condition(ETAG, if_match, if_none_match) == status


@pytest.mark.parametrize(("if_match", "if_none_match"), [('""', None), (None, ""),
                                                         (f'"{ETAG}"', '"x"y"')])
def test_read_condition_malformed(if_match: str | None, if_none_match: str | None) -> None:
    with pytest.raises(InvalidRequest):
        read_condition(ETAG, if_match, if_none_match)
