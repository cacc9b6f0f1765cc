"""Single byte ranges (RFC 9110 section 14): ``bytes=a-b``, ``bytes=a-`` and ``bytes=-n``."""

from __future__ import annotations

import re

from node.errors import InvalidRequest, RangeNotSatisfiable

_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE)
_MAX_DIGITS = 20


def parse_range(header: str, size: int) -> tuple[int, int]:
    """The satisfiable span ``[start, end)`` the header asks of a blob of ``size`` bytes.

    Raises InvalidRequest for a header that is not one well-formed range (multiple
    ranges are not supported) and RangeNotSatisfiable when the range misses the blob.
    """
    match = _RANGE_RE.fullmatch(header.strip().replace(" ", ""))
    if not match or (not match.group(1) and not match.group(2)):
        raise InvalidRequest(f"unsupported Range header {header[:100]!r}; "
                             "expected one range bytes=a-b, bytes=a- or bytes=-n")
    first, last = match.group(1), match.group(2)
    if len(first) > _MAX_DIGITS:
        raise RangeNotSatisfiable("range starts beyond any blob", size=size)
    if len(last) > _MAX_DIGITS:
        last = str(10**_MAX_DIGITS)
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable("empty suffix range", size=size)
        return max(0, size - suffix), size
    start = int(first)
    end = int(last) + 1 if last else size
    if last and end <= start:
        raise InvalidRequest(f"range end before start in {header[:100]!r}")
    if start >= size:
        raise RangeNotSatisfiable(f"range starts at {start}, blob has {size} bytes", size=size)
    return start, min(end, size)
