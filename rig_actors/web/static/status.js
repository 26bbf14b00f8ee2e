// The live status page: reads /_rig/status/stream (Server-Sent Events, one
// "status" event per second) and draws the numbers and a small SVG chart.
// No library: the page must work on an internal network without a CDN.
(function () {
  "use strict";

  var MAX_POINTS = 120; // two minutes at one sample per second
  var WIDTH = 600;
  var HEIGHT = 180;
  var points = [];

  function byId(id) { return document.getElementById(id); }

  function setText(id, text) { byId(id).textContent = text; }

  function number(value) {
    if (value === null || value === undefined) { return "–"; }
    if (value >= 100 || Number.isInteger(value)) { return Math.round(value).toLocaleString("en"); }
    return value.toFixed(value >= 10 ? 1 : 2);
  }

  function duration(seconds) {
    if (seconds < 120) { return Math.round(seconds) + " s"; }
    if (seconds < 7200) { return Math.round(seconds / 60) + " min"; }
    return (seconds / 3600).toFixed(1) + " h";
  }

  function setState(id, state) {
    var el = byId(id);
    el.textContent = state;
    el.className = "value state-" + state;
  }

  function polyline(values, peak) {
    // x: oldest at the left; y: 0 at the bottom, the peak near the top.
    var step = WIDTH / (MAX_POINTS - 1);
    var offset = MAX_POINTS - values.length;
    return values.map(function (v, i) {
      var x = (offset + i) * step;
      var y = HEIGHT - 8 - (peak ? (v / peak) * (HEIGHT - 16) : 0);
      return x.toFixed(1) + "," + y.toFixed(1);
    }).join(" ");
  }

  function draw() {
    var events = points.map(function (p) { return p.events; });
    var deliveries = points.map(function (p) { return p.deliveries; });
    var peak = Math.max.apply(null, [1].concat(events, deliveries));
    byId("line-events").setAttribute("points", polyline(events, peak));
    byId("line-deliveries").setAttribute("points", polyline(deliveries, peak));
    setText("chart-span", String(points.length));
    setText("chart-max", number(peak));
  }

  function workers(list) {
    var body = byId("workers");
    while (body.firstChild) { body.removeChild(body.firstChild); }
    list.forEach(function (w) {
      var row = document.createElement("tr");
      [w.id, w.node, w.seen_s_ago + " s ago"].forEach(function (text) {
        var cell = document.createElement("td");
        cell.textContent = text; // names come from other processes: never as HTML
        row.appendChild(cell);
      });
      body.appendChild(row);
    });
  }

  function show(s) {
    setText("worker", s.worker);
    setText("uptime", duration(s.uptime_s));
    setText("connections-total", number(s.connections.total));
    setText("conn-sse", number(s.connections.sse));
    setText("conn-ws", number(s.connections.ws));
    setText("conn-lp", number(s.connections.longpolling));
    setText("subscriptions", number(s.subscriptions));
    setText("events-rate", number(s.events_per_s));
    setText("events-total", number(s.events_total));
    setText("deliveries-rate", number(s.deliveries_per_s));
    setText("deliveries-total", number(s.deliveries_total));
    setText("p99", s.latency_p99_ms === null ? "–" : number(s.latency_p99_ms) + " ms");
    setText("latency-samples", number(s.latency_samples));
    setState("kafka-state", s.kafka.state);
    setText("kafka-lag", number(s.kafka.lag));
    setText("restarts", number(s.restarts));
    setText("crashes", number(s.connection_crashes));
    setText("slow", number(s.slow_consumer_disconnects));
    setText("dropped", number(s.dropped_events));
    setText("workers-count", String(s.workers.length));
    setText("nodes-count", String(s.nodes.length));
    setText("nodes", s.nodes.join(", "));
    workers(s.workers);
    points.push({ events: s.events_per_s, deliveries: s.deliveries_per_s });
    if (points.length > MAX_POINTS) { points.shift(); }
    draw();
  }

  var source = new EventSource("status/stream");
  source.addEventListener("status", function (message) {
    show(JSON.parse(message.data));
    var state = byId("stream-state");
    state.textContent = "live";
    state.className = "live";
  });
  source.onerror = function () {
    // EventSource reconnects by itself; say so meanwhile.
    var state = byId("stream-state");
    state.textContent = "reconnecting…";
    state.className = "down";
  };
})();
