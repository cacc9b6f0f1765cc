"""``put``, ``get``, ``ls`` and ``rm``: blobs one at a time (``-r``: see recursive.py).

``-`` means stdin for ``put`` and stdout for ``get``; then stdout carries only
the blob's bytes (progress and notes go to stderr). A target ending in ``/``
(or a bare container for ``put``) takes the local file's name, as ``cp`` does.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

from tools.blobctl.commands import recursive
from tools.blobctl.commands.containers import list_containers
from tools.blobctl.commands.transfer import (PAGE_LIMIT, content_type_for, download_file,
                                             list_blobs, upload_file)
from tools.blobctl.context import Context
from tools.blobctl.errors import CliError, ExitCode
from tools.blobctl.paths import basename, split_target
from tools.blobctl.render import blobs_table, human_size

_RANGE = re.compile(r"^(\d+-\d*|-\d+)$")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("put", parents=[common], help="upload a file, stdin (-) or a directory (-r)",
                       description="Upload LOCAL (a file, '-' for stdin, or with -r a "
                                   "directory) to CONTAINER/BLOB (with -r: CONTAINER/PREFIX).")
    p.add_argument("source", metavar="LOCAL")
    p.add_argument("target", metavar="CONTAINER[/BLOB]")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="upload every file under the directory LOCAL; blob names are "
                        "PREFIX/relative/path")
    p.add_argument("--content-type", help="Content-Type (default: guessed from the file name)")
    p.add_argument("--if-none-match", action="store_true",
                   help="only create: fail with exit code 6 if the blob exists")
    p.add_argument("--if-match", metavar="ETAG", help="only replace this version of the blob")
    p.set_defaults(run=put)

    p = sub.add_parser("get", parents=[common], help="download a blob to a file, stdout (-) or "
                                                     "a directory (-r)",
                       description="Download CONTAINER/BLOB to LOCAL (a file, a directory, or "
                                   "'-' for stdout; default: the current directory). With -r, "
                                   "every blob under CONTAINER/PREFIX into the directory LOCAL.")
    p.add_argument("source", metavar="CONTAINER/BLOB")
    p.add_argument("target", metavar="LOCAL", nargs="?", default=".")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="download every blob under the prefix; names that would escape "
                        "LOCAL (.., absolute, NUL) are refused")
    p.add_argument("--range", metavar="A-B", help="only bytes A..B (also A- and -N: the last N)")
    p.set_defaults(run=get)

    p = sub.add_parser("ls", parents=[common], help="list blobs (no argument: containers)",
                       description="List the blobs of CONTAINER whose names start with PREFIX, "
                                   "sorted by name (UTF-8 byte order).")
    p.add_argument("target", metavar="CONTAINER[/PREFIX]", nargs="?")
    p.add_argument("-l", "--long", action="store_true",
                   help="size, time, etag and content type too")
    p.add_argument("-d", "--delimiter", default="",
                   help="group names by this delimiter (e.g. /) into common prefixes")
    p.add_argument("--all", action="store_true", help="follow every page (default: one)")
    p.add_argument("--limit", type=int, default=1000, help="names per page (1..10000)")
    p.add_argument("--marker", default="", help="start after this name")
    p.set_defaults(run=ls)

    p = sub.add_parser("rm", parents=[common], help="delete blobs")
    p.add_argument("targets", metavar="CONTAINER/BLOB", nargs="+")
    p.set_defaults(run=rm)


def put(ctx: Context, args: argparse.Namespace) -> ExitCode:
    container, name = split_target(args.target)
    headers: dict[str, str] = {}
    if args.content_type:
        headers["Content-Type"] = args.content_type
    if args.if_none_match:
        headers["If-None-Match"] = "*"
    if args.if_match:
        headers["If-Match"] = args.if_match
    if args.recursive:
        return recursive.upload_tree(ctx, Path(args.source), container, name, headers)
    if args.source == "-":
        if not name or name.endswith("/"):
            raise CliError("give a blob name for stdin: put - CONTAINER/BLOB", ExitCode.USAGE)
        answer = _put_stdin(ctx, container, name, headers)
    else:
        source = Path(args.source)
        if source.is_dir():
            raise CliError(f"{source} is a directory: use put -r", ExitCode.USAGE)
        if not name or name.endswith("/"):
            name += source.name
        with ctx.out.meter(name) as meter:
            answer = upload_file(ctx.client(), source, container, name, headers, meter)
    source_label = "stdin" if args.source == "-" else args.source
    ctx.out.result(answer, f"{source_label} -> {container}/{name} "
                           f"({human_size(answer.get('size'))}, etag {answer.get('etag')})")
    return ExitCode.OK


def _put_stdin(ctx: Context, container: str, name: str, headers: dict[str, str]) -> dict[str, Any]:
    """stdin as the body: its size if it is a regular file (``< file``), else chunked."""
    source = sys.stdin.buffer
    size = None
    try:
        info = os.fstat(source.fileno())
        if stat.S_ISREG(info.st_mode):
            size = info.st_size - source.tell()
    except (OSError, ValueError):
        size = None
    if "Content-Type" not in headers and (guess := content_type_for(name)):
        headers = {**headers, "Content-Type": guess}
    with ctx.out.meter(name) as meter:
        return ctx.client().upload({"container": container, "blob": name}, source, size,
                                   headers, meter)


def get(ctx: Context, args: argparse.Namespace) -> ExitCode:
    container, name = split_target(args.source)
    if args.range and not _RANGE.match(args.range):
        raise CliError(f"--range {args.range!r}: expected A-B, A- or -N", ExitCode.USAGE)
    if args.recursive:
        if args.target == "-":
            raise CliError("get -r needs a directory, not '-'", ExitCode.USAGE)
        return recursive.download_tree(ctx, container, name, Path(args.target))
    if not name:
        raise CliError(f"expected CONTAINER/BLOB, got {args.source!r}", ExitCode.USAGE)
    if args.target == "-":
        if ctx.out.json_mode:
            raise CliError("--json cannot share stdout with the blob's bytes ('-')",
                           ExitCode.USAGE)
        out = sys.stdout.buffer
        with ctx.out.meter(name) as meter:
            ctx.client().download({"container": container, "blob": name}, out, meter,
                                  byte_range=args.range)
        out.flush()
        return ExitCode.OK
    target = Path(args.target)
    if target.is_dir() or args.target.endswith(("/", os.sep)):
        target = target / basename(name)
    with ctx.out.meter(name) as meter:
        meta = download_file(ctx.client(), container, name, target, meter,
                             byte_range=args.range)
    ctx.out.result(meta, f"{container}/{name} -> {target} ({human_size(meta['size'])})")
    return ExitCode.OK


def ls(ctx: Context, args: argparse.Namespace) -> ExitCode:
    if args.target is None:
        return list_containers(ctx, args)
    if not 1 <= args.limit <= PAGE_LIMIT:
        raise CliError(f"--limit must be 1..{PAGE_LIMIT}", ExitCode.USAGE)
    container, prefix = split_target(args.target)
    page = list_blobs(ctx.client(), container, prefix=prefix, delimiter=args.delimiter,
                      marker=args.marker, limit=args.limit, all_pages=args.all)
    if ctx.out.json_mode:
        ctx.out.json(page)
    elif args.long:
        ctx.out.result(page, blobs_table(page["blobs"], page["prefixes"]))
    else:
        ctx.out.lines([*page["prefixes"], *(b["blob"] for b in page["blobs"])])
    if page["next_marker"]:
        ctx.out.note(f"(more after {page['next_marker']!r}: use --all, or "
                     f"--marker {page['next_marker']!r})")
    return ExitCode.OK


def rm(ctx: Context, args: argparse.Namespace) -> ExitCode:
    client = ctx.client()
    deleted = []
    for target in args.targets:
        container, name = split_target(target)
        if not name:
            raise CliError(f"expected CONTAINER/BLOB, got {target!r}", ExitCode.USAGE)
        client.call("DELETE", "/delete_data", query={"container": container, "blob": name})
        deleted.append({"container": container, "blob": name})
        if not ctx.out.json_mode:
            ctx.out.result(None, f"deleted {container}/{name}")
    ctx.out.result({"deleted": deleted})
    return ExitCode.OK
