"""Metadata commands: every change to users, containers, grants and manifests.

A command carries every input its effect depends on (timestamps, password
hashes, keys), so applying the same commands in the same order gives the same
state and the same results on every node. The coordinator replicates their
encoded form through Raft and each node applies the committed entries to its
own sqlite copy.

Commands are frozen dataclasses with JSON-friendly fields; ``encode`` and
``decode`` are their wire and log format (versioned by the ``v`` key).

Compatibility across versions during a rolling upgrade: a field is only ever
added with a default, and ``encode`` leaves out every field that holds its
default, so a command that uses no new feature decodes on older nodes too.
A node uses a feature that older nodes cannot decode only once every member
says (in gossip, ``META_FORMAT``) that it can; see ``node.node``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

Role = Literal["user", "admin"]
Permission = Literal["read", "write"]

FORMAT_VERSION = 1
#: What this node's ``decode`` understands: 2 added ``PutBlob.inline``.
META_FORMAT = 2


@dataclass(frozen=True, slots=True)
class Command:
    kind: ClassVar[str] = "command"


@dataclass(frozen=True, slots=True)
class Bootstrap(Command):
    """First command of a new cluster: the token signing key and the built-in admin."""

    kind: ClassVar[str] = "bootstrap"
    cluster_id: str
    signing_key_hex: str
    admin_password_hash: str
    now: str


@dataclass(frozen=True, slots=True)
class CreateUser(Command):
    kind: ClassVar[str] = "create_user"
    username: str
    role: Role
    password_hash: str
    now: str


@dataclass(frozen=True, slots=True)
class DeleteUser(Command):
    kind: ClassVar[str] = "delete_user"
    username: str


@dataclass(frozen=True, slots=True)
class Logout(Command):
    """Bumps the user's token epoch: every token issued before it stops working."""

    kind: ClassVar[str] = "logout"
    username: str
    uid: int


@dataclass(frozen=True, slots=True)
class SetPassword(Command):
    """New hash and a new token epoch, for the user whose id was checked (not a namesake)."""

    kind: ClassVar[str] = "set_password"
    username: str
    uid: int
    password_hash: str


@dataclass(frozen=True, slots=True)
class CreateContainer(Command):
    kind: ClassVar[str] = "create_container"
    container: str
    owner: str
    owner_uid: int
    now: str


@dataclass(frozen=True, slots=True)
class DeleteContainer(Command):
    kind: ClassVar[str] = "delete_container"
    container: str


@dataclass(frozen=True, slots=True)
class Grant(Command):
    kind: ClassVar[str] = "grant"
    container: str
    username: str
    permission: Permission


@dataclass(frozen=True, slots=True)
class Revoke(Command):
    kind: ClassVar[str] = "revoke"
    container: str
    username: str


@dataclass(frozen=True, slots=True)
class PutBlob(Command):
    """Commit a manifest; the conditions are checked against the state at apply time."""

    kind: ClassVar[str] = "put_blob"
    container: str
    blob: str
    size: int
    etag: str
    content_type: str
    now: str
    chunk_size: int
    chunks: tuple[str, ...]
    if_match: tuple[str, ...] | None = None
    if_none_match_any: bool = False
    #: The applied index the uploader saw before it wrote any chunk: the commit is
    #: refused if one of the chunks was condemned by the collector after it.
    since: int = 0
    #: A small blob's bytes (base64), stored in the metadata instead of chunks.
    inline: str | None = None


@dataclass(frozen=True, slots=True)
class DeleteBlob(Command):
    kind: ClassVar[str] = "delete_blob"
    container: str
    blob: str


@dataclass(frozen=True, slots=True)
class CondemnChunks(Command):
    """The collector's claim on chunks no manifest references; the result names the ones
    condemned (those still unreferenced when this applies).

    ``horizon_s`` bounds how long an upload may run: condemnations older than that (by
    the submitters' clocks, ``now``) are forgotten, and commits of uploads that began
    before them are refused.
    """

    kind: ClassVar[str] = "condemn_chunks"
    chunks: tuple[str, ...]
    now: float
    horizon_s: float


COMMAND_TYPES: dict[str, type[Command]] = {
    cls.kind: cls
    for cls in (Bootstrap, CreateUser, DeleteUser, Logout, SetPassword, CreateContainer,
                DeleteContainer, Grant, Revoke, PutBlob, DeleteBlob, CondemnChunks)
}


def encode(command: Command) -> bytes:
    body: dict[str, Any] = {"v": FORMAT_VERSION, "t": command.kind}
    for f in dataclasses.fields(command):
        value = getattr(command, f.name)
        if f.default is dataclasses.MISSING or value != f.default:
            body[f.name] = value
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def decode(data: bytes) -> Command:
    body = json.loads(data)
    if body.pop("v", None) != FORMAT_VERSION:
        raise ValueError("unsupported command format")
    cls = COMMAND_TYPES[body.pop("t")]
    fields = {f.name for f in dataclasses.fields(cls)}
    if set(body) - fields:
        raise ValueError(f"unexpected fields for {cls.kind}: {sorted(set(body) - fields)}")
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in body.items()}
    return cls(**args)
