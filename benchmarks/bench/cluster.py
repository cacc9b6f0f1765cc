"""The cluster under test: started here (``--cluster N``) or given (``--url``).

A local cluster is N real ``blobstore-node`` processes (``NodeProcess``, joined with
``start_joined``) in a temporary directory: R = 3 (clamped to N), cheap argon2 like
the tests (logins cost milliseconds), the default ``lan`` gossip and every other
setting at its default, so the figures are those of a node as shipped. The nodes are
stopped by their own pids and the directory removed afterwards.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.bench.client import Slot, error_kind
from node.testing.process import DEV_ADMIN_PASSWORD, NodeProcess, start_joined

ADMIN = "admin"


class BenchmarkError(RuntimeError):
    """The benchmark cannot go on (no login, no container, a node did not start)."""


class LocalCluster:
    """N node processes in a temporary directory under ``parent`` (default: the system's).

    Resource handling: ``start()`` makes the directory and the processes; ``stop()``
    (also on leaving the ``with`` block) terminates every node by pid (SIGTERM, then
    SIGKILL after ``stop_timeout_s``) and removes the directory unless ``keep``.
    """

    def __init__(self, nodes: int, *, parent: Path | None = None, replicas: int = 3,
                 extra_args: list[str] | None = None, start_timeout_s: float = 60.0,
                 keep: bool = False) -> None:
        if nodes < 1:
            raise ValueError("a cluster has at least one node")
        self.size = nodes
        self.replicas = min(replicas, nodes)
        self.extra_args = list(extra_args or [])
        self.start_timeout_s = start_timeout_s
        self.keep = keep
        self.password = secrets.token_hex(12)
        self.base = Path(tempfile.mkdtemp(prefix="blobstore-bench-", dir=parent))
        self.nodes: dict[str, NodeProcess] = {}

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes.values()]

    @property
    def pids(self) -> list[int]:
        return [node.pid for node in self.nodes.values() if node.running]

    def start(self) -> LocalCluster:
        settings = ["--replicas", str(self.replicas), "--bootstrap-expect", str(self.size),
                    *self.extra_args]
        env: dict[str, str | None] = {"BLOBSTORE_CLUSTER_KEY": secrets.token_hex(24)}
        names = [f"n{i}" for i in range(1, self.size + 1)]
        procs = {name: NodeProcess(self.base / name, name, env=env,
                                   admin_password=self.password,
                                   start_timeout_s=self.start_timeout_s) for name in names}
        self.nodes = procs
        try:
            start_joined(lambda name, flags: procs[name].start(args=flags), names, settings,
                         timeout_s=self.start_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, stop_timeout_s: float = 15.0) -> None:
        for node in self.nodes.values():
            try:
                if node.running:
                    node.terminate(stop_timeout_s)
            except AssertionError:
                pass  # it did not leave in time and was killed by pid
            finally:
                node.close()
        if not self.keep:
            shutil.rmtree(self.base, ignore_errors=True)

    def log_tails(self, chars: int = 1500) -> dict[str, str]:
        return {name: node.log_tail(chars) for name, node in self.nodes.items()}

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def default_password() -> str:
    return os.environ.get("BLOBSTORE_ADMIN_PASSWORD") or DEV_ADMIN_PASSWORD


async def login(url: str, password: str, username: str = ADMIN) -> str:
    """A bearer token for ``username``."""
    slot = Slot(url)
    try:
        answer = await slot.call("POST", "/auth", {"username": username, "password": password})
    finally:
        await slot.close()
    if answer.status != 200 or not isinstance(answer.data, dict):
        raise BenchmarkError(f"login to {url} failed: {error_kind(answer)} {answer.data!r}")
    return str(answer.data["token"])


async def create_container(url: str, token: str, prefix: str = "bench") -> str:
    """A new container with a unique name, so a run never meets another run's blobs."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    answer = await _call(url, token, "POST", "/create_container", {"container": name})
    if answer.status != 201:
        raise BenchmarkError(f"cannot create container {name}: {error_kind(answer)}")
    return name


async def delete_container(url: str, token: str, name: str) -> bool:
    answer = await _call(url, token, "DELETE", f"/delete_container?container={name}")
    return answer.status == 204


async def _call(url: str, token: str, method: str, path: str, body: Any = None) -> Any:
    slot = Slot(url, token)
    try:
        return await slot.call(method, path, body)
    finally:
        await slot.close()
