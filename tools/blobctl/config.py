"""The saved login: ``{url, username, token, expires_at}`` in the user's config dir.

The token is a bearer credential, so the file is created with mode 0600 (via
``os.open``, never widened by the umask) in a directory of mode 0700, and
replaced atomically so that a crash never leaves half a file. Where it lives:
``--config-dir``, else ``$BLOBCTL_CONFIG_DIR``, else
``$XDG_CONFIG_HOME/blobctl``, else ``~/.config/blobctl``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from tools.blobctl.errors import CliError, ExitCode

CONFIG_FILE = "config.json"
#: The node ``./run`` starts (README, quick start).
DEFAULT_URL = "http://127.0.0.1:8001"


@dataclass(frozen=True)
class Login:
    """What ``blobctl login`` remembers; ``token`` is None after ``logout``."""

    url: str
    username: str | None = None
    token: str | None = None
    expires_at: str | None = None

    def expired(self, now: datetime) -> bool:
        """True if the node said the token expires before ``now`` (unknown: not expired)."""
        if not self.expires_at:
            return False
        try:
            when = datetime.fromisoformat(self.expires_at.replace("Z", "+00:00"))
        except ValueError:
            return False
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return when <= now


def config_dir(explicit: str | None, environ: Mapping[str, str]) -> Path:
    """Where the login is kept (see the module docstring for the order)."""
    if explicit:
        return Path(explicit).expanduser()
    if environ.get("BLOBCTL_CONFIG_DIR"):
        return Path(environ["BLOBCTL_CONFIG_DIR"]).expanduser()
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "blobctl"


class ConfigStore:
    """Reads and writes the one config file of a config dir."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / CONFIG_FILE

    def load(self) -> Login | None:
        """The saved login, or None if there is none; a damaged file is an error."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read {self.path}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            raise CliError(f"cannot read {self.path}: not a blobctl config (no 'url')")
        return Login(url=data["url"], username=_opt_str(data.get("username")),
                     token=_opt_str(data.get("token")),
                     expires_at=_opt_str(data.get("expires_at")))

    def save(self, login: Login) -> None:
        """Write ``login`` with mode 0600, atomically (temp file, fsync, rename)."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self.directory / f".{CONFIG_FILE}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(asdict(login), f, indent=2)
                    f.write("\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise CliError(f"cannot write {self.path}: {exc}") from None

    def forget_token(self) -> None:
        """Drop the token (and its expiry) but keep the URL and user name."""
        login = self.load()
        if login is not None and login.token is not None:
            self.save(replace(login, token=None, expires_at=None))


@dataclass(frozen=True)
class Credentials:
    """The URL to talk to and the token to send, after every override is applied."""

    url: str
    token: str | None
    #: Why there is no token (shown when a command needs one).
    missing: str = ""


def resolve(store: ConfigStore, url_flag: str | None, environ: Mapping[str, str],
            now: datetime) -> Credentials:
    """``--url`` > ``$BLOBCTL_URL`` > saved > default; ``$BLOBCTL_TOKEN`` > saved token.

    A saved token is only sent to the URL it was issued by, so that pointing
    blobctl at another node never leaks it.
    """
    saved = store.load()
    url = normalize_url(url_flag or environ.get("BLOBCTL_URL")
                        or (saved.url if saved else DEFAULT_URL))
    if environ.get("BLOBCTL_TOKEN"):
        return Credentials(url, environ["BLOBCTL_TOKEN"])
    if saved is None or saved.token is None:
        return Credentials(url, None, f"not logged in to {url}: run 'blobctl login'")
    if normalize_url(saved.url) != url:
        return Credentials(url, None, f"not logged in to {url} (the saved login is for "
                                      f"{saved.url}): run 'blobctl login --url {url}'")
    if saved.expired(now):
        return Credentials(url, None, f"the login of {saved.username} expired at "
                                      f"{saved.expires_at}: run 'blobctl login'")
    return Credentials(url, saved.token)


def normalize_url(url: str) -> str:
    """``host:port`` becomes ``http://host:port``; no trailing slash."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise CliError(f"unsupported URL scheme in {url!r}: use http:// or https://",
                       ExitCode.USAGE)
    return url.rstrip("/")


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None
