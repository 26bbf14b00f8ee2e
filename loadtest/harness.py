#!/usr/bin/env python3
"""Side-by-side benchmark: rig-actors against Nchan (nginx's push module), one command.

Run from the repository root, with the project's virtualenv active::

    python loadtest/harness.py               # every scenario of issue 6 (100k takes minutes)
    python loadtest/harness.py --skip-big    # the same without idle runs above 30k
    python loadtest/harness.py --quick       # small sizes: a smoke run in under two minutes
    python loadtest/harness.py --only burst,rate --repeat 3 --rig-env COALESCE_MS=10

Every scenario is one ``loadtest/bench.py`` run per server: rig-actors, then
Nchan (the order alternates between repetitions), each on fresh free loopback
ports, with the same clients, the same events and the same pinning (server on
CPU 0, load generator on CPU 1). Scenarios:

- ``idle``: open N connections and hold them (1k, 10k, 30k, 100k): connections
  held, server memory per idle connection (RSS and PSS), CPU per connect. Above
  ``--per-worker`` connections both servers get several worker processes
  (rig-actors: gunicorn with the Kafka fabric; Nchan: nginx workers);
- ``connect``: time to open 10k connections (the idle run at that size);
- ``burst``: 1k and 10k subscribers, 200 events as fast as the server accepts;
- ``rate``: 1k and 10k subscribers, 200 events at 20/s (10 s), latency p50/p99;
- ``kafka``: rig-actors only (Nchan has no Kafka): 200 events produced to Kafka
  for 10k subscribers over two gunicorn workers, as a burst and at 20/s.

It prints every figure for both servers with their ratio, oriented so that
above 1 means rig-actors is better (rig/nchan where higher is better, nchan/rig
where lower is better), writes everything as JSON
(``loadtest/out/harness-<stamp>.json``, the bench runs' own output next to it in
``loadtest/out/harness-<stamp>/``) and draws deliveries per server CPU-second
and p99 latency against connections for both servers (PNG). The exit status is
0 when every run completed. See ``loadtest/README.rst``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # loadtest/bench.py: Nchan's availability, the source digest, formatting

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BENCH = HERE / "bench.py"

SERVERS = ("rig", "nchan")
SCENARIOS = ("idle", "connect", "burst", "rate", "kafka")
# Server ports come from here: below the ephemeral range, clear of long-running
# benchmarks' fixed ports.
PORT_RANGE = (20000, 30000)
# Connections per server process (and per client process) before the harness adds
# one: the file limit is 20,000 per process and the kernel spreads accepts unevenly.
DEFAULT_PER_WORKER = 15_000
BIG = 30_000
# After bench.py's --timeout: its alarm (15 s), then stopping gunicorn (20 s) and the broker.
STOP_S = 60.0
# A run given less than this by the harness's --timeout is not started.
MIN_RUN_S = 30.0


# --------------------------------------------------------------------------------------
# The plan: which bench runs, and which figures come from them (pure)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One bench run, repeated for each of ``servers``."""

    kind: str  # "hold", "burst" or "rate"
    connections: int
    events: int = 0
    rate: float = 0.0
    # Server processes: rig-actors runs gunicorn with Kafka when above 1 (or
    # ``kafka``), ``python -m rig_actors`` otherwise; Nchan gets as many nginx workers.
    workers: int = 1
    # rig-actors with the Kafka fabric; in a publishing run the events are produced
    # to Kafka (Kafka ingress, rig-actors only).
    kafka: bool = False
    servers: tuple[str, ...] = SERVERS

    @property
    def key(self) -> str:
        if self.kind == "hold":
            name = f"hold-{self.connections}"
        else:
            name = f"{'kafka-' if self.kafka else ''}{self.kind}-{self.connections}x{self.events}"
            if self.rate:
                name += f"@{self.rate:g}"
        if self.workers > 1:
            name += f"-w{self.workers}"
        return name


@dataclass(frozen=True)
class Target:
    """The issue's target for a figure."""

    text: str
    kind: str  # "ratio_min": ratio >= bound; "rig_max": rig <= bound; "rig_min": rig >= bound
    bound: float


@dataclass(frozen=True)
class FigureDef:
    scenario: str  # e.g. "burst 10k x 200"
    kind: str  # "idle", "connect", "burst", "rate", "kafka"
    connections: int
    name: str
    unit: str
    rig_run: str  # RunSpec.key of each server's run
    nchan_run: str
    field: str  # key in bench.py's JSON (or in derived())
    better: str  # "higher", "lower", or "" (no ratio)
    target: Target | None = None

    def run_of(self, server: str) -> str:
        return self.rig_run if server == "rig" else self.nchan_run


@dataclass
class Plan:
    runs: list[RunSpec]
    figures: list[FigureDef]


RATIO_OF = {"higher": "rig/nchan", "lower": "nchan/rig"}


def short(n: int) -> str:
    """1000 -> 1k, 100000 -> 100k, 250 -> 250."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else f"{n:,}"


def workers_for(connections: int, per_worker: int) -> int:
    return max(1, math.ceil(connections / per_worker))


def build_plan(opts: argparse.Namespace) -> Plan:
    """The runs and figures for the selected scenarios and sizes."""
    runs: dict[str, RunSpec] = {}
    figures: list[FigureDef] = []
    servers = tuple(s for s in SERVERS if s in opts.servers)

    def add(spec: RunSpec) -> RunSpec:
        return runs.setdefault(spec.key, spec)

    def hold_spec(n: int) -> RunSpec:
        w = workers_for(n, opts.per_worker)
        return add(RunSpec("hold", n, workers=w, kafka=w > 1, servers=servers))

    def rows(
        where: str,
        kind: str,
        n: int,
        rig_run: str,
        nchan_run: str,
        items: list[tuple[str, str, str, str, Target | None]],
    ) -> None:
        for name, unit, fld, better, target in items:
            figures.append(
                FigureDef(where, kind, n, name, unit, rig_run, nchan_run, fld, better, target)
            )

    load_gen = ("load generator CPU (clients + publisher)", "% of a core", "load_generator_cpu_pct")
    if "idle" in opts.only:
        for n in opts.idle_sizes:
            spec = hold_spec(n)
            where = f"idle {short(n)}" + (f" ({spec.workers} workers)" if spec.workers > 1 else "")
            # Below 10k the growth of RSS is mostly the allocator's steps: no target there.
            memory = Target("half of Nchan's", "ratio_min", 2.0) if n >= 10_000 else None
            rows(
                where,
                "idle",
                n,
                spec.key,
                spec.key,
                [
                    ("connections held", "", "connections_held", "higher", _held(n)),
                    (
                        "server RSS per idle connection",
                        "KB",
                        "server_rss_per_connection_kb",
                        "lower",
                        memory,
                    ),
                    (
                        "server PSS per idle connection",
                        "KB",
                        "server_pss_per_connection_kb",
                        "lower",
                        None,
                    ),
                    ("server CPU per connect", "ms", "server_cpu_per_connect_ms", "lower", None),
                    ("load generator CPU while connecting", "s", "client_cpu_connect_s", "", None),
                ],
            )
    if "connect" in opts.only:
        n = opts.connect_n
        spec = hold_spec(n)
        rows(
            f"connect {short(n)}",
            "connect",
            n,
            spec.key,
            spec.key,
            [
                (
                    "time to open all (subscribed)",
                    "s",
                    "connect_time_s",
                    "lower",
                    Target("<= 1 s", "rig_max", 1.0) if n == 10_000 else None,
                ),
                ("connect rate", "conn/s", "connect_rate_per_s", "higher", None),
            ],
        )
    for kind in ("burst", "rate"):
        if kind not in opts.only:
            continue
        events = opts.events if kind == "burst" else opts.rate_events
        rate = 0.0 if kind == "burst" else opts.rate
        for n in opts.sizes:
            rig = nchan = add(RunSpec(kind, n, events, rate, workers=1, servers=servers))
            if opts.nchan_workers > 1 and "nchan" in servers:
                # Nchan with more workers than rig-actors' one process: a run of its own.
                runs.pop(rig.key)
                rig = add(RunSpec(kind, n, events, rate, workers=1, servers=("rig",)))
                nchan = add(
                    RunSpec(kind, n, events, rate, workers=opts.nchan_workers, servers=("nchan",))
                )
            where = f"{kind} {short(n)} x {events}" + (f" at {rate:g}/s" if rate else "")
            burst = kind == "burst"
            rows(
                where,
                kind,
                n,
                rig.key,
                nchan.key,
                [
                    (
                        "deliveries per server CPU-second",
                        "",
                        "deliveries_per_server_cpu_s",
                        "higher",
                        Target(">= 2x Nchan", "ratio_min", 2.0) if burst else None,
                    ),
                    ("deliveries/s (wall)", "", "deliveries_per_s", "higher", None),
                    ("server CPU per delivery", "µs", "server_cpu_us_per_delivery", "lower", None),
                    (
                        "latency p50",
                        "ms",
                        "latency_p50_ms",
                        "lower",
                        None if burst else Target("<= Nchan", "ratio_min", 1.0),
                    ),
                    (
                        "latency p99",
                        "ms",
                        "latency_p99_ms",
                        "lower",
                        None if burst else Target("<= Nchan", "ratio_min", 1.0),
                    ),
                    ("lost deliveries", "", "lost_deliveries", "", Target("0", "rig_max", 0)),
                    ("publish rate achieved", "ev/s", "publish_rate_achieved", "", None),
                    # How much of its core the server got: well below 100 % in a burst,
                    # other work (or the publisher) held it back, and latency suffers.
                    ("server CPU while publishing", "% of a core", "server_cpu_pct", "", None),
                    ("other processes' CPU while publishing", "s", "other_cpu_publish_s", "", None),
                    (*load_gen, "", None),
                ],
            )
    if "kafka" in opts.only and "rig" in servers:
        n = opts.kafka_n
        for rate, events in ((0.0, opts.events), (opts.rate, opts.rate_events)):
            kind = "rate" if rate else "burst"
            spec = add(
                RunSpec(kind, n, events, rate, opts.kafka_workers, kafka=True, servers=("rig",))
            )
            where = (
                f"kafka {short(n)} x {events}"
                + (f" at {rate:g}/s" if rate else " burst")
                + f" ({opts.kafka_workers} workers)"
            )
            rows(
                where,
                "kafka",
                n,
                spec.key,
                spec.key,
                [
                    (
                        "deliveries per server CPU-second",
                        "",
                        "deliveries_per_server_cpu_s",
                        "",
                        None,
                    ),
                    ("latency p50", "ms", "latency_p50_ms", "", None),
                    ("latency p99", "ms", "latency_p99_ms", "", None),
                    ("lost deliveries", "", "lost_deliveries", "", Target("0", "rig_max", 0)),
                    (*load_gen, "", None),
                ],
            )
    # The long idle runs last, so that a run stopped early has the short scenarios.
    ordered = sorted(runs.values(), key=lambda s: s.kind == "hold" and s.connections > BIG)
    return Plan(ordered, figures)


def _held(n: int) -> Target:
    return Target(f"{n:,} held", "rig_min", n)


def derived(res: dict[str, Any]) -> dict[str, Any]:
    """bench.py's figures plus the ones the harness computes from them."""
    out = dict(res)
    wall = res.get("publish_phase_wall_s")
    if wall:
        cpu = (res.get("client_cpu_publish_s") or 0.0) + (res.get("bench_cpu_publish_s") or 0.0)
        out["load_generator_cpu_pct"] = cpu / wall * 100.0
    if res.get("server_cpu_share_publish") is not None:
        out["server_cpu_pct"] = res["server_cpu_share_publish"] * 100.0
    return out


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio(better: str, rig: float | None, nchan: float | None) -> float | None:
    """Above 1 means rig-actors is better: rig/nchan for higher-is-better, else nchan/rig."""
    if better == "higher":
        num, den = rig, nchan
    elif better == "lower":
        num, den = nchan, rig
    else:
        return None
    # A zero (below the clock tick of CPU accounting) or negative (allocator noise
    # in RSS) figure has no meaningful ratio.
    if num is None or den is None or num <= 0 or den <= 0:
        return None
    return num / den


def verdict(target: Target | None, rig: float | None, ratio_value: float | None) -> str | None:
    if target is None:
        return None
    value = ratio_value if target.kind == "ratio_min" else rig
    if value is None:
        return "n/a"
    ok = value <= target.bound if target.kind == "rig_max" else value >= target.bound
    return "met" if ok else "NOT met"


def summarise(plan: Plan, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each figure: the values per server over the repetitions, their medians, the ratio."""
    values: dict[tuple[str, str, str], list[float]] = {}
    for run in runs:
        res = run.get("result")
        if not res or run.get("exit_status") != 0:
            continue
        for name, value in derived(res).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                values.setdefault((run["key"], run["server"], name), []).append(float(value))
    out: list[dict[str, Any]] = []
    for fig in plan.figures:
        row: dict[str, Any] = {
            "scenario": fig.scenario,
            "kind": fig.kind,
            "connections": fig.connections,
            "figure": fig.name,
            "unit": fig.unit,
            "field": fig.field,
            "runs": {"rig": fig.rig_run, "nchan": fig.nchan_run},
            "better": fig.better or None,
        }
        medians: dict[str, float | None] = {}
        for server in SERVERS:
            vals = values.get((fig.run_of(server), server, fig.field), [])
            medians[server] = median(vals)
            row[server] = {"median": medians[server], "values": vals}
        row["ratio"] = ratio(fig.better, medians["rig"], medians["nchan"])
        row["ratio_of"] = RATIO_OF.get(fig.better)
        row["target"] = fig.target.text if fig.target else None
        row["verdict"] = verdict(fig.target, medians["rig"], row["ratio"])
        out.append(row)
    return out


# --------------------------------------------------------------------------------------
# Running bench.py
# --------------------------------------------------------------------------------------


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_port_base(host: str, rng: random.Random) -> int:
    """A port P with P and P + 10 free on ``host`` (bench.py's inbound and second port)."""
    for _ in range(500):
        base = rng.randrange(*PORT_RANGE)
        if port_free(host, base) and port_free(host, base + 10):
            return base
    raise RuntimeError(f"no free port pair in {PORT_RANGE} on {host}")


def clients_for(spec: RunSpec, per_worker: int) -> int:
    return max(2, math.ceil(spec.connections / per_worker))


def unpinned(spec: RunSpec, opts: argparse.Namespace) -> bool:
    """Big idle runs let every process use both CPUs (both servers alike).

    Pinned to one CPU, several gateway workers open ~1,000 connections/s here:
    100k would not fit in a few minutes (loadtest/README.rst, idle capacity).
    """
    return bool(opts.no_pin) or (spec.kind == "hold" and spec.connections > BIG)


def connect_timeout(spec: RunSpec) -> float:
    # At least 400 connects/s, with room: 100k get 250 s.
    return max(60.0, spec.connections / 400.0)


def run_timeout(spec: RunSpec, opts: argparse.Namespace) -> float:
    """bench.py's --timeout for ``spec``: every phase's budget added up."""
    total = 60.0 + connect_timeout(spec) + opts.wait_idle
    if spec.kind == "hold":
        total += opts.hold + 30.0 + min(60.0, spec.connections / 5000)
    else:
        total += spec.events / spec.rate if spec.rate else 0.0
        # At least 20,000 deliveries/s, then the drain and the cleanup.
        total += spec.connections * spec.events / 20_000 + 60.0
    if spec.kafka:
        total += 90.0  # broker, topics, Kafka readiness of every worker
    return math.ceil(total)


def bench_argv(
    spec: RunSpec,
    server: str,
    opts: argparse.Namespace,
    port_base: int,
    json_path: Path,
    timeout: float,
) -> list[str]:
    argv = [
        sys.executable,
        str(BENCH),
        "--server",
        server,
        "-n",
        str(spec.connections),
        "--clients",
        str(clients_for(spec, opts.per_worker)),
        "--port-base",
        str(port_base),
        "--host",
        opts.host,
        "--connect-timeout",
        f"{connect_timeout(spec):g}",
        "--timeout",
        f"{timeout:g}",
        "--progress",
        f"{opts.progress:g}",
        "--json",
        str(json_path),
    ]
    if spec.kind == "hold":
        argv += ["--hold-only", "--hold", f"{opts.hold:g}"]
    else:
        argv += ["--events", str(spec.events)]
        if spec.rate:
            argv += ["--rate", f"{spec.rate:g}"]
    if server == "rig":
        if spec.kafka:
            argv += ["--kafka", "--workers", str(spec.workers)]
        for item in opts.rig_env:
            argv += ["--server-env", item]
    else:
        argv += ["--workers", str(spec.workers)]
    if unpinned(spec, opts):
        argv.append("--no-pin")
    if opts.wait_idle:
        argv += ["--wait-idle", f"{opts.wait_idle:g}"]
    return argv


def stop_child(proc: subprocess.Popen[bytes], wait_s: float = 60.0) -> None:
    """SIGINT, once: bench.py stops its server, broker and clients; SIGKILL if it hangs.

    Only the harness signals a bench.py run (it has its own session): a second
    interrupt would cut its clean-up short.
    """
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def run_bench(
    spec: RunSpec,
    server: str,
    rep: int,
    opts: argparse.Namespace,
    out_dir: Path,
    rng: random.Random,
    timeout: float,
) -> dict[str, Any]:
    """One bench.py run, bounded by ``timeout`` (bench.py's own) plus the time to stop."""
    stem = f"{spec.key}-{server}-r{rep + 1}"
    json_path = out_dir / f"{stem}.json"
    log_path = out_dir / f"{stem}.txt"
    port_base = pick_port_base(opts.host, rng)
    argv = bench_argv(spec, server, opts, port_base, json_path, timeout)
    # bench.py's alarm fires 15 s after its --timeout, then it stops its processes.
    limit = timeout + STOP_S
    record: dict[str, Any] = {
        "key": spec.key,
        "server": server,
        "rep": rep + 1,
        "spec": asdict(spec),
        "argv": argv[1:],
        "log": str(log_path),
        "json": str(json_path),
    }
    started = time.time()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            status = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            stop_child(proc)
            status = proc.returncode
            record["problem"] = f"bench.py did not end within {limit:g} s; stopped"
        except BaseException:  # the harness was interrupted: its run ends with it
            stop_child(proc)
            raise
    record["exit_status"] = status
    record["wall_s"] = round(time.time() - started, 1)
    try:
        record["result"] = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        record["result"] = None
        record.setdefault("problem", f"no JSON from bench.py ({exc}); see {log_path}")
    return record


def run_line(record: dict[str, Any]) -> str:
    """One progress line per bench run."""
    res = record.get("result") or {}
    head = f"{record['key']:<24} {record['server']:<5} r{record['rep']}"
    if record.get("exit_status") != 0:
        problems = "; ".join(res.get("problems", [])) or record.get("problem", "")
        return f"{head}: FAILED (exit {record.get('exit_status')}) {problems}"[:300]
    held = f"{bench.fmt(res.get('connections_held'))}/{bench.fmt(res['config']['connections'])}"
    if res.get("config", {}).get("mode") == "hold only":
        detail = (
            f"held {held} in {bench.fmt(res.get('connect_time_s'), '.2f', ' s')}, "
            f"RSS/conn {bench.fmt(res.get('server_rss_per_connection_kb'), '.2f', ' KB')}, "
            f"PSS/conn {bench.fmt(res.get('server_pss_per_connection_kb'), '.2f', ' KB')}"
        )
    else:
        detail = (
            f"held {held}, delivered {bench.fmt(res.get('deliveries'))}/"
            f"{bench.fmt(res.get('deliveries_expected'))} (lost {res.get('lost_deliveries')}), "
            f"{bench.fmt(res.get('deliveries_per_server_cpu_s'))} per server CPU-s, "
            f"p50/p99 {bench.fmt(res.get('latency_p50_ms'), '.1f')}/"
            f"{bench.fmt(res.get('latency_p99_ms'), '.1f')} ms"
        )
    return f"{head}: {detail} ({record['wall_s']:g} s)"


# --------------------------------------------------------------------------------------
# Output: table, JSON, plot
# --------------------------------------------------------------------------------------


def num(value: float | None) -> str:
    if value is None:
        return "n/a"
    if float(value).is_integer():
        return f"{int(value):,}"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def figure_table(figures: list[dict[str, Any]]) -> str:
    header = ("scenario", "figure", "rig", "nchan", "ratio (>1: rig better)", "target")
    rows = [header]
    for f in figures:
        unit = f" ({f['unit']})" if f["unit"] else ""
        nchan = num(f["nchan"]["median"])
        if f["kind"] == "kafka":
            shown, nchan = "rig only: Nchan has no Kafka", "—"
        elif f["ratio"] is not None:
            shown = f"{f['ratio']:.2f} {f['ratio_of']}"
        elif f["better"] and f["nchan"]["median"] is None and f["rig"]["median"] is not None:
            shown = "n/a (no Nchan figure)"
        else:
            shown = "—" if not f["better"] else "n/a"
        target = f"{f['target']}: {f['verdict']}" if f["target"] else ""
        rows.append(
            (
                f["scenario"],
                f["figure"] + unit,
                num(f["rig"]["median"]),
                nchan,
                shown,
                target,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for i, r in enumerate(rows):
        cells = [
            r[0].ljust(widths[0]),
            r[1].ljust(widths[1]),
            r[2].rjust(widths[2]),
            r[3].rjust(widths[3]),
            r[4].ljust(widths[4]),
            r[5],
        ]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_series(
    figures: list[dict[str, Any]], field: str, kind: str
) -> dict[str, list[tuple[int, float]]]:
    """Per server: (connections, median) of ``field`` over the ``kind`` runs (burst, rate)."""
    out: dict[str, list[tuple[int, float]]] = {s: [] for s in SERVERS}
    for f in figures:
        if f["field"] != field or f["kind"] != kind:
            continue
        for server in SERVERS:
            value = f[server]["median"]
            if value is not None:
                out[server].append((int(f["connections"]), value))
    return {s: sorted(v) for s, v in out.items()}


def draw_png(path: Path, figures: list[dict[str, Any]], title: str) -> str | None:
    """Deliveries per server CPU-s and p99 latency against connections; None or why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "matplotlib is not installed (pip install -r requirements-test.txt)"
    panels = (
        ("deliveries_per_server_cpu_s", "deliveries per server CPU-second", False),
        ("latency_p99_ms", "p99 latency (ms)", True),
    )
    colours = {"rig": "tab:blue", "nchan": "tab:orange"}
    names = {"rig": "rig-actors", "nchan": "Nchan"}
    kinds = {"burst": ("-", "o", "burst"), "rate": ("--", "^", "fixed rate")}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    drawn = 0
    for ax, (field, label, log_y) in zip(axes, panels, strict=True):
        sizes: set[int] = set()
        for kind, (style, marker, what) in kinds.items():
            for server, points in plot_series(figures, field, kind).items():
                if not points:
                    continue
                xs, ys = zip(*points, strict=True)
                sizes.update(xs)
                ax.plot(
                    xs,
                    ys,
                    linestyle=style,
                    marker=marker,
                    color=colours[server],
                    label=f"{names[server]}, {what}",
                )
                drawn += 1
        ax.set_xscale("log")
        if sizes:
            ticks = sorted(sizes)
            ax.set_xticks(ticks, [short(n) for n in ticks])
            ax.set_xlim(min(ticks) / 2, max(ticks) * 2)
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}")
        if log_y:
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(plain)
        else:
            ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(plain)
        ax.set_xlabel("connections (SSE subscribers)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        if sizes:
            ax.legend(fontsize=8)
    if not drawn:
        plt.close(fig)
        return "no burst or rate figures to plot"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    try:
        values = [int(v.replace("_", "").replace(",", "")) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be >= 1: {text!r}")
    return values


def name_list(allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        names = [v.strip() for v in text.split(",") if v.strip()]
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"choose from {', '.join(allowed)} (comma-separated), not {text!r}"
            )
        return names

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="rig-actors against Nchan: the same scenarios, both servers, one command",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (1k connections, bursts of 50 events, 40 events at 20/s): a smoke run",
    )
    p.add_argument(
        "--only",
        type=name_list(SCENARIOS),
        default=list(SCENARIOS),
        help="scenarios to run: " + ",".join(SCENARIOS),
    )
    p.add_argument(
        "--servers",
        type=name_list(SERVERS),
        default=list(SERVERS),
        help="servers to measure (rig,nchan)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per scenario and server; figures are their medians (1)",
    )
    p.add_argument(
        "--rig-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra setting for rig-actors' server, e.g. COALESCE_MS=10 (repeatable)",
    )
    p.add_argument(
        "-n",
        "--connections",
        type=int,
        default=None,
        help="one size for every scenario (overrides --idle-sizes, --sizes, --connect-n, "
        "--kafka-n)",
    )
    p.add_argument(
        "--idle-sizes",
        type=int_list,
        default=None,
        help="idle scenario sizes (1000,10000,30000,100000; quick: 1000)",
    )
    p.add_argument("--skip-big", action="store_true", help=f"leave out idle sizes above {BIG:,}")
    p.add_argument(
        "--sizes",
        type=int_list,
        default=None,
        help="burst and rate sizes (1000,10000; quick: 1000)",
    )
    p.add_argument(
        "--connect-n", type=int, default=None, help="connect scenario size (10000; quick: 1000)"
    )
    p.add_argument(
        "--events",
        type=int,
        default=None,
        help="events of a burst, and of a fixed-rate run unless --rate-events (200; quick: 50)",
    )
    p.add_argument("--rate", type=float, default=20.0, help="events/s of the fixed-rate runs (20)")
    p.add_argument(
        "--rate-events",
        type=int,
        default=None,
        help="events of a fixed-rate run (200, i.e. 10 s at 20/s; quick: 40)",
    )
    p.add_argument(
        "--kafka-n", type=int, default=None, help="Kafka ingress subscribers (10000; quick: 1000)"
    )
    p.add_argument(
        "--kafka-workers", type=int, default=2, help="gunicorn workers for Kafka ingress (2)"
    )
    p.add_argument(
        "--nchan-workers",
        type=int,
        default=1,
        help="nginx workers in the burst and rate runs; rig-actors runs one process there (1)",
    )
    p.add_argument(
        "--per-worker",
        type=int,
        default=DEFAULT_PER_WORKER,
        help="idle runs: connections per server process and per client process before "
        f"another is added ({DEFAULT_PER_WORKER})",
    )
    p.add_argument("--hold", type=float, default=None, help="idle runs: seconds held (5; quick: 2)")
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        help="before each run, wait up to this many seconds for the CPUs to be < 15 %% busy (0)",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin servers and clients to CPUs")
    p.add_argument(
        "--host", default="127.0.0.1", help="loopback address of the servers (127.0.0.1)"
    )
    p.add_argument(
        "--progress",
        type=float,
        default=0.0,
        help="bench.py's progress line every this many seconds while connecting, in its log "
        "(0: none)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="bound on the whole harness in seconds (3600 x --repeat)",
    )
    p.add_argument(
        "--json", type=Path, default=None, help="results file (loadtest/out/harness-<stamp>.json)"
    )
    p.add_argument(
        "--png",
        type=Path,
        default=None,
        help="plot file (docs/benchmarks-vs-nchan.png when burst and rate ran for both servers "
        "at their default sizes, else next to the JSON)",
    )
    p.add_argument("--no-png", action="store_true", help="do not draw the plot")
    p.add_argument(
        "--analyse",
        type=Path,
        default=None,
        metavar="JSON",
        help="run nothing: print the table of an earlier harness JSON and draw its plot again",
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the port choice")
    opts = p.parse_args(argv)
    if opts.repeat < 1 or opts.rate <= 0 or opts.per_worker < 100 or opts.kafka_workers < 1:
        p.error("--repeat and --kafka-workers must be >= 1, --rate > 0, --per-worker >= 100")
    if opts.per_worker > bench.MAX_SOCKETS_PER_CLIENT:
        p.error(f"--per-worker must be <= {bench.MAX_SOCKETS_PER_CLIENT:,} (the file limit)")
    if opts.nchan_workers < 1:
        p.error("--nchan-workers must be >= 1")
    for item in opts.rig_env:
        name, sep, _ = item.partition("=")
        if not sep or not name.strip():
            p.error(f"--rig-env wants NAME=VALUE, not {item!r}")
    quick = opts.quick
    default_sizes = opts.sizes is None and opts.connections is None and not quick
    if opts.connections is not None:
        if opts.connections < 1:
            p.error("-n must be >= 1")
        one = [opts.connections]
        opts.idle_sizes = opts.idle_sizes or one
        opts.sizes = opts.sizes or one
        opts.connect_n = opts.connect_n or opts.connections
        opts.kafka_n = opts.kafka_n or opts.connections
    opts.idle_sizes = opts.idle_sizes or ([1000] if quick else [1000, 10_000, 30_000, 100_000])
    if opts.skip_big:
        opts.idle_sizes = [n for n in opts.idle_sizes if n <= BIG]
    opts.sizes = opts.sizes or ([1000] if quick else [1000, 10_000])
    opts.connect_n = opts.connect_n or (1000 if quick else 10_000)
    opts.kafka_n = opts.kafka_n or (1000 if quick else 10_000)
    opts.rate_events = opts.rate_events or opts.events or (40 if quick else 200)
    opts.events = opts.events or (50 if quick else 200)
    opts.hold = opts.hold if opts.hold is not None else (2.0 if quick else 5.0)
    opts.timeout = opts.timeout or 3600.0 * opts.repeat
    if any(n > bench.MAX_SOCKETS_PER_CLIENT for n in [*opts.sizes, opts.kafka_n]):
        p.error(
            f"burst, rate and Kafka sizes must be <= {bench.MAX_SOCKETS_PER_CLIENT:,}: "
            "rig-actors runs one process there"
        )
    # The documented plot is only replaced by a run that measured what it shows.
    opts.docs_plot = (
        default_sizes
        and {"burst", "rate"} <= set(opts.only)
        and set(opts.servers) == set(SERVERS)
        and opts.events == 200
        and opts.rate_events == 200
    )
    return opts


def analyse(opts: argparse.Namespace) -> int:
    """``--analyse``: the table and the plot of an earlier run."""
    data = json.loads(opts.analyse.read_text())
    figures = data["figures"]
    title = data.get("title") or str(opts.analyse)
    print(title)
    print(figure_table(figures))
    if not opts.no_png:
        png = opts.png or opts.analyse.with_suffix(".png")
        note = draw_png(png, figures, title)
        print(f"plot: {note}" if note else f"plot written to {png}")
    return 0


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.analyse:
        return analyse(opts)
    if "nchan" in opts.servers:
        missing = bench.nchan_missing()
        if missing:
            print(f"harness: cannot run Nchan: {missing} (or use --servers rig)", file=sys.stderr)
            return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_root = REPO / "loadtest" / "out"
    json_path = opts.json or out_root / f"harness-{stamp}.json"
    out_dir = json_path.with_suffix("")
    out_dir.mkdir(parents=True, exist_ok=True)
    docs_png = opts.png is None and opts.docs_plot
    if opts.png is None:
        opts.png = (
            REPO / "docs" / "benchmarks-vs-nchan.png" if docs_png else json_path.with_suffix(".png")
        )
    plan = build_plan(opts)
    rng = random.Random(opts.seed)
    # The gateway's code as the run starts (each bench run also records its own).
    source = bench.source_state(REPO)
    started = time.time()
    deadline = started + opts.timeout
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    skipped: list[str] = []

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    print(
        f"harness: {len(plan.runs)} scenario runs x {opts.repeat} repetition(s), servers "
        f"{', '.join(opts.servers)}; bench output in {out_dir}",
        flush=True,
    )
    interrupted = False
    try:
        for rep in range(opts.repeat):
            for spec in plan.runs:
                servers = [s for s in SERVERS if s in spec.servers and s in opts.servers]
                if rep % 2:
                    servers.reverse()  # alternate who goes first: drift hits both alike
                for server in servers:
                    # What is left of the harness's --timeout bounds the run too.
                    timeout = min(run_timeout(spec, opts), deadline - time.time() - STOP_S)
                    if timeout < MIN_RUN_S:
                        skipped.append(f"{spec.key} {server} r{rep + 1}")
                        problems.append(f"{skipped[-1]}: not run, --timeout expired")
                        print(f"harness: {problems[-1]}", flush=True)
                        continue
                    record = run_bench(spec, server, rep, opts, out_dir, rng, math.floor(timeout))
                    records.append(record)
                    print(run_line(record), flush=True)
                    res = record.get("result") or {}
                    for text in res.get("problems", []):
                        problems.append(f"{spec.key} {server} r{rep + 1}: {text}")
                    if record.get("problem"):
                        problems.append(f"{spec.key} {server} r{rep + 1}: {record['problem']}")
    except KeyboardInterrupt:
        interrupted = True
        problems.append("interrupted: the figures cover the runs that ended")
    figures = summarise(plan, records)
    peer = next(
        (r["result"].get("peer") for r in records if r["server"] == "nchan" and r.get("result")),
        None,
    )
    if bench.source_state(REPO)["rig_actors_sha256"] != source["rig_actors_sha256"]:
        problems.append("rig_actors changed during the run: runs measured different code")
    failed = [r for r in records if r.get("exit_status") != 0 or not r.get("result")]
    if docs_png and (failed or skipped or interrupted):
        # The documented plot is only replaced by a complete run.
        opts.png = json_path.with_suffix(".png")
    pinned = "not pinned" if opts.no_pin else "server on CPU 0, clients on CPU 1"
    title = (
        f"rig-actors {source.get('git_head', '?')}"
        + (" (modified)" if source.get("rig_actors_dirty") else "")
        + f" vs Nchan {(peer or {}).get('nchan', '?')} (nginx {(peer or {}).get('nginx', '?')}); "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, {pinned}"
    )
    png_note = None if opts.no_png else draw_png(opts.png, figures, title)
    result = {
        "harness": {
            "argv": sys.argv[1:] if argv is None else argv,
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
            "wall_s": round(time.time() - started, 1),
            "options": vars(opts),
            "interrupted": interrupted,
            "not_run": skipped,
        },
        "title": title,
        "source": source,
        "peer": peer,
        "machine": {"cpus": os.cpu_count(), "mem_total_kb": mem_total_kb()},
        "ratio_direction": "above 1 means rig-actors is better: rig/nchan where higher is "
        "better, nchan/rig where lower is better",
        "figures": figures,
        "runs": records,
        "problems": problems,
        "png": None if opts.no_png or png_note else str(opts.png),
        "png_note": png_note,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print()
    print(title)
    print(figure_table(figures))
    if problems:
        print("\nproblems:")
        for text in problems:
            print("  " + text[:300])
    print(f"\nresults written to {json_path}")
    if not opts.no_png:
        print(f"plot: {png_note}" if png_note else f"plot written to {opts.png}")
    return 1 if failed or skipped or interrupted else 0


def mem_total_kb() -> int | None:
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    return None


if __name__ == "__main__":
    sys.exit(main())
