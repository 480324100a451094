// meterpipe web: live updates for the server-rendered pages (no framework).
"use strict";
(function () {
  const page = document.body.dataset.page;
  const nf = (digits) => new Intl.NumberFormat(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
  const fmt = { W: nf(0), A: nf(2), V: nf(1), kWh: nf(2), money: nf(2) };

  window.meterpipe = { fmt: fmt };

  document.querySelectorAll("select[data-autosubmit]").forEach((s) =>
    s.addEventListener("change", () => s.form.submit()));

  function ageText(seconds) {
    if (seconds < 90) return Math.max(0, Math.round(seconds)) + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    return Math.round(seconds / 3600) + " h ago";
  }
  function tickAges() {
    const now = Date.now() / 1000;
    document.querySelectorAll(".age[data-received]").forEach((el) => {
      const t = parseFloat(el.dataset.received);
      if (!isNaN(t)) el.textContent = ageText(now - t);
    });
  }

  function unitFormat(name) {
    if (name.startsWith("current")) return fmt.A;
    if (name.startsWith("voltage")) return fmt.V;
    return fmt.W;
  }

  function showReading(msg) {
    const card = document.querySelector('.meter[data-meter="' + CSS.escape(msg.meter) + '"]');
    if (!card) return false;
    const values = {};
    msg.readings.forEach((r) => { if (typeof r.value === "number") values[r.name] = r; });
    card.querySelectorAll("[data-field]").forEach((el) => {
      const r = values[el.dataset.field];
      el.textContent = r ? unitFormat(r.name).format(r.value) : "–";
    });
    card.querySelectorAll("[data-bar]").forEach((el) => {
      const r = values[el.dataset.bar];
      const lo = parseFloat(el.dataset.min || "0"), hi = parseFloat(el.dataset.max);
      const v = r ? (r.value - lo) / (hi - lo) : 0;
      el.style.width = (100 * Math.max(0, Math.min(1, v))).toFixed(1) + "%";
    });
    card.querySelectorAll("tr[data-phase]").forEach((tr) => {
      const ph = tr.dataset.phase;
      tr.hidden = !(values["active_power_import_" + ph] || values["current_" + ph] || values["voltage_" + ph]);
    });
    // a meter that sends no per-phase power gets no column of dashes for it
    const phasePower = ["l1", "l2", "l3"].some((ph) => values["active_power_import_" + ph]);
    card.querySelectorAll('[data-col="power"]').forEach((el) => { el.hidden = !phasePower; });
    const age = card.querySelector(".age");
    if (age) { age.dataset.received = String(msg.received); tickAges(); }
    const auth = card.querySelector("[data-auth]");
    if (auth) auth.textContent = msg.authenticated ? "authenticated" : "not authenticated";
    const empty = card.querySelector("[data-empty]");
    if (empty) empty.hidden = true;
    card.dataset.seq = String(msg.seq);
    return true;
  }

  async function loadToday(card) {
    try {
      const res = await fetch("/api/costs?meter=" + encodeURIComponent(card.dataset.meter), { cache: "no-store" });
      if (!res.ok) return;
      const body = await res.json();
      const t = body.total;
      card.querySelector('[data-today="import_wh"]').textContent = fmt.kWh.format(t.import_wh / 1000);
      card.querySelector('[data-today="export_wh"]').textContent = fmt.kWh.format(t.export_wh / 1000);
      const energy = t.total === null ? null : t.total - (t.fee || 0);  // the fee is not today's doing
      card.querySelector('[data-today="energy_cost"]').textContent = energy === null ? "–" : fmt.money.format(energy);
    } catch (e) { /* offline for a moment: the next minute tries again */ }
  }

  function listen(handlers) {
    const es = new EventSource("/events");
    Object.keys(handlers).forEach((name) =>
      es.addEventListener(name, (ev) => handlers[name](JSON.parse(ev.data))));
    return es;
  }
  window.meterpipe.listen = listen;

  async function refreshMain() {
    if (document.hidden) return;
    try {
      const res = await fetch(location.href, { cache: "no-store" });
      if (!res.ok) return;
      const doc = new DOMParser().parseFromString(await res.text(), "text/html");
      const fresh = doc.querySelector("main");
      if (fresh) document.querySelector("main").replaceWith(fresh);
    } catch (e) { /* keep what is shown */ }
  }

  if (page === "now") {
    const cards = document.querySelectorAll(".meter[data-meter]");
    cards.forEach(loadToday);
    setInterval(() => cards.forEach(loadToday), 60000);
    listen({ reading: (msg) => { if (!showReading(msg)) refreshMain(); } });
    setInterval(tickAges, 1000);
    tickAges();
  } else if (page === "status") {
    setInterval(refreshMain, 10000);
  } else if (page === "history" || page === "peaks") {
    const bars = document.getElementById("history-bars");
    const today = new Date().toISOString().slice(0, 10);
    if (!bars || (bars.dataset.from <= today && today <= bars.dataset.to)) setInterval(refreshMain, 120000);
  }
})();
