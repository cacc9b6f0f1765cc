"""``blobstore-node backup`` and ``blobstore-node restore``: the command lines of
``node.admin.backup``.

Each prints one JSON object on stdout (what was copied or restored, for scripts
and for the operator's records) and a line of next steps on stderr. Exit codes:
0 done, 1 refused or failed (the message says why; nothing was changed), 2 usage.
``--data-dir`` and ``--node-id`` default to ``BLOBSTORE_DATA_DIR`` and
``BLOBSTORE_NODE_ID``, as for the node itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import trio

from node.admin.backup import BackupError, backup, restore

SUBCOMMANDS = ("backup", "restore")


def _data_dir_argument(parser: argparse.ArgumentParser, environ: Mapping[str, str],
                       help: str) -> None:
    """``--data-dir DIR``, required unless BLOBSTORE_DATA_DIR gives it (as for the node)."""
    default = environ.get("BLOBSTORE_DATA_DIR")
    parser.add_argument("--data-dir", default=default, required=default is None, type=Path,
                        metavar="DIR", help=f"{help} (default: $BLOBSTORE_DATA_DIR)")


def _parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blobstore-node", allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)

    b = commands.add_parser(
        "backup", allow_abbrev=False,
        help="copy a node's metadata to a file (the node may be running)",
        description="Copy the metadata (users, containers, grants, manifests, small blobs, "
        "the token signing key) of the node whose data dir is DIR to FILE: a consistent "
        "copy of one committed moment, taken while the node serves. Chunk files are not "
        "included. Run it as the node's user, on the node's machine.")
    _data_dir_argument(b, environ, "the node's data dir")
    b.add_argument("--out", required=True, type=Path, metavar="FILE",
                   help="the backup file (replaced atomically if it exists)")

    r = commands.add_parser(
        "restore", allow_abbrev=False,
        help="prepare a data dir as a new one-node cluster holding a backup's metadata",
        description="Prepare DIR (which may hold chunk files, but no metadata, and no "
        "running node) so that a node started on it without --join is the only voter of "
        "a new cluster whose metadata is the backup. Start the other nodes with empty "
        "metadata and --join it.")
    _data_dir_argument(r, environ, "the data dir to prepare")
    r.add_argument("--from", dest="source", required=True, type=Path, metavar="FILE",
                   help="the backup file (only read)")
    r.add_argument("--node-id", default=environ.get("BLOBSTORE_NODE_ID"), metavar="ID",
                   help="the node that will run on DIR (default: the one DIR's node.json "
                   "names, else $BLOBSTORE_NODE_ID)")
    r.add_argument("--revoke-tokens", action="store_true",
                   help="make every token issued before the restore invalid (logouts "
                   "after the backup are otherwise undone)")
    return parser


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    """Run one subcommand (``argv[0]`` is ``backup`` or ``restore``); the exit code."""
    args = _parser(os.environ if environ is None else environ).parse_args(list(argv))
    try:
        if args.command == "backup":
            umask = os.umask(0o077)  # the copy and its staging file are private from the start
            try:
                info = trio.run(backup, args.data_dir, args.out)
            finally:
                os.umask(umask)
            print(json.dumps({"backup": str(args.out), **info.to_json()}))
            print(f"blobstore-node: metadata at applied index {info.applied_index} "
                  f"({info.blobs} blobs, {info.users} users) copied to {args.out}; chunk "
                  "files are not in it", file=sys.stderr)
        else:
            restored = trio.run(lambda: restore(args.data_dir, args.source, args.node_id,
                                                revoke_tokens=args.revoke_tokens))
            print(json.dumps({"data_dir": str(args.data_dir), **restored.to_json()}))
            print(f"blobstore-node: {args.data_dir} holds the backup at applied index "
                  f"{restored.snapshot.index}; start node {restored.node_id} on it without "
                  "--join, then the other nodes with empty metadata and --join it",
                  file=sys.stderr)
    except (BackupError, OSError) as exc:
        print(f"blobstore-node {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0
