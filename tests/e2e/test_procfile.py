"""The local cluster of ``./run``: the Procfile and .env under honcho, and the README's
quick start against it.

The Procfile is read with honcho's own parser and run by honcho as ``./run`` does, with
two changes only: its loopback ports are replaced by free ones (a developer's ``./run``
may hold 8001-8003) and its relative ``data/`` lives in a temporary directory. The three
nodes must form one cluster with one coordinator; the commands of the README's quick start
(ports replaced the same way) must store and read back a blob with blobctl and with curl,
all within a minute of ``honcho start``; and stopping honcho by its pid must stop every
node. ``./run --tls`` (Procfile.tls, certificates by ``blobstore-certs local``) is run the
same way and must serve the same over HTTPS, verified against the CA it made.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from honcho.environ import parse, parse_procfile

from node.testing.observe import health, wait_for
from node.testing.process import NodeProcess, node_env
from tools.certs import local_cluster as make_local_certs

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = re.compile(r"\b(?:127\.0\.0\.1|localhost):(\d+)\b")
NAMES = ("node1", "node2", "node3")
#: "From nothing to a stored and retrieved blob in under a minute."
QUICK_START_BOUND_S = 60.0


def procfile(name: str = "Procfile") -> dict[str, list[str]]:
    return {process: shlex.split(command)
            for process, command in parse_procfile((ROOT / name).read_text()).processes.items()}


def flags(args: list[str]) -> dict[str, str]:
    """``--flag value`` pairs after ``exec blobstore-node``."""
    assert args[:2] == ["exec", "blobstore-node"], args
    rest = args[2:]
    assert len(rest) % 2 == 0 and all(a.startswith("--") for a in rest[::2]), args
    return dict(zip(rest[::2], rest[1::2]))


def test_the_procfile_runs_three_nodes_that_find_each_other() -> None:
    processes = procfile()
    assert list(processes) == list(NAMES)
    gossip = {name: f"127.0.0.1:{7000 + i}" for i, name in enumerate(NAMES, start=1)}
    for i, name in enumerate(NAMES, start=1):
        assert flags(processes[name]) == {
            "--node-id": name, "--data-dir": f"data/{name}", "--http": f"127.0.0.1:{8000 + i}",
            "--gossip": gossip[name], "--bootstrap-expect": "3",
            # Every other node, so any one of them can restart alone and find the rest.
            "--join": ",".join(a for n, a in gossip.items() if n != name)}
    env = parse((ROOT / ".env").read_text())
    assert env["BLOBSTORE_DEV"] == "true" and env["BLOBSTORE_ADMIN_PASSWORD"]
    assert len(env["BLOBSTORE_CLUSTER_KEY"]) >= 16
    assert all(key.startswith("BLOBSTORE_") for key in env), env


def test_the_tls_procfile_is_the_procfile_with_each_nodes_certificate() -> None:
    plain, tls = procfile(), procfile("Procfile.tls")
    assert list(tls) == list(plain)
    for name in NAMES:
        assert flags(tls[name]) == {**flags(plain[name]), "--tls-cert": f"data/tls/{name}.crt",
                                    "--tls-key": f"data/tls/{name}.key",
                                    "--tls-ca": "data/tls/ca.crt"}
    run = (ROOT / "run").read_text()
    assert "blobstore-certs local data/tls" in run and "-f Procfile.tls" in run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_free_ports(text: str, ports: dict[str, int]) -> str:
    """``text`` with every loopback port replaced by its free stand-in (new ones added)."""
    def swap(match: re.Match[str]) -> str:
        port = ports.setdefault(match.group(1), free_port())
        return match.group(0).replace(f":{match.group(1)}", f":{port}")
    return LOOPBACK.sub(swap, text)


@dataclass
class LocalCluster:
    directory: Path
    ports: dict[str, int]
    honcho: subprocess.Popen[bytes]
    started: float
    #: The CA of a TLS cluster (./run --tls), else None.
    ca: Path | None = None

    def node(self, name: str) -> NodeProcess:
        """A handle on a node honcho started (for its URL and HTTP helpers only)."""
        i = NAMES.index(name) + 1
        handle = NodeProcess(self.directory / "data" / name, name, ca_file=self.ca)
        scheme = "https" if self.ca else "http"
        handle.url = f"{scheme}://127.0.0.1:{self.ports[str(8000 + i)]}"
        return handle

    def node_pids(self) -> list[int]:
        """The pids the nodes wrote to their ready files."""
        pids = []
        for name in NAMES:
            ready = self.directory / "data" / name / "node.ready"
            if ready.exists():
                pids.append(int(json.loads(ready.read_text())["pid"]))
        return pids

    def log(self) -> str:
        return (self.directory / "honcho.log").read_text(errors="replace")

    def wait_formed(self, what: str) -> float:
        """Wait until the three nodes serve, see each other and name one coordinator;
        the seconds it took."""
        nodes = [self.node(name) for name in NAMES]

        def formed() -> bool:
            views = [health(node) for node in nodes]
            return (all(v.get("status") == "ok" and v.get("members") == 3 for v in views)
                    and len({v.get("coordinator") for v in views}) == 1
                    and views[0]["coordinator"] in NAMES)

        return wait_for(what, formed, 45.0, interval_s=0.1, detail=self.log)


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its parent is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def local_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """``./run`` (honcho start) in ``tmp_path``, with free ports; stopped at the end by
    honcho's pid, and any node left over by its own pid. Parametrized indirectly with
    ``"Procfile.tls"``, it is ``./run --tls``: the certificates made as it makes them."""
    name = getattr(request, "param", "Procfile")
    ports: dict[str, int] = {}
    (tmp_path / name).write_text(with_free_ports((ROOT / name).read_text(), ports))
    shutil.copy(ROOT / ".env", tmp_path / ".env")
    ca = None
    if name == "Procfile.tls":
        make_local_certs(tmp_path / "data" / "tls")
        ca = tmp_path / "data" / "tls" / "ca.crt"
    bin_dir = str(Path(sys.executable).parent)
    env = node_env({"PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])})
    with open(tmp_path / "honcho.log", "ab") as log:
        honcho = subprocess.Popen([os.path.join(bin_dir, "honcho"), "-f", name, "start"],
                                  cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=log)
    cluster = LocalCluster(tmp_path, ports, honcho, time.monotonic(), ca)
    try:
        yield cluster
    finally:
        pids = cluster.node_pids()
        if honcho.poll() is None:
            honcho.send_signal(signal.SIGTERM)
            try:
                honcho.wait(timeout=30)
            except subprocess.TimeoutExpired:
                honcho.kill()
                honcho.wait(timeout=10)
        for pid in pids:
            if running(pid):
                os.kill(pid, signal.SIGKILL)


def quick_start_commands() -> str:
    """The README quick start's second block: what a user types once ``./run`` runs."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) >= 2 and blocks[0].lstrip().startswith("./run"), blocks
    return blocks[1]


def test_run_forms_a_cluster_that_serves_the_readme_quick_start(
        local_cluster: LocalCluster, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("the README's quick start uses curl, which is not installed")
    nodes = [local_cluster.node(name) for name in NAMES]
    took = local_cluster.wait_formed(
        "the Procfile's three nodes form one cluster with one coordinator")
    print(f"\nhoncho start -> 3 nodes with one coordinator in {took:.1f} s")

    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    script = with_free_ports(quick_start_commands(), local_cluster.ports)
    env = node_env({"PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                             os.environ.get("PATH", "")]),
                    "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
                    # blobctl's default URL is node1's, http://127.0.0.1:8001.
                    "BLOBCTL_URL": nodes[0].url, "BLOBCTL_TOKEN": None,
                    "BLOBCTL_CONFIG_DIR": None})
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.stdout.count("same bytes") == 2, done.stdout
    total = time.monotonic() - local_cluster.started
    print(f"the quick start stored and read back its blobs {total:.1f} s after honcho start")
    assert total < QUICK_START_BOUND_S

    pids = local_cluster.node_pids()
    assert len(pids) == 3
    local_cluster.honcho.send_signal(signal.SIGTERM)
    # honcho answers SIGTERM with 143 (128 + 15); each node's own exit code is in its log.
    assert local_cluster.honcho.wait(timeout=30) == 128 + signal.SIGTERM, \
        local_cluster.log()[-3000:]
    wait_for("every node stopped with honcho", lambda: not any(map(running, pids)), 10.0)
    assert local_cluster.log().count("stopped (rc=0)") == 3, local_cluster.log()[-3000:]


@pytest.mark.parametrize("local_cluster", ["Procfile.tls"], indirect=True)
def test_run_tls_serves_https_verified_against_its_ca(local_cluster: LocalCluster,
                                                      tmp_path: Path) -> None:
    """The README's TLS quick start: curl with --cacert, PUT on one node, GET on another."""
    if shutil.which("curl") is None:
        pytest.skip("the README's TLS commands use curl, which is not installed")
    nodes = [local_cluster.node(name) for name in NAMES]
    took = local_cluster.wait_formed(
        "the TLS Procfile's three nodes form one cluster with one coordinator")
    print(f"\nhoncho -f Procfile.tls start -> 3 nodes over TLS in {took:.1f} s")
    ca = str(local_cluster.ca)
    token = nodes[0].login(password="admin-dev-password")
    (tmp_path / "blob.bin").write_bytes(os.urandom(200_000))

    def curl(*args: str) -> str:
        done = subprocess.run(["curl", "-sS", "--fail", "--cacert", ca, "-H",
                               f"Authorization: Bearer {token}", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    curl("-XPOST", f"{nodes[1].url}/create_container", "-d", '{"container": "tls"}')
    curl("-XPOST", f"{nodes[1].url}/put_data?container=tls&blob=b", "--data-binary",
         "@blob.bin")
    curl("-o", "back.bin", f"{nodes[2].url.replace('127.0.0.1', 'localhost')}"
                           "/get_data?container=tls&blob=b")
    assert (tmp_path / "back.bin").read_bytes() == (tmp_path / "blob.bin").read_bytes()
    plain = subprocess.run(["curl", "-sS", nodes[0].url.replace("https", "http") + "/health"],
                           capture_output=True, timeout=30)
    assert plain.returncode != 0  # plain HTTP gets no answer
    pids = local_cluster.node_pids()
    local_cluster.honcho.send_signal(signal.SIGTERM)
    local_cluster.honcho.wait(timeout=30)
    wait_for("every node stopped with honcho", lambda: not any(map(running, pids)), 10.0)
