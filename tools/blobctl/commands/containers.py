"""``container create | delete | ls``: the containers you own or were granted."""

from __future__ import annotations

import argparse

from tools.blobctl.context import Context
from tools.blobctl.errors import ExitCode
from tools.blobctl.render import containers_table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    group = sub.add_parser("container", parents=[common], help="create, delete or list containers",
                           description="Containers: names are global (as in S3), 3-63 "
                                       "characters of a-z, 0-9 and '-'.")
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("create", parents=[common], help="create a container")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(run=create)
    p = actions.add_parser("delete", aliases=["rm"], parents=[common],
                           help="delete an empty container (owner or admin)")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(run=delete)
    p = actions.add_parser("ls", parents=[common],
                           help="list the containers you own or were granted (admin: all)")
    p.set_defaults(run=list_containers)


def create(ctx: Context, args: argparse.Namespace) -> ExitCode:
    answer = ctx.client().call("POST", "/create_container", body={"container": args.name})
    ctx.out.result(answer, f"created container {args.name}")
    return ExitCode.OK


def delete(ctx: Context, args: argparse.Namespace) -> ExitCode:
    ctx.client().call("DELETE", "/delete_container", query={"container": args.name})
    ctx.out.result({"container": args.name, "deleted": True},
                   f"deleted container {args.name}")
    return ExitCode.OK


def list_containers(ctx: Context, args: argparse.Namespace) -> ExitCode:
    answer = ctx.client().call("GET", "/list_containers")
    containers = answer.get("containers", []) if isinstance(answer, dict) else []
    ctx.out.result({"containers": containers}, containers_table(containers))
    return ExitCode.OK
