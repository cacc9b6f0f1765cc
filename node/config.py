"""The node's one frozen configuration, and its strict loaders.

Every setting has one name used three ways: a flag (``--chunk-size``), an
environment variable (``BLOBSTORE_CHUNK_SIZE``) and a key of the TOML config
file (``chunk_size``). Precedence: flags, then environment, then file, then the
default. An unknown key, an unknown ``BLOBSTORE_*`` variable or a malformed
value is a ``ConfigError`` naming the setting, so a misspelt setting never
passes silently (hypercorn drops unknown keys; we do not).

Secrets (``cluster_key``, ``cluster_keys_accepted``, ``admin_password``) are
never flags, so they stay out of ``ps`` output and shell history.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.errors import ConfigError

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TIB = 1024 * GIB
SECONDS = 1.0
MINUTES = 60 * SECONDS
HOURS = 60 * MINUTES

ENV_PREFIX = "BLOBSTORE_"
_NODE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_host_port(text: str) -> HostPort:
    if not isinstance(text, str):
        raise ValueError("expected HOST:PORT as a string")
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not host or not rest.startswith(":"):
            raise ValueError(f"expected [IPv6]:PORT, got {text!r}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host or ":" in host:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"bad port in {text!r}")
    return HostPort(host, int(port_text))


def parse_join(text: str | Sequence[str]) -> tuple[HostPort, ...]:
    if not isinstance(text, (str, list, tuple)):
        raise ValueError("expected HOST:PORT[,HOST:PORT...]")
    items = text.split(",") if isinstance(text, str) else list(text)
    if not all(isinstance(item, str) for item in items):
        raise ValueError("expected HOST:PORT strings")
    return tuple(parse_host_port(item) for item in items if item.strip())


_SIZE_UNITS = {"": 1, "b": 1, "k": KIB, "kib": KIB, "kb": 1000, "m": MIB, "mib": MIB,
               "mb": 1000 * 1000, "g": GIB, "gib": GIB, "gb": 1000**3, "t": TIB, "tib": TIB,
               "tb": 1000**4}
_DURATION_UNITS = {"": SECONDS, "s": SECONDS, "ms": 0.001, "m": MINUTES, "min": MINUTES,
                   "h": HOURS}


def _split_unit(text: str) -> tuple[float, str]:
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not match:
        raise ValueError(f"expected a number with an optional unit, got {text!r}")
    return float(match.group(1)), match.group(2).lower()


def parse_size(value: str | int) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a size")
    if isinstance(value, int):
        return value
    number, unit = _split_unit(value)
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unknown size unit {unit!r}")
    return int(number * _SIZE_UNITS[unit])


def parse_duration(value: str | int | float) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration")
    if isinstance(value, (int, float)):
        return float(value)
    number, unit = _split_unit(value)
    if unit not in _DURATION_UNITS:
        raise ValueError(f"unknown duration unit {unit!r}")
    return number * _DURATION_UNITS[unit]


def parse_float(value: str | int | float) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    if isinstance(value, (int, float)):
        return float(value)
    if not re.fullmatch(r"\s*[0-9]+(?:\.[0-9]+)?\s*", value):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Reserve:
    """Disk space to keep free: a share of the filesystem, or a number of bytes."""

    share: float = 0.0
    size: int = 0

    def bytes_of(self, total: int) -> int:
        return max(self.size, int(self.share * total))

    def __str__(self) -> str:
        return f"{self.share * 100:g}%" if self.share else f"{self.size}B"


def parse_reserve(value: str | int | Reserve) -> Reserve:
    """``2%`` (of the filesystem) or a size (``10GiB``)."""
    if isinstance(value, Reserve):
        return value
    if isinstance(value, str) and value.strip().endswith("%"):
        share = parse_float(value.strip()[:-1])
        if not 0 <= share <= 100:
            raise ValueError("a share is 0% to 100%")
        return Reserve(share=share / 100)
    return Reserve(size=parse_size(value))


def parse_int(value: str | int) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, int):
        return value
    if not re.fullmatch(r"\s*-?[0-9]+\s*", value):
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


def parse_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected true or false, got {value!r}")
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def parse_str(value: str) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def parse_path(value: str) -> Path:
    """A file path; empty is an error (an unset setting is left out, not given as "")."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a file path")
    return Path(value.strip()).expanduser()


def parse_key_list(value: str | Sequence[str]) -> tuple[str, ...]:
    """Comma-separated keys (or a TOML list); blanks around and between them are dropped.
    The error never repeats a value: these are secrets."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ValueError("expected keys separated by commas")
    return tuple(item.strip() for item in items if item.strip())


def _setting(default: Any, parse: Callable[[Any], Any], help: str, *,
             flag: bool = True, secret: bool = False) -> Any:
    meta = {"parse": parse, "help": help, "flag": flag, "secret": secret}
    if default is dataclasses.MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta, repr=not secret)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a node needs to know, fixed at start-up."""

    node_id: str = _setting(dataclasses.MISSING, parse_str, "this node's stable identity")
    data_dir: Path = _setting(dataclasses.MISSING, Path, "where chunks and metadata live")
    http: HostPort = _setting(dataclasses.MISSING, parse_host_port, "HTTP API listen address")
    gossip: HostPort = _setting(dataclasses.MISSING, parse_host_port, "gossip listen address")
    join: tuple[HostPort, ...] = _setting((), parse_join, "gossip addresses of members")
    bootstrap_expect: int = _setting(1, parse_int, "nodes that form the first coordinator")
    replicas: int = _setting(3, parse_int, "copies of every chunk (clamped to cluster size)")
    dev: bool = _setting(False, parse_bool, "development mode: allows default secrets")
    log_level: str = _setting("info", parse_str, "debug, info, warning or error")
    chunk_size: int = _setting(4 * MIB, parse_size, "bytes per chunk (64KiB..64MiB)")
    max_chunks_in_flight: int = _setting(3, parse_int, "chunks of one upload being stored")
    meta_cache_bytes: int = _setting(64 * MIB, parse_size,
                                     "memory for recently used manifests and small blobs")
    inline_max: int = _setting(16 * KIB, parse_size,
                               "blobs up to this size live in their manifest, on every node "
                               "(0: never)")
    token_ttl_s: float = _setting(12 * HOURS, parse_duration, "lifetime of a login token")
    min_password_length: int = _setting(8, parse_int, "shortest password the API accepts")
    login_max_failures: int = _setting(5, parse_int, "failed logins before throttling")
    login_window_s: float = _setting(15 * MINUTES, parse_duration, "failed-login memory")
    login_backoff_s: float = _setting(1.0, parse_duration, "first throttle delay, doubling")
    argon2_time_cost: int = _setting(3, parse_int, "argon2id passes")
    argon2_memory_kib: int = _setting(64 * 1024, parse_int, "argon2id memory (KiB)")
    argon2_parallelism: int = _setting(4, parse_int, "argon2id lanes")
    body_idle_timeout_s: float = _setting(60.0, parse_duration, "max wait for body bytes")
    graceful_timeout_s: float = _setting(10.0, parse_duration, "drain time on SIGTERM")
    send_timeout_s: float = _setting(60.0, parse_duration, "max time to send one response piece")
    body_min_bytes_per_s: int = _setting(1 * KIB, parse_size,
                                         "slowest upload kept after its first "
                                         "body_idle_timeout_s (slower: 408)")
    keep_alive_timeout_s: float = _setting(75.0, parse_duration,
                                           "an idle connection, or one whose request head "
                                           "has not arrived in full, is closed after this")
    max_header_bytes: int = _setting(16 * KIB, parse_size,
                                     "largest request line plus headers (larger: 431)")
    max_headers: int = _setting(100, parse_int, "most header fields in a request (431)")
    max_query_bytes: int = _setting(16 * KIB, parse_size, "longest query string (414)")
    max_connections: int = _setting(1024, parse_int, "open HTTP connections of this node")
    max_connections_per_client: int = _setting(128, parse_int,
                                               "open HTTP connections of one client address")
    max_uploads_per_user: int = _setting(64, parse_int,
                                         "uploads one user may have in flight on a node (429)")
    user_requests_per_s: float = _setting(2000.0, parse_float,
                                          "requests a second one user may make of a node, "
                                          "bursts twice that (429 with Retry-After; 0: no limit)")
    max_blob_size: int = _setting(5 * TIB, parse_size, "largest blob (413)")
    disk_reserve: Reserve = _setting(Reserve(share=0.02), parse_reserve,
                                   "free disk a node keeps: new chunks are refused (507) "
                                   "below it, so metadata can still be written; a share "
                                   "(2%) or a size (10GiB)")
    gc_interval_s: float = _setting(60.0, parse_duration, "pause between GC passes")
    gc_grace_s: float = _setting(1 * HOURS, parse_duration, "min age of a collectable chunk")
    upload_hold_s: float = _setting(60.0, parse_duration,
                                    "a peer's upload keeps its chunks from the collector this "
                                    "long past its last renewal")
    upload_max_s: float = _setting(24 * HOURS, parse_duration,
                                   "longest upload; older ones are refused at commit")
    election_timeout_s: float = _setting(0.8, parse_duration,
                                         "coordinator silence before an election (x1..x2)")
    read_lease_s: float = _setting(0.8, parse_duration,
                                   "read lease length: nodes read their own state without a "
                                   "round trip; a node that stops answering delays write "
                                   "acknowledgements this long (0: ReadIndex for every read)")
    meta_timeout_s: float = _setting(5.0, parse_duration,
                                     "metadata writes without a quorum give up (503) after")
    voter_replace_s: float = _setting(30.0, parse_duration,
                                      "a voter dead this long is replaced by a learner")
    heal_interval_s: float = _setting(10 * MINUTES, parse_duration,
                                      "chunk healing pass at least this often (and on every "
                                      "ring change)")
    scrub_bytes_per_s: int = _setting(16 * MIB, parse_size,
                                      "chunk bytes re-verified per second by the scrubber")
    scrub_interval_s: float = _setting(1 * HOURS, parse_duration,
                                       "pause between two scrub passes")
    snapshot_every: int = _setting(10_000, parse_int,
                                   "metadata entries between snapshots (log compaction)")
    gossip_preset: str = _setting("lan", parse_str, "gossip timings: lan, local or tests")
    zone: str = _setting("", parse_str, "failure domain (rack, room); replicas spread over zones")
    weight: int = _setting(1, parse_int, "relative capacity for placement (1..1000)")
    leave_timeout_s: float = _setting(2.0, parse_duration,
                                      "max time to announce a graceful leave on SIGTERM")
    tls_cert: Path | None = _setting(None, parse_path,
                                     "PEM file of this node's certificate (signed by tls_ca); "
                                     "with tls_key and tls_ca, turns TLS on")
    tls_key: Path | None = _setting(None, parse_path, "PEM file of that certificate's key")
    tls_ca: Path | None = _setting(None, parse_path,
                                   "PEM file of the cluster CA: the only authority nodes "
                                   "trust for each other's certificates")
    cluster_key: str | None = _setting(None, parse_str, "shared cluster secret",
                                       flag=False, secret=True)
    cluster_keys_accepted: tuple[str, ...] = _setting(
        (), parse_key_list, "other cluster keys accepted from peers, never used to sign "
        "(rotating the cluster key), comma-separated", flag=False, secret=True)
    admin_password: str | None = _setting(None, parse_str, "bootstrap admin password",
                                          flag=False, secret=True)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def tls(self) -> bool:
        """Inter-node streams and the HTTP API run over TLS (all three files are set)."""
        return self.tls_cert is not None

    @property
    def starts_alone(self) -> bool:
        """A cluster of one (expect 1, no --join): it bootstraps at once, without gossip."""
        return self.bootstrap_expect == 1 and not self.join


def valid_node_id(text: str) -> bool:
    """Whether ``text`` may name a node (the rule ``--node-id`` is held to)."""
    return bool(_NODE_ID_RE.fullmatch(text))


def _check(ok: bool, name: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"setting {name}: {why}")


def _validate(cfg: NodeConfig) -> None:
    _check(valid_node_id(cfg.node_id), "node_id",
           "1-64 characters of letters, digits, '.', '_' or '-', starting with one "
           "of the first two")
    _check(1 <= cfg.bootstrap_expect <= 1000, "bootstrap_expect", "must be 1..1000")
    _check(1 <= cfg.replicas <= 16, "replicas", "must be 1..16")
    _check(64 * KIB <= cfg.chunk_size <= 64 * MIB, "chunk_size", "must be 64KiB..64MiB")
    _check(1 <= cfg.max_chunks_in_flight <= 64, "max_chunks_in_flight", "must be 1..64")
    _check(0 <= cfg.read_lease_s <= 60, "read_lease_s", "must be 0..60s")
    _check(0 <= cfg.meta_cache_bytes <= 64 * GIB, "meta_cache_bytes", "must be 0..64GiB")
    _check(0 <= cfg.inline_max <= min(256 * KIB, cfg.chunk_size), "inline_max",
           "must be 0..256KiB and at most chunk_size")
    _check(cfg.log_level in ("debug", "info", "warning", "error"), "log_level",
           "must be debug, info, warning or error")
    _check(cfg.token_ttl_s > 0, "token_ttl_s", "must be positive")
    _check(1 <= cfg.min_password_length <= 1024, "min_password_length", "must be 1..1024")
    _check(cfg.login_max_failures >= 1, "login_max_failures", "must be at least 1")
    _check(cfg.argon2_time_cost >= 1, "argon2_time_cost", "must be at least 1")
    _check(cfg.argon2_memory_kib >= 8 * cfg.argon2_parallelism, "argon2_memory_kib",
           "must be at least 8 * argon2_parallelism")
    _check(1 <= cfg.argon2_parallelism <= 64, "argon2_parallelism", "must be 1..64")
    _check(cfg.body_idle_timeout_s > 0, "body_idle_timeout_s", "must be positive")
    _check(cfg.graceful_timeout_s >= 0, "graceful_timeout_s", "must not be negative")
    _check(cfg.send_timeout_s > 0, "send_timeout_s", "must be positive")
    _check(cfg.body_min_bytes_per_s >= 0, "body_min_bytes_per_s", "must not be negative")
    _check(cfg.keep_alive_timeout_s > 0, "keep_alive_timeout_s", "must be positive")
    _check(1 * KIB <= cfg.max_header_bytes <= 1 * MIB, "max_header_bytes", "must be 1KiB..1MiB")
    _check(8 <= cfg.max_headers <= 10_000, "max_headers", "must be 8..10000")
    _check(1 * KIB <= cfg.max_query_bytes <= 1 * MIB, "max_query_bytes", "must be 1KiB..1MiB")
    _check(1 <= cfg.max_connections_per_client <= cfg.max_connections <= 1_000_000,
           "max_connections_per_client", "must be 1..max_connections (at most 1000000)")
    _check(cfg.max_uploads_per_user >= 1, "max_uploads_per_user", "must be at least 1")
    _check(cfg.user_requests_per_s >= 0, "user_requests_per_s", "must not be negative")
    _check(cfg.max_blob_size >= 0, "max_blob_size", "must not be negative")
    _check(cfg.disk_reserve.size >= 0, "disk_reserve", "must not be negative")
    _check(cfg.gc_interval_s > 0, "gc_interval_s", "must be positive")
    _check(cfg.gc_grace_s >= 0, "gc_grace_s", "must not be negative")
    _check(cfg.upload_hold_s >= 0.3, "upload_hold_s", "must be at least 0.3s")
    _check(cfg.upload_max_s >= 60, "upload_max_s", "must be at least 60s")
    _check(0.05 <= cfg.election_timeout_s <= 60, "election_timeout_s", "must be 50ms..60s")
    _check(cfg.meta_timeout_s >= 2 * cfg.election_timeout_s, "meta_timeout_s",
           "must be at least twice election_timeout_s (room for one election)")
    _check(cfg.voter_replace_s >= 1, "voter_replace_s", "must be at least 1s")
    _check(cfg.heal_interval_s >= 1, "heal_interval_s", "must be at least 1s")
    _check(cfg.scrub_bytes_per_s >= 64 * KIB, "scrub_bytes_per_s", "must be at least 64KiB")
    _check(cfg.scrub_interval_s >= 1, "scrub_interval_s", "must be at least 1s")
    _check(10 <= cfg.snapshot_every <= 10_000_000, "snapshot_every", "must be 10..10000000")
    _check(cfg.gossip_preset in ("lan", "local", "tests"), "gossip_preset",
           "must be lan, local or tests")
    _check(len(cfg.zone) <= 64 and cfg.zone.isprintable(), "zone",
           "at most 64 printable characters")
    _check(1 <= cfg.weight <= 1000, "weight", "must be 1..1000")
    _check(cfg.leave_timeout_s >= 0, "leave_timeout_s", "must not be negative")
    if cfg.cluster_key is not None:
        _check(len(cfg.cluster_key) >= 16, "cluster_key", "must be at least 16 characters")
    if not cfg.dev and (cfg.join or cfg.bootstrap_expect > 1):
        _check(cfg.cluster_key is not None, "cluster_key",
               "BLOBSTORE_CLUSTER_KEY is required to form or join a cluster "
               "(or start with --dev)")
    _validate_keys_and_tls(cfg)


#: Keys accepted besides the current one: a rotation needs one; a few allow for overlap.
MAX_ACCEPTED_KEYS = 3
_TLS_FILES = ("tls_cert", "tls_key", "tls_ca")


def _validate_keys_and_tls(cfg: NodeConfig) -> None:
    accepted = cfg.cluster_keys_accepted
    if accepted:
        _check(cfg.cluster_key is not None, "cluster_keys_accepted",
               "needs BLOBSTORE_CLUSTER_KEY too: the key this node signs with")
        _check(len(accepted) <= MAX_ACCEPTED_KEYS, "cluster_keys_accepted",
               f"at most {MAX_ACCEPTED_KEYS} keys")
        _check(all(len(key) >= 16 for key in accepted), "cluster_keys_accepted",
               "every key must be at least 16 characters")
    given = [name for name in _TLS_FILES if getattr(cfg, name) is not None]
    missing = [name for name in _TLS_FILES if name not in given]
    _check(not given or not missing, missing[0] if missing else "tls",
           "TLS needs tls_cert, tls_key and tls_ca together (the node's certificate, its "
           f"key and the cluster CA); {', '.join(given)} set but not {', '.join(missing)}")


SETTINGS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(NodeConfig)}


def _parse_value(name: str, raw: Any, source: str) -> Any:
    try:
        return SETTINGS[name].metadata["parse"](raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"setting {name} (from {source}): {exc}") from None


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blobstore-node",
        allow_abbrev=False,
        description="Run one blob store node. Every setting may also come from "
        "BLOBSTORE_<NAME> or a TOML file given by --config; flags win.",
        epilog="Metadata backups: blobstore-node backup --help, blobstore-node restore --help.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", help="TOML file of settings")
    for name, f in SETTINGS.items():
        if not f.metadata["flag"]:
            continue
        flag = "--" + name.replace("_", "-")
        text = f.metadata["help"].replace("%", "%%")  # argparse formats help with %
        if f.metadata["parse"] is parse_bool:
            parser.add_argument(flag, dest=name, action="store_const", const=True, help=text)
        else:
            parser.add_argument(flag, dest=name, help=text)
    return parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise ConfigError(message)


def load_config(argv: Sequence[str], environ: Mapping[str, str]) -> NodeConfig:
    """Build the config from flags, environment and file; raise ConfigError if off."""
    parser = _argument_parser()
    parser.__class__ = _Parser
    flags = vars(parser.parse_args(list(argv)))

    config_path = flags.pop("config", None) or environ.get(ENV_PREFIX + "CONFIG")
    values: dict[str, Any] = {}
    if config_path:
        values.update(_load_file(Path(config_path)))
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name not in SETTINGS:
            raise ConfigError(f"unknown environment setting {key}")
        values[name] = _parse_value(name, raw, key)
    for name, raw in flags.items():
        values[name] = _parse_value(name, raw, "--" + name.replace("_", "-"))

    missing = [n for n, f in SETTINGS.items()
               if f.default is dataclasses.MISSING and n not in values]
    if missing:
        raise ConfigError("missing required settings: " +
                          ", ".join("--" + n.replace("_", "-") for n in missing))
    return NodeConfig(**values)


def _load_file(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    values = {}
    for name, raw in document.items():
        if name not in SETTINGS:
            raise ConfigError(f"unknown setting {name!r} in {path}")
        if isinstance(raw, (dict, list)) and name not in ("join", "cluster_keys_accepted"):
            raise ConfigError(f"setting {name} in {path}: expected a single value")
        values[name] = _parse_value(name, raw, str(path))
    return values


def config_for_tests(data_dir: Path, **overrides: Any) -> NodeConfig:
    """A config for tests: one node on loopback ports chosen by the OS, cheap argon2."""
    base: dict[str, Any] = dict(
        node_id="n1", data_dir=data_dir, http=HostPort("127.0.0.1", 0),
        gossip=HostPort("127.0.0.1", 0), dev=True, admin_password="admin-password",
        cluster_key="test-cluster-key-0123456789", argon2_time_cost=1,
        argon2_memory_kib=1024, argon2_parallelism=1, graceful_timeout_s=2.0,
    )
    base.update(overrides)
    return NodeConfig(**base)
