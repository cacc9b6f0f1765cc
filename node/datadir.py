"""A node's data dir: the names of what lives in it, its lock and its identity.

The node (``node.node``) and the offline operations on a data dir
(``node.admin``) share these, so a restore prepares exactly what a node opens,
and the lock that keeps two nodes off one data dir also keeps a restore off a
running node's.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from node.store.files import replace_durably

META_DB = "meta.sqlite3"
RAFT_DB = "raft.sqlite3"
SNAPSHOT_DIR = "snapshots"
IDENTITY_FILE = "node.json"
LOCK_FILE = "node.lock"


class DataDirInUse(Exception):
    """Another process (a node, or a restore) holds the data dir's lock."""


class BadIdentity(Exception):
    """``node.json`` exists but cannot be read or names no node."""


def lock(data_dir: Path) -> int:
    """Take the data dir's exclusive lock (creating the dir if needed); the open file
    descriptor holds it until closed. DataDirInUse if someone else holds it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirInUse(f"data dir {data_dir} is in use") from None
    return fd


def stored_node_id(data_dir: Path) -> str | None:
    """The node id ``node.json`` names; None if the data dir has none yet."""
    path = data_dir / IDENTITY_FILE
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise BadIdentity(f"cannot read {path}: {exc}") from None
    node_id = stored.get("node_id") if isinstance(stored, dict) else None
    if not isinstance(node_id, str):
        raise BadIdentity(f"{path} names no node id")
    return node_id


def write_identity(data_dir: Path, node_id: str) -> None:
    """``node.json`` for ``node_id``, written durably (a data dir keeps its node for good)."""
    path = data_dir / IDENTITY_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"node_id": node_id, "format": 1}))
    replace_durably(tmp, path)
