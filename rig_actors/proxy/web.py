"""Response helpers shared by the proxy's targets (werkzeug responses, RIG's CORS sets).

Example::

    >>> response = text_response(202, "Accepted.", cors_headers("*", "content-type"))
    >>> response.status, response.headers["access-control-allow-methods"]
    ('202 ACCEPTED', '*')
"""

from __future__ import annotations

from werkzeug.wrappers import Response

from .responses import Reply

__all__ = ["RawResponse", "cors_headers", "reply_response", "text_response"]


class RawResponse(Response):
    """A werkzeug response that adds no ``content-type`` of its own.

    Proxied responses carry exactly the backend's headers; werkzeug would
    otherwise add ``text/plain`` to every response that has none.
    """

    default_mimetype = None


def cors_headers(origin: str, allow_headers: str) -> list[tuple[str, str]]:
    """RIG's proxy CORS headers (§7.11): origin ``CORS``, methods ``*``."""
    return [
        ("access-control-allow-origin", origin),
        ("access-control-allow-methods", "*"),
        ("access-control-allow-headers", allow_headers),
    ]


def text_response(status: int, text: str, headers: list[tuple[str, str]] | None = None) -> Response:
    """A plain-text answer (no content type when ``text`` is empty)."""
    response = RawResponse(text.encode("utf-8"), status=status, headers=headers or [])
    if text:
        response.headers["content-type"] = "text/plain; charset=utf-8"
    return response


def reply_response(reply: Reply, cors: list[tuple[str, str]]) -> Response:
    """The client's response from a correlated answer: CORS headers, then the answer's own.

    A header the answer carries replaces the CORS header of the same name.
    """
    names = {name for name, _ in reply.headers}
    headers = [h for h in cors if h[0] not in names] + list(reply.headers)
    return RawResponse(reply.body, status=reply.status, headers=headers)
