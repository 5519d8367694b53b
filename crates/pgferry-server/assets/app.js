// pgferry dashboard: polls the JSON API every two seconds and draws with uPlot.
// Every value from the server goes into the page as text, never as HTML.
"use strict";

const REFRESH_MS = 2000;
const MAX_POINTS = 4000;
let token = sessionStorage.getItem("pgferry-token") || "";

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function num(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  return Math.round(n).toLocaleString("en-US");
}

// Axis ticks: small values keep their decimals (a lag of 0.05 s is not 0).
function tick(n) {
  if (n === null || n === undefined) return "";
  const a = Math.abs(n);
  if (a > 0 && a < 10 && !Number.isInteger(n)) return n.toFixed(a < 0.1 ? 3 : 2);
  return num(n);
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? Math.round(n) : n.toFixed(1)) + " " + units[i];
}

function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 10) return s.toFixed(2) + " s";
  if (s < 120) return s.toFixed(0) + " s";
  const m = Math.floor(s / 60);
  if (m < 120) return m + " min " + Math.round(s % 60) + " s";
  return Math.floor(m / 60) + " h " + (m % 60) + " min";
}

async function api(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const r = await fetch(path, { headers, cache: "no-store" });
  if (r.status === 401) {
    $("auth").hidden = false;
    throw new Error("the server wants its bearer token");
  }
  const body = await r.json();
  if (!r.ok) throw new Error((body.error && body.error.message) || r.statusText);
  return body;
}

// Charts ---------------------------------------------------------------------------
const charts = {};
const data = { times: [], columns: {} };
let lastTime = null;

const CHARTS = [
  { id: "c-lag", series: [
      { key: "source_lag_seconds", label: "source lag (s)", stroke: "#2e6bd6" },
      { key: "target_lag_seconds", label: "target lag (s)", stroke: "#c4320a" } ] },
  { id: "c-load", series: [
      { key: "load_rows_per_second", label: "rows/s", stroke: "#12805c" },
      { key: "load_bytes_per_second", label: "bytes/s", stroke: "#7a5af8", scale: "bytes", fmt: bytes } ] },
  { id: "c-cdc", series: [
      { key: "applied_per_second", label: "applied/s", stroke: "#12805c" },
      { key: "incoming_per_second", label: "incoming/s", stroke: "#2e6bd6" } ] },
  { id: "c-conn", series: [
      { key: "target_connections", label: "connections", stroke: "#b54708" } ] },
  { id: "c-size", series: [
      { key: "target_size_bytes", label: "size", stroke: "#7a5af8", fmt: bytes } ] },
];

function chartWidth(fig) {
  // The figure's own width, less its padding, whatever the canvas inside it is now.
  const style = getComputedStyle(fig);
  const inner = fig.getBoundingClientRect().width
    - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return Math.max(160, Math.floor(inner));
}

function makeChart(spec) {
  const fig = $(spec.id);
  const axes = [{ stroke: "#98a2b3" }, { stroke: "#98a2b3", size: spec.series[0].fmt ? 80 : 60,
    values: (u, vals) => vals.map((v) => spec.series[0].fmt ? spec.series[0].fmt(v) : tick(v)) }];
  const scales = { x: { time: true } };
  if (spec.series.some((s) => s.scale === "bytes")) {
    axes.push({ side: 1, scale: "bytes", stroke: "#98a2b3", size: 80, grid: { show: false },
      values: (u, vals) => vals.map((v) => bytes(v)) });
    scales.bytes = {};
  }
  const opts = {
    width: chartWidth(fig), height: 180,
    scales, axes,
    legend: { live: false },
    series: [{}].concat(spec.series.map((s) => ({
      label: s.label, stroke: s.stroke, width: 2, scale: s.scale || "y",
      spanGaps: false, value: (u, v) => (s.fmt ? s.fmt(v) : tick(v)),
    }))),
  };
  charts[spec.id] = { spec, plot: new uPlot(opts, [[]].concat(spec.series.map(() => [])), fig) };
}

function appendSeries(s) {
  if (!s.times.length) return;
  const n = data.times.length;
  data.times.push(...s.times);
  for (const key of new Set([...Object.keys(data.columns), ...Object.keys(s.columns)])) {
    const col = data.columns[key] || (data.columns[key] = new Array(n).fill(null));
    const add = s.columns[key] || new Array(s.times.length).fill(null);
    col.push(...add);
  }
  const extra = data.times.length - MAX_POINTS;
  if (extra > 0) {
    data.times.splice(0, extra);
    for (const col of Object.values(data.columns)) col.splice(0, extra);
  }
  lastTime = data.times[data.times.length - 1];
  for (const { spec, plot } of Object.values(charts)) {
    const cols = spec.series.map((x) => data.columns[x.key] || new Array(data.times.length).fill(null));
    plot.setData([data.times].concat(cols));
    const points = cols.reduce((a, c) => a + c.filter((v) => v !== null).length, 0);
    $(spec.id).dataset.points = String(points);
  }
}

// Panels ---------------------------------------------------------------------------
function renderLive(l) {
  $("task").textContent = l.task;
  $("mtype").textContent = l.migration_type;
  $("uptime").textContent = seconds(l.uptime_seconds);
  $("phase").textContent = l.phase;
  const pct = Math.round((l.load_progress || 0) * 1000) / 10;
  $("progress-bar").style.width = pct + "%";
  $("progress-text").textContent = pct + "% loaded";
  $("t-tables").textContent = l.tables.loaded + " / " + l.tables.total;
  $("t-rows").textContent = num(l.full_load.rows);
  $("t-slag").textContent = l.cdc ? seconds(l.cdc.source_lag_seconds) : "–";
  $("t-tlag").textContent = l.cdc ? seconds(l.cdc.target_lag_seconds) : "–";
  if (l.cdc) {
    const a = l.cdc.applied;
    $("t-applied").textContent = num(a.inserts + a.updates + a.deletes + a.truncates);
  }
  const al = l.alarms;
  $("t-alarms").textContent = al.ALARM ? al.ALARM + " in ALARM" : (al.OK + " OK");
  $("t-alarms").className = al.ALARM ? "alarm-on" : "";
}

function renderTables(rows) {
  const body = $("tables").tBodies[0];
  body.replaceChildren(...rows.map((t) => {
    const pct = Math.min(100, t.percent || 0);
    const bar = el("span", { class: "mini" }, el("i", { style: "width:" + pct + "%" }));
    return el("tr", { "data-table": t.table },
      el("td", {}, t.table),
      el("td", {}, el("span", { class: "state " + t.state }, t.state)),
      el("td", { class: "num" }, num(t.rows)),
      el("td", { class: "pct" }, bar, pct.toFixed(1) + "%"),
      el("td", { class: "num" }, t.rows_per_second ? num(t.rows_per_second) : "–"),
      el("td", { class: "num" }, t.bytes_per_second ? bytes(t.bytes_per_second) + "/s" : "–"));
  }));
}

function renderAlarms(body) {
  const items = body.alarms.map((a) => el("li", { "data-alarm": a.name, "data-state": a.state },
    el("span", { class: "badge " + a.state }, a.state),
    el("div", {}, el("strong", {}, a.name), el("span", { class: "reason" }, a.reason))));
  for (const a of body.inactive) {
    items.push(el("li", { "data-alarm": a.name, "data-state": "INACTIVE" },
      el("span", { class: "badge" }, "INACTIVE"),
      el("div", {}, el("strong", {}, a.name), el("span", { class: "reason" }, a.why))));
  }
  $("alarms").replaceChildren(...items);
}

// Blockers and warnings of the last assessment (the run's preflight, or a full one
// POSTed to /api/v1/assessment); infos stay in the JSON.
function renderAssessment(a) {
  if (!a) {
    $("assessment-verdict").textContent = "none yet";
    $("assessment").replaceChildren();
    return;
  }
  $("assessment-verdict").textContent = a.summary.verdict + " · " +
    new Date(a.assessed_at).toLocaleTimeString();
  const shown = a.findings.filter((f) => f.severity !== "info");
  const items = shown.map((f) => el("li", { "data-check": f.check, "data-severity": f.severity },
    el("span", { class: "badge " + (f.severity === "blocker" ? "ALARM" : "WARN") }, f.severity),
    el("div", {}, el("strong", {}, f.check + (f.object ? " " + f.object : "")),
      el("span", { class: "reason" }, f.message + " Fix: " + f.fix))));
  if (!items.length) {
    items.push(el("li", {}, el("span", { class: "badge OK" }, "OK"),
      el("div", {}, "no blocker or warning")));
  }
  $("assessment").replaceChildren(...items);
}

function renderEvents(events) {
  $("events").replaceChildren(...events.slice().reverse().map((e) =>
    el("li", { class: e.level },
      el("time", { datetime: e.at }, new Date(e.at).toLocaleTimeString()),
      e.kind + ": " + e.message)));
}

// Loop -----------------------------------------------------------------------------
async function refresh() {
  const since = lastTime === null ? "" : "?since=" + lastTime;
  const results = await Promise.allSettled([
    api("/api/v1/live").then(renderLive),
    api("/api/v1/tables").then(renderTables),
    api("/api/v1/alarms").then(renderAlarms),
    api("/api/v1/series" + since).then(appendSeries),
    api("/api/v1/events?limit=15").then(renderEvents),
    api("/api/v1/assessment").then(renderAssessment, () => renderAssessment(null)),
  ]);
  const failed = results.filter((r) => r.status === "rejected");
  const status = $("status");
  if (failed.length) {
    status.textContent = failed[0].reason.message;
    status.className = "status error";
  } else {
    status.textContent = "updated " + new Date().toLocaleTimeString();
    status.className = "status";
    const main = $("main");
    main.dataset.refreshed = String(Number(main.dataset.refreshed) + 1);
  }
}

$("auth-form").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("pgferry-token", token);
  $("auth").hidden = true;
  refresh();
});

function fitCharts() {
  for (const { spec, plot } of Object.values(charts)) {
    plot.setSize({ width: chartWidth($(spec.id)), height: 180 });
  }
}
window.addEventListener("resize", fitCharts);

CHARTS.forEach(makeChart);
// The first layout may settle after the charts were made (fonts, scrollbars).
requestAnimationFrame(fitCharts);
refresh();
setInterval(refresh, REFRESH_MS);
