"""Certificates for tests, made in-process with the tooling's own functions (tools.certs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ssl

from node.net.tls import TlsContexts, _context, load_tls
from tools.certs import Pair, make_ca, make_node, write_pair


@dataclass(frozen=True)
class NodeFiles:
    cert: Path
    key: Path
    ca: Path

    def contexts(self) -> TlsContexts:
        """Checked as a node checks them at start-up (see node.net.tls.load_tls)."""
        return load_tls(self.cert, self.key, self.ca)

    def unchecked_contexts(self) -> TlsContexts:
        """Without the start-up check: an attacker's node, trusting the cluster CA (its
        certificate is public) with a certificate that CA never signed."""
        return TlsContexts(_context(ssl.PROTOCOL_TLS_SERVER, self.cert, self.key, self.ca),
                           _context(ssl.PROTOCOL_TLS_CLIENT, self.cert, self.key, self.ca))

    def env(self) -> dict[str, str]:
        """The node's TLS settings as environment variables."""
        return {"BLOBSTORE_TLS_CERT": str(self.cert), "BLOBSTORE_TLS_KEY": str(self.key),
                "BLOBSTORE_TLS_CA": str(self.ca)}


class Authority:
    """A CA in ``directory`` and the node certificates it signs there."""

    def __init__(self, directory: Path, name: str = "test cluster CA") -> None:
        self.directory = directory
        self.pair: Pair = make_ca(name)
        self.ca_file, _ = write_pair(self.pair, directory, "ca")

    def node(self, node_id: str, *, ips: tuple[str, ...] = ("127.0.0.1",),
             trust: Path | None = None) -> NodeFiles:
        """A certificate for ``node_id``; ``trust``: the CA file the node trusts (default
        this one), so a test can make a node whose certificate another CA signed."""
        cert, key = write_pair(make_node(self.pair, node_id, ips=ips), self.directory, node_id)
        return NodeFiles(cert, key, trust or self.ca_file)
