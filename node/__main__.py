"""``blobstore-node``: command line -> NodeConfig -> trio.run(Node.run).

``blobstore-node backup|restore ...`` are operations on a data dir instead
(``node.admin``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import trio

from node.admin import cli as admin
from node.config import load_config
from node.errors import ConfigError
from node.logs import configure
from node.node import Node

log = logging.getLogger("node")


async def _watch_signals(node: Node) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal received: leaving gracefully",
                     extra={"signal": signal.Signals(signum).name})
            node.stop()


async def _run(node: Node) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_signals, node)
        try:
            await node.run()
        finally:
            nursery.cancel_scope.cancel()


def _leaves(group: BaseExceptionGroup) -> list[ConfigError]:
    """The ConfigErrors of a group, however deeply nurseries nested it."""
    found: list[ConfigError] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc))
        elif isinstance(exc, ConfigError):
            found.append(exc)
    return found


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in admin.SUBCOMMANDS:  # ``blobstore-node backup ...``: not a node
        return admin.main(args)
    try:
        config = load_config(args, os.environ)
    except ConfigError as exc:
        print(f"blobstore-node: {exc}", file=sys.stderr)
        return 2
    configure(config.log_level)
    node = Node(config)
    failed: list[ConfigError] = []
    try:
        trio.run(_run, node)
    except* ConfigError as group:
        failed.extend(_leaves(group))
    if failed:
        print(f"blobstore-node: {failed[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
