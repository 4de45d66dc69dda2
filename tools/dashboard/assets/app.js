// The scheduler dashboard's only script: live counts on the overview, and a confirmation
// before destructive actions. Everything works without it, but for the refresh.
"use strict";

// Forms with data-confirm ask first.
document.addEventListener("submit", (ev) => {
  const msg = ev.target.dataset && ev.target.dataset.confirm;
  if (msg && !window.confirm(msg)) ev.preventDefault();
});

const fmt = (n) => Number(n).toLocaleString("en-US");
const utc = (ms) => new Date(ms).toISOString();
// A span of milliseconds in one coarse unit, as the server renders it (format::span); "–" for
// none.
function span(ms) {
  if (ms === null || ms === undefined) return "–";
  ms = Math.max(0, ms);
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${Math.floor(ms / 1000)} s`;
  if (ms < 3600000) return `${Math.floor(ms / 60000)} min`;
  if (ms < 172800000) return `${Math.floor(ms / 3600000)} h`;
  return `${Math.floor(ms / 86400000)} d`;
}

// The overview: fetch /api/overview every data-refresh-ms, update the cells in place, and turn
// successive lifetime counters into per-second rates.
function liveOverview() {
  const live = document.getElementById("live");
  if (!live) return;
  const prefix = document.body.dataset.prefix || "";
  const every = Number(live.dataset.refreshMs) || 2000;
  let prev = null;
  async function tick() {
    try {
      const r = await fetch(prefix + "/api/overview", { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!r.ok) { live.classList.add("stale"); return; }
      const data = await r.json();
      const totals = { scheduled: 0, ready: 0, running: 0, dead: 0, due_now: 0 };
      const rows = new Map();
      document.querySelectorAll("#queues tbody tr").forEach((tr) => rows.set(tr.dataset.queue, tr));
      for (const q of data.queues) {
        for (const k of Object.keys(totals)) totals[k] += q[k];
        const tr = rows.get(q.name);
        if (!tr) { location.reload(); return; } // a new queue: render it properly
        for (const k of ["scheduled", "ready", "running", "dead", "due_now"]) {
          const cell = tr.querySelector(`[data-k="${k}"]`);
          const target = cell.querySelector("a") || cell;
          target.textContent = fmt(q[k]);
        }
        for (const k of ["lateness_p50_ms", "lateness_p99_ms"]) {
          const cell = tr.querySelector(`[data-k="${k}"]`);
          if (cell) {
            cell.textContent = span(q[k]);
            cell.title = `${q.lateness_runs} runs in the last minute`;
          }
        }
        for (const k of ["succeeded", "failed"]) {
          const cell = tr.querySelector(`[data-rate="${k}"]`);
          if (prev && prev.queues[q.name]) {
            const dt = (data.server_now_ms - prev.now) / 1000;
            const d = q[k] - prev.queues[q.name][k];
            if (dt > 0 && d >= 0) cell.textContent = (d / dt).toFixed(d / dt < 10 ? 1 : 0);
          }
        }
      }
      for (const [k, v] of Object.entries(totals)) {
        const el = document.querySelector(`[data-total="${k}"]`);
        if (el) el.textContent = fmt(v);
      }
      const upd = document.getElementById("updated");
      upd.textContent = utc(data.server_now_ms);
      upd.dataset.now = data.server_now_ms;
      live.classList.remove("stale");
      prev = { now: data.server_now_ms, queues: Object.fromEntries(data.queues.map((q) => [q.name, q])) };
    } catch (e) {
      live.classList.add("stale");
    } finally {
      setTimeout(tick, every);
    }
  }
  tick();
}

document.addEventListener("DOMContentLoaded", liveOverview);
