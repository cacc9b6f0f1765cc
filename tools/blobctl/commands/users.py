"""``user add | ls | rm | passwd``, ``grant`` and ``revoke``: who may do what.

Changing your own password revokes every older token of yours, including the
saved one, so ``user passwd`` logs in again with the new password and saves
the fresh token: the next command still works.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from tools.blobctl.commands.account import authenticate, new_secret, read_secret
from tools.blobctl.context import Context
from tools.blobctl.errors import ExitCode
from tools.blobctl.render import users_table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    group = sub.add_parser("user", parents=[common], help="add, list, remove users; passwords",
                           description="Users (add, ls, rm: admin only).")
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("add", parents=[common], help="add a user (admin)")
    p.add_argument("username", metavar="USER")
    p.add_argument("--role", choices=("user", "admin"), default="user")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the new user's password from the first line of stdin")
    p.set_defaults(run=add)
    p = actions.add_parser("ls", parents=[common], help="list users (admin)")
    p.set_defaults(run=list_users)
    p = actions.add_parser("rm", parents=[common], help="remove a user (admin)")
    p.add_argument("username", metavar="USER")
    p.set_defaults(run=remove)
    p = actions.add_parser("passwd", parents=[common],
                           help="change your password, or (admin) another user's",
                           description="Without USER (or with your own name): asks for your "
                                       "current and new password (with --password-stdin: two "
                                       "lines). With another USER (admin): only the new one.")
    p.add_argument("username", metavar="USER", nargs="?")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password(s) from stdin, one per line")
    p.set_defaults(run=passwd)

    p = sub.add_parser("grant", parents=[common], help="let a user read or write a container",
                       description="Grant USER read or write (write includes read) on "
                                   "CONTAINER; owner or admin only.")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("username", metavar="USER")
    p.add_argument("permission", choices=("read", "write"))
    p.set_defaults(run=grant)
    p = sub.add_parser("revoke", parents=[common], help="take a user's grant on a container away")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("username", metavar="USER")
    p.set_defaults(run=revoke)


def add(ctx: Context, args: argparse.Namespace) -> ExitCode:
    password = new_secret(f"Password for the new user {args.username}: ", args.password_stdin)
    answer = ctx.client().call("POST", "/users", body={"username": args.username,
                                                        "password": password,
                                                        "role": args.role})
    ctx.out.result(answer, f"added user {args.username} ({args.role})")
    return ExitCode.OK


def list_users(ctx: Context, args: argparse.Namespace) -> ExitCode:
    answer = ctx.client().call("GET", "/users")
    users = answer.get("users", []) if isinstance(answer, dict) else []
    ctx.out.result({"users": users}, users_table(users))
    return ExitCode.OK


def remove(ctx: Context, args: argparse.Namespace) -> ExitCode:
    ctx.client().call("DELETE", "/users", query={"username": args.username})
    ctx.out.result({"username": args.username, "deleted": True},
                   f"removed user {args.username}")
    return ExitCode.OK


def passwd(ctx: Context, args: argparse.Namespace) -> ExitCode:
    saved = ctx.store.load()
    me = saved.username if saved and saved.token and saved.token == ctx.creds.token else None
    client = ctx.client()
    if args.username and args.username != me:
        new = new_secret(f"New password for {args.username}: ", args.password_stdin)
        client.call("POST", "/change_password",
                    body={"username": args.username, "new_password": new})
        ctx.out.result({"username": args.username, "changed": True},
                       f"changed the password of {args.username}; their older tokens "
                       "no longer work")
        return ExitCode.OK
    old = read_secret("Current password: ", args.password_stdin)
    new = new_secret("New password: ", args.password_stdin)
    client.call("POST", "/change_password", body={"old_password": old, "new_password": new})
    relogged = False
    if saved is not None and me is not None:
        answer = authenticate(ctx.client_for(ctx.creds.url), me, new)
        ctx.store.save(replace(saved, token=str(answer["token"]),
                               expires_at=str(answer.get("expires_at") or "") or None))
        relogged = True
    ctx.out.result({"username": me, "changed": True, "logged_in_again": relogged},
                   "changed your password" + ("; logged in again with it" if relogged else
                                              "; older tokens no longer work: log in again"))
    return ExitCode.OK


def grant(ctx: Context, args: argparse.Namespace) -> ExitCode:
    ctx.client().call("POST", "/grant_access", body={"container": args.container,
                                                     "username": args.username,
                                                     "permission": args.permission})
    ctx.out.result({"container": args.container, "username": args.username,
                    "permission": args.permission},
                   f"granted {args.permission} on {args.container} to {args.username}")
    return ExitCode.OK


def revoke(ctx: Context, args: argparse.Namespace) -> ExitCode:
    ctx.client().call("POST", "/revoke_access", body={"container": args.container,
                                                      "username": args.username})
    ctx.out.result({"container": args.container, "username": args.username, "revoked": True},
                   f"revoked the grant of {args.username} on {args.container}")
    return ExitCode.OK

