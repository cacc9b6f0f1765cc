"""Memory stays bounded however large the blob: a 1 GiB upload and download.

The body is generated on the fly (a 1 MiB random block stamped with a counter)
and streamed with a Content-Length; the download is hashed as it arrives. The
node's peak RSS (VmHWM) may grow by less than 100 MiB. Run with ``-s`` to see
the measured numbers.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import StartNode
from tests.e2e.helpers import client, create_container, get, put

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
BLOB_MIB = 1024
MAX_GROWTH_MIB = 100


def test_one_gib_round_trip_in_bounded_memory(start_node: StartNode) -> None:
    node = start_node("n1")
    token = node.login()
    block = random.Random(20261124).randbytes(MIB)
    expected = hashlib.md5()

    def body() -> Iterator[bytes]:
        for i in range(BLOB_MIB):
            piece = i.to_bytes(8, "little") + block[8:]
            expected.update(piece)
            yield piece

    with client(node, token) as c:
        c.timeout = httpx.Timeout(300.0, connect=5.0)
        create_container(c, "big")
        # Warm up: the first upload and download pay for imports and buffers.
        assert put(c, "big", "warm", block * 2).status_code == 201
        assert get(c, "big", "warm").content == block * 2
        rss_start = node.peak_rss_kib()

        started = time.monotonic()
        r = put(c, "big", "one-gib", body(), **{"Content-Length": str(BLOB_MIB * MIB)})
        up_s = time.monotonic() - started
        assert r.status_code == 201, r.text
        assert r.json()["size"] == BLOB_MIB * MIB
        assert r.json()["etag"] == expected.hexdigest()
        rss_after_put = node.peak_rss_kib()

        got = hashlib.md5()
        received = 0
        started = time.monotonic()
        with c.stream("GET", "/get_data", params={"container": "big", "blob": "one-gib"}) as r:
            assert r.status_code == 200
            assert r.headers["Content-Length"] == str(BLOB_MIB * MIB)
            for piece in r.iter_raw(MIB):
                got.update(piece)
                received += len(piece)
        down_s = time.monotonic() - started
        rss_after_get = node.peak_rss_kib()
        assert received == BLOB_MIB * MIB
        assert got.hexdigest() == expected.hexdigest()

        growth_put = (rss_after_put - rss_start) / 1024
        growth_get = (rss_after_get - rss_start) / 1024
        size_mb = BLOB_MIB * MIB / 1e6
        print(f"\nmemory: node peak RSS {rss_start / 1024:.1f} MiB before, "
              f"{rss_after_put / 1024:.1f} MiB after the 1 GiB PUT (+{growth_put:.1f} MiB), "
              f"{rss_after_get / 1024:.1f} MiB after the GET (+{growth_get:.1f} MiB)")
        print(f"throughput: PUT {size_mb / up_s:.0f} MB/s ({up_s:.1f} s), "
              f"GET {size_mb / down_s:.0f} MB/s ({down_s:.1f} s) for {BLOB_MIB} MiB, "
              f"client and node on one machine")
        assert growth_put < MAX_GROWTH_MIB, f"PUT grew peak RSS by {growth_put:.1f} MiB"
        assert growth_get < MAX_GROWTH_MIB, f"GET grew peak RSS by {growth_get:.1f} MiB"

        r = c.delete("/delete_data", params={"container": "big", "blob": "one-gib"})
        assert r.status_code == 204
        assert get(c, "big", "one-gib").status_code == 404
    assert node.terminate() == 0
    shutil.rmtree(node.data_dir / "store", ignore_errors=True)   # give the disk back
