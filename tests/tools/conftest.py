"""Fixtures for the operations files of tools/ (Prometheus, nginx) run for real.

``cluster``: three real nodes on free loopback ports, one coordinator; their logs are
printed when the test failed. ``debian_binary``: a binary from Debian's packages,
installed with apt-get when missing (skips the test only where installing is impossible:
not root, no apt-get). ``children``: processes the test starts (Prometheus, nginx),
stopped by their own pid at teardown whatever happened.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from node.testing.observe import wait_agreed_coordinator
from node.testing.process import NodeProcess, start_joined

KEY = {"BLOBSTORE_CLUSTER_KEY": "tools-ops-cluster-key-0123456789"}
#: Fast failure detection; 1 MiB chunks, so a few MiB of upload already stores chunks.
CLUSTER_ARGS = ("--gossip-preset", "tests", "--bootstrap-expect", "3", "--chunk-size", "1MiB")
NAMES = ("node1", "node2", "node3")
#: Debian puts daemons in /usr/sbin, which is not on every PATH.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
APT_TIMEOUT_S = 900.0


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", "-q", "-y", "-o", "DPkg::Lock::Timeout=300", *args],
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=APT_TIMEOUT_S, check=False)


def install_debian_binary(binary: str, package: str) -> str:
    """The path of ``binary``, installing Debian's ``package`` first if it is missing.

    The package's service must not start: a ``policy-rc.d`` that forbids it is put in
    place for the install if the machine has none (and removed after), so nothing is left
    running; the tests run the binary themselves, as their own child. ``apt-get update``
    runs only when the install fails on the lists the machine has. Skips the test when it
    cannot install (not root, no apt-get); fails it when apt-get tried and failed.
    """
    found = shutil.which(binary, path=SEARCH_PATH)
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip(f"{binary} is not installed and there is no apt-get to install "
                    f"Debian's {package} package")
    if os.geteuid() != 0:
        pytest.skip(f"{binary} is not installed, and installing Debian's {package} package "
                    f"needs root: run `sudo apt-get install {package}`")
    own_policy = not POLICY_RC_D.exists()
    if own_policy:
        POLICY_RC_D.write_text("#!/bin/sh\n# blobstore tests: no service starts while they "
                               "install a package\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        command = ("install", "--no-install-recommends", package)
        done = _apt_get(*command)
        if done.returncode != 0:
            _apt_get("update")
            done = _apt_get(*command)
    finally:
        if own_policy:
            POLICY_RC_D.unlink(missing_ok=True)
    found = shutil.which(binary, path=SEARCH_PATH)
    assert done.returncode == 0 and found, (
        f"apt-get install {package} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
        f"{done.stderr[-3000:]}")
    return found


@pytest.fixture(scope="session")
def debian_binary() -> Callable[[str, str], str]:
    """``debian_binary("promtool", "prometheus")``: the binary's path (see
    ``install_debian_binary``)."""
    return install_debian_binary


class Children:
    """Processes a test starts; each is stopped by its own pid, never found by name."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, command: Sequence[str], log_path: Path, *, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``command`` with stdout and stderr appended to ``log_path``."""
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=log, cwd=cwd, env=env)
        self._procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> int:
        """SIGTERM to the pid and wait; SIGKILL if it takes longer. The exit code."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self._procs:
            self.stop(proc)


@pytest.fixture(scope="module")
def children() -> Iterator[Children]:
    """Start helper processes; whatever is still running is stopped at the module's end."""
    procs = Children()
    try:
        yield procs
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
            ) -> Iterator[dict[str, NodeProcess]]:
    """node1..node3 on free loopback ports, joined, agreeing on one coordinator; shared by
    the tests of a module (one that kills a node comes last in its module)."""
    base = tmp_path_factory.mktemp("cluster")
    started: list[NodeProcess] = []
    failures_before = request.session.testsfailed

    def start(name: str, args: Sequence[str]) -> NodeProcess:
        proc = NodeProcess(base / name, name, args=args, env=KEY, start_timeout_s=30.0)
        started.append(proc)
        return proc.start()

    try:
        nodes = start_joined(start, NAMES, CLUSTER_ARGS)
        wait_agreed_coordinator(nodes.values())
        yield nodes
    finally:
        for node in started:
            node.close()
        if request.session.testsfailed > failures_before:
            for node in started:
                print(f"\n===== log of {node.node_id} ({node.log_path}) =====")
                print(node.log_tail(6000))


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the child binds it just after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """``free_port()``: a free loopback port for a child process to listen on."""
    return free_loopback_port
