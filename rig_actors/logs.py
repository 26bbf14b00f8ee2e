"""Logging set-up: ``LOG_LEVEL`` and ``LOG_FMT`` (``text`` or ``json``).

Lines logged while a request is served carry its request id (text:
``request_id=...`` at the end; JSON: ``request_id`` and ``trace_id``
fields), taken from :func:`rig_actors.tracing.current`.

Secrets never reach the output: :class:`RedactSecrets` masks anything that
looks like a JWT, ``Bearer`` credentials and ``jwt=`` / ``connection_token=``
values in every formatted line (the gateway does not log them; this also
covers third-party lines such as an access log someone enables).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from . import tracing

__all__ = ["RedactSecrets", "configure_logging", "redact"]

# A JWS compact serialisation: three base64url parts, the header starting
# '{"' (eyJ). Also what follows "Bearer", and the values of the query
# parameter / cookie names that carry tokens.
_SECRETS = re.compile(
    r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
    r"|(?<=[Bb]earer )[^\s,;\"']+"
    r"|(?<=jwt=)[^&\s;\"']+"
    r"|(?<=connection_token=)[^&\s;\"']+"
)


def redact(text: str) -> str:
    """``text`` with tokens masked.

    Example::

        >>> redact("GET /sse?jwt=abc.def.ghi&x=1 Authorization: Bearer s3cret")
        'GET /sse?jwt=[redacted]&x=1 Authorization: Bearer [redacted]'
    """
    return _SECRETS.sub("[redacted]", text)


class RedactSecrets(logging.Filter):
    """Masks tokens in a record's message (see :func:`redact`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = redact(super().format(record))
        context = tracing.current()
        return f"{line} request_id={context.request_id}" if context is not None else line

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        context = tracing.current()
        if context is not None:
            entry["request_id"] = context.request_id
            entry["trace_id"] = context.trace_id
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Send rig_actors' logs to stderr at ``level`` in ``fmt``."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(level.lower(), logging.INFO))
    # kafka-python is chatty at INFO; its warnings still come through.
    logging.getLogger("kafka").setLevel(max(root.level, logging.WARNING))
    # gevent-websocket logs every request at INFO; streams are logged by actors.
    logging.getLogger("geventwebsocket").setLevel(max(root.level, logging.WARNING))
