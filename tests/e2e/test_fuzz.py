"""Fuzzing a live node from its own OpenAPI document, with schemathesis.

One real node serves the API; schemathesis makes one test per operation of
``node/api/openapi.json`` and runs its phases on each: the document's examples,
boundary and invalid values derived from the schemas (with unexpected methods
and missing headers), then Hypothesis' random cases, valid and invalid, all
logged in. Every answer must keep the document: no 5xx; a documented status,
content type, body schema and headers; invalid input refused; the bearer token
required. No request may take longer than ``REQUEST_TIMEOUT_S``: that is the
deadline, a hang fails the test (Hypothesis' own per-example deadline is off,
as schemathesis sets it: the harness' restoring calls would count towards it).

Bounded and repeatable for CI: a fixed seed, Hypothesis derandomized, no
example database, no data taken from earlier answers, at most ``MAX_EXAMPLES``
random cases per operation. The digest of every request sent is printed at the
end (with ``-s``), so two runs can be compared.

The fuzzer logs in as ``fuzzer``, an admin of its own, and ``World`` keeps
what the run needs intact whatever the fuzzer does to it:
- after each ``POST /logout``, ``POST /change_password`` and ``DELETE /users``
  it checks that the fuzzer's token still works; if not, it recreates
  ``fuzzer`` or resets its password (as the built-in admin, whose token the
  fuzzer never holds) and logs in again. A change of the built-in admin's
  password by the fuzzer (``{"username": "admin", ...}``) is followed, so the
  harness always knows it; ``DELETE /users?username=admin`` is refused by the
  node (400);
- the user, container and blob that the document's examples name (``alice``,
  ``photos``, ``2026/cat.jpg``) exist, so the examples reach real objects: a
  successful delete of one, or change of ``alice``'s password, is undone.
The node's login throttle is off (a huge ``--login-max-failures``): the
fuzzer's bad logins would otherwise lock 127.0.0.1 out; it has its own tests.
So are the per-user request rate and the per-client connection limit (the
fuzzer is one very busy client whose connections linger); tests/e2e/test_limits.py
tests those.

The whole run is made twice, against a node over plain HTTP and one over HTTPS
(its own CA, every request verified): the contract holds the same with TLS on.

``.venv/bin/pytest tests/e2e/test_fuzz.py`` runs it (about 40 s);
``FUZZ_EXAMPLES=500`` runs a deeper campaign and ``FUZZ_SEED=N`` another seed.
"""

from __future__ import annotations

import collections
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import (content_type_conformance, ignored_auth,
                                               missing_required_header,
                                               negative_data_rejection,
                                               response_headers_conformance,
                                               response_schema_conformance,
                                               status_code_conformance, unsupported_method)

from node.api import openapi
from node.testing.process import NodeProcess
from tests.e2e.conftest import StartNode
from tests.tls_files import Authority

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("FUZZ_SEED", "20261203"))
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
REQUEST_TIMEOUT_S = 10.0
FUZZER, FUZZER_PASSWORD = "fuzzer", "fuzzer-password-1"
#: The objects the document's examples name (see node/api/openapi.json).
EXAMPLE_USER, EXAMPLE_PASSWORD = "alice", "correct-horse-battery"
EXAMPLE_CONTAINER, EXAMPLE_BLOB = "photos", "2026/cat.jpg"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance, negative_data_rejection,
          missing_required_header, ignored_auth, unsupported_method]
#: Operations after which the harness makes sure the fuzzer can still log in.
ACCOUNT_CHANGES = {("POST", "/logout"), ("POST", "/change_password"), ("DELETE", "/users")}
#: Operations whose success the harness undoes when they hit the examples' objects.
OBJECT_DELETES = {("DELETE", "/delete_data"), ("DELETE", "/delete_container")}

# Invalid input must be refused: schemathesis' list of statuses, plus those that come
# before the invalid part is looked at (RFC 9110 evaluates If-Match first: a failed
# If-Match is 412 whatever If-None-Match holds) and the contract's own (411, 413).
CONFIG = f"""
seed = {SEED}
request-timeout = {REQUEST_TIMEOUT_S}
suppress-health-check = ["too_slow", "filter_too_much", "data_too_large"]

[generation]
max-examples = {MAX_EXAMPLES}
deterministic = true
database = "none"
mode = "all"

[phases.examples.extra-data-sources]
responses = false

[phases.coverage]
generate-duplicate-query-parameters = true

[phases.coverage.extra-data-sources]
responses = false

[phases.fuzzing.extra-data-sources]
responses = false

[phases.fuzzing.error-feedback]
enabled = false

[phases.stateful]
enabled = false

[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 409, 411, 412, 413, 429]
"""


class World:
    """What the fuzz run relies on, checked and restored around the fuzzer's calls."""

    def __init__(self, node: NodeProcess) -> None:
        self.node = node
        self.http = httpx.Client(base_url=node.url, timeout=REQUEST_TIMEOUT_S,
                                 verify=node.ssl_context() or True)
        #: What the fuzzer's requests verify the node's certificate against (HTTPS only).
        self.verify: str | bool = node.tls_ca() or True
        self.admin_password = node.admin_password or ""
        self.admin_token = ""
        self.token = ""
        self.statuses: dict[str, collections.Counter[int]] = collections.defaultdict(
            collections.Counter)
        self.sent = hashlib.sha256()

    def close(self) -> None:
        self.http.close()

    def _login(self, username: str, password: str) -> str:
        r = self.http.post("/auth", json={"username": username, "password": password})
        assert r.status_code == 200, f"login of {username}: {r.status_code} {r.text}"
        return str(r.json()["token"])

    def _as_admin(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                  **kwargs: Any) -> httpx.Response:
        """A call as the built-in admin, logging in again if its token was revoked."""
        for attempt in range(2):
            if attempt or not self.admin_token:
                self.admin_token = self._login("admin", self.admin_password)
            r = self.http.request(method, path, headers={
                **(headers or {}), "Authorization": f"Bearer {self.admin_token}"}, **kwargs)
            if r.status_code != 401:
                break
        return r

    def _ensure_user(self, username: str, password: str, role: str) -> None:
        r = self._as_admin("POST", "/users", json={"username": username, "password": password,
                                                   "role": role})
        if r.status_code == 409:
            r = self._as_admin("POST", "/change_password",
                               json={"username": username, "new_password": password})
        assert r.status_code in (201, 204), r.text

    def _ensure_fuzzer(self) -> None:
        self._ensure_user(FUZZER, FUZZER_PASSWORD, "admin")
        self.token = self._login(FUZZER, FUZZER_PASSWORD)

    def set_up(self) -> None:
        """The fuzzer's account and the objects of the document's examples."""
        self._ensure_fuzzer()
        self._ensure_user(EXAMPLE_USER, EXAMPLE_PASSWORD, "user")
        self._ensure_objects()

    def _ensure_objects(self) -> None:
        r = self._as_admin("POST", "/create_container", json={"container": EXAMPLE_CONTAINER})
        assert r.status_code in (201, 409), r.text
        r = self._as_admin("POST", "/put_data",
                           params={"container": EXAMPLE_CONTAINER, "blob": EXAMPLE_BLOB},
                           content=b"meow" * 100, headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 201, r.text

    def _fuzzer_token_works(self) -> bool:
        r = self.http.get("/list_containers", headers={"Authorization": f"Bearer {self.token}"})
        return r.status_code == 200

    def record(self, case: Case) -> None:
        """Add the request to the digest of everything sent (tokens left out)."""
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        body = None if isinstance(case.body, NotSet) else case.body
        self.sent.update(repr((case.method, case.path, case.query, sorted(headers.items()),
                               body)).encode("utf-8", "backslashreplace"))


    def after(self, case: Case, status: int | None) -> None:
        """Follow or undo what the fuzzer's call changed that the run relies on."""
        key = (case.method.upper(), case.path)
        self.statuses[f"{key[0]} {key[1]}"][status or 0] += 1
        body = case.body if isinstance(case.body, dict) else {}
        if key == ("POST", "/change_password") and status == 204 and \
                body.get("username") == "admin":
            self.admin_password = str(body["new_password"])
            self.admin_token = ""
        if key in ACCOUNT_CHANGES and not self._fuzzer_token_works():
            self._ensure_fuzzer()
        if key in ACCOUNT_CHANGES and status == 204:
            self._ensure_user(EXAMPLE_USER, EXAMPLE_PASSWORD, "user")
        if key in OBJECT_DELETES and status == 204:
            self._ensure_objects()

    def report(self) -> str:
        lines = [f"requests sent: digest {self.sent.hexdigest()[:16]} (seed {SEED}, "
                 f"{MAX_EXAMPLES} examples); statuses by operation:"]
        lines += [f"  {op:28} {dict(sorted(counts.items()))}"
                  for op, counts in sorted(self.statuses.items())]
        return "\n".join(lines)


@pytest.fixture(scope="module", params=["http", "https"])
def world(start_module_node: StartNode, request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The node the fuzzer attacks: once over plain HTTP, once over HTTPS (TLS on)."""
    env = {}
    if request.param == "https":
        env = Authority(tmp_path_factory.mktemp("ca")).node("n1").env()
    node = start_module_node("n1", "--login-max-failures", "1000000000",
                             "--max-connections-per-client", "4096", "--max-connections", "4096",
                             "--user-requests-per-s", "0", env=env,
                             data_dir=tmp_path_factory.mktemp(request.param) / "n1")
    assert node.url.startswith(request.param + "://")
    world = World(node)
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "https":  # the checks' own requests too (ignored_auth, ...)
            patch.setenv("REQUESTS_CA_BUNDLE", str(world.verify))
        try:
            world.set_up()
            yield world
            print("\n" + world.report())
        finally:
            world.close()


def test_the_node_serves_the_document_the_fuzzer_reads(world: World) -> None:
    r = world.http.get("/openapi.json")
    assert r.status_code == 200
    assert r.content == openapi.document_bytes()


# Loaded when pytest collects this module (one test per operation), so from the package's
# copy; the test above checks that the node serves the same bytes.
schema = schemathesis.openapi.from_dict(openapi.document(),
                                        config=schemathesis.Config.from_str(CONFIG))


@schema.parametrize()
def test_every_operation_keeps_the_document(case: Case, world: World) -> None:
    headers = {"Authorization": f"Bearer {world.token}"}
    world.record(case)
    status = None
    try:
        response = case.call(base_url=world.node.url, headers=headers,
                             timeout=REQUEST_TIMEOUT_S, verify=world.verify)
        status = response.status_code
        case.validate_response(response, checks=CHECKS, headers=headers)
    finally:
        world.after(case, status)
