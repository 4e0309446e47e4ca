// The console polls /api/console/state once a second and redraws; see
// package console's documentation for what the document holds.
"use strict";

function hue(group) { return (group * 137) % 360; }
function colour(group) { return group ? `hsl(${hue(group)}, 65%, 72%)` : "#e5e7eb"; }
function bytes(n) {
  if (!n) return "0 B";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "style") e.style.cssText = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}
function spark(samples) {
  const w = 150, h = 26, svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("class", "spark"); svg.setAttribute("width", w); svg.setAttribute("height", h);
  const max = Math.max(1, ...samples.map(s => s.ops));
  const pts = samples.map((s, i) => `${(i / Math.max(1, samples.length - 1)) * w},${h - 2 - (s.ops / max) * (h - 4)}`).join(" ");
  const line = document.createElementNS(svgNS, "polyline");
  line.setAttribute("points", pts); line.setAttribute("fill", "none"); line.setAttribute("stroke", "#2563eb"); line.setAttribute("stroke-width", "1.5");
  svg.append(line);
  return svg;
}

function drawShards(shards) {
  const box = document.getElementById("shards");
  box.replaceChildren(...shards.map(s => {
    const moving = !["serving", "unassigned"].includes(s.state);
    const cls = "cell" + (moving ? " moving" : "") + (s.group ? "" : " unassigned");
    let detail = s.group ? `g${s.group} ${s.state}` : "unassigned";
    if (s.state === "pulling") detail += ` ${bytes(s.moved_bytes)}`;
    const title = `shard ${s.shard}: group ${s.group || "none"}, ${s.state}` + (s.peer ? ` (peer group ${s.peer})` : "");
    return el("div", { class: cls, style: `background:${colour(s.group)}`, "data-shard": s.shard, "data-group": s.group, "data-state": s.state, title },
      el("span", { class: "n" }, s.shard), el("span", { class: "g" }, detail));
  }));
}

function drawGroups(groups) {
  const rows = [];
  for (const g of groups) {
    const span = { rowspan: g.replicas.length };
    g.replicas.forEach((r, i) => {
      const cells = [];
      if (i === 0) {
        cells.push(el("td", span, el("span", { class: "swatch", style: `background:${colour(g.id)}` }), g.id));
        cells.push(el("td", span, g.shards));
      }
      cells.push(el("td", {}, r.id ? `${r.id} ${r.addr}` : r.addr),
        el("td", { class: `role-${r.role}`, title: r.error || "" }, r.role),
        el("td", {}, r.term || "—"), el("td", {}, r.commit || "—"), el("td", {}, r.applied || "—"),
        el("td", {}, r.lag), el("td", {}, r.config_num || "—"), el("td", {}, bytes(r.data_bytes)));
      if (i === 0) {
        cells.push(el("td", span, spark(g.traffic || []),
          ` ${Math.round(g.ops_per_sec)} ops/s, p99 ${g.p99_ms ? g.p99_ms.toFixed(1) : "—"} ms`));
      }
      rows.push(el("tr", { "data-group": g.id }, ...cells));
    });
  }
  document.querySelector("#groups tbody").replaceChildren(...rows);
}

function drawHistory(history) {
  const body = document.querySelector("#history tbody");
  body.replaceChildren(...history.map(c => el("tr", { "data-config": c.num },
    el("td", {}, c.num), el("td", {}, c.what),
    el("td", {}, c.seen ? new Date(c.seen).toLocaleTimeString() : "before this console started"),
    el("td", {}, c.settled ? `${(c.took_ms / 1000).toFixed(2)} s` : (c.seen ? "not yet" : "—")))));
}

async function refresh() {
  try {
    const r = await fetch("api/console/state", { cache: "no-store" });
    const s = await r.json();
    document.getElementById("config").textContent = `configuration ${s.config_num}`;
    document.getElementById("updated").textContent = `updated ${new Date(s.time).toLocaleTimeString()}`;
    const err = document.getElementById("error");
    err.hidden = !s.error; err.textContent = s.error || "";
    drawShards(s.shards || []);
    drawGroups(s.groups || []);
    drawHistory(s.history || []);
    document.body.dataset.configNum = s.config_num;
  } catch (e) {
    const err = document.getElementById("error");
    err.hidden = false; err.textContent = `cannot reach the console: ${e}`;
  }
}
refresh();
setInterval(refresh, 1000);
