"""A strict, minimal HTTP/1.1 request-head parser for the connect fast path.

pywsgi parses every header block with :mod:`email`'s feed parser, and Flask
builds a request context and routes; for a stream connect that is most of
the server's work (see ``docs/benchmarks.rst``). This parser takes only the
plain case: a complete head, one request line of three parts, ``name:
value`` header lines. Anything unusual (folded lines, a body, odd
spacing, an incomplete head) makes it return ``None``, and the caller lets
pywsgi and Flask handle the request, which answer every odd case properly.

Example::

    >>> head = parse_head(b"GET /a?b=1 HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: t\\r\\n\\r\\n")
    >>> head.method, head.path, head.query, head.get("authorization"), head.size
    ('GET', '/a', 'b=1', 't', 50)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Head", "parse_head"]

_END = b"\r\n\r\n"
# Framing headers: a request with a body, or one that a proxy could read
# differently, is not the plain case.
_BODY_HEADERS = frozenset({"content-length", "transfer-encoding", "expect"})


@dataclass(frozen=True, slots=True)
class Head:
    """A parsed request head; header names are lower-case, in arrival order."""

    method: str
    path: str
    query: str
    version: str
    headers: tuple[tuple[str, str], ...]
    #: Bytes the head takes on the wire, the blank line included.
    size: int

    def getlist(self, name: str) -> list[str]:
        """Every value of header ``name`` (lower-case), in order."""
        return [value for key, value in self.headers if key == name]

    def get(self, name: str) -> str | None:
        """Header ``name``'s value; repeated headers joined with ``,`` as pywsgi does."""
        values = self.getlist(name)
        return ",".join(values) if values else None


def parse_head(data: bytes, max_bytes: int = 8192, max_headers: int = 100) -> Head | None:
    """The head at the start of ``data``, or ``None`` if it is not the plain case.

    ``None`` also when the head is incomplete, longer than ``max_bytes`` or
    has more than ``max_headers`` header lines.
    """
    end = data.find(_END, 0, max_bytes)
    if end < 0:
        return None
    try:
        text = data[:end].decode("ascii")
    except UnicodeDecodeError:
        return None
    request_line, *lines = text.split("\r\n")
    if len(lines) > max_headers:
        return None
    parts = request_line.split(" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if version != "HTTP/1.1" or not method.isalpha() or not target.startswith("/"):
        return None
    headers: list[tuple[str, str]] = []
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or "\n" in line or "\r" in line:
            return None  # malformed, folded or with stray line breaks
        name = name.lower()
        if name in _BODY_HEADERS:
            return None
        headers.append((name, value.strip(" \t")))
    path, _, query = target.partition("?")
    return Head(method, path, query, version, tuple(headers), end + len(_END))
