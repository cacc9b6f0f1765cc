"""The moves ``put``, ``get`` and their recursive forms share: one file up, one blob
down into a file (atomically), and a listing followed across pages."""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from tools.blobctl.client import Client, Meter
from tools.blobctl.errors import CliError, ExitCode

#: The most pages ``--all`` follows: 10 million names at the node's largest page.
MAX_PAGES = 1000
PAGE_LIMIT = 10_000


def content_type_for(path: str) -> str | None:
    """The content type a file name suggests (``.jpg`` -> ``image/jpeg``), if any."""
    guessed, _ = mimetypes.guess_type(path, strict=False)
    return guessed


def upload_file(client: Client, path: Path, container: str, blob: str,
                headers: Mapping[str, str], meter: Meter) -> dict[str, Any]:
    """Send one local file as ``container/blob`` with its exact size (Content-Length)."""
    try:
        source = open(path, "rb")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    with source:
        size = os.fstat(source.fileno()).st_size
        all_headers = dict(headers)
        if "Content-Type" not in all_headers and (guess := content_type_for(str(path))):
            all_headers["Content-Type"] = guess
        return client.upload({"container": container, "blob": blob}, source, size,
                             all_headers, meter)


class _PartFile:
    """A temporary file next to the target, opened only once the node said yes."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.part = target.parent / f".{target.name[:40]}.blobctl-{os.getpid()}.part"
        self.file: IO[bytes] | None = None

    def open(self, _headers: dict[str, str]) -> None:
        try:
            self.file = open(self.part, "xb")
        except OSError as exc:
            raise CliError(f"cannot write {self.target}: {exc.strerror or exc}") from None

    def write(self, data: bytes, /) -> object:
        assert self.file is not None, "written before the answer's headers"
        try:
            return self.file.write(data)
        except OSError as exc:
            raise CliError(f"cannot write {self.target}: {exc.strerror or exc}") from None

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
            self.part.unlink(missing_ok=True)

    def commit(self) -> None:
        assert self.file is not None
        self.file.close()
        try:
            os.replace(self.part, self.target)
        except OSError as exc:
            self.part.unlink(missing_ok=True)
            raise CliError(f"cannot write {self.target}: {exc.strerror or exc}") from None


def download_file(client: Client, container: str, blob: str, target: Path, meter: Meter,
                  *, byte_range: str | None = None) -> dict[str, Any]:
    """Fetch ``container/blob`` into ``target``: all or nothing (a partial download or a
    refusal leaves no file behind, and an existing file is replaced only at the end)."""
    part = _PartFile(target)
    try:
        meta = client.download({"container": container, "blob": blob}, part, meter,
                               byte_range=byte_range, on_headers=part.open)
    except BaseException:
        part.discard()
        raise
    part.commit()
    return {**meta, "local": str(target)}


def list_blobs(client: Client, container: str, *, prefix: str = "", delimiter: str = "",
               marker: str = "", limit: int = 1000,
               all_pages: bool = False) -> dict[str, Any]:
    """``GET /list_blobs``, following ``next_marker`` when ``all_pages`` (bounded)."""
    blobs: list[dict[str, Any]] = []
    prefixes: list[str] = []
    for _ in range(MAX_PAGES):
        query = {"container": container, "limit": str(limit)}
        for key, value in (("prefix", prefix), ("delimiter", delimiter), ("marker", marker)):
            if value:
                query[key] = value
        page = client.call("GET", "/list_blobs", query=query)
        if not isinstance(page, dict):
            raise CliError("the node's listing is not a JSON object")
        blobs += page.get("blobs") or []
        prefixes += page.get("prefixes") or []
        next_marker = page.get("next_marker")
        if not all_pages or not next_marker:
            return {"container": container, "prefix": prefix, "delimiter": delimiter or None,
                    "blobs": blobs, "prefixes": prefixes, "next_marker": next_marker}
        if next_marker.encode() <= marker.encode():
            raise CliError(f"the listing went backwards at {next_marker!r}; stopped")
        marker = next_marker
    raise CliError(f"more than {MAX_PAGES} pages of blobs; narrow the prefix",
                   ExitCode.ERROR)
