"""``login``, ``logout`` and ``token``: getting, dropping and showing the saved login.

The password never appears on the command line (it would sit in the shell
history and in ``ps``): it comes from a prompt or, for scripts, from the first
line of stdin with ``--password-stdin``.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from tools.blobctl.client import Client
from tools.blobctl.config import DEFAULT_URL, Login, normalize_url
from tools.blobctl.context import Context
from tools.blobctl.errors import ApiError, CliError, ExitCode


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("login", parents=[common], help="log in and save the token",
                       description="Log in and save the token (mode 0600) in the config dir.")
    p.add_argument("--username", "-u", help="user name (default: the saved one, or a prompt)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of stdin")
    p.set_defaults(run=login)

    p = sub.add_parser("logout", parents=[common],
                       help="revoke your tokens and forget the saved one",
                       description="POST /logout (every token of yours issued before now stops "
                                   "working) and remove the saved token.")
    p.set_defaults(run=logout)

    p = sub.add_parser("token", parents=[common], help="print the saved token (for curl)",
                       description="Print the token blobctl would send, e.g. "
                                   "curl -H \"Authorization: Bearer $(blobctl token)\".")
    p.set_defaults(run=token)


def read_secret(prompt: str, from_stdin: bool) -> str:
    """A password: the next line of stdin (``--password-stdin``) or a no-echo prompt."""
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise CliError("--password-stdin: stdin ended before a password line",
                           ExitCode.USAGE)
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CliError("no terminal to prompt for a password: use --password-stdin",
                       ExitCode.USAGE)
    try:
        return getpass.getpass(prompt)
    except EOFError:
        raise CliError("no password given", ExitCode.USAGE) from None


def new_secret(prompt: str, from_stdin: bool) -> str:
    """A new password, typed twice when prompted."""
    first = read_secret(prompt, from_stdin)
    if not from_stdin and read_secret("Repeat it: ", False) != first:
        raise CliError("the passwords do not match", ExitCode.USAGE)
    return first


def authenticate(client: Client, username: str, password: str) -> dict[str, object]:
    """``POST /auth``: the node's answer (token, expires_at, username, role)."""
    answer = client.call("POST", "/auth", body={"username": username, "password": password},
                         auth=False)
    if not isinstance(answer, dict) or not isinstance(answer.get("token"), str):
        raise CliError("the node's answer to POST /auth has no token")
    return answer


def login(ctx: Context, args: argparse.Namespace) -> ExitCode:
    saved = _saved(ctx)
    url = normalize_url(ctx.url_flag or ctx.environ.get("BLOBCTL_URL")
                        or (saved.url if saved else DEFAULT_URL))
    username = args.username or (saved.username if saved else None)
    if not username:
        if args.password_stdin or not sys.stdin.isatty():
            raise CliError("give --username", ExitCode.USAGE)
        sys.stderr.write("Username: ")  # the prompt stays off stdout, like getpass's
        sys.stderr.flush()
        username = sys.stdin.readline().strip()
    password = read_secret(f"Password for {username} at {url}: ", args.password_stdin)
    answer = authenticate(ctx.client_for(url), username, password)
    expires_at = str(answer.get("expires_at") or "") or None
    ctx.store.save(Login(url=url, username=str(answer.get("username") or username),
                         token=str(answer["token"]), expires_at=expires_at))
    info = {"url": url, "username": answer.get("username", username),
            "role": answer.get("role"), "expires_at": expires_at,
            "config": str(ctx.store.path)}
    ctx.out.result(info, f"Logged in to {url} as {info['username']} ({info['role']}); "
                         f"the token expires at {expires_at} and is saved in {ctx.store.path}")
    return ExitCode.OK


def logout(ctx: Context, args: argparse.Namespace) -> ExitCode:
    creds = ctx.creds
    revoked = True
    if creds.token is None:
        revoked = False
    else:
        try:
            ctx.client().call("POST", "/logout")
        except ApiError as exc:
            if exc.status != 401:
                raise
            revoked = False  # already expired or revoked: nothing left to revoke
    ctx.store.forget_token()
    ctx.out.result({"url": creds.url, "revoked": revoked},
                   f"Logged out of {creds.url}" + ("" if revoked else " (no valid token)"))
    return ExitCode.OK


def token(ctx: Context, args: argparse.Namespace) -> ExitCode:
    creds = ctx.creds
    if creds.token is None:
        raise CliError(creds.missing, ExitCode.AUTH)
    saved = _saved(ctx)
    expires = saved.expires_at if saved and saved.token == creds.token else None
    if ctx.out.json_mode:
        ctx.out.json({"url": creds.url, "token": creds.token, "expires_at": expires})
    else:
        ctx.out.lines([creds.token])
    return ExitCode.OK


def _saved(ctx: Context) -> Login | None:
    """The saved login, or None if there is none or it cannot be read (login rewrites it)."""
    try:
        return ctx.store.load()
    except CliError:
        return None
