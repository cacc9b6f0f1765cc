"""A small HTTP client for the blob store API, on ``http.client`` alone.

Bodies stream both ways in 1 MiB pieces, so memory stays flat whatever the
blob's size: an upload of a file sends ``Content-Length``, one of unknown size
(stdin) uses ``Transfer-Encoding: chunked``; a download is read 1 MiB at a
time into a sink. Both check the bytes against the blob's ETag (the hex MD5 of
the whole blob, API.md), so a silent corruption on the way is an error.

Every error becomes a ``CliError``: the node's own error code and status
(``ApiError``), or "cannot reach URL" for connection failures, timeouts and
certificates that do not verify. An ``https://`` node is verified against
``cacert`` alone when given (a cluster's own CA), else the system's CAs.
One request, one connection: nothing here is shared between threads.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import ssl
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO, Protocol
from urllib.parse import quote, urlencode, urlsplit

from tools.blobctl.errors import ApiError, CliError, ExitCode, status_phrase_code

PIECE_BYTES = 1 << 20
USER_AGENT = "blobctl/0.1"
_ETAG = re.compile(r'^(?:W/)?"?([0-9a-f]{32})"?$')


class Meter(Protocol):
    """Where transfer progress goes (a rich progress bar, or nowhere)."""

    def start(self, total: int | None) -> None: ...

    def advance(self, n: int) -> None: ...


class Sink(Protocol):
    """Where downloaded bytes go (a file, stdout's buffer)."""

    def write(self, data: bytes, /) -> object: ...


class NoMeter:
    """A meter that shows nothing."""

    def start(self, total: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


class Client:
    """Talks to one node; ``token`` is sent on every call that needs authentication."""

    def __init__(self, url: str, token: str | None, *, timeout_s: float = 30.0,
                 missing_token: str = "not logged in: run 'blobctl login'",
                 cacert: str | None = None) -> None:
        parts = urlsplit(url)
        if not parts.hostname:
            raise CliError(f"no host in URL {url!r}", ExitCode.USAGE)
        self.url = url
        self.token = token
        self.timeout_s = timeout_s
        self._missing_token = missing_token
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._base = parts.path.rstrip("/")
        self._cacert = cacert
        self._ssl: ssl.SSLContext | None = None

    # -- JSON calls ----------------------------------------------------------------

    def call(self, method: str, path: str, *, query: Mapping[str, str] | None = None,
             body: Any = None, auth: bool = True) -> Any:
        """One API call with an optional JSON body: the parsed JSON answer (None for 204)."""
        headers = self._headers(auth)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = self._connect()
        try:
            try:
                conn.request(method, self._target(path, query), body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException) as exc:
                raise self._unreachable(exc) from None
        finally:
            conn.close()
        if response.status >= 400:
            raise _api_error(response.status, raw)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise CliError(f"the node's answer to {method} {path} is not JSON "
                           f"({response.status})") from None

    # -- streaming -----------------------------------------------------------------

    def upload(self, query: Mapping[str, str], source: BinaryIO, size: int | None,
               headers: Mapping[str, str], meter: Meter) -> dict[str, Any]:
        """``POST /put_data`` streaming ``source`` (``size`` bytes, or chunked if None).

        Returns the node's 201 answer after checking its ETag against the MD5 of
        the bytes sent. A node that refuses the request before reading the whole
        body (401, 403, 412...) is answered by its error, not by a broken pipe.
        """
        all_headers = {**self._headers(True), **headers}
        if size is None:
            all_headers["Transfer-Encoding"] = "chunked"
        else:
            all_headers["Content-Length"] = str(size)
        digest = hashlib.md5(usedforsecurity=False)
        conn = self._connect()
        try:
            try:
                conn.putrequest("POST", self._target("/put_data", query),
                                skip_accept_encoding=True)
                for name, value in all_headers.items():
                    conn.putheader(name, value)
                conn.endheaders()
            except OSError as exc:
                raise self._unreachable(exc) from None
            meter.start(size)
            try:
                _send_body(conn, source, size, digest, meter)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the node may have answered early; read that answer below
            try:
                response = conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException) as exc:
                raise self._unreachable(exc) from None
        finally:
            conn.close()
        if response.status >= 400:
            raise _api_error(response.status, raw)
        answer = _json_object(raw, "/put_data")
        _check_etag(str(answer.get("etag", "")), digest.hexdigest(), "stored")
        return answer

    def download(self, query: Mapping[str, str], sink: Sink, meter: Meter, *,
                 byte_range: str | None = None,
                 on_headers: Callable[[dict[str, str]], None] | None = None) -> dict[str, Any]:
        """``GET /get_data`` into ``sink``, 1 MiB at a time: the blob's metadata.

        ``on_headers`` runs once the node has said yes, before any byte is
        written (so a caller can open its target file only then). A whole blob
        (200) is checked against its ETag; a range (206) only against its length.
        """
        headers = self._headers(True)
        if byte_range:
            headers["Range"] = f"bytes={byte_range}"
        conn = self._connect()
        try:
            try:
                conn.request("GET", self._target("/get_data", query), headers=headers)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise self._unreachable(exc) from None
            if response.status >= 400:
                raise _api_error(response.status, _read_small(response))
            meta = {k.lower(): v for k, v in response.getheaders()}
            length = int(meta["content-length"]) if "content-length" in meta else None
            if on_headers is not None:
                on_headers(meta)
            meter.start(length)
            received, md5 = self._receive(response, sink, meter)
        finally:
            conn.close()
        if length is not None and received != length:
            raise CliError(f"the node sent {received} of {length} bytes; the download is "
                           "incomplete", ExitCode.UNAVAILABLE)
        etag = meta.get("etag", "")
        if response.status == 200:
            _check_etag(etag, md5, "sent")
        return {"container": query.get("container"), "blob": query.get("blob"),
                "status": response.status, "size": received,
                "etag": etag.strip('"') or None,
                "content_type": meta.get("content-type"),
                "last_modified": meta.get("last-modified"),
                "content_range": meta.get("content-range")}

    def _receive(self, response: http.client.HTTPResponse, sink: Sink,
                 meter: Meter) -> tuple[int, str]:
        digest = hashlib.md5(usedforsecurity=False)
        received = 0
        while True:
            try:
                piece = response.read(PIECE_BYTES)
            except (OSError, http.client.HTTPException) as exc:
                raise self._unreachable(exc) from None
            if not piece:
                return received, digest.hexdigest()
            digest.update(piece)
            sink.write(piece)
            received += len(piece)
            meter.advance(len(piece))

    # -- plumbing ------------------------------------------------------------------

    def _headers(self, auth: bool) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if auth:
            if not self.token:
                raise CliError(self._missing_token, ExitCode.AUTH)
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port,
                                               timeout=self.timeout_s,
                                               context=self._ssl_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)

    def _ssl_context(self) -> ssl.SSLContext:
        """Made on first use (an http:// node never needs the CA file to exist)."""
        if self._ssl is None:
            try:
                self._ssl = ssl.create_default_context(cafile=self._cacert)
            except (OSError, ssl.SSLError) as exc:
                raise CliError(f"cannot use --cacert {self._cacert}: {exc}",
                               ExitCode.USAGE) from None
        return self._ssl

    def _target(self, path: str, query: Mapping[str, str] | None) -> str:
        target = self._base + path
        if query:
            target += "?" + urlencode(dict(query), quote_via=quote, safe="")
        return target

    def _unreachable(self, exc: BaseException) -> CliError:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"timed out after {self.timeout_s:g} s"
        return CliError(f"cannot reach {self.url}: {reason}", ExitCode.UNAVAILABLE)


def _send_body(conn: http.client.HTTPConnection, source: BinaryIO, size: int | None,
               digest: Any, meter: Meter) -> None:
    """Send ``size`` bytes of ``source`` (or all of it, chunk-encoded, if None)."""
    left = size
    while left is None or left > 0:
        piece = source.read(PIECE_BYTES if left is None else min(PIECE_BYTES, left))
        if not piece:
            break
        digest.update(piece)
        if left is None:
            conn.send(b"%x\r\n%b\r\n" % (len(piece), piece))
        else:
            conn.send(piece)
            left -= len(piece)
        meter.advance(len(piece))
    if left:
        raise CliError(f"the file shrank while being sent ({left} bytes missing); "
                       "nothing was stored")
    if size is None:
        conn.send(b"0\r\n\r\n")


def _read_small(response: http.client.HTTPResponse) -> bytes:
    """An error body (bounded: error bodies are small JSON)."""
    try:
        return response.read(64 * 1024)
    except (OSError, http.client.HTTPException):
        return b""


def _api_error(status: int, raw: bytes) -> ApiError:
    try:
        error = json.loads(raw)["error"]
        return ApiError(status, str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        text = raw.decode("utf-8", "replace").strip().splitlines()
        return ApiError(status, status_phrase_code(status), text[0][:200] if text else
                        "no details")


def _json_object(raw: bytes, path: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise CliError(f"the node's answer to {path} is not a JSON object")
    return value


def _check_etag(etag: str, md5_hex: str, verb: str) -> None:
    match = _ETAG.match(etag.strip())
    if match and match.group(1) != md5_hex:
        raise CliError(f"BadDigest: the node {verb} ETag {match.group(1)} but the bytes "
                       f"have MD5 {md5_hex}")
