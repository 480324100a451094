// meterpipe settings: "Test this meter" without leaving the form (what was typed stays,
// keys included, and is never sent back by the server).
"use strict";
(function () {
  document.querySelectorAll("form[data-confirm]").forEach((f) =>
    f.addEventListener("submit", (event) => { if (!window.confirm(f.dataset.confirm)) event.preventDefault(); }));
  const button = document.getElementById("test-meter");
  const box = document.getElementById("probe");
  if (!button || !box) return;
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function show(report) {
    box.replaceChildren();
    const card = el("div", "probe " + (report.pushes ? "ok" : "bad"));
    card.id = "probe-report";
    const verdict = el("p", "verdict");
    verdict.append(el("strong", "", report.verdict || report.error || "no answer"));
    card.append(verdict);
    if (report.error) { box.append(card); return; }
    const facts = el("dl", "facts");
    const yes = { true: "yes", false: "no", null: "–" };
    [["Port", report.opened ? "opened" : "not opened"], ["Bytes", report.bytes], ["Frames", report.frames],
     ["Checksum errors", report.checksum_errors], ["Decrypted", yes[String(report.decrypted)] || "–"],
     ["Pushes", report.pushes]].forEach(([k, v]) => {
      const d = el("div"); d.append(el("dt", "", k), el("dd", "", String(v))); facts.append(d);
    });
    card.append(facts);
    if (report.open_error) card.append(el("p", "banner warn", report.open_error));
    (report.errors || []).forEach((e) => {
      const p = el("p", "banner warn");
      p.dataset.kind = e.kind;
      p.append(el("strong", "", e.kind), " (" + e.count + "×): " + e.message + (e.advice ? " — " + e.advice : ""));
      card.append(p);
    });
    if (report.readings && report.readings.length) {
      const t = el("table", "data"), body = el("tbody");
      const head = el("thead"), hr = el("tr");
      ["Reading", "Value", "Unit"].forEach((h) => hr.append(el("th", "", h)));
      head.append(hr);
      report.readings.forEach((r) => {
        const tr = el("tr");
        tr.append(el("td", "", r.name || r.obis), el("td", "", String(r.value)), el("td", "", r.unit || ""));
        body.append(tr);
      });
      t.append(head, body);
      card.append(t);
    }
    box.append(card);
  }
  button.addEventListener("click", async (event) => {
    event.preventDefault();
    const form = button.form;
    const data = new FormData(form);
    data.set("action", "test");
    button.disabled = true;
    box.replaceChildren(el("div", "probe running", "Listening on the port for up to 15 s…"));
    try {
      const r = await fetch(form.getAttribute("action"), { method: "POST", body: data, headers: { Accept: "application/json" },
                                           credentials: "same-origin" });
      show(await r.json());
    } catch (err) {
      show({ error: "the test did not finish: " + err });
    } finally {
      button.disabled = false;
    }
  });
})();
