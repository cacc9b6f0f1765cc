"""blobctl against real nodes: one node for most tests, three for ``cluster``.

Commands run in-process (``main([...])``, output captured) or, where stdin,
stdout or the console script matter, as a subprocess. Every config dir is a
temporary one, so the user's own login is never read or written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import pytest

from node.testing.process import DEFAULT_ADMIN_PASSWORD, NodeProcess, start_joined
from tools.blobctl.cli import main
from tools.blobctl.errors import ExitCode

pytestmark = pytest.mark.e2e

KEY = {"BLOBSTORE_CLUSTER_KEY": "e2e-blobctl-cluster-key-0123456789"}
MIB = 1 << 20


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:  # a JSON document: its shape is what the test asserts
        return json.loads(self.out)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path_factory.mktemp("blobctl") / "n1", "n1")
    try:
        yield proc.start()
    finally:
        proc.close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No BLOBCTL_* from the caller, and no way to reach the real ~/.config."""
    for name in ("BLOBCTL_URL", "BLOBCTL_TOKEN", "BLOBCTL_CONFIG_DIR", "BLOBCTL_CACERT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOBCTL_")}
    env.update(extra)
    return env


def run(*args: str, input: bytes | None = None, stdin: IO[bytes] | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """blobctl as its own process (real stdin and stdout)."""
    return subprocess.run([sys.executable, "-m", "tools.blobctl.cli", *args], input=input,
                          stdin=stdin, capture_output=True, timeout=60,
                          env=env or subprocess_env())


class Blobctl:
    """blobctl in-process, for one config dir (one logged-in user)."""

    def __init__(self, node: NodeProcess, config: Path, capsys: pytest.CaptureFixture[str],
                 monkeypatch: pytest.MonkeyPatch) -> None:
        self.node, self.config = node, config
        self._capsys, self._monkeypatch = capsys, monkeypatch

    def __call__(self, *args: str, stdin: str = "") -> Result:
        self._capsys.readouterr()
        self._monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main([*args, "--config-dir", str(self.config)])
        captured = self._capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def ok(self, *args: str, stdin: str = "") -> Result:
        result = self(*args, stdin=stdin)
        assert result.code == 0, result
        return result

    def login(self, username: str, password: str) -> Result:
        return self.ok("login", "--url", self.node.url, "-u", username, "--password-stdin",
                       stdin=password + "\n")


class Factory(Protocol):
    def __call__(self, username: str, password: str = ...) -> Blobctl: ...


@pytest.fixture
def as_user(node: NodeProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> Factory:
    """``as_user("admin")``: a Blobctl logged in (admin with the node's password)."""
    def make(username: str, password: str = DEFAULT_ADMIN_PASSWORD) -> Blobctl:
        cli = Blobctl(node, tmp_path / f"cfg-{username}", capsys, monkeypatch)
        if username:
            cli.login(username, password)
        return cli
    return make


@pytest.fixture
def admin(as_user: Factory) -> Blobctl:
    return as_user("admin")


def new_container(admin: Blobctl) -> str:
    name = f"c-{secrets.token_hex(4)}"
    admin.ok("container", "create", name)
    return name


def put_bytes(cli: Blobctl, container: str, name: str, data: bytes) -> None:
    """Upload ``data`` as ``container/name`` through a local file (in-process)."""
    local = Path(f"upload-{secrets.token_hex(4)}")
    local.write_bytes(data)
    cli.ok("put", str(local), f"{container}/{name}", "--content-type", "text/plain"
           if not name.endswith(".jpg") else "image/jpeg")
    local.unlink()


def assert_error(result: Result, code: ExitCode, text: str) -> None:
    """Exactly one line on stderr, ``blobctl: ...``, naming ``text``; nothing on stdout."""
    assert result.code == code, result
    assert result.err.startswith("blobctl: ") and result.err.count("\n") == 1, result.err
    assert text in result.err, result.err
    assert "Traceback" not in result.err


# -- login --------------------------------------------------------------------------------

def test_login_saves_the_token_privately(node: NodeProcess, tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    login = run("login", "--url", node.url, "-u", "admin", "--password-stdin", "--config-dir",
                str(config), "--json", input=DEFAULT_ADMIN_PASSWORD.encode() + b"\n")
    assert login.returncode == 0, login.stderr
    saved = json.loads((config / "config.json").read_text())
    assert set(saved) == {"url", "username", "token", "expires_at"}
    assert saved["url"] == node.url and saved["username"] == "admin"
    assert stat.S_IMODE((config / "config.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(config.stat().st_mode) == 0o700
    answer = json.loads(login.stdout)
    assert answer["role"] == "admin" and "token" not in answer
    assert saved["token"].encode() not in login.stdout + login.stderr
    token = run("token", "--config-dir", str(config))
    assert token.returncode == 0 and token.stdout.decode().strip() == saved["token"]
    # The token works for curl-like callers, and BLOBCTL_TOKEN stands in for a saved login.
    env = subprocess_env(BLOBCTL_TOKEN=saved["token"], BLOBCTL_URL=node.url)
    assert run("container", "ls", "--json", "--config-dir", str(tmp_path / "empty"),
               env=env).returncode == 0
    logout = run("logout", "--config-dir", str(config))
    assert logout.returncode == 0, logout.stderr
    assert json.loads((config / "config.json").read_text())["token"] is None
    # Logout revoked the token on the node too.
    status, _ = node.request("GET", "/list_containers", token=saved["token"])
    assert status == 401


def test_login_failures(as_user: Factory, node: NodeProcess) -> None:
    cli = as_user("")
    assert_error(cli("login", "--url", node.url, "-u", "admin", "--password-stdin",
                     stdin="wrong-password\n"), ExitCode.AUTH, "Unauthorized")
    assert_error(cli("ls", "photos", "--url", node.url), ExitCode.AUTH, "not logged in")
    assert not (cli.config / "config.json").exists()
    # An expired saved login is not sent.
    cli.config.mkdir()
    (cli.config / "config.json").write_text(json.dumps(
        {"url": node.url, "username": "admin", "token": "x",
         "expires_at": "2020-01-01T00:00:00Z"}))
    assert_error(cli("container", "ls"), ExitCode.AUTH, "expired")


# -- blobs --------------------------------------------------------------------------------

def test_put_and_get_a_file_with_progress(admin: Blobctl, tmp_path: Path) -> None:
    container = new_container(admin)
    data = secrets.token_bytes(3 * MIB + 12345)
    (tmp_path / "big.bin").write_bytes(data)
    put = admin.ok("put", "big.bin", f"{container}/dir/", "--progress", "--json")
    answer = put.json()
    assert isinstance(answer, dict)
    assert answer["blob"] == "dir/big.bin" and answer["size"] == len(data)
    assert answer["etag"] == hashlib.md5(data).hexdigest()
    assert "3.0/3.0 MiB" in put.err  # the bar, on stderr only
    get = admin.ok("get", f"{container}/dir/big.bin", "copy.bin", "--progress")
    assert (tmp_path / "copy.bin").read_bytes() == data
    assert "copy.bin" in get.out and "3.0/3.0 MiB" in get.err
    admin.ok("get", f"{container}/dir/big.bin", "--no-progress")  # into the current dir
    assert (tmp_path / "big.bin").read_bytes() == data
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []
    assert_error(admin("get", f"{container}/dir/big.bin", "-", "--range", "9999999-"),
                 ExitCode.BAD_REQUEST, "InvalidRange")
    assert_error(admin("put", "big.bin", f"{container}/dir/big.bin", "--if-none-match"),
                 ExitCode.CONFLICT, "(412)")
    assert_error(admin("put", "missing.bin", f"{container}/x"), ExitCode.ERROR,
                 "cannot read missing.bin")


def test_stdin_and_stdout_carry_only_the_bytes(admin: Blobctl, node: NodeProcess,
                                               tmp_path: Path) -> None:
    container = new_container(admin)
    data = secrets.token_bytes(2 * MIB + 7)
    common = ("--config-dir", str(admin.config))
    piped = run("put", "-", f"{container}/piped.bin", "--progress", *common, input=data)
    assert piped.returncode == 0, piped.stderr
    (tmp_path / "src.bin").write_bytes(data)
    with open(tmp_path / "src.bin", "rb") as f:  # a regular file: sent with Content-Length
        redirected = run("put", "-", f"{container}/redirected.bin", *common, stdin=f)
    assert redirected.returncode == 0, redirected.stderr
    for name in ("piped.bin", "redirected.bin"):
        got = run("get", f"{container}/{name}", "-", "--progress", *common)
        assert got.returncode == 0, got.stderr
        assert got.stdout == data  # byte-identical: no progress or notes in the data
    ranged = run("get", f"{container}/piped.bin", "-", "--range", "10-19", *common)
    assert ranged.stdout == data[10:20]
    last = run("get", f"{container}/piped.bin", "-", "--range", "-5", *common)
    assert last.stdout == data[-5:]
    missing = run("get", f"{container}/nope", "-", *common)
    assert missing.returncode == ExitCode.NOT_FOUND and missing.stdout == b""
    assert missing.stderr.decode() == (f"blobctl: BlobNotFound: blob 'nope' does not exist "
                                       f"in '{container}' (404)\n")


def test_ls_with_prefix_delimiter_long_and_pages(admin: Blobctl) -> None:
    container = new_container(admin)
    names = ["a.txt", "docs/one.md", "docs/two.md", "docs/deep/three.md", "pics/cat.jpg"]
    for name in names:
        put_bytes(admin, container, name, name.encode())
    assert admin.ok("ls", container).out.splitlines() == sorted(names)
    assert admin.ok("ls", f"{container}/docs/").out.splitlines() == [
        "docs/deep/three.md", "docs/one.md", "docs/two.md"]
    assert admin.ok("ls", container, "-d", "/").out.splitlines() == [
        "docs/", "pics/", "a.txt"]
    grouped = admin.ok("ls", f"{container}/docs/", "-d", "/", "--json").json()
    assert isinstance(grouped, dict)
    assert grouped["prefixes"] == ["docs/deep/"]
    assert [b["blob"] for b in grouped["blobs"]] == ["docs/one.md", "docs/two.md"]
    assert grouped["blobs"][0]["size"] == len("docs/one.md")
    long = admin.ok("ls", f"{container}/pics", "-l")
    assert "pics/cat.jpg" in long.out and "image/jpeg" in long.out
    assert "12 B" in long.out and "etag" in long.out
    page = admin.ok("ls", container, "--limit", "2", "--json")
    assert [b["blob"] for b in page.json()["blobs"]] == ["a.txt", "docs/deep/three.md"]
    assert "--all" in page.err
    every = admin.ok("ls", container, "--limit", "2", "--all", "--json").json()
    assert [b["blob"] for b in every["blobs"]] == sorted(names)
    assert every["next_marker"] is None
    admin.ok("rm", f"{container}/a.txt", f"{container}/pics/cat.jpg")
    assert admin.ok("ls", container).out.splitlines() == sorted(names)[1:4]
    assert_error(admin("rm", f"{container}/a.txt"), ExitCode.NOT_FOUND, "BlobNotFound")
    assert_error(admin("ls", "no-such-container"), ExitCode.NOT_FOUND, "ContainerNotFound")


def test_recursive_upload_and_download(admin: Blobctl, tmp_path: Path) -> None:
    container = new_container(admin)
    files = {"top.txt": b"top", "a/one.txt": b"1" * 1000, "a/b/two.bin": secrets.token_bytes(
        MIB + 3), "c/three.txt": b""}
    for name, data in files.items():
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / name).write_bytes(data)
    up = admin.ok("put", "-r", "src", f"{container}/backup", "--json").json()
    assert up["count"] == len(files)
    assert sorted(b["blob"] for b in up["uploaded"]) == sorted(f"backup/{n}" for n in files)
    admin.ok("get", "-r", f"{container}/backup", "restored")
    restored = {p.relative_to(tmp_path / "restored").as_posix(): p.read_bytes()
                for p in (tmp_path / "restored").rglob("*") if p.is_file()}
    assert restored == files
    # Names that would escape the target are refused, the rest is still downloaded.
    for evil in ("backup/../../evil.txt", "backup//abs.txt", "backup/./dot.txt"):
        put_bytes(admin, container, evil, b"evil")
    result = admin("get", "-r", f"{container}/backup/", "again")
    assert result.code == ExitCode.PARTIAL, result
    assert "skipped 'backup/../../evil.txt': contains '..'" in result.err
    assert "skipped 'backup//abs.txt': absolute path" in result.err
    assert "skipped 'backup/./dot.txt'" in result.err
    assert result.err.splitlines()[-1] == "blobctl: skipped 3 of 7 blobs (see above)"
    assert not (tmp_path / "evil.txt").exists() and not Path("/abs.txt").exists()
    again = {p.relative_to(tmp_path / "again").as_posix()
             for p in (tmp_path / "again").rglob("*") if p.is_file()}
    assert again == set(files)


# -- containers, users, grants ------------------------------------------------------------

def test_containers(admin: Blobctl) -> None:
    name = new_container(admin)
    assert_error(admin("container", "create", name), ExitCode.CONFLICT,
                 "ContainerExists")
    assert_error(admin("container", "create", "Bad_Name!"), ExitCode.BAD_REQUEST,
                 "InvalidName")
    listed = admin.ok("container", "ls", "--json").json()
    mine = [c for c in listed["containers"] if c["container"] == name]
    assert mine and mine[0]["owner"] == "admin" and mine[0]["blob_count"] == 0
    assert name in admin.ok("ls").out  # ls with no argument lists containers
    put_bytes(admin, name, "x", b"x")
    assert_error(admin("container", "delete", name), ExitCode.CONFLICT, "ContainerNotEmpty")
    admin.ok("rm", f"{name}/x")
    assert admin.ok("container", "delete", name, "--json").json() == {
        "container": name, "deleted": True}
    assert_error(admin("container", "delete", name), ExitCode.NOT_FOUND,
                 "ContainerNotFound")


def test_users_and_grants(admin: Blobctl, as_user: Factory) -> None:
    container = new_container(admin)
    put_bytes(admin, container, "doc.txt", b"hello")
    user = f"u{secrets.token_hex(3)}"
    added = admin.ok("user", "add", user, "--password-stdin", "--json",
                     stdin="first-password\n").json()
    assert added["username"] == user and added["role"] == "user"
    assert_error(admin("user", "add", user, "--password-stdin", stdin="first-password\n"),
                 ExitCode.CONFLICT, "UserExists")
    assert user in [u["username"] for u in admin.ok("user", "ls", "--json").json()["users"]]
    them = as_user(user, "first-password")
    assert_error(them("get", f"{container}/doc.txt", "-"), ExitCode.FORBIDDEN,
                 "Forbidden")
    assert_error(them("user", "ls"), ExitCode.FORBIDDEN, "(403)")
    assert_error(them("cluster"), ExitCode.FORBIDDEN, "(403)")
    admin.ok("grant", container, user, "read")
    them.ok("get", f"{container}/doc.txt", "doc.txt")
    assert_error(them("rm", f"{container}/doc.txt"), ExitCode.FORBIDDEN, "Forbidden")
    admin.ok("grant", container, user, "write")
    them.ok("rm", f"{container}/doc.txt")
    admin.ok("revoke", container, user)
    assert_error(them("ls", container), ExitCode.FORBIDDEN, "Forbidden")
    # A password change revokes older tokens; blobctl logs in again with the new one.
    them.ok("user", "passwd", "--password-stdin", stdin="first-password\nsecond-password\n")
    them.ok("container", "ls")
    assert_error(them("user", "passwd", "--password-stdin", stdin="wrong\nthird-password\n"),
                 ExitCode.FORBIDDEN, "(403)")
    admin.ok("user", "passwd", user, "--password-stdin", stdin="third-password\n")
    assert_error(them("container", "ls"), ExitCode.AUTH, "Unauthorized")
    admin.ok("user", "rm", user)
    assert_error(admin("user", "rm", user), ExitCode.NOT_FOUND, "UserNotFound")


# -- errors and operations ----------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_node_and_health(admin: Blobctl, node: NodeProcess) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert_error(admin("health", "--url", url), ExitCode.UNAVAILABLE, f"cannot reach {url}: ")
    health = admin.ok("health", "--json").json()
    assert health["status"] == "ok" and health["node_id"] == "n1"
    assert "coordinator" in admin.ok("health").out
    assert run("--version").stdout.startswith(b"blobctl ")
    script = Path(sys.executable).parent / "blobctl"
    assert script.exists(), "the console script (pyproject [project.scripts]; scripts/setup)"
    help_run = subprocess.run([str(script), "--help"], capture_output=True, timeout=30)
    assert help_run.returncode == 0 and b"exit codes:" in help_run.stdout


def test_cluster_of_three(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    base = tmp_path_factory.mktemp("blobctl-cluster")
    started: list[NodeProcess] = []

    def start(name: str, args: Sequence[str]) -> NodeProcess:
        proc = NodeProcess(base / name, name, args=args, env=KEY)
        started.append(proc)
        return proc.start()

    try:
        nodes = start_joined(start, ["n1", "n2", "n3"],
                             ["--gossip-preset", "tests", "--bootstrap-expect", "3"])
        config = str(tmp_path / "cfg")
        common = ("--config-dir", config)
        login = run("login", "--url", nodes["n1"].url, "-u", "admin", "--password-stdin",
                    *common, input=DEFAULT_ADMIN_PASSWORD.encode() + b"\n")
        assert login.returncode == 0, login.stderr
        view = json.loads(run("cluster", "--json", *common).stdout)
        assert sorted(m["node_id"] for m in view["members"]) == ["n1", "n2", "n3"]
        assert {m["state"] for m in view["members"]} == {"alive"}
        coordinator = view["coordinator"]["node_id"]
        assert coordinator in ("n1", "n2", "n3") and view["coordinator"]["term"] >= 1
        assert sorted(view["coordinator"]["voters"]) == ["n1", "n2", "n3"]
        assert view["replicas"]["effective"] == 3
        assert {n: h["status"] for n, h in view["member_health"].items()} == {
            "n1": "ok", "n2": "ok", "n3": "ok"}
        screen = run("cluster", *common)
        assert screen.returncode == 0, screen.stderr
        text = screen.stdout.decode()
        for word in ("members", "replication", "under-replicated", "coordinator", "n2",
                     "n3", "alive"):
            assert word in text
        watched = run("cluster", "--watch", "--count", "2", "--interval", "0.2", "--json",
                      *common)
        assert watched.returncode == 0, watched.stderr
        refreshes = [json.loads(line) for line in watched.stdout.decode().splitlines()]
        assert len(refreshes) == 2 and all(len(r["members"]) == 3 for r in refreshes)
        screens = run("cluster", "-w", "--count", "2", "--interval", "0.2", *common)
        assert screens.returncode == 0 and screens.stdout.decode().count("replication") == 2
    finally:
        for proc in started:
            proc.close()
