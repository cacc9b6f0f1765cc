"""``put -r DIR CONTAINER/PREFIX`` and ``get -r CONTAINER/PREFIX DIR``: directory trees.

A file ``DIR/a/b.txt`` becomes the blob ``PREFIX/a/b.txt`` and back. PREFIX
acts as a directory (``photos/2024`` means ``2024/...``, not ``2024x``).

Downloads trust no blob name: a name that would land outside DIR (``..``
segments, an absolute path, NUL, or a symlink already in DIR that leads out)
is skipped with a line saying why, the rest is downloaded, and blobctl ends
with exit code 9 (``PARTIAL``). A name that clashes with another (``a`` and
``a/b``) is skipped the same way. Uploads walk DIR in sorted order, follow
symlinked files but not symlinked directories, and stop at the first error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.progress import Progress, TaskID

from tools.blobctl.commands.transfer import download_file, list_blobs, upload_file
from tools.blobctl.context import Context
from tools.blobctl.errors import CliError, ExitCode
from tools.blobctl.output import BarMeter
from tools.blobctl.paths import (check_inside, directory_prefix, join_prefix, local_path,
                                 relative_name, unsafe_reason)
from tools.blobctl.render import human_size


def local_files(root: Path) -> list[tuple[Path, int]]:
    """Every regular file under ``root`` (sorted, symlinked dirs not followed) with its size."""
    if not root.is_dir():
        raise CliError(f"{root} is not a directory", ExitCode.USAGE)
    found: list[tuple[Path, int]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            try:
                info = path.stat()
            except OSError as exc:
                raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
            if path.is_file():
                found.append((path, info.st_size))
    return found


def upload_tree(ctx: Context, root: Path, container: str, prefix: str,
                headers: Mapping[str, str]) -> ExitCode:
    files = local_files(root)
    names = [join_prefix(prefix, relative_name(path, root)) for path, _ in files]
    total = sum(size for _, size in files)
    client = ctx.client()
    uploaded: list[dict[str, Any]] = []
    with ctx.out.progress() as progress:
        overall = progress.add_task(f"{len(files)} files", total=total)
        for (path, _), name in zip(files, names):
            meter = _TreeMeter(BarMeter(progress, name), progress, overall)
            try:
                answer = upload_file(client, path, container, name, headers, meter)
            finally:
                meter.close()
            uploaded.append({**answer, "local": str(path)})
    ctx.out.result({"uploaded": uploaded, "count": len(uploaded), "bytes": total},
                   f"uploaded {len(uploaded)} files ({human_size(total)}) from {root} to "
                   f"{join_prefix(container, prefix)}")
    return ExitCode.OK


def download_tree(ctx: Context, container: str, prefix: str, root: Path) -> ExitCode:
    client = ctx.client()
    prefix = directory_prefix(prefix)
    blobs = list_blobs(client, container, prefix=prefix, limit=1000, all_pages=True)["blobs"]
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {root}: {exc.strerror or exc}") from None
    downloaded: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    with ctx.out.progress() as progress:
        overall = progress.add_task(f"{len(blobs)} blobs",
                                    total=sum(int(b.get("size") or 0) for b in blobs))
        for blob in blobs:
            name = str(blob["blob"])
            reason = _refusal(root, name[len(prefix):])
            if reason is not None:
                skipped.append({"blob": name, "reason": reason})
                ctx.out.note(f"blobctl: skipped {name!r}: {reason}")
                progress.advance(overall, int(blob.get("size") or 0))
                continue
            target = local_path(root, name[len(prefix):])
            meter = _TreeMeter(BarMeter(progress, name), progress, overall)
            try:
                downloaded.append(download_file(client, container, name, target, meter))
            finally:
                meter.close()
    ctx.out.result({"downloaded": downloaded, "skipped": skipped},
                   f"downloaded {len(downloaded)} blobs "
                   f"({human_size(sum(d['size'] for d in downloaded))}) to {root}")
    if skipped:
        raise CliError(f"skipped {len(skipped)} of {len(blobs)} blobs (see above)",
                       ExitCode.PARTIAL)
    return ExitCode.OK


def _refusal(root: Path, relative: str) -> str | None:
    """Why the blob ``relative`` may not be written under ``root`` (None: it may, and its
    directory now exists)."""
    reason = unsafe_reason(relative)
    if reason is not None:
        return f"{reason}: it would escape {root}"
    target = local_path(root, relative)
    try:
        check_inside(root, target)
    except CliError as exc:
        return exc.message
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create {target.parent} ({exc.strerror or exc}): another blob's file"
    if target.is_dir():
        return f"{target} is a directory (another blob's)"
    return None


class _TreeMeter:
    """One file's bar that also advances the overall bar of the tree."""

    def __init__(self, bar: BarMeter, progress: Progress, overall: TaskID) -> None:
        self._bar = bar
        self._progress = progress
        self._overall = overall

    def start(self, total: int | None) -> None:
        self._bar.start(total)

    def advance(self, n: int) -> None:
        self._bar.advance(n)
        self._progress.advance(self._overall, n)

    def close(self) -> None:
        self._bar.close()
