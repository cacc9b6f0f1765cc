"""blobctl's pure parts: name safety, exit codes and their documentation, the saved
login, option parsing. No node is started here (see test_blobctl.py for that)."""

from __future__ import annotations

import json
import re
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tools.blobctl import cli
from tools.blobctl.config import (ConfigStore, Login, config_dir, normalize_url, resolve)
from tools.blobctl.errors import (MEANINGS, ApiError, CliError, ExitCode,
                                  exit_code_for_status)
from tools.blobctl.paths import (basename, check_inside, directory_prefix, join_prefix,
                                 local_path, split_target, unsafe_reason)
from tools.blobctl.render import human_size, short_time

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)


# -- names and paths ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a.txt", "dir/a.txt", "a/b/c", "with space/ü.txt",
                                  "...", "a..b/c", ".hidden"])
def test_clean_relative_names_are_accepted(name: str) -> None:
    assert unsafe_reason(name) is None
    assert local_path(Path("/dest"), name) == Path("/dest", *name.split("/"))


@pytest.mark.parametrize("name, reason", [
    ("../evil", ".."), ("a/../../evil", ".."), ("..", ".."),
    ("/etc/passwd", "absolute"), ("a\x00b", "NUL"), ("a//b", "empty"),
    ("./a", "'.'"), ("a/", "empty"), ("", "empty"),
])
def test_escaping_names_are_refused(name: str, reason: str) -> None:
    said = unsafe_reason(name)
    assert said is not None and reason in said
    with pytest.raises(CliError) as caught:
        local_path(Path("/dest"), name)
    assert caught.value.exit_code == ExitCode.PARTIAL


def test_a_symlink_out_of_the_target_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    check_inside(root, root / "fine" / "a.txt")
    with pytest.raises(CliError, match="symlink"):
        check_inside(root, root / "link" / "a.txt")


def test_targets_and_prefixes() -> None:
    assert split_target("photos/2024/cat.jpg") == ("photos", "2024/cat.jpg")
    assert split_target("photos") == ("photos", "")
    assert split_target("photos/") == ("photos", "")
    with pytest.raises(CliError) as caught:
        split_target("/cat.jpg")
    assert caught.value.exit_code == ExitCode.USAGE
    assert join_prefix("", "a/b") == "a/b"
    assert join_prefix("backup", "a/b") == "backup/a/b"
    assert join_prefix("backup/", "a/b") == "backup/a/b"
    assert directory_prefix("2024") == "2024/"
    assert directory_prefix("2024/") == "2024/"
    assert directory_prefix("") == ""
    assert basename("2024/cat.jpg") == "cat.jpg"
    with pytest.raises(CliError):
        basename("2024/..")


def test_sizes_and_times_for_people() -> None:
    assert human_size(0) == "0 B"
    assert human_size(1023) == "1023 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(3 << 20) == "3.0 MiB"
    assert short_time("2026-12-03T10:00:00.123Z") == "2026-12-03 10:00:00"


# -- exit codes ---------------------------------------------------------------------------

@pytest.mark.parametrize("status, code", [
    (400, 8), (401, 3), (403, 4), (404, 5), (408, 7), (409, 6), (411, 8), (412, 6),
    (413, 8), (416, 8), (429, 7), (500, 1), (503, 7), (507, 7), (405, 1),
])
def test_statuses_map_to_stable_exit_codes(status: int, code: int) -> None:
    assert exit_code_for_status(status) == code


def test_exit_codes_never_change_meaning() -> None:
    assert {c.name: int(c) for c in ExitCode} == {
        "OK": 0, "ERROR": 1, "USAGE": 2, "AUTH": 3, "FORBIDDEN": 4, "NOT_FOUND": 5,
        "CONFLICT": 6, "UNAVAILABLE": 7, "BAD_REQUEST": 8, "PARTIAL": 9, "INTERRUPTED": 130}
    assert set(MEANINGS) == set(ExitCode)


def _words(text: str) -> str:
    return " ".join(text.replace("`", "").split())


def test_exit_codes_are_documented_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    help_text = _words(capsys.readouterr().out)
    docstring = _words(cli.__doc__ or "")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## blobctl"):]
    section = section[:section.index("\n## ", 1)]
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", section, flags=re.MULTILINE))
    for code, meaning in MEANINGS.items():
        assert f"{int(code)} {_words(meaning)}" in help_text, code
        assert f"{int(code)} {_words(meaning)}" in docstring, code
        assert _words(rows.get(str(int(code)), "")) == _words(meaning), code


def test_api_errors_are_one_line_with_the_code() -> None:
    error = ApiError(404, "BlobNotFound", "blob 'x' does not exist in 'photos'")
    assert error.message == "BlobNotFound: blob 'x' does not exist in 'photos' (404)"
    assert error.exit_code == ExitCode.NOT_FOUND


# -- the saved login ----------------------------------------------------------------------

def test_the_login_is_saved_with_mode_0600(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "cfg" / "blobctl")
    store.save(Login("http://127.0.0.1:8001", "admin", "secret-token", "2026-12-04T00:00:00Z"))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert json.loads(store.path.read_text()) == {
        "url": "http://127.0.0.1:8001", "username": "admin", "token": "secret-token",
        "expires_at": "2026-12-04T00:00:00Z"}
    assert [p.name for p in store.directory.iterdir()] == ["config.json"]
    store.forget_token()
    assert store.load() == Login("http://127.0.0.1:8001", "admin", None, None)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_a_damaged_config_is_one_clear_error(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    store.path.write_text("{not json")
    with pytest.raises(CliError, match="cannot read"):
        store.load()


def test_where_the_config_lives(tmp_path: Path) -> None:
    assert config_dir("/x", {"BLOBCTL_CONFIG_DIR": "/y"}) == Path("/x")
    assert config_dir(None, {"BLOBCTL_CONFIG_DIR": "/y", "XDG_CONFIG_HOME": "/z"}) == Path("/y")
    assert config_dir(None, {"XDG_CONFIG_HOME": "/z"}) == Path("/z/blobctl")
    assert config_dir(None, {}) == Path.home() / ".config" / "blobctl"


def test_which_url_and_token_are_used(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    assert resolve(store, None, {}, NOW).token is None
    assert "not logged in" in resolve(store, None, {}, NOW).missing
    later = (NOW + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    store.save(Login("http://127.0.0.1:9000", "admin", "saved", later))
    assert resolve(store, None, {}, NOW) == resolve(store, "127.0.0.1:9000/", {}, NOW)
    assert resolve(store, None, {}, NOW).token == "saved"
    assert resolve(store, None, {"BLOBCTL_TOKEN": "env"}, NOW).token == "env"
    # The saved token never goes to another URL.
    other = resolve(store, "http://127.0.0.1:9001", {}, NOW)
    assert other.url == "http://127.0.0.1:9001" and other.token is None
    other = resolve(store, None, {"BLOBCTL_URL": "http://127.0.0.1:9001"}, NOW)
    assert other.token is None
    expired = resolve(store, None, {}, NOW + timedelta(hours=2))
    assert expired.token is None and "expired" in expired.missing
    with pytest.raises(CliError) as caught:
        normalize_url("ftp://x")
    assert caught.value.exit_code == ExitCode.USAGE


# -- the command line ---------------------------------------------------------------------

def test_common_options_go_before_or_after_the_command() -> None:
    parser = cli.build_parser()
    before = parser.parse_args(["--json", "--url", "http://a:1", "ls", "photos"])
    after = parser.parse_args(["ls", "photos", "--json", "--url", "http://a:1"])
    nested = parser.parse_args(["container", "ls", "--json"])
    for args in (before, after):
        assert args.json is True and args.url == "http://a:1" and args.target == "photos"
    assert nested.json is True and nested.url is None


@pytest.mark.parametrize("argv", [[], ["bogus"], ["put"], ["ls", "--limit", "many"],
                                  ["grant", "photos", "bob", "admin"]])
def test_usage_errors_are_one_line_and_exit_2(argv: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == ExitCode.USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("blobctl: ") and captured.err.count("\n") == 1


def test_get_to_stdout_refuses_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["get", "photos/a", "-", "--json", "--config-dir", str(tmp_path)])
    assert code == ExitCode.USAGE
    assert "--json" in capsys.readouterr().err
