"""load_config: precedence, strictness, value parsing, secrets and cluster rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import (GIB, KIB, MIB, HostPort, NodeConfig, config_for_tests, load_config,
                         parse_duration, parse_host_port, parse_join, parse_size)
from node.errors import ConfigError

KEY = "k" * 24


def required(tmp_path: Path) -> list[str]:
    return ["--node-id", "n1", "--data-dir", str(tmp_path / "data"),
            "--http", "127.0.0.1:8080", "--gossip", "127.0.0.1:7946"]


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(argv: list[str], environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(argv, environ)
    return str(info.value)


def names(setting: str, message: str) -> bool:
    """True if the message names the setting, by its key or by its flag."""
    return setting in message or "--" + setting.replace("_", "-") in message


# -- basics and precedence -----------------------------------------------------------------


def test_minimal_flags_give_defaults(tmp_path: Path) -> None:
    cfg = load_config(required(tmp_path), {})
    assert cfg.node_id == "n1"
    assert cfg.data_dir == tmp_path / "data" and isinstance(cfg.data_dir, Path)
    assert cfg.http == HostPort("127.0.0.1", 8080)
    assert cfg.gossip == HostPort("127.0.0.1", 7946)
    assert cfg.join == ()
    assert cfg.chunk_size == 4 * MIB
    assert cfg.replicas == 3 and cfg.bootstrap_expect == 1
    assert cfg.dev is False
    assert cfg.token_ttl_s == 12 * 3600
    assert cfg.cluster_key is None and cfg.admin_password is None


def test_unrelated_environment_is_ignored(tmp_path: Path) -> None:
    cfg = load_config(required(tmp_path), {"PATH": "/bin", "HOME": "/root",
                                           "BLOBSTOREX_FOO": "1", "blobstore_chunk_size": "x"})
    assert cfg.chunk_size == 4 * MIB


@pytest.mark.parametrize(("file", "env", "flag", "expected"), [
    (None, None, None, 4 * MIB),
    ("1MiB", None, None, 1 * MIB),
    ("1MiB", "2MiB", None, 2 * MIB),
    ("1MiB", "2MiB", "3MiB", 3 * MIB),
    (None, "2MiB", "3MiB", 3 * MIB),
    ("1MiB", None, "3MiB", 3 * MIB),
    (None, "2MiB", None, 2 * MIB),
])
def test_precedence_flags_env_file_default(tmp_path: Path, file: str | None, env: str | None,
                                           flag: str | None, expected: int) -> None:
    argv = required(tmp_path)
    environ: dict[str, str] = {}
    if file is not None:
        argv += ["--config", str(write_toml(tmp_path, f'chunk_size = "{file}"\n'))]
    if env is not None:
        environ["BLOBSTORE_CHUNK_SIZE"] = env
    if flag is not None:
        argv += ["--chunk-size", flag]
    assert load_config(argv, environ).chunk_size == expected


def test_precedence_per_setting(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'replicas = 2\nlog_level = "debug"\ngc_interval_s = "5m"\n')
    cfg = load_config(required(tmp_path) + ["--config", str(path), "--replicas", "5"],
                      {"BLOBSTORE_LOG_LEVEL": "warning", "BLOBSTORE_REPLICAS": "4"})
    assert (cfg.replicas, cfg.log_level, cfg.gc_interval_s) == (5, "warning", 300.0)


def test_required_settings_may_come_from_file_and_env(tmp_path: Path) -> None:
    path = write_toml(tmp_path, f'node_id = "from-file"\ndata_dir = "{tmp_path}"\n'
                                'http = "0.0.0.0:80"\n')
    cfg = load_config([], {"BLOBSTORE_CONFIG": str(path), "BLOBSTORE_GOSSIP": "[::1]:7946"})
    assert cfg.node_id == "from-file"
    assert cfg.data_dir == tmp_path
    assert cfg.http == HostPort("0.0.0.0", 80)
    assert cfg.gossip == HostPort("::1", 7946)


def test_config_flag_wins_over_config_env(tmp_path: Path) -> None:
    good = write_toml(tmp_path, "replicas = 2\n")
    cfg = load_config(required(tmp_path) + ["--config", str(good)],
                      {"BLOBSTORE_CONFIG": str(tmp_path / "missing.toml")})
    assert cfg.replicas == 2


def test_toml_native_types(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'chunk_size = 65536\ndev = true\ntoken_ttl_s = 90\n'
                                'login_backoff_s = 0.5\njoin = ["10.0.0.1:7946", "[fe80::1]:7946"]\n'
                                'bootstrap_expect = 3\n')
    cfg = load_config(required(tmp_path) + ["--config", str(path)], {})
    assert cfg.chunk_size == 64 * KIB
    assert cfg.dev is True
    assert cfg.token_ttl_s == 90.0
    assert cfg.login_backoff_s == 0.5
    assert cfg.join == (HostPort("10.0.0.1", 7946), HostPort("fe80::1", 7946))


def test_join_from_flag_and_env(tmp_path: Path) -> None:
    cfg = load_config(required(tmp_path) + ["--dev", "--join", "a:1, b:2,,"], {})
    assert cfg.join == (HostPort("a", 1), HostPort("b", 2))
    cfg = load_config(required(tmp_path), {"BLOBSTORE_JOIN": "[::1]:5", "BLOBSTORE_DEV": "1"})
    assert cfg.join == (HostPort("::1", 5),)


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("true", True), ("Yes", True),
                                            ("on", True), ("0", False), ("false", False),
                                            ("no", False), ("OFF", False), ("", False)])
def test_bool_from_env(tmp_path: Path, raw: str, value: bool) -> None:
    assert load_config(required(tmp_path), {"BLOBSTORE_DEV": raw}).dev is value


def test_bool_flag_takes_no_value(tmp_path: Path) -> None:
    assert load_config(required(tmp_path) + ["--dev"], {}).dev is True
    config_error(required(tmp_path) + ["--dev", "false"], {})


# -- strictness ----------------------------------------------------------------------------


def test_unknown_flag(tmp_path: Path) -> None:
    assert "--chunk-sise" in config_error(required(tmp_path) + ["--chunk-sise", "1MiB"], {})


def test_positional_argument_rejected(tmp_path: Path) -> None:
    assert "stray" in config_error(required(tmp_path) + ["stray"], {})


def test_flag_without_value(tmp_path: Path) -> None:
    assert "chunk-size" in config_error(required(tmp_path) + ["--chunk-size"], {})


def test_unknown_env(tmp_path: Path) -> None:
    message = config_error(required(tmp_path), {"BLOBSTORE_CHUNKSIZE": "1MiB"})
    assert "BLOBSTORE_CHUNKSIZE" in message


def test_unknown_toml_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "chunksize = 5\n")
    assert "chunksize" in config_error(required(tmp_path) + ["--config", str(path)], {})


def test_toml_table_rejected(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[chunk_size]\nvalue = 1\n")
    assert "chunk_size" in config_error(required(tmp_path) + ["--config", str(path)], {})


def test_invalid_toml(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "chunk_size = = 1\n")
    assert "node.toml" in config_error(required(tmp_path) + ["--config", str(path)], {})


def test_missing_config_file(tmp_path: Path) -> None:
    message = config_error(required(tmp_path) + ["--config", str(tmp_path / "nope.toml")], {})
    assert "nope.toml" in message


def test_missing_required_settings_are_named(tmp_path: Path) -> None:
    message = config_error(["--node-id", "n1"], {})
    for flag in ("--data-dir", "--http", "--gossip"):
        assert flag in message
    assert "--node-id" not in message


@pytest.mark.parametrize(("setting", "flag", "raw"), [
    ("chunk_size", "--chunk-size", "lots"),
    ("chunk_size", "--chunk-size", "4 parsecs"),
    ("chunk_size", "--chunk-size", "-4MiB"),
    ("replicas", "--replicas", "three"),
    ("replicas", "--replicas", "2.5"),
    ("token_ttl_s", "--token-ttl-s", "forever"),
    ("token_ttl_s", "--token-ttl-s", "5 days"),
    ("http", "--http", "localhost"),
    ("http", "--http", "localhost:http"),
    ("gossip", "--gossip", "[::1]"),
    ("join", "--join", "a:1,b"),
])
def test_malformed_flag_values_name_the_setting(tmp_path: Path, setting: str, flag: str,
                                                raw: str) -> None:
    message = config_error(required(tmp_path) + [flag, raw], {})
    assert names(setting, message), message


@pytest.mark.parametrize(("setting", "raw"), [
    ("chunk_size", "lots"), ("replicas", "x"), ("dev", "maybe"), ("gc_grace_s", "1 week"),
    ("http", "nohost"),
])
def test_malformed_env_values_name_the_setting(tmp_path: Path, setting: str, raw: str) -> None:
    message = config_error(required(tmp_path), {f"BLOBSTORE_{setting.upper()}": raw})
    assert setting in message


@pytest.mark.parametrize(("setting", "toml_value"), [
    ("replicas", '"x"'),
    ("replicas", "2.5"),
    ("replicas", "true"),
    ("chunk_size", "true"),
    ("chunk_size", "1.5"),
    ("token_ttl_s", "true"),
    ("node_id", "5"),
    ("data_dir", "5"),
    ("log_level", "1"),
    ("dev", "1"),
    ("dev", '"perhaps"'),
    ("http", "8080"),
    ("gossip", "1979-05-27"),
    ("join", '["a:1", 5]'),
    ("join", "5"),
])
def test_malformed_toml_values_name_the_setting(tmp_path: Path, setting: str,
                                                toml_value: str) -> None:
    path = write_toml(tmp_path, f"{setting} = {toml_value}\n")
    message = config_error(required(tmp_path) + ["--config", str(path)], {})
    assert setting in message


@pytest.mark.parametrize(("setting", "flag", "raw"), [
    ("node_id", "--node-id", "_leading-underscore"),
    ("node_id", "--node-id", ".leading-dot"),
    ("node_id", "--node-id", "has space"),
    ("node_id", "--node-id", "x" * 65),
    ("node_id", "--node-id", "trailing-newline\n"),
    ("chunk_size", "--chunk-size", "32KiB"),
    ("chunk_size", "--chunk-size", "65MiB"),
    ("replicas", "--replicas", "0"),
    ("replicas", "--replicas", "17"),
    ("bootstrap_expect", "--bootstrap-expect", "0"),
    ("log_level", "--log-level", "loud"),
    ("token_ttl_s", "--token-ttl-s", "0"),
    ("max_chunks_in_flight", "--max-chunks-in-flight", "0"),
    ("min_password_length", "--min-password-length", "0"),
    ("login_max_failures", "--login-max-failures", "0"),
    ("argon2_parallelism", "--argon2-parallelism", "65"),
    ("argon2_memory_kib", "--argon2-memory-kib", "31"),
    ("body_idle_timeout_s", "--body-idle-timeout-s", "0"),
    ("gc_interval_s", "--gc-interval-s", "0"),
    ("election_timeout_s", "--election-timeout-s", "0.01"),
    ("meta_timeout_s", "--meta-timeout-s", "1"),
    ("voter_replace_s", "--voter-replace-s", "0.5"),
    ("snapshot_every", "--snapshot-every", "5"),
])
def test_out_of_range_values_name_the_setting(tmp_path: Path, setting: str, flag: str,
                                              raw: str) -> None:
    argv = [a for a in required(tmp_path)]
    if flag in argv:
        argv[argv.index(flag) + 1] = raw
    else:
        argv += [flag, raw]
    message = config_error(argv, {})
    assert names(setting, message), message


def test_node_id_leading_dash_via_equals(tmp_path: Path) -> None:
    argv = required(tmp_path)[2:] + ["--node-id=-n1"]
    assert "node_id" in config_error(argv, {})


@pytest.mark.parametrize("node_id", ["n", "N1", "node-1.zone_a", "0", "x" * 64])
def test_valid_node_ids(tmp_path: Path, node_id: str) -> None:
    argv = required(tmp_path)
    argv[1] = node_id
    assert load_config(argv, {}).node_id == node_id


# -- sizes and durations -------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("65536", 65536), ("1b", 1), ("64k", 64 * KIB), ("64KiB", 64 * KIB),
    ("64kb", 64_000), ("4m", 4 * MIB), ("4 MiB", 4 * MIB), ("4MB", 4_000_000),
    ("1g", GIB), ("2GiB", 2 * GIB), ("1gb", 10**9), ("1.5k", 1536), (" 8MiB ", 8 * MIB),
    (4096, 4096), ("5TiB", 5 * 1024 * GIB), ("1tb", 10**12),
])
def test_parse_size(text: str | int, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "k", "1 2", "-1", "1e3", "1kibs", "0x10", "1,5k",
                                  True])
def test_parse_size_rejects(text: str | bool) -> None:
    with pytest.raises(ValueError):
        parse_size(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "value"), [
    ("30", 30.0), ("30s", 30.0), ("250ms", 0.25), ("5m", 300.0), ("5min", 300.0),
    ("2h", 7200.0), ("1.5h", 5400.0), (" 10 s ", 10.0), ("12H", 43200.0), (7, 7.0), (0.5, 0.5),
])
def test_parse_duration(text: str | float, value: float) -> None:
    assert parse_duration(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "s", "-1s", "1d", "1 hour", "1h30m", "1e3", False])
def test_parse_duration_rejects(text: str | bool) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)  # type: ignore[arg-type]


# -- addresses -----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "host", "port", "shown"), [
    ("127.0.0.1:8080", "127.0.0.1", 8080, "127.0.0.1:8080"),
    ("localhost:0", "localhost", 0, "localhost:0"),
    ("node-1.example:65535", "node-1.example", 65535, "node-1.example:65535"),
    ("[::1]:7946", "::1", 7946, "[::1]:7946"),
    ("[fe80::1%eth0]:80", "fe80::1%eth0", 80, "[fe80::1%eth0]:80"),
    ("[2001:db8::1]:443", "2001:db8::1", 443, "[2001:db8::1]:443"),
    ("  10.0.0.1:1  ", "10.0.0.1", 1, "10.0.0.1:1"),
])
def test_parse_host_port(text: str, host: str, port: int, shown: str) -> None:
    parsed = parse_host_port(text)
    assert parsed == HostPort(host, port)
    assert str(parsed) == shown
    assert parse_host_port(str(parsed)) == parsed


@pytest.mark.parametrize("text", [
    "", "host", "host:", ":80", "::1:80", "::1", "[::1]", "[::1]80", "[::1]:", "[::1:80",
    "host:65536", "host:-1", "host:8o", "host: 80", "[]:80",
])
def test_parse_host_port_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_host_port(text)


def test_parse_join() -> None:
    assert parse_join("") == ()
    assert parse_join("a:1") == (HostPort("a", 1),)
    assert parse_join("a:1,[::1]:2, b:3 ,") == (HostPort("a", 1), HostPort("::1", 2),
                                               HostPort("b", 3))
    assert parse_join(["a:1", " ", "b:2"]) == (HostPort("a", 1), HostPort("b", 2))
    with pytest.raises(ValueError):
        parse_join("a:1,b")


# -- secrets and cluster rules -------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--cluster-key", "--admin-password"])
def test_secrets_are_not_flags(tmp_path: Path, flag: str) -> None:
    config_error(required(tmp_path) + [flag, KEY], {})


def test_secrets_from_env_and_file_stay_out_of_repr(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'admin_password = "file-password-123"\n')
    cfg = load_config(required(tmp_path) + ["--config", str(path)],
                      {"BLOBSTORE_CLUSTER_KEY": KEY})
    assert cfg.cluster_key == KEY
    assert cfg.admin_password == "file-password-123"
    for text in (repr(cfg), str(cfg)):
        assert KEY not in text
        assert "file-password-123" not in text
        assert "cluster_key" not in text and "admin_password" not in text
    assert "chunk_size" in repr(cfg)


def test_short_cluster_key_rejected_without_echoing_it(tmp_path: Path) -> None:
    message = config_error(required(tmp_path), {"BLOBSTORE_CLUSTER_KEY": "short-secret"})
    assert "cluster_key" in message
    assert "short-secret" not in message


@pytest.mark.parametrize("extra", [["--join", "10.0.0.2:7946"], ["--bootstrap-expect", "3"]])
def test_cluster_key_required_to_form_or_join(tmp_path: Path, extra: list[str]) -> None:
    argv = required(tmp_path) + extra
    message = config_error(argv, {})
    assert "cluster_key" in message or "CLUSTER_KEY" in message
    assert load_config(argv + ["--dev"], {}).cluster_key is None
    assert load_config(argv, {"BLOBSTORE_CLUSTER_KEY": KEY}).cluster_key == KEY


def test_single_node_needs_no_cluster_key(tmp_path: Path) -> None:
    assert load_config(required(tmp_path), {}).cluster_key is None


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = config_for_tests(tmp_path)
    with pytest.raises(AttributeError):
        cfg.replicas = 5  # type: ignore[misc]
    assert isinstance(cfg, NodeConfig)


def test_config_for_tests_overrides(tmp_path: Path) -> None:
    cfg = config_for_tests(tmp_path, chunk_size=64 * KIB)
    assert cfg.chunk_size == 64 * KIB
    assert cfg.argon2_time_cost == 1
    with pytest.raises(ConfigError):
        config_for_tests(tmp_path, chunk_size=1)


# -- TLS and key rotation ----------------------------------------------------------------

TLS_FLAGS = {"tls_cert": "/etc/blobstore/node.crt", "tls_key": "/etc/blobstore/node.key",
             "tls_ca": "/etc/blobstore/ca.crt"}


def tls_args(names: tuple[str, ...] = tuple(TLS_FLAGS)) -> list[str]:
    return [arg for name in names for arg in ("--" + name.replace("_", "-"), TLS_FLAGS[name])]


def test_tls_is_on_with_its_three_files_from_flags_env_or_file(tmp_path: Path) -> None:
    assert not load_config(required(tmp_path), {}).tls
    cfg = load_config(required(tmp_path) + tls_args(), {})
    assert cfg.tls and cfg.tls_cert == Path(TLS_FLAGS["tls_cert"])
    assert (cfg.tls_key, cfg.tls_ca) == (Path(TLS_FLAGS["tls_key"]), Path(TLS_FLAGS["tls_ca"]))
    env = {"BLOBSTORE_" + name.upper(): value for name, value in TLS_FLAGS.items()}
    assert load_config(required(tmp_path), env).tls_ca == Path(TLS_FLAGS["tls_ca"])
    path = write_toml(tmp_path, "".join(f'{k} = "{v}"\n' for k, v in TLS_FLAGS.items()))
    assert load_config(required(tmp_path) + ["--config", str(path)], {}).tls


@pytest.mark.parametrize("given", [("tls_cert",), ("tls_cert", "tls_key"), ("tls_key", "tls_ca"),
                                   ("tls_ca",)])
def test_half_configured_tls_is_refused_naming_what_is_missing(tmp_path: Path,
                                                               given: tuple[str, ...]) -> None:
    message = config_error(required(tmp_path) + tls_args(given), {})
    missing = [name for name in TLS_FLAGS if name not in given]
    assert all(name in message for name in missing), message
    assert "together" in message


def test_an_empty_tls_path_is_refused(tmp_path: Path) -> None:
    assert names("tls_cert", config_error(required(tmp_path), {"BLOBSTORE_TLS_CERT": " "}))


def test_accepted_cluster_keys_come_from_env_or_file_never_flags(tmp_path: Path) -> None:
    new, other = "n" * 20, "o" * 20
    env = {"BLOBSTORE_CLUSTER_KEY": KEY, "BLOBSTORE_CLUSTER_KEYS_ACCEPTED": f" {new} ,{other},"}
    cfg = load_config(required(tmp_path), env)
    assert cfg.cluster_keys_accepted == (new, other)
    for text in (repr(cfg), str(cfg)):
        assert new not in text and "cluster_keys_accepted" not in text
    path = write_toml(tmp_path, f'cluster_keys_accepted = ["{new}"]\n')
    cfg = load_config(required(tmp_path) + ["--config", str(path)],
                      {"BLOBSTORE_CLUSTER_KEY": KEY})
    assert cfg.cluster_keys_accepted == (new,)
    config_error(required(tmp_path) + ["--cluster-keys-accepted", new], {})


@pytest.mark.parametrize("accepted, why", [
    ("short-secret", "at least 16"),
    (",".join(c * 20 for c in "abcd"), "at most 3"),
])
def test_bad_accepted_keys_are_refused_without_echoing_them(tmp_path: Path, accepted: str,
                                                            why: str) -> None:
    message = config_error(required(tmp_path), {"BLOBSTORE_CLUSTER_KEY": KEY,
                                                "BLOBSTORE_CLUSTER_KEYS_ACCEPTED": accepted})
    assert "cluster_keys_accepted" in message and why in message
    assert all(key not in message for key in accepted.split(","))


def test_accepted_keys_need_a_current_key(tmp_path: Path) -> None:
    message = config_error(required(tmp_path) + ["--dev"],
                           {"BLOBSTORE_CLUSTER_KEYS_ACCEPTED": "n" * 20})
    assert "cluster_keys_accepted" in message and "CLUSTER_KEY" in message
