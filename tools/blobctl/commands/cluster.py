"""``cluster`` (admin) and ``health``: what an operator looks at first.

``cluster`` shows ``GET /cluster`` of the node blobctl talks to (members,
coordinator and term, voters and learners, replica counts, chunk repair
state) plus each live member's own ``GET /health``, asked in parallel with a
short timeout, so one screen shows whether every node serves and agrees on
the coordinator. ``--watch`` redraws it every ``--interval`` seconds (Ctrl-C
ends it with exit code 0; ``--count N`` after N screens); a refresh that
finds the node unavailable is shown on the screen, not fatal. With
``--json --watch`` every refresh is one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from rich.console import RenderableType
from rich.live import Live

from tools.blobctl.context import Context
from tools.blobctl.errors import CliError, ExitCode
from tools.blobctl.render import cluster_view, health_view

#: How long a member's /health may take before it shows as unreachable.
MEMBER_HEALTH_TIMEOUT_S = 2.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("cluster", parents=[common], help="members, coordinator, replication "
                                                         "health (admin)",
                       description="GET /cluster of this node (members, coordinator and "
                                   "term, voters and learners, replica counts, chunk repair "
                                   "state) and each live member's own GET /health. Admin only.")
    p.add_argument("--watch", "-w", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--interval", type=float, default=2.0, metavar="S",
                   help="seconds between refreshes (default 2)")
    p.add_argument("--count", type=int, default=None, metavar="N",
                   help="with --watch: stop after N refreshes")
    p.set_defaults(run=cluster)

    p = sub.add_parser("health", parents=[common], help="is this node serving? (no login)",
                       description="GET /health. Exit code 0 if the node says ok, 7 if it "
                                   "is degraded or cannot be reached.")
    p.set_defaults(run=health)


def health(ctx: Context, args: argparse.Namespace) -> ExitCode:
    answer = ctx.client().call("GET", "/health", auth=False)
    if not isinstance(answer, dict):
        raise CliError("the node's /health answer is not a JSON object")
    ctx.out.result(answer, health_view(answer))
    return ExitCode.OK if answer.get("status") == "ok" else ExitCode.UNAVAILABLE


def snapshot(ctx: Context) -> dict[str, Any]:
    """``/cluster`` of this node with ``member_health``: each live member's ``/health``
    (or why it could not be asked)."""
    view = ctx.client().call("GET", "/cluster")
    if not isinstance(view, dict):
        raise CliError("the node's /cluster answer is not a JSON object")
    scheme = urlsplit(ctx.creds.url).scheme
    members = [m for m in view.get("members") or []
               if m.get("state") in ("alive", "suspect") and m.get("http")]

    def ask(member: Mapping[str, Any]) -> dict[str, Any]:
        client = ctx.client_for(f"{scheme}://{member['http']}")
        client.timeout_s = min(ctx.timeout_s, MEMBER_HEALTH_TIMEOUT_S)
        try:
            answer = client.call("GET", "/health", auth=False)
        except CliError as exc:
            return {"error": exc.message}
        return answer if isinstance(answer, dict) else {"error": "not a JSON object"}

    healths: dict[str, Any] = {}
    if members:
        with ThreadPoolExecutor(min(len(members), 16)) as pool:
            for member, answer in zip(members, pool.map(ask, members)):
                healths[str(member["node_id"])] = answer
    return {**view, "member_health": healths}


def _screen(data: Mapping[str, Any], error: str | None = None) -> RenderableType:
    healths = {node: (h["error"] if "error" in h else h)
               for node, h in (data.get("member_health") or {}).items()}
    return cluster_view(data, healths, error=error)


def cluster(ctx: Context, args: argparse.Namespace) -> ExitCode:
    if args.interval <= 0 or (args.count is not None and args.count < 1):
        raise CliError("--interval must be > 0 and --count >= 1", ExitCode.USAGE)
    if not args.watch:
        data = snapshot(ctx)
        ctx.out.result(data, _screen(data))
        return ExitCode.OK
    try:
        _watch(ctx, args.interval, args.count)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends
    return ExitCode.OK


def _watch(ctx: Context, interval_s: float, count: int | None) -> None:
    """Refresh ``count`` times (forever if None), ``interval_s`` apart."""
    last: dict[str, Any] = {}
    shown = 0
    next_at = time.monotonic()
    with _display(ctx) as show:
        while count is None or shown < count:
            error = None
            try:
                last = snapshot(ctx)
            except CliError as exc:
                if exc.exit_code != ExitCode.UNAVAILABLE:
                    raise
                error = exc.message
            show(last, error)
            shown += 1
            if count is not None and shown >= count:
                return
            next_at += interval_s
            time.sleep(max(0.0, next_at - time.monotonic()))


Show = Callable[[dict[str, Any], "str | None"], None]


@contextmanager
def _display(ctx: Context) -> Iterator[Show]:
    """How each refresh is shown: a JSON line, a live screen, or (not a terminal) printed
    one after another."""
    if ctx.out.json_mode:
        def line(data: dict[str, Any], error: str | None) -> None:
            sys.stdout.write(json.dumps(data if error is None else {"error": error}) + "\n")
            sys.stdout.flush()
        yield line
    elif ctx.out.out.is_terminal:
        with Live(console=ctx.out.out, auto_refresh=False) as live:
            yield lambda data, error: live.update(_screen(data, error), refresh=True)
    else:
        yield lambda data, error: ctx.out.out.print(_screen(data, error))
