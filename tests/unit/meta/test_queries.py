"""Metadata reads: prefix_successor, list_blobs against a brute-force S3 model, stats."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.meta import commands as c
from node.meta.queries import container_stats, get_manifest, list_blobs, prefix_successor
from node.meta.records import ContainerStats, ListPage
from node.meta.state import MetaState
from node.store.db import Connection, Database

T = "2026-01-01T00:00:00.000Z"
ALPHABET = ["/", "a", "b", "é", "\U0001F600", "\uffff"]
DELIMITERS = ["", "/", "a", "é", "\U0001F600", "\uffff", "/a", "ab"]


# -- prefix_successor ----------------------------------------------------------------------


@pytest.mark.parametrize(("prefix", "successor"), [
    ("a", "b"),
    ("ab", "ac"),
    ("/", "0"),
    ("a/", "a0"),
    ("é", "ê"),
    ("\x00", "\x01"),
    ("\ud7ff", "\ue000"),
    ("x\ud7ff", "x\ue000"),
    ("\uffff", "\U00010000"),
    ("\U0001F600", "\U0001F601"),
    ("\U0010FFFE", "\U0010FFFF"),
    ("a\U0010FFFF", "b"),
    ("ab\U0010FFFF\U0010FFFF", "ac"),
    ("\ud7ff\U0010FFFF", "\ue000"),
])
def test_prefix_successor(prefix: str, successor: str) -> None:
    assert prefix_successor(prefix) == successor


@pytest.mark.parametrize("prefix", ["", "\U0010FFFF", "\U0010FFFF" * 3])
def test_prefix_successor_none(prefix: str) -> None:
    assert prefix_successor(prefix) is None


def test_prefix_successor_is_an_upper_bound_in_utf8_order() -> None:
    rng = random.Random(7)
    alphabet = ALPHABET + ["\ud7ff", "\ue000", "\U0010FFFF", "\x7f", "\x80", "\u07ff", "\u0800"]
    for _ in range(2000):
        prefix = "".join(rng.choices(alphabet, k=rng.randint(1, 4)))
        successor = prefix_successor(prefix)
        longer = prefix + "".join(rng.choices(alphabet, k=rng.randint(0, 4)))
        if successor is None:
            assert set(prefix) == {"\U0010FFFF"}
            continue
        # Valid UTF-8 (never a surrogate), after everything that starts with the prefix.
        encoded = successor.encode("utf-8")
        assert prefix.encode() <= longer.encode() < encoded, (prefix, longer)
        assert not successor.startswith(prefix)
        # Minimal: it is the prefix with its last non-max character stepped to the next
        # scalar value, so nothing shorter or smaller can separate the prefix's strings.
        stem = prefix.rstrip("\U0010FFFF")
        assert successor[:-1] == stem[:-1]
        step = ord(stem[-1]) + 1
        assert ord(successor[-1]) == (0xE000 if step == 0xD800 else step)


# -- list_blobs against a reference model ---------------------------------------------------


def reference(names: list[str], prefix: str, delimiter: str, marker: str,
              limit: int) -> tuple[list[str], list[str], str | None, list[str]]:
    """S3 ListObjects v1 by brute force: (blob names, common prefixes, next marker, items)."""
    items: list[tuple[str, bool]] = []
    seen: set[str] = set()
    for name in sorted(set(names), key=lambda n: n.encode("utf-8")):
        if not name.startswith(prefix):
            continue
        if marker and name.encode() <= marker.encode():
            continue
        cut = name[len(prefix):].find(delimiter) if delimiter else -1
        if cut >= 0:
            rolled = name[:len(prefix) + cut + len(delimiter)]
            if marker and rolled.encode() <= marker.encode():
                continue
            if rolled not in seen:
                seen.add(rolled)
                items.append((rolled, True))
            continue
        items.append((name, False))
    page = items[:limit]
    next_marker = page[-1][0] if len(items) > limit else None
    return ([n for n, p in page if not p], [n for n, p in page if p], next_marker,
            [n for n, _ in page])


def actual(page: ListPage) -> tuple[list[str], list[str], str | None, list[str]]:
    blobs = [m.blob for m in page.blobs]
    prefixes = list(page.prefixes)
    merged = sorted(blobs + prefixes, key=lambda n: n.encode())
    return blobs, prefixes, page.next_marker, merged


def random_name(rng: random.Random) -> str:
    return "".join(rng.choices(ALPHABET, k=rng.randint(1, 5)))


def random_prefix(rng: random.Random, names: list[str]) -> str:
    roll = rng.random()
    if roll < 0.3 or not names:
        return ""
    if roll < 0.7:
        name = rng.choice(names)
        return name[:rng.randint(0, len(name))]
    return "".join(rng.choices(ALPHABET, k=rng.randint(1, 2)))


def random_marker(rng: random.Random, names: list[str], prefix: str) -> str:
    roll = rng.random()
    if roll < 0.3 or not names:
        return ""
    if roll < 0.55:
        return rng.choice(names)
    if roll < 0.7:
        name = rng.choice(names)
        return name[:rng.randint(1, len(name))]
    if roll < 0.85:
        return prefix + "".join(rng.choices(ALPHABET, k=rng.randint(0, 3)))
    return "".join(rng.choices(ALPHABET, k=rng.randint(1, 3)))


class Listing:
    def __init__(self, path: Path) -> None:
        self.db = Database(path)
        self.state = MetaState()
        self.db.write_sync(self.state.load)
        self.index = 0

    async def apply(self, commands: list[c.Command]) -> list[object]:
        entries = [(self.index + i + 1, cmd) for i, cmd in enumerate(commands)]
        self.index += len(commands)
        return await self.db.write(lambda conn: self.state.apply_batch(conn, entries))

    async def fill(self, sets: dict[str, list[str]]) -> None:
        commands: list[c.Command] = []
        for container, names in sets.items():
            commands.append(c.CreateContainer(container=container, owner="o", owner_uid=1,
                                              now=T))
            for name in names:
                commands.append(c.PutBlob(container=container, blob=name, size=len(name),
                                          etag="e", content_type="t", now=T, chunk_size=4,
                                          chunks=()))
        if commands:
            results = await self.apply(commands)
            assert not any(isinstance(r, Exception) for r in results)


@pytest.fixture
def listing(tmp_path: Path) -> Iterator[Listing]:
    handle = Listing(tmp_path / "m.db")
    yield handle
    handle.db.close()


SEED = 20260101
SETS = 120
QUERIES_PER_SET = 25


def make_sets(rng: random.Random) -> dict[str, list[str]]:
    sets = {}
    for number in range(SETS):
        sets[f"k{number}"] = sorted({random_name(rng) for _ in range(rng.randint(0, 14))})
    # A decoy container with names of its own, which must never leak into the others.
    sets["decoy"] = [random_name(rng) for _ in range(30)]
    return sets


def compare_all(conn: Connection, sets: dict[str, list[str]], rng: random.Random) -> list[str]:
    failures = []
    for container, names in sets.items():
        if container == "decoy":
            continue
        for _ in range(QUERIES_PER_SET):
            prefix = random_prefix(rng, names)
            delimiter = rng.choice(DELIMITERS)
            marker = random_marker(rng, names, prefix)
            limit = rng.randint(1, 7)
            want = reference(names, prefix, delimiter, marker, limit)
            got = actual(list_blobs(conn, container, prefix, delimiter, marker, limit))
            if got != want:
                failures.append(f"{container} names={names!r} prefix={prefix!r} "
                                f"delimiter={delimiter!r} marker={marker!r} limit={limit}: "
                                f"got {got!r}, want {want!r}")
    return failures


async def test_list_blobs_matches_reference_model(listing: Listing) -> None:
    rng = random.Random(SEED)
    sets = make_sets(rng)
    await listing.fill(sets)
    failures = await listing.db.read(lambda conn: compare_all(conn, sets, rng))
    assert not failures, f"seed={SEED}, {len(failures)} mismatches, first:\n" + \
        "\n".join(failures[:5])


def page_through(conn: Connection, container: str, prefix: str, delimiter: str,
                 limit: int) -> tuple[list[str], int]:
    marker, items, pages = "", [], 0
    while True:
        page = list_blobs(conn, container, prefix, delimiter, marker, limit)
        pages += 1
        page_items = actual(page)[3]
        assert len(page_items) <= limit
        items.extend(page_items)
        if page.next_marker is None:
            return items, pages
        assert page_items and page.next_marker == page_items[-1]
        marker = page.next_marker
        assert pages < 1000, "paging does not terminate"


async def test_paging_enumerates_each_item_once(listing: Listing) -> None:
    rng = random.Random(SEED + 1)
    sets = make_sets(rng)
    await listing.fill(sets)

    def run(conn: Connection) -> list[str]:
        failures = []
        for container, names in sets.items():
            for _ in range(6):
                prefix = random_prefix(rng, names)
                delimiter = rng.choice(DELIMITERS)
                limit = rng.randint(1, 7)
                full = reference(names, prefix, delimiter, "", 10_000)[3]
                everything = actual(list_blobs(conn, container, prefix, delimiter, "",
                                               10_000))[3]
                items, pages = page_through(conn, container, prefix, delimiter, limit)
                if not (items == full == everything
                        and pages == max(1, -(-len(full) // limit))):
                    failures.append(f"{container} names={names!r} prefix={prefix!r} "
                                    f"delimiter={delimiter!r} limit={limit}: paged {items!r} "
                                    f"in {pages} pages, want {full!r}")
        return failures

    failures = await listing.db.read(run)
    assert not failures, f"seed={SEED + 1}, {len(failures)} mismatches, first:\n" + \
        "\n".join(failures[:5])


async def test_list_blobs_examples(listing: Listing) -> None:
    names = ["a/1", "a/2", "a/b/c", "b", "c/", "c/x", "d"]
    await listing.fill({"k": names})

    def run(conn: Connection) -> None:
        page = list_blobs(conn, "k", "", "/", "", 100)
        assert [m.blob for m in page.blobs] == ["b", "d"]
        assert page.prefixes == ("a/", "c/")
        assert page.next_marker is None

        page = list_blobs(conn, "k", "", "/", "", 2)
        assert [m.blob for m in page.blobs] == ["b"]
        assert page.prefixes == ("a/",)
        assert page.next_marker == "b"

        # A marker inside a rolled-up prefix does not repeat that prefix.
        page = list_blobs(conn, "k", "", "/", "a/1", 100)
        assert [m.blob for m in page.blobs] == ["b", "d"]
        assert page.prefixes == ("c/",)

        page = list_blobs(conn, "k", "a/", "/", "", 100)
        assert [m.blob for m in page.blobs] == ["a/1", "a/2"]
        assert page.prefixes == ("a/b/",)

        page = list_blobs(conn, "k", "a/", "", "a/1", 1)
        assert [m.blob for m in page.blobs] == ["a/2"]
        assert page.next_marker == "a/2"

        page = list_blobs(conn, "k", "zz", "/", "", 10)
        assert page == ListPage((), (), None)

        page = list_blobs(conn, "k", "", "", "d", 10)
        assert page == ListPage((), (), None)

        page = list_blobs(conn, "missing", "", "/", "", 10)
        assert page == ListPage((), (), None)

        # Listing returns full manifests.
        (manifest,) = list_blobs(conn, "k", "b", "", "", 10).blobs
        assert (manifest.container, manifest.blob, manifest.size) == ("k", "b", 1)

    await listing.db.read(run)


async def test_list_blobs_in_utf8_byte_order(listing: Listing) -> None:
    names = ["\uffff", "\U0001F600", "é", "z", "\ue000", "\ud7ff"]
    await listing.fill({"k": names})
    page = await listing.db.read(lambda conn: list_blobs(conn, "k", "", "", "", 100))
    assert [m.blob for m in page.blobs] == sorted(names, key=lambda n: n.encode())


async def test_get_manifest_and_container_stats(listing: Listing) -> None:
    await listing.fill({"b": ["x", "yy"], "a": [], "c": ["zzz"]})

    def run(conn: Connection) -> None:
        manifest = get_manifest(conn, "b", "yy")
        assert manifest is not None and manifest.size == 2
        assert get_manifest(conn, "b", "nope") is None
        assert get_manifest(conn, "a", "x") is None
        assert container_stats(conn, None) == [
            ContainerStats("a", "o", T, 0, 0), ContainerStats("b", "o", T, 2, 3),
            ContainerStats("c", "o", T, 1, 3)]
        assert [s.container for s in container_stats(conn, ["c", "missing", "a"])] == ["a", "c"]
        assert container_stats(conn, []) == []

    await listing.db.read(run)
