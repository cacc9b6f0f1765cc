"""Rich tables for people; the same data goes out as JSON with ``--json``.

Every string that came from the server (names, content types) is shown as
plain text, never interpreted as rich markup: a blob called ``[red]x`` is
printed as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_STATE_STYLE = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "dim"}


def human_size(n: int | None) -> str:
    """``1536`` -> ``1.5 KiB`` (bytes stay exact below 1 KiB)."""
    if n is None:
        return "-"
    size = float(n)
    for unit in _UNITS:
        if size < 1024 or unit == _UNITS[-1]:
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def short_time(rfc3339: str | None) -> str:
    """An RFC 3339 UTC time to the second: ``2026-12-03T10:00:00.123Z`` ->
    ``2026-12-03 10:00:00`` (the API's times are all UTC)."""
    if not rfc3339:
        return "-"
    date, _, clock = rfc3339.partition("T")
    clock = clock.split(".")[0].rstrip("Z").split("+")[0]
    return f"{date} {clock}" if clock else date


def plain(value: object) -> Text:
    """A table cell that is never parsed as markup."""
    return Text("-" if value is None or value == "" else str(value))


def containers_table(containers: Sequence[Mapping[str, Any]]) -> RenderableType:
    if not containers:
        return Text("no containers", style="dim")
    table = Table(box=None, header_style="bold")
    table.add_column("container")
    table.add_column("owner")
    table.add_column("blobs", justify="right")
    table.add_column("size", justify="right")
    table.add_column("created (UTC)", no_wrap=True)
    for c in containers:
        table.add_row(plain(c.get("container")), plain(c.get("owner")),
                      plain(c.get("blob_count")), plain(human_size(c.get("bytes"))),
                      plain(short_time(c.get("created_at"))))
    return table


def blobs_table(blobs: Sequence[Mapping[str, Any]], prefixes: Sequence[str]) -> RenderableType:
    """``ls -l``: common prefixes first (as ``PRE``), then one row per blob."""
    if not blobs and not prefixes:
        return Text("no blobs", style="dim")
    table = Table(box=None, header_style="bold")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("last modified (UTC)", no_wrap=True)
    table.add_column("etag", no_wrap=True)
    table.add_column("content type", no_wrap=True)
    table.add_column("name", no_wrap=True)
    for prefix in prefixes:
        table.add_row(Text("PRE", style="cyan"), plain(""), plain(""), plain(""),
                      Text(prefix, style="cyan"))
    for b in blobs:
        table.add_row(plain(human_size(b.get("size"))), plain(short_time(b.get("last_modified"))),
                      plain(b.get("etag")), plain(b.get("content_type")), plain(b.get("blob")))
    return table


def users_table(users: Sequence[Mapping[str, Any]]) -> RenderableType:
    table = Table(box=None, header_style="bold")
    table.add_column("username")
    table.add_column("role")
    table.add_column("created (UTC)", no_wrap=True)
    for u in users:
        role = str(u.get("role", ""))
        table.add_row(plain(u.get("username")), Text(role, style="bold" if role == "admin"
                                                     else ""),
                      plain(short_time(u.get("created_at"))))
    return table


def health_view(health: Mapping[str, Any]) -> RenderableType:
    status = str(health.get("status"))
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("node", plain(health.get("node_id")))
    table.add_row("status", Text(status, style="green" if status == "ok" else "red"))
    table.add_row("coordinator", plain(health.get("coordinator") or "none"))
    table.add_row("members alive", plain(health.get("members")))
    return table


def cluster_view(cluster: Mapping[str, Any], healths: Mapping[str, Mapping[str, Any] | str],
                 *, error: str | None = None) -> RenderableType:
    """The whole ``blobctl cluster`` screen: summary, members, replication, chunks.

    ``healths`` maps a member's id to its own ``/health`` answer, or to why it
    could not be asked.
    """
    coordinator = cluster.get("coordinator") or {}
    voters = list(coordinator.get("voters") or [])
    learners = list(coordinator.get("learners") or [])
    status = str(cluster.get("status"))
    summary = Text.assemble(
        ("node ", "dim"), str(cluster.get("node_id")), " (",
        (status, "green" if status == "ok" else "red"), ")   ",
        ("coordinator ", "dim"), str(coordinator.get("node_id") or "none"),
        ("  term ", "dim"), str(coordinator.get("term", "-")),
        ("   voters ", "dim"), ", ".join(voters) or "-",
        ("   learners ", "dim"), ", ".join(learners) or "-")
    parts: list[RenderableType] = [summary, Text()]
    if error:
        parts.append(Text(f"refresh failed: {error}", style="bold red"))
    parts += [_members_table(cluster.get("members") or [], healths, coordinator, voters,
                             learners), Text(),
              _replication_table(cluster.get("replicas") or {}, cluster.get("chunks") or {})]
    return Group(*parts)


def _members_table(members: Sequence[Mapping[str, Any]],
                   healths: Mapping[str, Mapping[str, Any] | str],
                   coordinator: Mapping[str, Any], voters: list[str],
                   learners: list[str]) -> Table:
    table = Table(title="members", title_justify="left", title_style="bold", box=None,
                  header_style="bold")
    for name in ("id", "http", "gossip", "state", "inc", "raft", "health", "sees"):
        table.add_column(name, justify="right" if name == "inc" else "left", no_wrap=True)
    for m in sorted(members, key=lambda m: str(m.get("node_id"))):
        node_id = str(m.get("node_id"))
        state = str(m.get("state"))
        role = ("coordinator" if node_id == coordinator.get("node_id") else
                "voter" if node_id in voters else "learner" if node_id in learners else "-")
        table.add_row(plain(node_id), plain(m.get("http")), plain(m.get("gossip")),
                      Text(state, style=_STATE_STYLE.get(state, "")),
                      plain(m.get("incarnation")), plain(role),
                      *_health_cells(healths.get(node_id)))
    return table


def _health_cells(health: Mapping[str, Any] | str | None) -> tuple[Text, Text]:
    """The member's own /health: its status, and the coordinator it sees."""
    if health is None:
        return Text("-", style="dim"), Text("-", style="dim")
    if isinstance(health, str):
        return Text("unreachable", style="red"), Text(health, style="dim")
    status = str(health.get("status"))
    return (Text(status, style="green" if status == "ok" else "red"),
            plain(health.get("coordinator") or "none"))


def _replication_table(replicas: Mapping[str, Any], chunks: Mapping[str, Any]) -> Table:
    table = Table(title="replication", title_justify="left",
                  title_style="bold", box=None, show_header=False)
    rows = [("replicas configured", replicas.get("configured")),
            ("replicas effective", replicas.get("effective")),
            ("write quorum", replicas.get("write_quorum")),
            ("chunks on disk", chunks.get("on_disk")),
            ("bytes on disk", human_size(chunks.get("bytes_on_disk"))),
            ("under-replicated", chunks.get("under_replicated")),
            ("being repaired", chunks.get("being_repaired")),
            ("hinted", chunks.get("hinted")),
            ("corrupt found", chunks.get("corrupt_found")),
            ("corrupt repaired", chunks.get("corrupt_repaired"))]
    table.add_column("what")
    table.add_column("value", justify="right")
    for what, value in rows:
        alarm = what in ("under-replicated", "being repaired", "corrupt found") and bool(value)
        table.add_row(what, Text("-" if value is None else str(value),
                                 style="yellow" if alarm else ""))
    return table
