"""Target ``http``: forward a request to its backend and stream the answer back (RIG §7.6).

Bodies are never held in memory: the request body is read from
``wsgi.input`` in 64 KiB blocks and written to the backend as it comes
(with the client's ``Content-Length``, or chunked when the client sent it
chunked), and the backend's body reaches the client through a generator
that reads what has arrived and yields it. A 100 MB upload or download
costs two 64 KiB buffers.

Connections to backends are kept alive in one pool per ``(scheme, host,
port)`` (geventhttpclient's pools; its C parser reads the responses), at
most :data:`POOL_SIZE` connections per backend.

Errors, with our fix of RIG's §15.22:

- the backend does not answer (or a connection is not available) within
  ``PROXY_RECV_TIMEOUT`` -> **504** ``Gateway timeout.``;
- it cannot be reached (refused, unknown host, reset, broken answer) ->
  **502** ``Bad gateway.`` (RIG's text);
- a failure after the status line went out cannot change the status: the
  client connection is closed, so the client sees a truncated response
  rather than a complete-looking one.

Example::

    >>> forwarder = HttpForwarder(recv_timeout_s=5.0, by="127.0.0.1")
    >>> backend = Backend.from_proxy({"target_url": "http://books", "port": 8080})
    >>> backend.url("/v2/book/42", "a=1")
    'http://books:8080/v2/book/42?a=1'
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import re
import secrets
import socket
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit

import gevent
from geventhttpclient.connectionpool import ConnectionPool, SSLConnectionPool
from geventhttpclient.response import (
    HTTPConnectionClosed,
    HTTPParseError,
    HTTPSocketPoolResponse,
)

__all__ = [
    "HOP_BY_HOP",
    "POOL_SIZE",
    "Backend",
    "BackendError",
    "BackendPools",
    "BackendResponse",
    "ClientBodyError",
    "HttpForwarder",
    "client_headers",
    "forwarded_for",
    "raw_path",
    "request_trace",
    "trace_context",
    "with_correlation",
]

log = logging.getLogger(__name__)

#: Connections kept per backend; more concurrent requests wait for one (up
#: to the receive timeout, then 504) instead of opening sockets without bound.
POOL_SIZE = 256
#: Backends with a pool; the least recently used pool is closed beyond this.
MAX_BACKENDS = 512
#: Read and write block size for bodies.
BLOCK = 64 * 1024

#: Never forwarded in either direction: they describe one hop, not the
#: message (RFC 9110 §7.6.1; RIG's list plus te, trailer and expect -
#: pywsgi already answered the client's 100-continue).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "http2-settings",
        "te",
        "trailer",
        "expect",
    }
)

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_CRLF = re.compile(r"[\r\n\x00]")


class BackendError(Exception):
    """The backend could not be used; ``status`` is what the client gets (502 or 504)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class ClientBodyError(Exception):
    """Reading the client's request body failed (it disconnected, or sent garbage)."""


# ------------------------------------------------------------------- requests


def raw_path(environ: Mapping[str, Any]) -> str:
    """The request path as the client sent it (percent-escapes kept, no query).

    gunicorn hands the raw request target over as ``RAW_URI``; gevent's own
    server does not, so the path is re-escaped from ``PATH_INFO`` there
    (which turns an escaped ``%2F`` into ``/``).

    Example::

        >>> raw_path({"PATH_INFO": "/a b/\\xc3\\xa9"})
        '/a%20b/%C3%A9'
        >>> raw_path({"RAW_URI": "/x%2Fy?q=1", "PATH_INFO": "/x/y"})
        '/x%2Fy'
    """
    raw = environ.get("RAW_URI")
    if isinstance(raw, str) and raw.startswith("/"):
        return raw.split("?", 1)[0]
    path = environ.get("PATH_INFO") or "/"
    return quote(path.encode("latin-1", "replace"), safe=_PATH_SAFE)


def client_headers(environ: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The request headers from a WSGI environ: lower-case names, in arrival order.

    Example::

        >>> client_headers({"HTTP_X_A": "1", "CONTENT_TYPE": "text/plain", "PATH_INFO": "/"})
        [('x-a', '1'), ('content-type', 'text/plain')]
    """
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = key.replace("_", "-").lower()
        else:
            continue
        if isinstance(value, str):
            headers.append((name, value))
    return headers


def with_correlation(query: str, correlation: str) -> str:
    """``query`` with its ``correlation`` parameters replaced by ``correlation``.

    The other parameters are kept byte for byte, in order (RIG re-encodes
    the whole query string; that would only reorder it).

    Example::

        >>> with_correlation("a=1&correlation=old&b=%20", "C")
        'a=1&b=%20&correlation=C'
    """
    kept = [
        part
        for part in query.split("&")
        if part and unquote_plus(part.split("=", 1)[0]) != "correlation"
    ]
    kept.append(f"correlation={quote(correlation, safe='')}")
    return "&".join(kept)


def forwarded_for(address: str) -> str:
    """An address as an RFC 7239 node: IPv6 in quotes and brackets.

    Example::

        >>> forwarded_for("10.0.0.1"), forwarded_for("::1"), forwarded_for("")
        ('10.0.0.1', '"[::1]"', 'unknown')
    """
    if not address:
        return "unknown"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return "unknown"
    return f'"[{parsed}]"' if parsed.version == 6 else str(parsed)


def trace_context(traceparent: str | None, tracestate: str | None) -> tuple[str, str | None]:
    """The W3C trace context for the next hop: the caller's trace, a new span.

    A missing or invalid ``traceparent`` starts a new (sampled) trace; the
    ``tracestate`` is passed on only with a valid parent.

    Example::

        >>> parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        >>> child, state = trace_context(parent, "k=v")
        >>> child[:36] == parent[:36], child[-3:], state
        (True, '-01', 'k=v')
    """
    matched = _TRACEPARENT.fullmatch((traceparent or "").strip().lower())
    if matched and matched.group(1) != "ff" and set(matched.group(2)) != {"0"}:
        return f"00-{matched.group(2)}-{secrets.token_hex(8)}-{matched.group(4)}", tracestate
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01", None


def request_trace(environ: Mapping[str, Any]) -> tuple[str, str | None, str | None]:
    """``(traceparent, tracestate, request_id)`` for what the gateway sends on.

    The request's context when the web layer set one (``environ["rig.request"]``,
    with ``traceparent``, ``tracestate`` and ``request_id``): the backend's
    parent is then the span the gateway names in its own response, and logs
    join on the request id. Without it, a new span in the client's trace.

    Example::

        >>> parent, state, request_id = request_trace({})
        >>> parent.startswith("00-") and state is None and request_id is None
        True
    """
    context = environ.get("rig.request")
    traceparent = getattr(context, "traceparent", None)
    if isinstance(traceparent, str):
        return (
            traceparent,
            getattr(context, "tracestate", None),
            getattr(context, "request_id", None),
        )
    parent, state = trace_context(environ.get("HTTP_TRACEPARENT"), environ.get("HTTP_TRACESTATE"))
    return parent, state, None


def _connection_tokens(headers: list[tuple[str, str]]) -> set[str]:
    """Header names a ``Connection`` header declares hop-by-hop."""
    tokens: set[str] = set()
    for name, value in headers:
        if name == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def _strip_hop_by_hop(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    drop = HOP_BY_HOP | _connection_tokens(headers)
    return [(n, v) for n, v in headers if n not in drop]


# ------------------------------------------------------------------- backends


@dataclass(frozen=True, slots=True)
class Backend:
    """Where an API's requests go: ``proxy.target_url`` and ``proxy.port`` (RIG §7.6)."""

    scheme: str
    host: str
    port: int

    @classmethod
    def from_proxy(cls, proxy: Mapping[str, Any], env: Mapping[str, str] = os.environ) -> Backend:
        """Parse RIG's ``proxy`` object.

        ``target_url`` is a host or ``scheme://host`` (any port or path in
        it is ignored: ``port`` says where to connect). With ``use_env`` it
        names an environment variable holding that value; unset means
        ``localhost``.

        Example::

            >>> Backend.from_proxy({"target_url": "API_HOST", "use_env": True, "port": 80},
            ...                    env={"API_HOST": "https://api.internal"})
            Backend(scheme='https', host='api.internal', port=80)
        """
        target = str(proxy.get("target_url") or "")
        if proxy.get("use_env") is True:
            target = env.get(target) or "localhost"
        if "://" in target:
            parts = urlsplit(target)
            scheme, host = (parts.scheme or "http").lower(), parts.hostname or "localhost"
        else:
            scheme, host = "http", target.split("/", 1)[0]
            if host.startswith("["):
                host = host[1:].split("]", 1)[0]
            elif host.count(":") == 1:
                host = host.split(":", 1)[0]
        return cls(scheme, host or "localhost", int(proxy.get("port") or 0))

    @property
    def authority(self) -> str:
        """``host:port`` as the ``Host`` header carries it (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self, path: str, query: str = "") -> str:
        return f"{self.scheme}://{self.authority}{path}" + (f"?{query}" if query else "")


class _NoDelay:
    """Backend sockets without Nagle: the head and the first body block go out at once."""

    def after_connect(self, sock: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Pool(_NoDelay, ConnectionPool):
    pass


class _TlsPool(_NoDelay, SSLConnectionPool):
    pass


class BackendPools:
    """Keep-alive connection pools, one per backend, least recently used ones closed."""

    def __init__(self, timeout_s: float, size: int = POOL_SIZE, limit: int = MAX_BACKENDS) -> None:
        self.timeout_s = timeout_s
        self.size = size
        self.limit = limit
        self._pools: OrderedDict[Backend, ConnectionPool] = OrderedDict()

    def get(self, backend: Backend) -> ConnectionPool:
        pool = self._pools.get(backend)
        if pool is not None:
            self._pools.move_to_end(backend)
            return pool
        kind = _TlsPool if backend.scheme == "https" else _Pool
        pool = kind(
            backend.host,
            backend.port,
            backend.host,
            backend.port,
            size=self.size,
            network_timeout=self.timeout_s,
            connection_timeout=self.timeout_s,
        )
        self._pools[backend] = pool
        while len(self._pools) > self.limit:
            _, oldest = self._pools.popitem(last=False)
            oldest.close()
        return pool

    def close(self) -> None:
        while self._pools:
            _, pool = self._pools.popitem()
            pool.close()


# ----------------------------------------------------------------- responses


class BackendResponse:
    """A backend's answer: status, headers for the client and a streaming body.

    Iterate it to receive the body; :meth:`close` gives the connection back
    to its pool (complete body) or closes it (anything else). The WSGI
    server calls ``close`` when the client response ends, however it ends.
    """

    def __init__(self, response: HTTPSocketPoolResponse, backend: Backend) -> None:
        self._response = response
        self.backend = backend
        self.status: int = response.status_code
        self.reason: str = response.status_message or ""
        received = [(name.lower(), value) for name, value in response.items()]
        self.headers: list[tuple[str, str]] = _strip_hop_by_hop(received)

    @property
    def status_line(self) -> str:
        return f"{self.status} {self.reason}".rstrip() if self.reason else str(self.status)

    def __iter__(self) -> Iterator[bytes]:
        response = self._response
        try:
            while True:
                try:
                    data = _read_available(response)
                except (OSError, HTTPParseError) as exc:
                    log.warning("backend %s failed mid-response: %s", self.backend.authority, exc)
                    # pywsgi closes the client connection quietly on ECONNRESET;
                    # the client must not take a truncated body for a complete one.
                    raise ConnectionResetError(errno.ECONNRESET, "backend failed") from exc
                if not data:
                    if not response.message_complete and response.method != "HEAD":
                        log.warning("backend %s closed mid-response", self.backend.authority)
                        raise ConnectionResetError(errno.ECONNRESET, "backend closed")
                    return
                yield data
        finally:
            # Also when the client went away mid-body and the server dropped
            # this generator without calling close(): an unfinished backend
            # connection is closed now, not whenever it is collected.
            self.close()

    def discard(self, limit: int = BLOCK) -> None:
        """Skip a small body (keeping the connection) or drop the connection."""
        response = self._response
        try:
            length = response.content_length
            if length is not None and length <= limit:
                while _read_available(response):
                    pass
        except (OSError, HTTPParseError):
            pass
        self.close()

    def close(self) -> None:
        self._response.release()


def _read_available(response: HTTPSocketPoolResponse) -> bytes:
    """What has arrived of the body (at most :data:`BLOCK`), waiting only if nothing has.

    ``HTTPSocketResponse.read(n)`` waits until ``n`` bytes are there, which
    would hold back a slowly streamed body (server-sent events, progress
    output); this returns as soon as there is anything. It uses the
    response's buffer and socket directly (geventhttpclient is pinned).
    """
    buffer = response._body_buffer
    while not buffer and not response.message_complete:
        sock = response._sock
        if sock is None:
            break
        data = sock.recv(BLOCK)
        response.feed(data)
        if not data:
            break
    chunk = bytes(buffer[:BLOCK])
    del buffer[:BLOCK]
    return chunk


# ----------------------------------------------------------------- forwarding


class HttpForwarder:
    """Sends requests to backends; see the module docstring.

    ``by`` is the gateway's own address for the ``forwarded`` header
    (RIG resolves its ``HOST`` setting).
    """

    def __init__(self, recv_timeout_s: float, by: str, pools: BackendPools | None = None) -> None:
        self.recv_timeout_s = recv_timeout_s
        self.by = by
        self.pools = pools or BackendPools(recv_timeout_s)

    def backend_headers(
        self,
        environ: Mapping[str, Any],
        headers: list[tuple[str, str]],
        backend: Backend,
    ) -> list[tuple[str, str]]:
        """The headers the backend gets (RIG §7.6, plus ``x-forwarded-*``).

        ``headers`` are the client's (after ``transform_request_headers``).
        Hop-by-hop headers go, ``host`` becomes the backend, ``forwarded``
        is replaced by ``for=<client>;by=<gateway>``, ``x-forwarded-for``
        gets the client appended, ``x-forwarded-proto``/``-host`` say what
        the client asked for, and ``traceparent`` names the gateway's span
        (with ``x-request-id``, see :func:`request_trace`).
        Body framing (``content-length``) is added when sending.
        """
        client = environ.get("REMOTE_ADDR") or ""
        original_host = next((v for n, v in headers if n == "host"), None)
        traceparent, tracestate, request_id = request_trace(environ)
        replaced = {
            "host",
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "traceparent",
            "tracestate",
            "content-length",
            *(("x-request-id",) if request_id else ()),
        }
        earlier_for = [v for n, v in headers if n == "x-forwarded-for"]
        out = [(n, v) for n, v in _strip_hop_by_hop(headers) if n not in replaced]
        out.append(("host", backend.authority))
        out.append(("forwarded", f"for={forwarded_for(client)};by={forwarded_for(self.by)}"))
        out.append(("x-forwarded-for", ", ".join([*earlier_for, client or "unknown"])))
        out.append(("x-forwarded-proto", str(environ.get("wsgi.url_scheme") or "http")))
        if original_host:
            out.append(("x-forwarded-host", original_host))
        out.append(("traceparent", traceparent))
        if tracestate:
            out.append(("tracestate", tracestate))
        if request_id:
            out.append(("x-request-id", request_id))
        return out

    def send(
        self,
        environ: Mapping[str, Any],
        method: str,
        backend: Backend,
        target: str,
        headers: list[tuple[str, str]],
    ) -> BackendResponse:
        """Send the request (streaming the client's body) and read the response head.

        Raises :class:`BackendError` (502/504) or :class:`ClientBodyError`.
        A pooled keep-alive connection that the backend had already closed
        is replaced once, for requests without a body and with an idempotent
        method.
        """
        stream = environ.get("wsgi.input")
        length = _content_length(environ)
        chunked = "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()
        has_body = stream is not None and (chunked or (length is not None and length > 0))
        framing = [("transfer-encoding", "chunked")] if chunked else []
        if not chunked and (has_body or method in ("POST", "PUT", "PATCH")):
            framing = [("content-length", str(length or 0))]
        head = _request_head(method, _safe_target(target), [*headers, *framing])
        # Only what can be sent twice without harm: no body to read again, and
        # a method for which a repeat means the same (RFC 9110 §9.2.2).
        retryable = not has_body and method in _IDEMPOTENT
        pool = self.pools.get(backend)
        for attempt in (1, 2):
            sock = self._socket(pool, backend)
            try:
                if has_body:
                    _send_body(sock, head, stream, length, chunked)
                else:
                    sock.sendall(head)
            except ClientBodyError:
                _release_quietly(pool, sock)
                raise
            except TimeoutError:
                _release_quietly(pool, sock)
                raise BackendError(504, f"{backend.authority} did not take the request") from None
            except OSError as exc:
                _release_quietly(pool, sock)
                if attempt == 1 and retryable and _stale(exc):
                    continue
                raise BackendError(502, f"{backend.authority}: {exc}") from None
            try:
                # Reads the status line and headers; on any error it has
                # already given the socket back (closed) itself.
                response = HTTPSocketPoolResponse(sock, pool, method=method, block_size=BLOCK)
            except TimeoutError:
                raise BackendError(504, f"{backend.authority} did not answer in time") from None
            except (OSError, HTTPParseError) as exc:
                if attempt == 1 and retryable and _stale(exc):
                    continue
                raise BackendError(502, f"{backend.authority}: {exc}") from None
            return BackendResponse(response, backend)
        raise AssertionError("unreachable")

    def _socket(self, pool: ConnectionPool, backend: Backend) -> Any:
        try:
            # Waiting for a free pooled connection counts against the same limit.
            with gevent.Timeout(self.recv_timeout_s, TimeoutError):
                return pool.get_socket()
        except TimeoutError:
            raise BackendError(504, f"no connection to {backend.authority} in time") from None
        except OSError as exc:
            raise BackendError(502, f"{backend.authority} unreachable: {exc}") from None

    def close(self) -> None:
        self.pools.close()


def _content_length(environ: Mapping[str, Any]) -> int | None:
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    return length if length >= 0 else None


def _safe_target(target: str) -> str:
    # A path_replacement may put spaces or non-ASCII into the path; escape
    # them (existing escapes are kept) so the request line stays valid.
    path, sep, query = target.partition("?")
    path = quote(path, safe=_PATH_SAFE)
    query = quote(query, safe="=&;%+/:@!$'()*,?-._~") if sep else ""
    return path + (f"?{query}" if sep else "")


def _encode(value: str) -> bytes:
    # WSGI passes header bytes through as latin-1; configured values may be any text.
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _request_head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode("ascii")]
    for name, value in headers:
        if _CRLF.search(name) or _CRLF.search(value) or not name:
            continue  # a value from config with a line break would split the request
        lines.append(_encode(name) + b": " + _encode(value))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _read_client(stream: Any, size: int) -> bytes:
    try:
        return stream.read(size)
    except (OSError, ValueError) as exc:
        raise ClientBodyError(str(exc)) from exc


def _send_body(sock: Any, head: bytes, stream: Any, length: int | None, chunked: bool) -> None:
    first = True
    if chunked:
        while True:
            data = _read_client(stream, BLOCK)
            frame = (b"%x\r\n" % len(data) + data + b"\r\n") if data else b"0\r\n\r\n"
            sock.sendall(head + frame if first else frame)
            first = False
            if not data:
                return
    remaining = length or 0
    while remaining > 0:
        data = _read_client(stream, min(BLOCK, remaining))
        if not data:
            raise ClientBodyError(f"the client sent {length - remaining} of {length} bytes")
        sock.sendall(head + data if first else data)
        first = False
        remaining -= len(data)


def _stale(exc: BaseException) -> bool:
    """A pooled keep-alive connection the backend had closed: worth one retry."""
    if isinstance(exc, HTTPConnectionClosed):
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE)


def _release_quietly(pool: ConnectionPool, sock: Any) -> None:
    try:
        pool.release_socket(sock)
    except Exception:  # releasing twice is harmless but may raise
        log.debug("socket release failed", exc_info=True)
