"""blobctl: the command-line client of the blob store (API.md over HTTP).

Parses the command line, builds the context (output, saved login, URL and
token) and runs one command; every failure becomes one line on stderr,
``blobctl: CODE: message (STATUS)``, and a stable exit code:

====  =========================================================================
code  meaning
====  =========================================================================
   0  success
   1  other error: a local file that cannot be read or written, a digest
      mismatch, an unexpected answer (500, 405)
   2  usage error: bad arguments or options
   3  not logged in, login expired, or 401 Unauthorized
   4  403 Forbidden: logged in, but no permission
   5  404: no such container, blob or user
   6  409 or 412: exists, not empty, or a condition failed
   7  503, 507, 408, 429, cannot connect, timed out, or health degraded:
      retrying later may help
   8  400, 411, 413 or 416: the node refused the request as invalid
   9  a recursive download skipped some blobs: a name that would escape the
      target directory, or that clashes with another blob's file
 130  interrupted (Ctrl-C)
====  =========================================================================

The codes are defined once, in ``tools.blobctl.errors.ExitCode``; this table,
``blobctl --help`` and the README are checked against it by the tests.
Environment: ``BLOBCTL_URL``, ``BLOBCTL_TOKEN``, ``BLOBCTL_CONFIG_DIR`` and
``BLOBCTL_CACERT`` stand in for ``--url``, a saved login, ``--config-dir`` and
``--cacert``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import NoReturn

from tools.blobctl.commands import account, blobs, cluster, containers, users
from tools.blobctl.config import ConfigStore, config_dir
from tools.blobctl.context import Context
from tools.blobctl.errors import CliError, ExitCode, exit_codes_text
from tools.blobctl.output import Output, error_line

EPILOG = f"""\
environment:
  BLOBCTL_URL          the node to talk to (default: the saved login's, else
                       http://127.0.0.1:8001)
  BLOBCTL_TOKEN        a token to send instead of the saved one
  BLOBCTL_CONFIG_DIR   where the login is saved (default:
                       $XDG_CONFIG_HOME/blobctl or ~/.config/blobctl)
  BLOBCTL_CACERT       the CA an https:// node is verified against
                       (default: the system's CAs)

exit codes:
{exit_codes_text()}
"""


class _Parser(argparse.ArgumentParser):
    """Usage errors as blobctl's one-line error (exit code 2), not argparse's two lines."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')", ExitCode.USAGE)


def _add_common(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options every command takes, before or after its name. Subcommands get them
    with suppressed defaults so they never overwrite what was given before the name."""
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--url", default=default(None),
                        help="the node's URL (default: $BLOBCTL_URL, the saved login's, "
                             "or http://127.0.0.1:8001)")
    parser.add_argument("--config-dir", default=default(None), metavar="DIR",
                        help="where the login is saved (default: $BLOBCTL_CONFIG_DIR, "
                             "$XDG_CONFIG_HOME/blobctl or ~/.config/blobctl)")
    parser.add_argument("--cacert", default=default(None), metavar="FILE",
                        help="verify an https:// node against this CA (PEM) only, e.g. "
                             "the cluster CA (default: $BLOBCTL_CACERT, else the system's "
                             "CAs)")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="machine-readable JSON on stdout")
    parser.add_argument("--timeout", type=float, default=default(30.0), metavar="S",
                        help="give up on a silent connection after S seconds (default 30)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction,
                        default=default(None),
                        help="progress bars on stderr (default: when stderr is a terminal)")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    _add_common(common, defaults=False)
    parser = _Parser(prog="blobctl", description="Command-line client of the blob store.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(parser, defaults=True)
    parser.add_argument("--version", action="version", version=f"blobctl {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (account, containers, blobs, users, cluster):
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one blobctl command; returns the exit code (the console script exits with it)."""
    try:
        args = build_parser().parse_args(argv)
    except CliError as exc:
        error_line(exc.message)
        return int(exc.exit_code)
    except SystemExit as exc:  # --help and --version print and "exit"
        return exc.code if isinstance(exc.code, int) else 0
    try:
        if args.timeout <= 0:
            raise CliError("--timeout must be > 0", ExitCode.USAGE)
        ctx = Context(out=Output(json_mode=args.json, progress=args.progress),
                      store=ConfigStore(config_dir(args.config_dir, os.environ)),
                      environ=os.environ, url_flag=args.url, timeout_s=args.timeout,
                      cacert=args.cacert or os.environ.get("BLOBCTL_CACERT") or None)
        return int(args.run(ctx, args))
    except CliError as exc:
        error_line(exc.message)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        error_line("interrupted")
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        _drop_stdout()
        error_line("output closed before the end (broken pipe)")
        return int(ExitCode.ERROR)
    except OSError as exc:
        error_line(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return int(ExitCode.ERROR)


def _drop_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _version() -> str:
    try:
        return metadata.version("blobstore")
    except metadata.PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
