"""``blobstore-certs``: a cluster CA and node certificates for TLS (README, "TLS").

::

    blobstore-certs ca DIR                                   # DIR/ca.crt, DIR/ca.key
    blobstore-certs node DIR NODE_ID --ip 10.0.0.5 [--dns host.example]
                                                             # DIR/NODE_ID.crt, .key
    blobstore-certs local DIR [--nodes node1,node2,node3]    # the local cluster's set

A node certificate carries the node id as its common name and the addresses
it is reached at as subject alternative names: peers check the IP of its
gossip address, and HTTPS clients check the name or IP in the URL they use. It
is good for both server and client authentication, as every node is both.
Keys are ECDSA P-256 (small, fast handshakes); private keys are written with
mode 0600 and never overwritten. ``local`` is idempotent: it makes only what
is missing, so ``./run --tls`` can call it every time.

The CA's key signs every node certificate: keep it off the nodes (only
``ca.crt`` goes to them). Rotating the CA is not covered here.

The functions (``make_ca``, ``make_node``, ``write_pair``) are also what the
tests use to make certificates in-process.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 10 * 365
NODE_DAYS = 825  # the longest validity clients commonly accept for a server certificate
LOCAL_NODES = ("node1", "node2", "node3")
LOCAL_IPS = ("127.0.0.1", "::1")
LOCAL_NAMES = ("localhost",)
#: Certificates are valid from a little before now, for clocks slightly behind.
BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class Pair:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def make_ca(name: str = "blobstore cluster CA", *, days: int = CA_DAYS,
            now: datetime.datetime | None = None) -> Pair:
    """A self-signed CA that may sign node certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = (now or datetime.datetime.now(datetime.timezone.utc)) - BACKDATE
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return Pair(cert, key)


def make_node(ca: Pair, node_id: str, *, ips: Sequence[str] = (), dns: Sequence[str] = (),
              days: int = NODE_DAYS, now: datetime.datetime | None = None) -> Pair:
    """A node certificate signed by ``ca``: CN ``node_id``, SANs ``ips`` and ``dns``.

    Raises:
      ValueError: no address given, or an ``ips`` entry is not an IP address.
    """
    if not ips and not dns:
        raise ValueError("a node certificate needs at least one --ip or --dns")
    names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    names += [x509.DNSName(name) for name in dns]
    key = ec.generate_private_key(ec.SECP256R1())
    start = (now or datetime.datetime.now(datetime.timezone.utc)) - BACKDATE
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_ski), critical=False)
            .sign(ca.key, hashes.SHA256()))
    return Pair(cert, key)


def write_pair(pair: Pair, directory: Path, name: str) -> tuple[Path, Path]:
    """``directory/name.crt`` and ``directory/name.key`` (mode 0600, never overwritten).

    Raises:
      FileExistsError: the key file exists already.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    key_pem = pair.key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    cert_path.write_bytes(pair.cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def load_ca(directory: Path) -> Pair:
    """The CA written by ``write_pair(ca, directory, "ca")``."""
    cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{directory / 'ca.key'} is not an EC key")
    return Pair(cert, key)


def local_cluster(directory: Path, nodes: Sequence[str] = LOCAL_NODES) -> list[Path]:
    """The CA and a certificate per node for loopback (127.0.0.1, ::1, localhost), each
    made only if missing; the files made."""
    made: list[Path] = []
    if not (directory / "ca.key").exists():
        made += write_pair(make_ca("blobstore local cluster CA"), directory, "ca")
    ca = load_ca(directory)
    for node_id in nodes:
        if not (directory / f"{node_id}.key").exists():
            made += write_pair(make_node(ca, node_id, ips=LOCAL_IPS, dns=LOCAL_NAMES),
                               directory, node_id)
    return made


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blobstore-certs",
                                     description="Make a cluster CA and node certificates "
                                                 "for TLS between nodes and for the HTTP API.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("ca", help="a new cluster CA: DIR/ca.crt and DIR/ca.key")
    p.add_argument("dir", type=Path)
    p.add_argument("--name", default="blobstore cluster CA", help="the CA's common name")
    p.add_argument("--days", type=int, default=CA_DAYS)
    p = sub.add_parser("node", help="a node certificate signed by DIR/ca.key: "
                                    "DIR/NODE_ID.crt and DIR/NODE_ID.key")
    p.add_argument("dir", type=Path)
    p.add_argument("node_id")
    p.add_argument("--ip", action="append", default=[],
                   help="an IP address the node is reached at (its gossip IP is required)")
    p.add_argument("--dns", action="append", default=[],
                   help="a host name clients use for its HTTP API")
    p.add_argument("--days", type=int, default=NODE_DAYS)
    p = sub.add_parser("local", help="the local cluster's CA and node certificates "
                                     "(loopback), only what is missing")
    p.add_argument("dir", type=Path)
    p.add_argument("--nodes", default=",".join(LOCAL_NODES), help="node ids, comma-separated")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "ca":
            made = list(write_pair(make_ca(args.name, days=args.days), args.dir, "ca"))
        elif args.command == "node":
            pair = make_node(load_ca(args.dir), args.node_id, ips=args.ip, dns=args.dns,
                             days=args.days)
            made = list(write_pair(pair, args.dir, args.node_id))
        else:
            made = local_cluster(args.dir, [n for n in args.nodes.split(",") if n])
    except FileExistsError as exc:
        print(f"blobstore-certs: {exc.filename} exists; not overwritten", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"blobstore-certs: {exc}", file=sys.stderr)
        return 1
    for path in made:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
