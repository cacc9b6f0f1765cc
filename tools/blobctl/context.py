"""What every command gets: the output, the saved login and the resolved credentials."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from tools.blobctl.client import Client
from tools.blobctl.config import ConfigStore, Credentials, resolve
from tools.blobctl.errors import ExitCode
from tools.blobctl.output import Output


@dataclass
class Context:
    """One blobctl run. Credentials are resolved on first use, so ``login`` works even
    when the saved config is damaged (it overwrites it)."""

    out: Output
    store: ConfigStore
    environ: Mapping[str, str]
    url_flag: str | None
    timeout_s: float
    #: The CA file https:// nodes are verified against (None: the system's CAs).
    cacert: str | None = None
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    _creds: Credentials | None = field(default=None, init=False)

    @property
    def creds(self) -> Credentials:
        if self._creds is None:
            self._creds = resolve(self.store, self.url_flag, self.environ, self.now())
        return self._creds

    def client(self) -> Client:
        """A client for the resolved URL and token."""
        creds = self.creds
        return Client(creds.url, creds.token, timeout_s=self.timeout_s,
                      missing_token=creds.missing, cacert=self.cacert)

    def client_for(self, url: str) -> Client:
        """A client for another URL, without a token (for ``/health`` of other members)."""
        return Client(url, None, timeout_s=self.timeout_s, cacert=self.cacert)


#: A command: reads its parsed arguments, does the work, says how it went.
Handler = Callable[[Context, argparse.Namespace], ExitCode]
