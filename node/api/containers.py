"""Containers and grants: create, delete, list, grant_access, revoke_access."""

from __future__ import annotations

from quart import Response

from node.api import params
from node.api.app import BlobApp, endpoint
from node.api.auth import OWNER, authenticate, container_for
from node.api.errors import json_response, no_content
from node.api.inputs import json_body, query
from node.clock import rfc3339
from node.errors import InvalidRequest
from node.meta import commands as c
from node.meta import dirty, queries
from node.meta.records import Container
from node.services import Services


@endpoint("create_container")
async def create_container(svc: Services) -> Response:
    user = await authenticate(svc)
    body = await json_body({"container"}, {"container"})
    name = params.container_name(body["container"])
    record = await svc.log.submit(c.CreateContainer(name, user.username, user.uid,
                                                    rfc3339(svc.clock.now())))
    assert isinstance(record, Container)
    return json_response({"container": record.name, "owner": record.owner,
                          "created_at": record.created_at}, 201)


@endpoint("delete_container")
async def delete_container(svc: Services) -> Response:
    user = await authenticate(svc)
    name = params.container_name(params.require(query(), "container"))
    await container_for(svc, user, name, OWNER)
    await svc.log.submit(c.DeleteContainer(name))
    return no_content()


@endpoint("list_containers")
async def list_containers(svc: Services) -> Response:
    user = await authenticate(svc)
    visible: list[str] | None = None
    if not user.is_admin:
        visible = [name for name, record in list(svc.state.view.containers.items())
                   if record.owner_uid == user.uid or user.uid in record.grants]
    stats = await svc.db.read(lambda conn: queries.container_stats(conn, visible))
    await svc.log.settled((dirty.CONTAINERS,))
    return json_response({"containers": [
        {"container": s.container, "owner": s.owner, "created_at": s.created_at,
         "blob_count": s.blob_count, "bytes": s.bytes} for s in stats]})


@endpoint("grant_access")
async def grant_access(svc: Services) -> Response:
    user = await authenticate(svc)
    body = await json_body({"container", "username", "permission"},
                           {"container", "username", "permission"})
    name = params.container_name(body["container"])
    grantee = params.username(body["username"])
    if body["permission"] not in ("read", "write"):
        raise InvalidRequest("permission must be 'read' or 'write'")
    await container_for(svc, user, name, OWNER)
    await svc.log.submit(c.Grant(name, grantee, body["permission"]))
    return no_content()


@endpoint("revoke_access")
async def revoke_access(svc: Services) -> Response:
    user = await authenticate(svc)
    body = await json_body({"container", "username"}, {"container", "username"})
    name = params.container_name(body["container"])
    grantee = params.username(body["username"])
    await container_for(svc, user, name, OWNER)
    await svc.log.submit(c.Revoke(name, grantee))
    return no_content()


def register(app: BlobApp) -> None:
    app.add_url_rule("/create_container", view_func=create_container, methods=["POST"])
    app.add_url_rule("/delete_container", view_func=delete_container, methods=["DELETE"])
    app.add_url_rule("/list_containers", view_func=list_containers, methods=["GET"])
    app.add_url_rule("/grant_access", view_func=grant_access, methods=["POST"])
    app.add_url_rule("/revoke_access", view_func=revoke_access, methods=["POST"])
