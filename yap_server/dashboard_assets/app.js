"use strict";
const store = window.sessionStorage;
const params = new URLSearchParams(location.search);
if (params.has("api_key")) {  // a shared link: keep the key in this tab only, out of the address bar
  store.setItem("yap_key", params.get("api_key"));
  params.delete("api_key");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
}
const $ = (sel) => document.querySelector(sel);
const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
const num = (v, d = 3) => v === null || v === undefined ? "-" : (Number.isInteger(v) ? String(v) : Number(v).toFixed(d));
const body = (name) => $(`section[data-panel="${name}"] .body`);

function table(rows) {
  const t = el("table");
  for (const [k, v] of rows) { const tr = el("tr"); tr.append(el("td", k), el("td", String(v), "n")); t.append(tr); }
  return t;
}
function pct(p) { return [["p50", num(p.p50, 4)], ["p95", num(p.p95, 4)], ["p99", num(p.p99, 4)]]; }

function chart(series, field, color) {
  const NS = "http://www.w3.org/2000/svg", W = 300, H = 70;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.setAttribute("preserveAspectRatio", "none");
  const pts = series.filter((p) => p[field] !== null && p[field] !== undefined);
  if (pts.length > 1) {
    const t0 = pts[0].t, t1 = pts[pts.length - 1].t, max = Math.max(...pts.map((p) => p[field]), 1e-9);
    const line = document.createElementNS(NS, "polyline");
    line.setAttribute("points", pts.map((p) => `${((p.t - t0) / Math.max(t1 - t0, 1e-9) * W).toFixed(1)},${(H - 4 - p[field] / max * (H - 8)).toFixed(1)}`).join(" "));
    line.setAttribute("fill", "none"); line.setAttribute("stroke", color); line.setAttribute("stroke-width", "1.5");
    const label = document.createElementNS(NS, "text");
    label.setAttribute("x", "4"); label.setAttribute("y", "12"); label.setAttribute("font-size", "10"); label.setAttribute("fill", "#667");
    label.textContent = `max ${num(max, 4)} · last 10 min`;
    svg.append(line, label);
  }
  return svg;
}

function fill(name, ...nodes) { body(name).replaceChildren(...nodes); }

function render(s) {
  const series = s.series || [];
  fill("live", table([["WebSocket connections", s.live.connections], ["slots", `${s.live.slots_active} / ${s.live.slots_max}`],
    ["generations streaming", s.live.generations]]), chart(series, "connections", "#3b82f6"));
  const routes = s.requests.by_route.map((r) => [`${r.route} ${r.code}`, r.count]);
  const errors = Object.entries(s.requests.errors).map(([k, v]) => [`error ${k}`, v]);
  const statuses = Object.entries(s.requests.by_status).map(([k, v]) => [`turns ${k}`, v]);
  fill("requests", table([...statuses, ...routes, ...errors].slice(0, 18)), chart(series, "requests_per_s", "#0ea5e9"));
  fill("ttft", table(pct(s.latency_s.ttft)), chart(series, "ttft_p95_s", "#f59e0b"));
  fill("itl", table(pct(s.latency_s.itl)), chart(series, "itl_p95_s", "#a855f7"));
  fill("throughput", table([["tokens/s (1 min)", num(s.throughput.tokens_per_s, 1)], ["tokens generated", s.throughput.tokens_total],
    ["prompt tokens", s.throughput.prompt_tokens_total]]), chart(series, "tokens_per_s", "#10b981"));
  const decisions = Object.entries(s.tool.decisions);
  fill("tool", decisions.length ? table([...decisions, ...pct(s.tool.latency_s).map(([k, v]) => [`latency ${k} (s)`, v])])
    : el("p", "no classifier decisions yet (the classifier runs where it is deployed)", "muted"));
  fill("bargein", table(pct(s.latency_s.cancel)));
  const w = s.warm;
  fill("warm", table([["cached prompt tokens", w.cached_prompt_tokens], ["cached / prompt tokens", num(w.cached_ratio, 3)],
    ["prefix-cache hit ratio", w.prefix_cache_hit_ratio === null ? "not reported by this engine" : num(w.prefix_cache_hit_ratio, 3)]]));
  const g = s.engine_gauges, j = s.jobs;
  const health = Object.entries(s.engines).map(([k, h]) => [`${k} health`, h.ok ? "ok" : h.detail]);
  fill("engine", table([...health, ["queue (engine)", g.queue_waiting === null ? "not reported" : g.queue_waiting],
    ["running (engine)", g.running === null ? "not reported" : g.running],
    ["KV cache used", g.kv_cache_usage === null ? "not reported" : `${num(g.kv_cache_usage * 100, 1)} %`],
    ["jobs running / queued", `${j.running} / ${j.queued}`]]));
  const refusals = [...Object.entries(s.refusals.rate_limited), ...Object.entries(s.refusals.rejected).map(([k, v]) => [`rejected ${k}`, v]),
    ...Object.entries(s.refusals.limits_backend_failures).map(([k, v]) => [`limits store down (${k})`, v])];
  fill("refusals", refusals.length ? table(refusals) : el("p", "no refusals", "muted"), chart(series, "refusals_per_s", "#ef4444"));
  const keys = el("table");
  const head = el("tr"); for (const h of ["key", "admitted", "refused", "prompt", "completion"]) head.append(el("td", h)); keys.append(head);
  for (const k of s.keys) { const tr = el("tr"); tr.append(el("td", k.id)); for (const f of ["admitted", "refused", "prompt_tokens", "completion_tokens"]) tr.append(el("td", num(k[f] || 0, 0), "n")); keys.append(tr); }
  fill("keys", s.keys.length ? keys : el("p", "no keyed requests yet", "muted"));
  const tiles = [["first token", s.slo.ttft], ["inter-token", s.slo.itl]].map(([name, t]) => {
    const tile = el("div", undefined, "tile" + (t.met !== null && t.met < 0.95 ? " bad" : ""));
    tile.append(el("b", t.met === null ? "-" : `${num(t.met * 100, 1)} %`), el("span", `${name} ≤ ${t.target_s} s (${t.samples} samples)`));
    return tile;
  });
  fill("slo", ...tiles);
}

async function refresh() {
  const key = store.getItem("yap_key");
  $("#keyform").hidden = !!key; $("#forget").hidden = !key;
  if (!key) { $("#err").textContent = "enter an API key to open the dashboard"; return; }
  try {
    const r = await fetch("dashboard/stats", {headers: {"X-API-Key": key}, cache: "no-store", credentials: "omit"});
    if (r.status === 401) { store.removeItem("yap_key"); throw new Error("the key was refused; enter another"); }
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    $("#err").textContent = ""; $("#at").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = "1";
  } catch (e) { $("#err").textContent = "stats unavailable: " + e.message; }
}
$("#keyform").addEventListener("submit", (e) => { e.preventDefault(); store.setItem("yap_key", $("#key").value); $("#key").value = ""; refresh(); });
$("#forget").addEventListener("click", () => { store.removeItem("yap_key"); refresh(); });
refresh(); setInterval(refresh, 2000);
