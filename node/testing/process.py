"""Real ``blobstore-node`` processes for end-to-end tests, benchmarks and tools.

``NodeProcess`` runs ``python -m node``, by default on loopback ports chosen by
the OS (``--http 127.0.0.1:0 --gossip 127.0.0.1:0``; the fault campaign gives
each node its own address and runs it in a network namespace), waits for the
node's ``<data_dir>/node.ready`` file (written once it serves) to name the
right pid and for ``GET /health`` to answer, and exposes its URL and pid::

    node = NodeProcess(tmp_path / "n1").start()
    try:
        token = node.login()
        ...
        assert node.terminate() == 0       # SIGTERM: graceful leave
        node.start()                        # same data dir, same identity
    finally:
        node.close()                        # SIGKILL if still running

Only the standard library is used, so tools can drive nodes without the test
extras. Everything is bounded: start-up, stopping and every HTTP call have a
timeout, and a process is only ever signalled by its own pid. Every process
started here is also killed at interpreter exit if a caller forgot to.

The node's stdout and stderr go to ``<data_dir.parent>/<data_dir.name>.log``,
appended across restarts; ``log_text()`` reads it back.

A node started with TLS (``--tls-ca`` or ``BLOBSTORE_TLS_CA``) serves HTTPS;
its helpers then verify it against that CA (or ``ca_file``), so tests talk to
it exactly as to a plain node.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

READY_FILE = "node.ready"
#: Where a node keeps its chunk files, under its data dir: ``<hex[0:2]>/<hex>``.
CHUNK_DIR = Path("store") / "chunks"
DEFAULT_ADMIN_PASSWORD = "e2e-admin-password"
DEV_ADMIN_PASSWORD = "admin-dev-password"
#: Cheap password hashing, so logins cost milliseconds instead of a second.
CHEAP_ARGON2 = ("--argon2-time-cost", "1", "--argon2-memory-kib", "1024",
                "--argon2-parallelism", "1")
_USE_DEFAULT: Any = object()

_live: set[NodeProcess] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live):
        proc.close()


class NodeStartError(RuntimeError):
    """The node exited or did not become ready in time; the message holds its log tail."""


def node_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The caller's environment without any ``BLOBSTORE_*`` (the node rejects unknown
    ones), plus ``extra``; a value of None removes that variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOBSTORE_")}
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_node_cli(args: Sequence[str], env: Mapping[str, str | None] | None = None, *,
                 timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m node ARGS`` to completion (for start-up errors); kill on timeout."""
    proc = subprocess.Popen([sys.executable, "-m", "node", *args], env=node_env(env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"node did not exit within {timeout_s} s; it is expected to "
                             f"fail at start-up. stderr:\n{err[-4000:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


class NodeProcess:
    """One node in its own process; ``start()`` again after a stop is a restart."""

    def __init__(self, data_dir: Path | str, node_id: str = "n1", *,
                 args: Sequence[str] = (), env: Mapping[str, str | None] | None = None,
                 admin_password: str | None = DEFAULT_ADMIN_PASSWORD,
                 cheap_argon2: bool = True, start_timeout_s: float = 20.0,
                 host: str = "127.0.0.1", http_port: int = 0, gossip_port: int = 0,
                 wrapper: Sequence[str] = (), ca_file: Path | str | None = None) -> None:
        self.data_dir = Path(data_dir)
        #: Where the node listens (port 0: the OS picks one at every start).
        self.host, self.http_port, self.gossip_port = host, http_port, gossip_port
        #: A command the node runs under, e.g. ``ip netns exec NS`` (it must exec the node,
        #: so that ``pid`` is the node's own).
        self.wrapper = list(wrapper)
        self.node_id = node_id
        self.args = list(args)
        self.admin_password = admin_password
        self.env: dict[str, str | None] = {"BLOBSTORE_ADMIN_PASSWORD": admin_password}
        self.env.update(env or {})
        self.cheap_argon2 = cheap_argon2
        #: The CA an HTTPS node is verified against (default: the node's own --tls-ca).
        self.ca_file = ca_file
        self.start_timeout_s = start_timeout_s
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.url = ""
        self.ready: dict[str, Any] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self.starts = 0

    # -- lifecycle -----------------------------------------------------------

    def command(self) -> list[str]:
        cmd = [*self.wrapper, sys.executable, "-m", "node", "--node-id", self.node_id,
               "--data-dir", str(self.data_dir), "--http", f"{self.host}:{self.http_port}",
               "--gossip", f"{self.host}:{self.gossip_port}"]
        if self.cheap_argon2:
            cmd += CHEAP_ARGON2
        return cmd + self.args

    def start(self, *, args: Sequence[str] | None = None,
              env: Mapping[str, str | None] | None = None) -> NodeProcess:
        """Start (or start again); ``args``/``env`` replace/extend the stored ones."""
        if self.running:
            raise RuntimeError(f"node {self.node_id} is already running (pid {self.pid})")
        self._reap()
        if args is not None:
            self.args = list(args)
        if env is not None:
            self.env.update(env)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"--- start #{self.starts + 1}: {' '.join(self.command())}\n"
                             .encode())
        self._log_file.flush()
        self._proc = subprocess.Popen(self.command(), env=node_env(self.env),
                                      stdin=subprocess.DEVNULL, stdout=self._log_file,
                                      stderr=self._log_file)
        _live.add(self)
        self.starts += 1
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        ready_path = self.data_dir / READY_FILE
        while True:
            code = self._proc.poll()
            if code is not None:
                raise NodeStartError(f"node {self.node_id} exited with {code} during start-up:"
                                     f"\n{self.log_tail()}")
            ready = _read_json(ready_path)
            if ready and ready.get("pid") == self._proc.pid and ready.get("http"):
                self.ready, self.url = ready, str(ready["http"]).rstrip("/")
                status, _ = self._health(timeout_s=2.0)
                if status == 200:
                    return
            if time.monotonic() > deadline:
                raise NodeStartError(f"node {self.node_id} not ready within "
                                     f"{self.start_timeout_s} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def wait_in_cluster(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait until this node names a coordinator and serves (its metadata has caught up
        with the cluster's bootstrap); the /health answer."""
        deadline = time.monotonic() + timeout_s
        while True:
            status, body = self._health(timeout_s=2.0)
            if status == 200 and body.get("status") == "ok" and body.get("coordinator"):
                return dict(body)
            if not self.running:
                raise NodeStartError(f"node {self.node_id} exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise NodeStartError(f"node {self.node_id} not in a cluster within "
                                     f"{timeout_s} s (health: {status} {body!r}):\n"
                                     f"{self.log_tail()}")
            time.sleep(0.05)

    def _health(self, timeout_s: float) -> tuple[int, Any]:
        try:
            return self.request("GET", "/health", timeout_s=timeout_s)
        except OSError:
            return 0, None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("node was never started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def signal(self, signum: int) -> None:
        """Send a signal to this node's own pid (never to anything found by name)."""
        if self.running:
            os.kill(self.pid, signum)

    def wait(self, timeout_s: float = 30.0) -> int:
        """Wait for the process to exit; SIGKILL it if it takes longer than ``timeout_s``."""
        if self._proc is None:
            raise RuntimeError("node was never started")
        try:
            code = self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
            self._reap()
            raise AssertionError(f"node {self.node_id} (pid {self.pid}) did not exit within "
                                 f"{timeout_s} s; killed it:\n{self.log_tail()}") from None
        self._reap()
        return code

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (graceful leave) and wait; the exit code (0 expected)."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def kill(self) -> int:
        """SIGKILL (a crash) and wait; the exit code (-9)."""
        self.signal(signal.SIGKILL)
        return self.wait(10.0)

    def restart(self, *, graceful: bool = True, args: Sequence[str] | None = None,
                env: Mapping[str, str | None] | None = None) -> NodeProcess:
        """Stop (SIGTERM, or SIGKILL if not ``graceful``) and start on the same data dir."""
        if self.running:
            code = self.terminate() if graceful else self.kill()
            if graceful and code != 0:
                raise AssertionError(f"graceful stop exited {code}:\n{self.log_tail()}")
        return self.start(args=args, env=env)

    def close(self) -> None:
        """Make sure the process is gone (SIGKILL if needed) and files are closed."""
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._proc.kill()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._reap()
        _live.discard(self)

    def _reap(self) -> None:
        if self._log_file is not None and (self._proc is None or
                                           self._proc.poll() is not None):
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> NodeProcess:
        return self.start() if not self.running else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- observation ---------------------------------------------------------

    def _proc_status(self, field: str) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"{field} not in /proc/{self.pid}/status")

    def peak_rss_kib(self) -> int:
        """The process's peak resident set size so far (VmHWM), in KiB."""
        return self._proc_status("VmHWM")

    def rss_kib(self) -> int:
        """The current resident set size (VmRSS), in KiB."""
        return self._proc_status("VmRSS")

    def chunk_ids(self) -> set[str]:
        """The hex names of the chunk files in this node's store (names only: nothing is
        read or hashed; cheap enough to poll). Works whether or not the node runs."""
        return chunk_ids_in(self.data_dir)

    def chunk_path(self, hex_id: str) -> Path:
        """Where this node keeps the chunk named ``hex_id``."""
        return self.data_dir / CHUNK_DIR / hex_id[:2] / hex_id

    def log_text(self) -> str:
        """Everything the node wrote to stdout and stderr, across all its starts."""
        if self._log_file is not None:
            self._log_file.flush()
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

    # -- small HTTP helpers (stdlib, for readiness and setup) ----------------

    @property
    def gossip_address(self) -> str:
        """The ``host:port`` this node gossips on (others pass it to ``--join``)."""
        return str(self.ready["gossip"])

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        assert parts.hostname is not None and parts.port is not None, self.url
        return parts.hostname, parts.port

    def tls_ca(self) -> str | None:
        """The CA file this node's HTTPS is verified against: ``ca_file``, else the node's
        own ``--tls-ca`` or ``BLOBSTORE_TLS_CA`` (None: the node runs without TLS)."""
        if self.ca_file is not None:
            return str(self.ca_file)
        for flag, value in zip(self.args, self.args[1:]):
            if flag == "--tls-ca":
                return value
        return self.env.get("BLOBSTORE_TLS_CA")

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context trusting only the node's CA (None for a plain-HTTP node)."""
        ca = self.tls_ca()
        return ssl.create_default_context(cafile=ca) if ca else None

    def request(self, method: str, path: str, *, token: str | None = None,
                json_body: Any = None, body: bytes | None = None,
                headers: Mapping[str, str] | None = None,
                timeout_s: float = 10.0) -> tuple[int, Any]:
        """One request on a fresh connection: (status, parsed JSON or raw bytes). HTTPS
        when the node serves it, verified against ``tls_ca()``."""
        host, port = self.address
        conn: http.client.HTTPConnection
        if self.url.startswith("https://"):
            conn = http.client.HTTPSConnection(host, port, timeout=timeout_s,
                                               context=self.ssl_context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        try:
            hdrs = dict(headers or {})
            if token is not None:
                hdrs["Authorization"] = f"Bearer {token}"
            if json_body is not None:
                body = json.dumps(json_body).encode()
                hdrs["Content-Type"] = "application/json"
            conn.request(method, path, body=body, headers=hdrs)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if response.getheader("Content-Type", "").startswith("application/json") and data:
            return response.status, json.loads(data)
        return response.status, data

    def login(self, username: str = "admin", password: str | None = None) -> str:
        """A bearer token (the admin's with the password this node was started with)."""
        if password is None:
            password = self.admin_password or DEV_ADMIN_PASSWORD
        status, answer = self.request("POST", "/auth", json_body={"username": username,
                                                                  "password": password})
        if status != 200:
            raise AssertionError(f"login of {username!r} failed: {status} {answer!r}")
        return str(answer["token"])


def chunk_ids_in(data_dir: Path) -> set[str]:
    """The hex names of the chunk files under ``data_dir`` (see node.store.chunks)."""
    found: set[str] = set()
    try:
        with os.scandir(data_dir / CHUNK_DIR) as it:
            tops = list(it)
    except FileNotFoundError:
        return found
    for top in tops:
        if len(top.name) != 2 or not top.is_dir(follow_symlinks=False):
            continue
        try:
            with os.scandir(top.path) as entries:
                found.update(e.name for e in entries
                             if len(e.name) == 64 and e.name.startswith(top.name))
        except FileNotFoundError:
            continue
    return found


def flip_byte(path: Path, at: int, mask: int = 0xFF) -> None:
    """Bit rot in a chunk file: byte ``at`` (negative counts from the end) XOR ``mask``,
    changed in place."""
    with open(path, "r+b") as f:
        if at < 0:
            at += f.seek(0, os.SEEK_END)
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ mask]))


def start_joined(start: Callable[[str, Sequence[str]], NodeProcess], names: Sequence[str],
                 args: Sequence[str], *, timeout_s: float = 30.0) -> dict[str, NodeProcess]:
    """A cluster: ``names[0]`` started first, the others in parallel joining it by gossip,
    each with ``args``; returns once every node serves with a coordinator. ``start(name,
    args)`` starts one node (a test fixture's factory, or ``NodeProcess.start``)."""
    first = start(names[0], args)
    join = (*args, "--join", first.gossip_address)
    nodes = {names[0]: first}
    if len(names) > 1:
        with ThreadPoolExecutor(len(names) - 1) as pool:
            nodes.update(zip(names[1:], pool.map(lambda name: start(name, join), names[1:])))
    for node in nodes.values():
        node.wait_in_cluster(timeout_s=timeout_s)
    return nodes


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return value if isinstance(value, dict) else None


__all__ = ["CHEAP_ARGON2", "CHUNK_DIR", "DEFAULT_ADMIN_PASSWORD", "DEV_ADMIN_PASSWORD",
           "NodeProcess", "NodeStartError", "READY_FILE", "chunk_ids_in", "flip_byte", "node_env",
           "run_node_cli", "start_joined"]
