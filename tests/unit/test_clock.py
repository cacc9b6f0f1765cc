"""Wall-clock formats: RFC 3339 in metadata, IMF-fixdate in HTTP headers."""

from __future__ import annotations

import random
from datetime import datetime, timezone

from node.clock import http_date, parse_rfc3339, rfc3339


def test_http_date_is_the_imf_fixdate_of_the_same_moment() -> None:
    rng = random.Random(3339)
    for _ in range(500):
        unix_s = rng.uniform(0, 4e9)
        expected = datetime.fromtimestamp(unix_s, tz=timezone.utc).strftime(
            "%a, %d %b %Y %H:%M:%S GMT")
        assert http_date(rfc3339(unix_s)) == expected


def test_known_dates() -> None:
    assert http_date("2026-11-24T18:11:41.123Z") == "Tue, 24 Nov 2026 18:11:41 GMT"
    assert http_date("2000-02-29T00:00:00.000Z") == "Tue, 29 Feb 2000 00:00:00 GMT"
    assert parse_rfc3339("1970-01-01T00:00:01.500Z") == 1.5
