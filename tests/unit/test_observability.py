"""Unit tests of the pure parts of observability: trace context, redaction, quantiles,
the latency sample, the outbox's measurement and the sampler's counter folding."""

from __future__ import annotations

import json
import logging

import gevent
import pytest

from rig_actors import tracing
from rig_actors.actors.outbox import LatencySamples, Outbox
from rig_actors.logs import _JsonFormatter, _TextFormatter, redact
from rig_actors.sampler import MAX_TYPE_LABELS, MetricsSampler
from rig_actors.tracing import RequestContext, parse_traceparent, valid_request_id
from rig_actors.web.observability import quantile

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"00-{TRACE}-{PARENT}-01", (TRACE, PARENT, "01")),
        (f"00-{TRACE}-{PARENT}-00", (TRACE, PARENT, "00")),
        (f" 00-{TRACE}-{PARENT}-01 ", (TRACE, PARENT, "01")),
        (f"01-{TRACE}-{PARENT}-01-later-fields", (TRACE, PARENT, "01")),  # a future version
        (f"00-{TRACE}-{PARENT}-01-extra", None),  # version 00 has exactly four fields
        (f"ff-{TRACE}-{PARENT}-01", None),
        (f"00-{'0' * 32}-{PARENT}-01", None),
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (f"00-{TRACE.upper()}-{PARENT}-01", None),  # lower-case hex only
        (f"00-{TRACE[:-1]}-{PARENT}-01", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_traceparent(header: str | None, expected: tuple[str, str, str] | None) -> None:
    assert parse_traceparent(header) == expected


def test_request_context_continues_a_trace_and_keeps_a_valid_request_id() -> None:
    ctx = RequestContext.start(
        request_id="req-1", traceparent=f"00-{TRACE}-{PARENT}-00", tracestate="a=1"
    )
    assert (ctx.request_id, ctx.trace_id, ctx.parent_id, ctx.flags) == (
        "req-1",
        TRACE,
        PARENT,
        "00",
    )
    assert ctx.tracestate == "a=1"
    assert ctx.traceparent == f"00-{TRACE}-{ctx.span_id}-00" and ctx.span_id != PARENT


def test_request_context_starts_a_trace_and_drops_a_lone_tracestate() -> None:
    ctx = RequestContext.start(request_id="bad id", traceparent="junk", tracestate="a=1")
    assert ctx.parent_id is None and ctx.tracestate is None and ctx.flags == "01"
    assert ctx.request_id == ctx.trace_id and len(ctx.trace_id) == 32


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("abc", True),
        ("a" * 200, True),
        ("a" * 201, False),
        ("", False),
        ("a b", False),
        ("x\r\ny", False),
        ("Zm9v+/=._:-", True),
        (None, False),
    ],
)
def test_valid_request_id(value: str | None, valid: bool) -> None:
    assert valid_request_id(value) is valid


def test_propagation_helpers_follow_the_current_request() -> None:
    assert tracing.propagation_headers() == {}
    assert tracing.kafka_headers() == [] and tracing.ce_attributes() == {}
    ctx = RequestContext.start(
        request_id="r", traceparent=f"00-{TRACE}-{PARENT}-01", tracestate="s=1"
    )
    token = tracing.activate(ctx)
    try:
        assert tracing.current() is ctx
        assert tracing.propagation_headers() == {
            "traceparent": ctx.traceparent,
            "tracestate": "s=1",
            "x-request-id": "r",
        }
        assert tracing.kafka_headers() == [
            ("traceparent", ctx.traceparent.encode()),
            ("tracestate", b"s=1"),
        ]
        assert tracing.ce_attributes() == {"traceparent": ctx.traceparent, "tracestate": "s=1"}
    finally:
        tracing.deactivate(token)
    assert tracing.current() is None


def test_redact_masks_tokens() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    line = (
        f"GET /sse?jwt={jwt}&subscriptions=[] Authorization: Bearer {jwt}; "
        "cookie connection_token=w1.7.c2ln; free text eyJx.eyJy.z"
    )
    cleaned = redact(line)
    assert jwt not in cleaned and "w1.7.c2ln" not in cleaned and "eyJx" not in cleaned
    assert "subscriptions=[]" in cleaned and "free text" in cleaned


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("rig_actors.test", logging.INFO, __file__, 1, message, None, None)


def test_formatters_add_the_request_id_and_mask_secrets() -> None:
    text = _TextFormatter("%(levelname)s %(name)s: %(message)s")
    json_formatter = _JsonFormatter()
    assert text.format(_record("hello")) == "INFO rig_actors.test: hello"
    assert "request_id" not in json.loads(json_formatter.format(_record("hello")))
    token = tracing.activate(RequestContext.start(request_id="r-9", traceparent=None))
    try:
        assert text.format(_record("with Bearer abc")).endswith(
            "with Bearer [redacted] request_id=r-9"
        )
        entry = json.loads(json_formatter.format(_record("hi")))
        assert entry["request_id"] == "r-9" and len(entry["trace_id"]) == 32
    finally:
        tracing.deactivate(token)


def test_quantile_interpolates_inside_the_bucket() -> None:
    inf = float("inf")
    assert quantile(0.99, []) is None
    assert quantile(0.99, [(0.001, 0), (inf, 0)]) is None
    assert quantile(0.5, [(0.001, 0), (0.01, 10), (inf, 10)]) == pytest.approx(0.0055)
    assert quantile(0.99, [(0.001, 99), (0.01, 100), (inf, 100)]) == pytest.approx(0.001)
    # Beyond the last finite bound the answer is that bound (as histogram_quantile).
    assert quantile(0.99, [(0.001, 0), (0.01, 0), (inf, 5)]) == 0.01


def test_latency_samples_are_bounded_and_drained() -> None:
    samples = LatencySamples(cap=10)
    for n in range(1000):
        samples.add(float(n))
    drained = samples.drain()
    assert len(drained) == 10 and len(set(drained)) == 10
    assert max(drained) > 10  # later values got their chance, not only the first ten
    assert samples.drain() == [] and samples.seen == 0


class _Conn:
    def __init__(self) -> None:
        self.flushed = 0

    def flush(self) -> None:
        self.flushed += 1

    def crash(self, exc: BaseException) -> None:
        raise AssertionError(exc)


def test_outbox_measures_only_passes_that_carry_events() -> None:
    outbox = Outbox()
    conn = _Conn()
    outbox.mark(conn)  # a heartbeat or a greeting: not measured
    gevent.sleep(0)
    assert conn.flushed == 1 and outbox.latency.drain() == []
    outbox.carried_event()  # nothing scheduled (long-polling only): ignored
    outbox.mark(conn)
    outbox.carried_event()
    gevent.sleep(0)
    (latency,) = outbox.latency.drain()
    assert 0 <= latency < 1.0


class _Counter:
    def __init__(self) -> None:
        self.total = 0.0
        self.by_label: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float) -> None:
        self.total += amount

    def labels(self, *labels: str) -> _Counter:
        child = _Counter()
        parent = self

        def inc(amount: float) -> None:
            parent.by_label[labels] = parent.by_label.get(labels, 0) + amount

        child.inc = inc  # type: ignore[method-assign]
        return child


def test_sampler_folds_growth_and_survives_a_reset() -> None:
    sampler = MetricsSampler(gateway=None)  # type: ignore[arg-type]
    counter = _Counter()
    for value in (0, 5, 7, 7, 2, 4):  # 2: the source restarted from zero
        sampler._fold("k", value, counter)
    assert counter.total == 7 + 2 + 2


def test_sampler_caps_event_type_labels() -> None:
    sampler = MetricsSampler(gateway=None)  # type: ignore[arg-type]
    labels = {sampler._type_label(f"t{n}") for n in range(MAX_TYPE_LABELS + 5)}
    assert "_other" in labels and len(labels) == MAX_TYPE_LABELS + 1
    assert sampler._type_label("t0") == "t0"
