"""Start-up strictness of the real ``blobstore-node`` command line.

Every misconfiguration must stop the node before it serves anything: exit code
2, a one-line message on stderr naming the setting, and never a traceback.
"""

from __future__ import annotations

import os
import subprocess
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


@pytest.mark.parametrize("extra, names", [
    (["--bogus-flag", "1"], ["--bogus-flag"]),
    (["--replicas", "abc"], ["replicas"]),
    (["--chunk-size", "12parsecs"], ["chunk-size", "chunk_size"]),
    (["--chunk-size", "1KiB"], ["chunk-size", "chunk_size"]),          # out of range
    (["--http", "nonsense"], ["--http", "setting http"]),
    (["--gossip", "127.0.0.1:99999"], ["gossip"]),
    (["--body-idle-timeout-s", "soon"], ["body-idle-timeout-s", "body_idle_timeout_s"]),
    (["--log-level", "loud"], ["log-level", "log_level"]),
], ids=["unknown-flag", "replicas-abc", "chunk-size-parsecs", "chunk-size-too-small",
        "http-nonsense", "gossip-bad-port", "duration-word", "log-level"])
def test_bad_flag_exits_2(tmp_path: Path, extra: list[str], names: list[str]) -> None:
    result = run_node_cli(base_args(tmp_path / "d") + extra, ENV)
    assert_config_error(result, *names)
    assert not (tmp_path / "d" / "node.ready").exists()


@pytest.mark.parametrize("env, names", [
    ({"BLOBSTORE_BOGUS": "1"}, ["BLOBSTORE_BOGUS"]),
    ({"BLOBSTORE_REPLICAS": "many"}, ["BLOBSTORE_REPLICAS", "replicas"]),
], ids=["unknown-env", "malformed-env"])
def test_bad_environment_exits_2(tmp_path: Path, env: dict[str, str],
                                 names: list[str]) -> None:
    result = run_node_cli(base_args(tmp_path / "d"), {**ENV, **env})
    assert_config_error(result, *names)


@pytest.mark.parametrize("toml, names", [
    ('bogus_key = 1\n', ["bogus_key"]),
    ('chunk_size = "12parsecs"\n', ["chunk_size"]),
    ('replicas = "three"\n', ["replicas"]),
    ('replicas = [\n', ["toml", "config"]),
], ids=["unknown-key", "malformed-size", "malformed-int", "invalid-toml"])
def test_bad_config_file_exits_2(tmp_path: Path, toml: str, names: list[str]) -> None:
    config = tmp_path / "node.toml"
    config.write_text(toml)
    result = run_node_cli(base_args(tmp_path / "d") + ["--config", str(config)], ENV)
    assert_config_error(result, *names)


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
