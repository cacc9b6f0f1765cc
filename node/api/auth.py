"""Who is calling, and may they do this: bearer tokens and container permissions."""

from __future__ import annotations

from quart import request

from node.auth import tokens
from node.meta import dirty
from node.errors import ContainerNotFound, Forbidden, Unauthorized, Unavailable
from node.meta.records import Container, User
from node.services import Services

READ, WRITE, OWNER = "read", "write", "owner"
_RANK = {READ: 1, WRITE: 2, OWNER: 3}


async def authenticate(svc: Services, *, linearizable: bool = True) -> User:
    """The user behind the request's bearer token; Unauthorized if none is valid.

    The token's signature and expiry are checked locally; its epoch and user id
    are compared with the metadata after a read barrier, so a logout or password
    change committed anywhere revokes it everywhere. That barrier also makes every
    later read of the same request linearizable: callers take no second one. ``linearizable=False`` skips
    the barrier (this node's copy may lag): only for read-only diagnostics that
    must work without a quorum, like ``GET /cluster`` during an outage.
    """
    header = request.headers.get("Authorization")
    if not header:
        raise Unauthorized("missing Authorization: Bearer <token>")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("expected Authorization: Bearer <token>")
    key = svc.state.signing_key
    if key is None:
        raise Unavailable("the cluster's metadata has not reached this node yet; retry")
    claims = tokens.verify(key, token.strip(), svc.clock.now())
    if linearizable:
        await svc.log.read_barrier()
    user = svc.state.view.users_by_uid.get(claims.uid)
    if user is None or user.username != claims.username:
        raise Unauthorized("the token's user no longer exists")
    if user.epoch != claims.epoch:
        raise Unauthorized("the token was revoked (logout or password change)")
    if linearizable:
        await svc.log.settled((dirty.USERS,))  # what was read is applied everywhere
    svc.user_limits.charge(user.uid)
    return user


def require_admin(user: User) -> None:
    if not user.is_admin:
        raise Forbidden("only an admin may do this")


def access_level(user: User, container: Container) -> str | None:
    if user.is_admin or container.owner_uid == user.uid:
        return OWNER
    return container.grants.get(user.uid)


async def container_for(svc: Services, user: User, name: str, need: str) -> Container:
    """The container if it exists and ``user`` has at least ``need`` on it (as stable
    state: see ``node.meta.dirty``)."""
    container = svc.state.view.containers.get(name)
    await svc.log.settled((dirty.container(name),))
    if container is None:
        raise ContainerNotFound(f"container {name!r} does not exist")
    level = access_level(user, container)
    if level is None or _RANK[level] < _RANK[need]:
        raise Forbidden(f"no {need} permission on container {name!r}")
    return container
