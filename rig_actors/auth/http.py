"""A small pooled HTTP/1.1 client for the calls the gateway makes itself.

The external authorization checks (``SUBSCRIPTION_CHECK``/``SUBMISSION_CHECK``
set to a URL) and the JWKS key fetch call out over HTTP while a client's
request waits. Three things matter there, and this client gives them:

- **Cooperative.** It is :mod:`http.client` on the process's sockets, which
  gevent has monkey-patched in every way the gateway runs (``python -m
  rig_actors`` and the gunicorn worker), so a slow checker parks only the
  greenlet of the request that asked; every other connection keeps going.
  The standard library keeps ``requests`` a test-only dependency.
- **Bounded.** Each call has one total deadline (a :class:`gevent.Timeout`
  around connect, send and receive), not just a per-read socket timeout
  that a trickling server could reset forever; at most ``max_in_flight``
  calls run at once, and a response body is read up to ``max_body_bytes``.
- **Pooled.** Keep-alive connections are reused per (scheme, host, port);
  one that the server closed while idle is retried once on a fresh socket
  (the requests made here are idempotent questions).

Example::

    >>> pool = HttpPool()
    >>> response = pool.request("POST", "http://checker:8080/allow", body=b"{}",
    ...                         headers={"content-type": "application/json"}, timeout=2.0)
    >>> response.status  # doctest: +SKIP
    200
"""

from __future__ import annotations

import http.client
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import gevent
from gevent.lock import BoundedSemaphore

__all__ = ["HttpError", "HttpPool", "HttpResponse", "HttpTimeout", "redact_url"]

# The errors a keep-alive socket the server has closed meanwhile produces on reuse.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
# An idle pooled socket older than this is not trusted: servers close idle
# keep-alive connections after a few seconds (nginx 75 s, Node 5 s).
_MAX_IDLE_S = 4.0


class HttpError(Exception):
    """The call failed: no answer (connection refused, reset, bad response...)."""


class HttpTimeout(HttpError):
    """No complete answer within the call's deadline."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes


class HttpPool:
    """Pooled, deadline-bounded HTTP/1.1 calls; see the module docstring."""

    def __init__(
        self,
        *,
        max_idle_per_host: int = 16,
        max_in_flight: int = 256,
        max_body_bytes: int = 1 << 20,
    ) -> None:
        self.max_idle_per_host = max_idle_per_host
        self.max_body_bytes = max_body_bytes
        self._idle: dict[tuple[str, str, int], list[tuple[float, http.client.HTTPConnection]]] = {}
        self._slots = BoundedSemaphore(max_in_flight)
        self._tls = ssl.create_default_context()

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        timeout: float,
    ) -> HttpResponse:
        """One call, answered within ``timeout`` seconds or :class:`HttpTimeout`.

        Raises :class:`HttpError` when there is no answer at all; any HTTP
        status (even 500) is an answer.
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(f"not an http(s) URL: {redact_url(url)}")
        key = (scheme, parts.hostname, parts.port or (443 if scheme == "https" else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # One deadline for the whole call, including the wait for a free slot.
        with gevent.Timeout(timeout, HttpTimeout(f"no answer within {timeout:g} s")):
            with self._slots:
                return self._call(key, method, target, body, dict(headers or {}), timeout)

    def _call(
        self,
        key: tuple[str, str, int],
        method: str,
        target: str,
        body: bytes,
        headers: dict[str, str],
        timeout: float,
    ) -> HttpResponse:
        for attempt in (1, 2):
            conn, reused = self._checkout(key, timeout)
            try:
                conn.request(method, target, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read(self.max_body_bytes + 1)
            except _STALE as exc:
                conn.close()
                if reused and attempt == 1:
                    continue  # the server closed it while it sat in the pool
                raise HttpError(f"{type(exc).__name__}: {exc}") from None
            except HttpTimeout:
                conn.close()
                raise
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise HttpError(f"{type(exc).__name__}: {exc}") from None
            except BaseException:
                conn.close()  # e.g. GreenletExit: never pool a half-used socket
                raise
            if response.will_close or len(data) > self.max_body_bytes:
                conn.close()
            else:
                self._checkin(key, conn)
            return HttpResponse(response.status, data[: self.max_body_bytes])
        raise AssertionError("unreachable")

    def _checkout(
        self, key: tuple[str, str, int], timeout: float
    ) -> tuple[http.client.HTTPConnection, bool]:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            since, conn = idle.pop()
            if now - since < _MAX_IDLE_S:
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                return conn, True
            conn.close()
        scheme, host, port = key
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls)
            return conn, False
        return http.client.HTTPConnection(host, port, timeout=timeout), False

    def _checkin(self, key: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) >= self.max_idle_per_host:
            conn.close()
            return
        idle.append((time.monotonic(), conn))

    def close(self) -> None:
        """Close every pooled connection."""
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for _, conn in conns:
                conn.close()


def redact_url(url: str) -> str:
    """``url`` without user info or query, for log lines (they may hold secrets).

    Example::

        >>> redact_url("https://user:pw@auth.example/check?key=s3cret")
        'https://auth.example/check'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"
