"""Operations: /health, /cluster and /metrics."""

from __future__ import annotations

from quart import Response

from node.api.app import BlobApp, endpoint
from node.api.auth import authenticate, require_admin
from node.api.errors import json_response
from node.services import Services


def _status(svc: Services) -> str:
    return "degraded" if (svc.draining or svc.state.signing_key is None
                          or svc.log.status().stalled) else "ok"


@endpoint("health")
async def health(svc: Services) -> Response:
    status = svc.log.status()
    return json_response({"node_id": svc.config.node_id, "status": _status(svc),
                          "coordinator": status.leader,
                          "members": len(svc.membership.live())})


@endpoint("cluster")
async def cluster(svc: Services) -> Response:
    # Operators need this view most when there is no quorum: no read barrier here.
    require_admin(await authenticate(svc, linearizable=False))
    status = svc.log.status()
    target, required = svc.chunk_io.copies()
    return json_response({
        "node_id": svc.config.node_id,
        "status": _status(svc),
        "members": [m.to_json() for m in svc.membership.members],
        "coordinator": {"node_id": status.leader, "term": status.term,
                        "commit_index": status.commit_index,
                        "applied_index": status.applied_index, "this_node": status.role,
                        "voters": list(status.voters), "learners": list(status.learners),
                        "match_index": status.match_index, "fenced": status.fenced},
        "ring": {"epoch": svc.ring.epoch, "nodes": list(svc.ring.node_ids)},
        "replicas": {"configured": svc.config.replicas, "effective": target,
                     "write_quorum": required},
        "chunks": {"on_disk": svc.chunks.count, "bytes_on_disk": svc.chunks.bytes,
                   "under_replicated": svc.healer.under_replicated,
                   "being_repaired": svc.healer.in_flight,
                   "healed": svc.healer.counters["copies_sent"],
                   "surplus_dropped": svc.healer.counters["copies_dropped"],
                   "read_repairs": svc.chunk_io.counters["read_repairs"],
                   "hinted": svc.healer.hinted,
                   "awaiting_collection": svc.healer.garbage,
                   "corrupt_found": svc.chunks.corrupt_found,
                   "corrupt_repaired": svc.scrubber.counters["repaired"],
                   "held_for_uploads": svc.pins.holds,
                   "collected": svc.collector.collected_total},
    })


@endpoint("metrics")
async def metrics(svc: Services) -> Response:
    return Response(svc.metrics.render(), status=200,
                    content_type="text/plain; version=0.0.4; charset=utf-8")


def register(app: BlobApp) -> None:
    app.add_url_rule("/health", view_func=health, methods=["GET"])
    app.add_url_rule("/cluster", view_func=cluster, methods=["GET"])
    app.add_url_rule("/metrics", view_func=metrics, methods=["GET"])
