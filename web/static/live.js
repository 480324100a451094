// meterpipe web: the Live chart (uPlot), full resolution from /api/series, then pushes from /events.
"use strict";
(function () {
  const el = document.getElementById("live-chart");
  if (!el || typeof uPlot === "undefined") return;
  const meter = el.dataset.meter;
  const zone = el.dataset.zone || undefined;
  const hours = parseFloat(el.dataset.hours);
  const fmt = window.meterpipe.fmt;
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim();
  const xs = [], imp = [], exp = [];
  let plot = null;
  let zoomed = false;

  function size() { return { width: Math.max(280, el.clientWidth), height: window.innerWidth < 640 ? 260 : 340 }; }

  async function series(name, from, to) {
    const q = new URLSearchParams({ meter: meter, name: name, from: from.toISOString(), to: to.toISOString() });
    const res = await fetch("/api/series?" + q, { cache: "no-store" });
    return res.ok ? res.json() : [];
  }

  function merge(a, b) {
    const byTime = new Map();
    a.forEach(([t, v]) => byTime.set(Date.parse(t) / 1000, [v, null]));
    b.forEach(([t, v]) => { const k = Date.parse(t) / 1000; const e = byTime.get(k) || [null, null]; e[1] = v; byTime.set(k, e); });
    return [...byTime.keys()].sort((x, y) => x - y).map((k) => [k, ...byTime.get(k)]);
  }

  async function showRange(min, max) {
    const box = document.getElementById("live-range");
    const span = box.querySelector('[data-range="span"]');
    const t0 = new Date(min * 1000), t1 = new Date(max * 1000);
    const hm = { hour: "2-digit", minute: "2-digit", timeZone: zone };
    span.textContent = t0.toLocaleTimeString([], hm) + " – " + t1.toLocaleTimeString([], hm);
    const q = new URLSearchParams({ meter: meter, from: t0.toISOString(), to: t1.toISOString() });
    const res = await fetch("/api/range?" + q, { cache: "no-store" });
    if (!res.ok) return;
    const r = await res.json();
    box.querySelector('[data-range="import_wh"]').textContent = fmt.kWh.format(r.import_wh / 1000);
    box.querySelector('[data-range="export_wh"]').textContent = fmt.kWh.format(r.export_wh / 1000);
    box.querySelector('[data-range="total"]').textContent = r.total === null ? "–" : fmt.money.format(r.total);
  }

  async function load() {
    const to = new Date(), from = new Date(to.getTime() - hours * 3600e3);
    const [a, b] = await Promise.all([series("active_power_import", from, to), series("active_power_export", from, to)]);
    merge(a, b).forEach(([t, i, e]) => { xs.push(t); imp.push(i); exp.push(e); });
    document.getElementById("live-empty").hidden = xs.length > 0;
    el.dataset.points = String(xs.length);
    const opts = Object.assign(size(), {
      cursor: { drag: { x: true, y: false } },
      tzDate: (ts) => zone ? uPlot.tzDate(new Date(ts * 1e3), zone) : new Date(ts * 1e3),
      scales: { x: { time: true }, y: { range: (u, lo, hi) => [Math.min(0, lo), Math.max(100, hi * 1.05)] } },
      axes: [{ stroke: color("--muted"), grid: { stroke: color("--line") } },
             { stroke: color("--muted"), grid: { stroke: color("--line") }, size: 64, label: "W", labelSize: 20,
              values: (u, v) => v.map((x) => Math.abs(x) >= 10000 ? fmt.W.format(x / 1000) + "k" : fmt.W.format(x)) }],
      series: [{}, { label: "import W", stroke: color("--import"), width: 1.5, spanGaps: false, value: (u, v) => v == null ? "–" : fmt.W.format(v) },
                   { label: "export W", stroke: color("--export"), width: 1.5, value: (u, v) => v == null ? "–" : fmt.W.format(v) }],
      hooks: { setScale: [(u, key) => {
        if (key !== "x" || u.scales.x.min == null) return;
        zoomed = xs.length > 0 && (u.scales.x.min > xs[0] + 1 || u.scales.x.max < xs[xs.length - 1] - 1);
        showRange(u.scales.x.min, u.scales.x.max);
      }] },
    });
    plot = new uPlot(opts, [xs, imp, exp], el);
    if (xs.length) showRange(xs[0], xs[xs.length - 1]);
    window.addEventListener("resize", () => plot.setSize(size()));
    window.meterpipe.listen({ reading: (msg) => {
      if (msg.meter !== meter) return;
      const get = (n) => { const r = msg.readings.find((x) => x.name === n); return r ? r.value : null; };
      if (xs.length && msg.received <= xs[xs.length - 1]) return;
      xs.push(msg.received); imp.push(get("active_power_import")); exp.push(get("active_power_export"));
      while (xs.length && xs[0] < msg.received - hours * 3600) { xs.shift(); imp.shift(); exp.shift(); }
      document.getElementById("live-empty").hidden = true;
      el.dataset.points = String(xs.length);
      plot.setData([xs, imp, exp], !zoomed);
    } });
  }
  load();
})();
