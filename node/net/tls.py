"""TLS for every inter-node stream: a Transport wrapper, and the node's TLS contexts.

``TlsTransport`` wraps any Transport (the UDP/TCP driver in a node, the
in-memory network in tests) and puts every stream it connects or accepts in
TLS, so PeerNet, gossip's push-pulls and the stream router never see a
certificate. Datagrams pass through untouched: gossip authenticates them
itself with the cluster key (``node.gossip.wire``).

Both ends authenticate (``load_tls``): each presents its certificate and
requires one from the peer, with the cluster CA as the only trust root (no
system CAs), TLS 1.3 only. The connecting side also checks that the peer's
certificate names the address it dialled (an IP SAN for the IP literals
gossip uses), so a certificate cannot be replayed from another address. The
cluster-key handshake of RPC channels and gossip's MACs still run inside
(defence in depth): a node needs both a certificate from the cluster CA and
the cluster key.

Handshakes run on a stream's first use, on both sides, in the task that uses
it and under that task's deadline: ``connect`` and ``accept`` return as soon
as the connection is made, as the Transport contract says, so a slow or
hostile peer never holds up an accept loop, and PeerNet's connect timeout or
the stream router's peek timeout bounds the handshake. A handshake that fails
(a certificate from another CA, a wrong name, an expired one, not TLS at all)
breaks the stream: its use raises ``trio.BrokenResourceError``, as for a
connection reset, and callers already handle that. Every failed handshake is
counted (``handshakes_failed_in`` / ``_out``) and logged at most once a minute
per peer host, with the reason, for the operator.

Closing: streams are ``https_compatible`` in trio's sense. ``aclose`` closes
at once, without a close_notify (so it never blocks on a peer, or on a
handshake that never happened), and a peer's close without close_notify reads
as EOF, as with TCP. That is safe here because every protocol on these
streams frames and MACs its own messages: a truncation mid-message is caught
by the framing, as it is without TLS.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from node.net.transport import Transport, split_address

log = logging.getLogger(__name__)

#: A peer host's handshake failures are logged at most this often (all are counted).
FAILURE_LOG_INTERVAL_S = 60.0
#: Peer hosts remembered for that; beyond it the memory starts afresh.
FAILURE_LOG_HOSTS = 1024


class TlsSetupError(ValueError):
    """A TLS file cannot be used; ``setting`` names the setting to fix."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class TlsContexts:
    """The node's two sides: ``server`` for streams it accepts, ``client`` for those it
    opens. Both present the node's certificate and require the peer's."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def load_tls(cert: Path, key: Path, ca: Path, *, own_host: str | None = None) -> TlsContexts:
    """Build the contexts and check them against each other before anything listens.

    The check is a TLS handshake between the two contexts in memory: it proves
    that the key matches the certificate, that the certificate verifies against
    ``ca`` (and is within its validity), and, with ``own_host`` (an IP literal,
    the node's gossip host), that it names that address, which peers check.

    Raises:
      TlsSetupError: a file is missing, unreadable, not PEM, or they do not fit.
    """
    contexts = TlsContexts(_context(ssl.PROTOCOL_TLS_SERVER, cert, key, ca),
                           _context(ssl.PROTOCOL_TLS_CLIENT, cert, key, ca))
    name = own_host if own_host is not None and _is_concrete_ip(own_host) else None
    client = contexts.client
    if name is None:
        client = _context(ssl.PROTOCOL_TLS_CLIENT, cert, key, ca)
        client.check_hostname = False
    _self_check(contexts.server, client, name)
    return contexts


def _context(protocol: int, cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(protocol)  # no system CAs: the cluster CA is the only root
    context.minimum_version = ssl.TLSVersion.TLSv1_3  # both ends are ours
    context.verify_mode = ssl.CERT_REQUIRED
    for path, setting in ((cert, "tls_cert"), (key, "tls_key"), (ca, "tls_ca")):
        if not path.is_file():
            raise TlsSetupError(setting, f"no such file: {path}")
    try:
        context.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError("tls_ca", f"cannot load the CA from {ca}: {_reason(exc)}") from None
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError("tls_cert", f"cannot load the certificate {cert} with the key "
                                        f"{key}: {_reason(exc)}") from None
    return context


def _self_check(server_context: ssl.SSLContext, client_context: ssl.SSLContext,
                name: str | None) -> None:
    """One handshake between our own server and client sides, through memory."""
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_context.wrap_bio(server_in, server_out, server_side=True)
    client = client_context.wrap_bio(client_in, client_out, server_hostname=name)
    done = {"client": False, "server": False}
    for _ in range(10):  # TLS 1.3 needs 2 round trips here; anything more is a failure
        for side, end, outgoing, incoming in (("client", client, client_out, server_in),
                                              ("server", server, server_out, client_in)):
            if not done[side]:
                try:
                    end.do_handshake()
                    done[side] = True
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
                except ssl.SSLError as exc:
                    raise TlsSetupError("tls_cert", _self_check_failure(exc, name)) from None
            incoming.write(outgoing.read())
        if all(done.values()):
            return
    raise TlsSetupError("tls_cert", "a TLS handshake with itself did not complete")


def _self_check_failure(exc: ssl.SSLError, name: str | None) -> str:
    reason = _reason(exc)
    if isinstance(exc, ssl.SSLCertVerificationError) and "mismatch" in reason and name:
        return (f"this node's certificate does not name its gossip address {name} (peers "
                f"check it: give the certificate an IP SAN {name}): {reason}")
    return f"this node's certificate does not verify against tls_ca: {reason}"


def _is_concrete_ip(host: str) -> bool:
    try:
        return not ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.verify_message if isinstance(exc, ssl.SSLCertVerificationError) \
            and exc.verify_message else (exc.reason or str(exc))
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


class TlsStream(trio.abc.Stream):
    """A ``trio.SSLStream`` whose failed handshake is reported once (to the transport)."""

    def __init__(self, stream: trio.SSLStream[trio.abc.Stream], peer: str,
                 on_failure: Callable[[str, BaseException], None]) -> None:
        self._ssl = stream
        self.peer = peer
        self._on_failure = on_failure
        self._handshook = False
        self._failed = False

    async def do_handshake(self) -> None:
        """Complete the handshake (at once if it already is); BrokenResourceError if it
        fails, as for any use of a broken stream."""
        if self._handshook:
            await trio.lowlevel.checkpoint()
            return
        try:
            await self._ssl.do_handshake()
        except trio.BrokenResourceError as exc:
            if not self._failed:
                self._failed = True
                self._on_failure(self.peer, exc.__cause__ or exc)
            raise
        self._handshook = True

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if not self._handshook:  # (once handshook, no extra checkpoint per call)
            await self.do_handshake()
        await self._ssl.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._ssl.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if not self._handshook:
            await self.do_handshake()
        return await self._ssl.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._ssl.aclose()


class TlsTransport:
    """``inner`` with every stream in TLS (see the module docstring); packets unchanged."""

    def __init__(self, inner: Transport, contexts: TlsContexts) -> None:
        self.inner = inner
        self._contexts = contexts
        self.handshakes_failed_in = 0
        self.handshakes_failed_out = 0
        self._logged: dict[str, float] = {}

    @property
    def address(self) -> str:
        return self.inner.address

    @property
    def packets_sent(self) -> int:
        return self.inner.packets_sent

    @property
    def packets_received(self) -> int:
        return self.inner.packets_received

    @property
    def bytes_sent(self) -> int:
        return self.inner.bytes_sent

    @property
    def bytes_received(self) -> int:
        return self.inner.bytes_received

    async def send_packet(self, to: str, data: bytes) -> None:
        await self.inner.send_packet(to, data)

    async def receive_packet(self) -> tuple[str, bytes]:
        return await self.inner.receive_packet()

    async def connect(self, to: str, *, timeout_s: float) -> TlsStream:
        """Connect; the handshake runs on the stream's first use (see the module docstring).

        Raises:
          TransportError: refused, unreachable, or not connected within ``timeout_s``.
          ValueError: ``to`` is not ``host:port``.
        """
        host, _ = split_address(to)
        raw = await self.inner.connect(to, timeout_s=timeout_s)
        return TlsStream(trio.SSLStream(raw, self._contexts.client, server_hostname=host,
                                        https_compatible=True), to, self._failed_out)

    async def accept(self) -> tuple[TlsStream, str]:
        raw, peer = await self.inner.accept()
        ssl_stream = trio.SSLStream(raw, self._contexts.server, server_side=True,
                                    https_compatible=True)
        return TlsStream(ssl_stream, peer, self._failed_in), peer

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _failed_in(self, peer: str, why: BaseException) -> None:
        self.handshakes_failed_in += 1
        self._log_failure("from", peer, why)

    def _failed_out(self, peer: str, why: BaseException) -> None:
        self.handshakes_failed_out += 1
        self._log_failure("to", peer, why)

    def _log_failure(self, direction: str, peer: str, why: BaseException) -> None:
        """Logged: the first failure of each peer host per interval (a misconfigured node
        retries every second or so, and its log would be nothing else)."""
        host = split_address(peer)[0]
        now = trio.current_time()
        if now < self._logged.get(host, -FAILURE_LOG_INTERVAL_S) + FAILURE_LOG_INTERVAL_S:
            return
        if len(self._logged) >= FAILURE_LOG_HOSTS:
            self._logged.clear()
        self._logged[host] = now
        log.warning("TLS handshake %s %s failed: %s", direction, peer, _reason(why),
                    extra={"peer": peer, "why": _reason(why)})
