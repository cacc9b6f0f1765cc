"""Making a file's installation survive a power cut, not just a process crash.

A file written under a temporary name is fsynced, renamed over its final name,
and then its directory is fsynced, so the rename itself is durable. Used by the
chunk store, the metadata snapshots and the Raft snapshot transfer.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (a new or renamed file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(tmp: Path, final: Path) -> None:
    """fsync ``tmp``, rename it over ``final``, fsync the directory."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)
