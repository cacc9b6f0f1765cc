"""Blobs: put_data, get_data (and HEAD), delete_data, list_blobs."""

from __future__ import annotations

import base64
import re

from quart import Response, request

from node.api import params
from node.api.app import BlobApp, endpoint
from node.api.auth import READ, WRITE, authenticate, container_for
from node.api.errors import error_response, json_response, no_content
from node.api.inputs import query
from node.blobs.conditions import parse_etag_list, read_condition
from node.blobs.get import BlobStream
from node.blobs.put import BodyStorer, decode_content_md5
from node.blobs.ranges import parse_range
from node.clock import http_date, rfc3339
from node.errors import (BlobNotFound, InvalidRequest, LengthRequired, PreconditionFailed,
                         TooLarge, Unavailable)
from node.meta import commands as c
from node.meta import dirty, queries
from node.meta.records import Manifest
from node.meta.state import check_put_conditions, is_inline
from node.services import Services

DEFAULT_CONTENT_TYPE = "application/octet-stream"
_CONTENT_TYPE_RE = re.compile(r"^[\x20-\x7e]{1,256}$")


def _blob_params() -> tuple[str, str]:
    q = query()
    return (params.container_name(params.require(q, "container")),
            params.blob_name(params.require(q, "blob")))


def _content_type() -> str:
    value = request.headers.get("Content-Type")
    if value is None or not value.strip():
        return DEFAULT_CONTENT_TYPE
    if not _CONTENT_TYPE_RE.match(value):
        raise InvalidRequest("Content-Type must be 1-256 printable ASCII characters")
    return value.strip()


def _declared_length() -> int | None:
    """Content-Length, None for a chunked body; LengthRequired when there is neither."""
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        return None
    value = request.headers.get("Content-Length")
    if value is None:
        raise LengthRequired("Content-Length or Transfer-Encoding: chunked is required")
    if not value.isascii() or not value.isdigit():
        raise InvalidRequest("Content-Length must be a non-negative integer")
    return int(value)


def _check_size(svc: Services, declared: int | None) -> None:
    """413 before a byte of the body is read, when the declared length is too large."""
    if declared is not None and declared > svc.config.max_blob_size:
        raise TooLarge(f"blobs are limited to {svc.config.max_blob_size} bytes; this one "
                       f"would be {declared}")


def _put_conditions() -> tuple[tuple[str, ...] | None, bool]:
    if_match = request.headers.get("If-Match")
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and if_none_match.strip() != "*":
        raise InvalidRequest("PUT supports only If-None-Match: *")
    return (parse_etag_list(if_match) if if_match is not None else None,
            if_none_match is not None)


async def _manifest(svc: Services, container: str, blob: str) -> Manifest | None:
    """The current manifest: linearizable, because ``authenticate`` took this request's
    read barrier before it (one barrier serves every read of a request)."""
    return (await _lookup(svc, container, blob))[0]


async def _lookup(svc: Services, container: str,
                  blob: str) -> tuple[Manifest | None, bytes | None]:
    found = await svc.state.manifests.read((container, blob), lambda: svc.db.read(
        lambda conn: queries.get_blob(conn, container, blob)))
    await svc.log.settled((dirty.blob(container, blob),))  # stable: see node.meta.dirty
    return found


async def _blob(svc: Services, container: str, blob: str) -> tuple[Manifest, bytes | None]:
    """The current manifest and, if the blob is stored inline, its bytes (as ``_manifest``)."""
    manifest, data = await _lookup(svc, container, blob)
    if manifest is None:
        raise BlobNotFound(f"blob {blob!r} does not exist in {container!r}")
    if data is None and is_inline(manifest):
        raise Unavailable(f"the bytes of blob {blob!r} are missing from this node's metadata")
    return manifest, data


@endpoint("put_data")
async def put_data(svc: Services) -> Response:
    user = await authenticate(svc)
    container, blob = _blob_params()
    await container_for(svc, user, container, WRITE)
    expected = _declared_length()
    _check_size(svc, expected)
    content_md5 = decode_content_md5(request.headers.get("Content-MD5"))
    content_type = _content_type()
    if_match, if_none_match_any = _put_conditions()
    if if_match is not None or if_none_match_any:
        check_put_conditions(await _manifest(svc, container, blob), if_match,
                             if_none_match_any)
    cfg = svc.config
    since = svc.state.applied_index  # before any chunk is written: see node.blobs.gc
    with svc.user_limits.upload(user.uid), svc.chunk_io.upload() as upload:
        storer = BodyStorer(upload, svc.pins, chunk_size=cfg.chunk_size,
                            max_in_flight=cfg.max_chunks_in_flight,
                            idle_timeout_s=cfg.body_idle_timeout_s,
                            inline_max=cfg.inline_max if svc.meta_format >= 2 else 0,
                            max_size=cfg.max_blob_size,
                            min_bytes_per_s=cfg.body_min_bytes_per_s)
        try:
            stored = await storer.store(request.body, expected, content_md5)
            svc.metrics.bytes_in.inc(stored.size)
            manifest = await svc.log.submit(c.PutBlob(
                container, blob, stored.size, stored.md5_hex, content_type,
                rfc3339(svc.clock.now()), cfg.chunk_size, tuple(d.hex() for d in stored.chunks),
                if_match, if_none_match_any, since,
                None if stored.inline is None else base64.b64encode(stored.inline).decode()))
        finally:
            storer.release()
    assert isinstance(manifest, Manifest)
    response = json_response({"container": container, "blob": blob, "size": manifest.size,
                              "etag": manifest.etag, "last_modified": manifest.last_modified},
                             201)
    response.headers["ETag"] = f'"{manifest.etag}"'
    return response


def _blob_headers(manifest: Manifest) -> dict[str, str]:
    return {"ETag": f'"{manifest.etag}"', "Last-Modified": http_date(manifest.last_modified),
            "Content-Type": manifest.content_type, "Accept-Ranges": "bytes"}


def _requested_span(manifest: Manifest) -> tuple[int, int, bool]:
    header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if header is None or (if_range is not None and
                          if_range.strip().strip('"') != manifest.etag):
        return 0, manifest.size, False
    start, end = parse_range(header, manifest.size)
    return start, end, True


@endpoint("get_data")
async def get_data(svc: Services) -> Response:
    user = await authenticate(svc)
    container, blob = _blob_params()
    await container_for(svc, user, container, READ)
    manifest, inline = await _blob(svc, container, blob)
    head = request.method == "HEAD"
    headers = _blob_headers(manifest)
    condition = read_condition(manifest.etag, request.headers.get("If-Match"),
                               request.headers.get("If-None-Match"))
    if condition == 412:
        return error_response(PreconditionFailed("the blob's ETag does not match If-Match"),
                              head=head)
    if condition == 304:
        return Response("", status=304, headers={k: v for k, v in headers.items()
                                                  if k in ("ETag", "Last-Modified")})
    start, end, partial = _requested_span(manifest)
    if partial:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{manifest.size}"
    status = 206 if partial else 200
    if head:
        response = Response("", status=status, headers=headers)
        response.headers["Content-Length"] = str(end - start)
        return response
    if inline is not None:
        svc.metrics.bytes_out.inc(end - start)
        return Response(inline[start:end], status=status, headers=headers)
    stream = BlobStream(svc.chunk_io, svc.pins, manifest, start, end)
    await stream.open()
    svc.metrics.bytes_out.inc(end - start)
    response = Response(stream.chunks(), status=status, headers=headers)
    response.headers["Content-Length"] = str(end - start)
    return response


@endpoint("delete_data")
async def delete_data(svc: Services) -> Response:
    user = await authenticate(svc)
    container, blob = _blob_params()
    await container_for(svc, user, container, WRITE)
    await svc.log.submit(c.DeleteBlob(container, blob))
    return no_content()


@endpoint("list_blobs")
async def list_blobs(svc: Services) -> Response:
    user = await authenticate(svc)
    q = query()
    container = params.container_name(params.require(q, "container"))
    await container_for(svc, user, container, READ)
    prefix = params.text_param(q.get("prefix", ""), "prefix")
    delimiter = params.text_param(q.get("delimiter", ""), "delimiter", 64)
    marker = params.text_param(q.get("marker", ""), "marker")
    limit = params.limit(q.get("limit"), 1000, 10_000)
    page = await svc.db.read(lambda conn: queries.list_blobs(
        conn, container, prefix, delimiter, marker, limit))
    await svc.log.settled((dirty.listing(container),))
    return json_response({
        "blobs": [{"blob": m.blob, "size": m.size, "etag": m.etag,
                   "last_modified": m.last_modified, "content_type": m.content_type}
                  for m in page.blobs],
        "prefixes": list(page.prefixes),
        "next_marker": page.next_marker,
    })


def register(app: BlobApp) -> None:
    app.add_url_rule("/put_data", view_func=put_data, methods=["POST"])
    app.add_url_rule("/get_data", view_func=get_data, methods=["GET", "HEAD"])
    app.add_url_rule("/delete_data", view_func=delete_data, methods=["DELETE"])
    app.add_url_rule("/list_blobs", view_func=list_blobs, methods=["GET"])
