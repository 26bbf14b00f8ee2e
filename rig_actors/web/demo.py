"""``GET /_rig/demo`` on the inbound port: the demo page of ``examples/demo.html``.

Served by the gateway so that a newcomer needs nothing but the gateway
(``python -m rig_actors``, then http://localhost:4000/_rig/demo), and so
that the page has the gateway's origin: long-polling's session cookies and
the subscription PUTs then need no CORS set-up. The file stays the one in
``examples/`` (openable on its own too); it is read on each request, so an
edit shows on reload.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response

__all__ = ["DEMO_PAGE", "demo_blueprint"]

#: The page, in the source tree next to the package.
DEMO_PAGE = Path(__file__).resolve().parents[2] / "examples" / "demo.html"


def demo_blueprint(page: Path = DEMO_PAGE) -> Blueprint:
    bp = Blueprint("demo", __name__)

    @bp.get("/_rig/demo")
    def demo() -> Response:
        try:
            body = page.read_bytes()
        except OSError:
            return Response(
                f"The demo page is not installed ({page} is part of the source tree).",
                404,
                content_type="text/plain; charset=utf-8",
            )
        response = Response(body, 200, content_type="text/html; charset=utf-8")
        response.headers["cache-control"] = "no-cache"
        return response

    return bp
