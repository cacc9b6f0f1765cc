"""Wire format of metadata commands: encode/decode round trips and strict decoding."""

from __future__ import annotations

import dataclasses
import json

import pytest

from node.meta import commands as c

SAMPLES: list[c.Command] = [
    c.Bootstrap(cluster_id="cl-1", signing_key_hex="ab" * 32,
                admin_password_hash="$argon2id$v=19$x", now="2026-01-01T00:00:00.000Z"),
    c.CreateUser(username="alice", role="user", password_hash="h1",
                 now="2026-01-01T00:00:01.000Z"),
    c.CreateUser(username="root2", role="admin", password_hash="h2", now="t"),
    c.DeleteUser(username="alice"),
    c.Logout(username="alice", uid=7),
    c.SetPassword(username="alice", uid=7, password_hash="h3"),
    c.CreateContainer(container="photos", owner="alice", owner_uid=7, now="t"),
    c.DeleteContainer(container="photos"),
    c.Grant(container="photos", username="bob", permission="read"),
    c.Grant(container="photos", username="bob", permission="write"),
    c.Revoke(container="photos", username="bob"),
    c.PutBlob(container="photos", blob="dir/é/\U0001F600.jpg", size=10, etag="e" * 32,
              content_type="image/jpeg", now="t", chunk_size=4,
              chunks=("00" * 32, "11" * 32, "22" * 32)),
    c.PutBlob(container="photos", blob="empty", size=0, etag="d41d8cd98f00b204e9800998ecf8427e",
              content_type="application/octet-stream", now="t", chunk_size=4, chunks=()),
    c.PutBlob(container="photos", blob="b", size=1, etag="x", content_type="text/plain",
              now="t", chunk_size=4, chunks=("33" * 32,), if_match=("a", "b"),
              if_none_match_any=False),
    c.PutBlob(container="photos", blob="b", size=1, etag="x", content_type="text/plain",
              now="t", chunk_size=4, chunks=("33" * 32,), if_match=("*",)),
    c.PutBlob(container="photos", blob="b", size=1, etag="x", content_type="text/plain",
              now="t", chunk_size=4, chunks=("33" * 32,), if_none_match_any=True, since=41),
    c.PutBlob(container="photos", blob="small", size=3, etag="x", content_type="text/plain",
              now="t", chunk_size=4, chunks=(), inline="YWJj"),
    c.DeleteBlob(container="photos", blob="b"),
    c.CondemnChunks(chunks=("44" * 32, "55" * 32), now=1764000000.25, horizon_s=86400.0),
    c.CondemnChunks(chunks=(), now=0.0, horizon_s=60.0),
]


def test_samples_cover_every_command_type() -> None:
    assert {type(s) for s in SAMPLES} == set(c.COMMAND_TYPES.values())
    assert len(c.COMMAND_TYPES) == 12
    assert c.META_FORMAT == 2


@pytest.mark.parametrize("command", SAMPLES, ids=lambda s: type(s).__name__)
def test_round_trip(command: c.Command) -> None:
    data = c.encode(command)
    assert isinstance(data, bytes)
    decoded = c.decode(data)
    assert type(decoded) is type(command)
    assert decoded == command
    # Sequences come back as tuples, so the decoded command is hashable like the original.
    assert hash(decoded) == hash(command)
    # Encoding is a pure function of the command: re-encoding gives the same bytes.
    assert c.encode(decoded) == data


@pytest.mark.parametrize("command", SAMPLES, ids=lambda s: type(s).__name__)
def test_encoded_form_is_versioned_json(command: c.Command) -> None:
    body = json.loads(c.encode(command))
    assert body["v"] == c.FORMAT_VERSION
    assert body["t"] == command.kind
    # Every field without a default, and those with a default only when they differ.
    assert set(body) - {"v", "t"} == {
        f.name for f in dataclasses.fields(command)
        if f.default is dataclasses.MISSING or getattr(command, f.name) != f.default}


#: A PutBlob as the first release (format 1) wrote it: the fields it knew, all present.
FORMAT_1_PUT = (b'{"v":1,"t":"put_blob","container":"photos","blob":"b","size":1,"etag":"x",'
                b'"content_type":"text/plain","now":"t","chunk_size":4,"chunks":["' +
                b"33" * 32 + b'"],"if_match":null,"if_none_match_any":false,"since":0}')
FORMAT_1_FIELDS = {"container", "blob", "size", "etag", "content_type", "now", "chunk_size",
                   "chunks", "if_match", "if_none_match_any", "since"}


def test_a_command_that_uses_no_new_field_decodes_on_a_format_1_node() -> None:
    """Rolling upgrades: what a newer node writes without using a newer feature carries
    only fields a format-1 node knows (its decoder refuses unknown ones)."""
    put = c.PutBlob(container="photos", blob="b", size=1, etag="x",
                    content_type="text/plain", now="t", chunk_size=4, chunks=("33" * 32,))
    assert set(json.loads(c.encode(put))) - {"v", "t"} <= FORMAT_1_FIELDS
    assert c.decode(FORMAT_1_PUT) == put  # and the other way round
    inline = dataclasses.replace(put, chunks=(), inline="YQ==")
    assert "inline" in json.loads(c.encode(inline))


def test_non_ascii_is_kept_verbatim() -> None:
    command = c.DeleteBlob(container="c", blob="é\U0001F600")
    assert "é\U0001F600".encode() in c.encode(command)


def _body(command: c.Command) -> dict:
    return json.loads(c.encode(command))


@pytest.mark.parametrize("version", [None, 0, 2, "1", 1.5])
def test_wrong_or_missing_version_is_rejected(version: object) -> None:
    body = _body(SAMPLES[3])
    if version is None:
        del body["v"]
    else:
        body["v"] = version
    with pytest.raises(ValueError):
        c.decode(json.dumps(body).encode())


@pytest.mark.parametrize("command", SAMPLES, ids=lambda s: type(s).__name__)
def test_unknown_field_is_rejected(command: c.Command) -> None:
    body = _body(command)
    body["surprise"] = 1
    with pytest.raises(ValueError, match="surprise"):
        c.decode(json.dumps(body).encode())


def test_unknown_command_type_is_rejected() -> None:
    body = _body(SAMPLES[3])
    body["t"] = "format_disk"
    with pytest.raises((ValueError, KeyError)):
        c.decode(json.dumps(body).encode())


def test_missing_field_is_rejected() -> None:
    body = _body(c.Logout(username="a", uid=1))
    del body["uid"]
    with pytest.raises((ValueError, TypeError)):
        c.decode(json.dumps(body).encode())


def test_not_json_is_rejected() -> None:
    with pytest.raises(ValueError):
        c.decode(b"\xff not json")
