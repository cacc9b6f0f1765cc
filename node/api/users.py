"""Authentication and users: /auth, /logout, /users, /change_password."""

from __future__ import annotations

from quart import Response

from node.api import params
from node.api.app import BlobApp, endpoint
from node.api.auth import authenticate, require_admin
from node.api.errors import json_response, no_content
from node.api.inputs import client_address, json_body, query
from node.auth import tokens
from node.clock import rfc3339
from node.errors import Forbidden, InvalidRequest, Unauthorized, Unavailable, UserNotFound
from node.meta import commands as c
from node.meta import dirty
from node.meta.records import User
from node.services import Services

def _user_json(user: User) -> dict[str, str]:
    return {"username": user.username, "role": user.role, "created_at": user.created_at}


async def _check_password(svc: Services, username: str, password: str) -> User:
    """The user if the password is right; throttled and counted otherwise."""
    keys = [f"user:{username}", f"addr:{client_address()}"]
    now = svc.clock.now()
    try:
        svc.throttle.check(keys, now)
    except Exception:
        svc.metrics.login_throttled.inc()
        raise
    user = svc.state.view.users.get(username)
    stored = user.password_hash if user else svc.hasher.dummy_hash
    ok = await svc.hasher.verify(stored, password) and user is not None
    if not ok or user is None:
        svc.throttle.failed(keys, svc.clock.now())
        svc.metrics.login_failures.inc()
        raise Unauthorized("wrong user name or password")
    svc.throttle.succeeded(keys[0])
    return user


@endpoint("auth")
async def login(svc: Services) -> Response:
    body = await json_body({"username", "password"}, {"username", "password"})
    if not isinstance(body["username"], str) or not isinstance(body["password"], str):
        raise InvalidRequest("username and password must be strings")
    # Linearizable: a password change or user deletion committed anywhere counts here.
    await svc.log.read_barrier()
    key = svc.state.signing_key
    if key is None:
        raise Unavailable("the cluster's metadata has not reached this node yet; retry")
    user = await _check_password(svc, body["username"][:256], body["password"][:1024])
    await svc.log.settled((dirty.USERS,))
    expires = svc.clock.now() + svc.config.token_ttl_s
    token = tokens.issue(key, tokens.TokenClaims(user.username, user.uid, user.epoch, expires))
    return json_response({"token": token, "expires_at": rfc3339(expires),
                    "username": user.username, "role": user.role})


@endpoint("logout")
async def logout(svc: Services) -> Response:
    user = await authenticate(svc)
    await svc.log.submit(c.Logout(user.username, user.uid))
    return no_content()


@endpoint("create_user")
async def create_user(svc: Services) -> Response:
    require_admin(await authenticate(svc))
    body = await json_body({"username", "password", "role"}, {"username", "password"})
    name = params.username(body["username"])
    password = params.password(body["password"], "password", svc.config.min_password_length)
    role = body.get("role", "user")
    if role not in ("user", "admin"):
        raise InvalidRequest("role must be 'user' or 'admin'")
    password_hash = await svc.hasher.hash(password)
    user = await svc.log.submit(c.CreateUser(name, role, password_hash,
                                             rfc3339(svc.clock.now())))
    assert isinstance(user, User)
    return json_response(_user_json(user), 201)


@endpoint("list_users")
async def list_users(svc: Services) -> Response:
    require_admin(await authenticate(svc))
    users = sorted(svc.state.view.users.values(), key=lambda u: u.username.encode())
    await svc.log.settled((dirty.USERS,))
    return json_response({"users": [_user_json(u) for u in users]})


@endpoint("delete_user")
async def delete_user(svc: Services) -> Response:
    require_admin(await authenticate(svc))
    name = params.username(params.require(query(), "username"))
    await svc.log.submit(c.DeleteUser(name))
    return no_content()


@endpoint("change_password")
async def change_password(svc: Services) -> Response:
    caller = await authenticate(svc)
    body = await json_body({"old_password", "new_password", "username"}, {"new_password"})
    new = params.password(body["new_password"], "new_password",
                          svc.config.min_password_length)
    target_name = params.username(body.get("username", caller.username))
    if "old_password" in body:
        if target_name != caller.username:
            raise Forbidden("old_password changes only your own password")
        if not isinstance(body["old_password"], str):
            raise InvalidRequest("old_password must be a string")
        try:
            await _check_password(svc, caller.username, body["old_password"][:1024])
        except Unauthorized:
            raise Forbidden("old_password is wrong") from None
        target = caller
    else:
        if not caller.is_admin:
            if target_name != caller.username:
                raise Forbidden("only an admin may set another user's password")
            raise InvalidRequest("old_password is required")
        found = svc.state.view.users.get(target_name)
        if found is None:
            raise UserNotFound(f"user {target_name!r} does not exist")
        target = found
    await svc.log.settled((dirty.USERS,))
    password_hash = await svc.hasher.hash(new)
    await svc.log.submit(c.SetPassword(target.username, target.uid, password_hash))
    return no_content()


def register(app: BlobApp) -> None:
    app.add_url_rule("/auth", view_func=login, methods=["POST"])
    app.add_url_rule("/logout", view_func=logout, methods=["POST"])
    app.add_url_rule("/users", view_func=create_user, methods=["POST"])
    app.add_url_rule("/users", view_func=list_users, methods=["GET"])
    app.add_url_rule("/users", view_func=delete_user, methods=["DELETE"])
    app.add_url_rule("/change_password", view_func=change_password, methods=["POST"])
