"""Blob names and local paths: the pure mapping between them, and its safety rules.

A recursive download writes one file per blob under a target directory; the
blob names come from the server and may say anything, so a name is only
accepted if it is a clean relative path: no empty, ``.`` or ``..`` segment, no
leading ``/`` (absolute), no NUL. Nothing here touches the disk except
``check_inside``, which resolves symlinks already present under the target.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from tools.blobctl.errors import CliError, ExitCode


def split_target(text: str) -> tuple[str, str]:
    """``CONTAINER[/NAME]`` -> (container, name); the name may be empty or hold ``/``."""
    container, _, name = text.partition("/")
    if not container:
        raise CliError(f"expected CONTAINER/NAME, got {text!r}", ExitCode.USAGE)
    return container, name


def join_prefix(prefix: str, relative: str) -> str:
    """The blob name for ``relative`` under ``prefix``, which acts as a directory."""
    if not prefix:
        return relative
    return prefix if not relative else f"{prefix.rstrip('/')}/{relative}"


def directory_prefix(prefix: str) -> str:
    """A listing prefix meaning "this directory": ``a`` -> ``a/``; empty stays empty."""
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def unsafe_reason(relative: str) -> str | None:
    """Why ``relative`` (a blob name minus its prefix) must not become a local path,
    or None if it is a clean relative path."""
    if not relative:
        return "empty name"
    if "\x00" in relative:
        return "contains NUL"
    if relative.startswith("/"):
        return "absolute path"
    segments = relative.split("/")
    if ".." in segments:
        return "contains '..'"
    if "" in segments or "." in segments:
        return "empty or '.' path segment"
    if os.sep != "/" and os.sep in relative:
        return f"contains {os.sep!r}"
    return None


def local_path(root: Path, relative: str) -> Path:
    """Where the blob ``relative`` goes under ``root``; raises if the name is unsafe."""
    reason = unsafe_reason(relative)
    if reason is not None:
        raise CliError(f"refusing blob name {relative!r}: {reason}", ExitCode.PARTIAL)
    return root.joinpath(*PurePosixPath(relative).parts)


def check_inside(root: Path, target: Path) -> None:
    """Refuse ``target`` if a symlink under ``root`` would lead it elsewhere."""
    real_root = root.resolve()
    real_parent = target.parent.resolve()
    if real_parent != real_root and real_root not in real_parent.parents:
        raise CliError(f"refusing {target}: a symlink leads it out of {root}",
                       ExitCode.PARTIAL)


def relative_name(path: Path, root: Path) -> str:
    """A local file's path under ``root`` as a blob name suffix (``/`` separated, UTF-8)."""
    relative = path.relative_to(root).as_posix()
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        raise CliError(f"local file name {relative!r} is not valid UTF-8",
                       ExitCode.BAD_REQUEST) from None
    return relative


def basename(blob: str) -> str:
    """The last segment of a blob name, for ``get C/a/b.txt DIR`` -> ``DIR/b.txt``."""
    name = blob.rsplit("/", 1)[-1]
    if unsafe_reason(name) is not None:
        raise CliError(f"cannot make a local file name from blob {blob!r}; give LOCAL",
                       ExitCode.USAGE)
    return name
