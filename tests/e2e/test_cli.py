"""Start-up strictness of the real ``blobstore-node`` command line.

Every misconfiguration must stop the node before it serves anything: exit code
2, a one-line message on stderr naming the setting, and never a traceback.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from node.testing.process import (CHEAP_ARGON2, DEFAULT_ADMIN_PASSWORD, NodeProcess,
                                  run_node_cli)
from tests.e2e.conftest import StartNode
from tests.e2e.helpers import client, create_container, health_ok, put

pytestmark = pytest.mark.e2e

ENV = {"BLOBSTORE_ADMIN_PASSWORD": DEFAULT_ADMIN_PASSWORD}


def base_args(data_dir: Path, node_id: str = "n1") -> list[str]:
    return ["--node-id", node_id, "--data-dir", str(data_dir), "--http", "127.0.0.1:0",
            "--gossip", "127.0.0.1:0", *CHEAP_ARGON2]


def assert_config_error(result: subprocess.CompletedProcess[str], *names: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, (result.returncode, output)
    assert "Traceback" not in output, output
    assert result.stderr.strip(), "no message on stderr"
    lowered = result.stderr.lower()
    assert any(name.lower() in lowered for name in names), (
        f"stderr does not name {names}: {result.stderr!r}")


CASES: dict[str, tuple[list[str], dict[str, str], str | None, list[str]]] = {
    # id: (extra flags, extra env, TOML file text, names the message must mention)
    "unknown-flag": (["--bogus-flag", "1"], {}, None, ["--bogus-flag"]),
    "replicas-abc": (["--replicas", "abc"], {}, None, ["replicas"]),
    "chunk-size-parsecs": (["--chunk-size", "12parsecs"], {}, None,
                           ["chunk-size", "chunk_size"]),
    "chunk-size-too-small": (["--chunk-size", "1KiB"], {}, None,
                             ["chunk-size", "chunk_size"]),
    "http-nonsense": (["--http", "nonsense"], {}, None, ["--http", "setting http"]),
    "gossip-bad-port": (["--gossip", "127.0.0.1:99999"], {}, None, ["gossip"]),
    "duration-word": (["--body-idle-timeout-s", "soon"], {}, None,
                      ["body-idle-timeout-s", "body_idle_timeout_s"]),
    "log-level": (["--log-level", "loud"], {}, None, ["log-level", "log_level"]),
    "unknown-env": ([], {"BLOBSTORE_BOGUS": "1"}, None, ["BLOBSTORE_BOGUS"]),
    "malformed-env": ([], {"BLOBSTORE_REPLICAS": "many"}, None,
                      ["BLOBSTORE_REPLICAS", "replicas"]),
    "toml-unknown-key": ([], {}, "bogus_key = 1\n", ["bogus_key"]),
    "toml-malformed-size": ([], {}, 'chunk_size = "12parsecs"\n', ["chunk_size"]),
    "toml-malformed-int": ([], {}, 'replicas = "three"\n', ["replicas"]),
    "toml-invalid": ([], {}, "replicas = [\n", ["toml"]),
    "toml-missing-file": (["--config", "/nonexistent/blobstore.toml"], {}, None,
                          ["/nonexistent/blobstore.toml"]),
}


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory: pytest.TempPathFactory
                ) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run every bad configuration at once (each start costs ~0.7 s of imports)."""
    root = tmp_path_factory.mktemp("cli")   # mktemp is not thread-safe: only here

    def run(case: str) -> subprocess.CompletedProcess[str]:
        extra, env, toml, _ = CASES[case]
        base = root / case
        base.mkdir()
        args = base_args(base / "d") + extra
        if toml is not None:
            (base / "node.toml").write_text(toml)
            args += ["--config", str(base / "node.toml")]
        return run_node_cli(args, {**ENV, **env})

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(CASES, pool.map(run, CASES)))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_setting_exits_2(case: str,
                             cli_results: dict[str, subprocess.CompletedProcess[str]]) -> None:
    assert_config_error(cli_results[case], *CASES[case][3])


def test_config_file_settings_are_used(start_node: StartNode, tmp_path: Path) -> None:
    """A valid TOML file is accepted and applied; a flag beats the environment beats it."""
    config = tmp_path / "node.toml"
    config.write_text('replicas = 1\nchunk_size = "64KiB"\nlog_level = "info"\n')
    node = start_node("n1", "--config", str(config))
    assert health_ok(node)
    assert chunks_for(node, 200 * 1024) == 4          # 64 KiB chunks, from the file
    node.terminate()
    node.start(env={"BLOBSTORE_CHUNK_SIZE": "128KiB"})
    assert chunks_for(node, 200 * 1024) == 2          # the environment beats the file
    node.terminate()
    node.start(args=["--config", str(config), "--chunk-size", "256KiB"])
    assert chunks_for(node, 200 * 1024) == 1          # the flag beats both


def chunks_for(node: NodeProcess, size: int) -> int:
    """How many chunk files one fresh blob of ``size`` random bytes adds on disk."""
    with client(node, node.login()) as c:
        before = c.get("/cluster").json()["chunks"]["on_disk"]
        name = f"cfg-{node.starts}"
        create_container(c, name)
        assert put(c, name, "b", os.urandom(size)).status_code == 201
        return int(c.get("/cluster").json()["chunks"]["on_disk"]) - before


def test_missing_required_flag_exits_2(tmp_path: Path) -> None:
    args = base_args(tmp_path / "d")
    i = args.index("--node-id")
    del args[i:i + 2]
    assert_config_error(run_node_cli(args, ENV), "--node-id", "node_id")
    assert_config_error(run_node_cli([], ENV), "--node-id", "node_id")


def test_fresh_data_dir_needs_admin_password_or_dev(tmp_path: Path) -> None:
    data_dir = tmp_path / "n1"
    result = run_node_cli(base_args(data_dir), {})
    assert_config_error(result, "BLOBSTORE_ADMIN_PASSWORD")
    assert "--dev" in result.stderr
    assert not (data_dir / "node.ready").exists()


def test_failed_bootstrap_does_not_poison_the_data_dir(tmp_path: Path,
                                                       start_node: StartNode) -> None:
    data_dir = tmp_path / "n1"
    run_node_cli(base_args(data_dir), {})           # refused: no admin password
    node = start_node("n1", data_dir=data_dir)      # with one, it bootstraps
    assert health_ok(node)
    node.login()


def test_second_node_on_same_data_dir_exits_2(start_node: StartNode) -> None:
    node = start_node("n1")
    result = run_node_cli(base_args(node.data_dir), ENV)
    assert_config_error(result, "in use")
    # The running node is untouched: still serving, its ready file still names it.
    assert node.running and health_ok(node)
    assert f'"pid": {node.pid}' in (node.data_dir / "node.ready").read_text()


def test_other_node_id_on_same_data_dir_exits_2(start_node: StartNode) -> None:
    node = start_node("n1")
    assert node.terminate() == 0
    result = run_node_cli(base_args(node.data_dir, node_id="n2"), ENV)
    assert_config_error(result, "n1")
    assert "n2" in result.stderr
    node.start()                              # the rightful owner still starts
    assert node.request("GET", "/health")[1]["node_id"] == "n1"


def test_help_exits_0(tmp_path: Path) -> None:
    result = run_node_cli(["--help"], ENV)
    assert result.returncode == 0
    assert "--chunk-size" in result.stdout
