"""The metadata's records, as frozen values handed out by the state machine."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from node.meta.commands import Permission, Role


@dataclass(frozen=True, slots=True)
class User:
    username: str
    uid: int
    role: Role
    epoch: int
    password_hash: str
    created_at: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    owner: str
    owner_uid: int
    created_at: str
    grants: Mapping[int, Permission] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Manifest:
    container: str
    blob: str
    size: int
    etag: str
    content_type: str
    last_modified: str
    chunk_size: int
    chunks: tuple[bytes, ...]
    version: int


@dataclass(frozen=True, slots=True)
class ContainerStats:
    container: str
    owner: str
    created_at: str
    blob_count: int
    bytes: int


@dataclass(frozen=True, slots=True)
class ListPage:
    blobs: tuple[Manifest, ...]
    prefixes: tuple[str, ...]
    next_marker: str | None
