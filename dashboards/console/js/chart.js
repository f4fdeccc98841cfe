// A small hand-written SVG line chart of a device's readings around a case.

import { s, h } from "./dom.js";
import { fmtShort } from "./time.js";

/** What to draw for each kind of device: the reading field and its unit. */
export const CHART_FIELD = {
  streetlight: { field: "power_w", unit: "W" },
  manhole: { field: "tilt_deg", unit: "°" },
  bin: { field: "fill_pct", unit: "%" },
  toilet: { field: "nh3_mg_m3", unit: "mg/m³" },
};

/** Points {t, v} from /api/devices/{id}/history readings (newest first). */
export function points(readings) {
  const out = [];
  for (const r of readings) {
    if (r.type !== "telemetry" || !r.data) continue;
    const body = r.data[r.kind];
    const spec = CHART_FIELD[r.kind];
    if (!body || !spec) continue;
    const v = body[spec.field];
    if (typeof v === "number") out.push({ t: r.received_ms, v });
  }
  return out.sort((a, b) => a.t - b.t);
}

/**
 * lineChart(points, {unit, markers: [{t, label, cls}], from, to, label}) → <svg>.
 */
export function lineChart(pts, opts = {}) {
  const W = 560;
  const H = 160;
  const L = 44;
  const R = 10;
  const T = 12;
  const B = 26;
  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "chart",
    role: "img",
    "aria-label": opts.label || "",
  });
  const t0 = opts.from ?? (pts.length ? pts[0].t : 0);
  const t1 = Math.max(opts.to ?? (pts.length ? pts[pts.length - 1].t : 1), t0 + 1);
  let v0 = Math.min(0, ...pts.map((p) => p.v));
  let v1 = Math.max(1, ...pts.map((p) => p.v));
  if (v1 === v0) v1 = v0 + 1;
  v1 += (v1 - v0) * 0.08;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - (v - v0) / (v1 - v0)) * (H - T - B);
  // Axes and grid.
  for (let i = 0; i <= 4; i++) {
    const v = v0 + ((v1 - v0) * i) / 4;
    svg.appendChild(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    svg.appendChild(
      s("text", { x: L - 4, y: y(v) + 4, class: "tick", "text-anchor": "end" }, round(v)),
    );
  }
  for (let i = 0; i <= 3; i++) {
    const t = t0 + ((t1 - t0) * i) / 3;
    svg.appendChild(
      s("text", { x: x(t), y: H - 8, class: "tick", "text-anchor": i === 0 ? "start" : i === 3 ? "end" : "middle" },
        fmtShort(t, t1)),
    );
  }
  svg.appendChild(s("text", { x: 4, y: 10, class: "tick" }, opts.unit || ""));
  for (const m of opts.markers || []) {
    if (m.t < t0 || m.t > t1) continue;
    svg.appendChild(s("line", { x1: x(m.t), x2: x(m.t), y1: T, y2: H - B, class: "marker " + (m.cls || "") }));
    svg.appendChild(s("text", { x: x(m.t) + 3, y: T + 10, class: "marker-label " + (m.cls || "") }, m.label));
  }
  if (pts.length) {
    const d = pts.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ");
    svg.appendChild(s("path", { d, class: "line" }));
    for (const p of pts.length <= 60 ? pts : []) {
      svg.appendChild(s("circle", { cx: x(p.t), cy: y(p.v), r: 2.2, class: "dot" }));
    }
  }
  return h("div", { class: "chart-box" }, svg);
}

function round(v) {
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
}

/**
 * nightsChart(series, {label}) → <svg>: one bar per night (series.nights: [{date, rate, met}]),
 * green when the night met the target, red when not, and the target as a dashed line.
 */
export function nightsChart(series, opts = {}) {
  const W = 560;
  const H = 180;
  const L = 44;
  const R = 10;
  const T = 24;
  const B = 30;
  const nights = series.nights || [];
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart nights", role: "img", "aria-label": opts.label || "" });
  const low = Math.min(series.target, ...nights.map((n) => n.rate));
  // Zoom on the interesting band: 99 % and 97 % must not look the same.
  const v0 = Math.max(0, Math.floor((low - 0.02) * 20) / 20);
  const v1 = 1;
  const y = (v) => T + (1 - (Math.min(v, v1) - v0) / (v1 - v0)) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = v0 + ((v1 - v0) * i) / 4;
    svg.appendChild(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    svg.appendChild(s("text", { x: L - 4, y: y(v) + 4, class: "tick", "text-anchor": "end" }, `${(v * 100).toFixed(v1 - v0 < 0.2 ? 1 : 0)}%`));
  }
  const n = Math.max(nights.length, 1);
  const slot = (W - L - R) / n;
  const bw = Math.max(2, Math.min(28, slot * 0.7));
  nights.forEach((night, i) => {
    const cx = L + slot * (i + 0.5);
    const top = y(Math.max(night.rate, v0));
    svg.appendChild(
      s("rect", { x: (cx - bw / 2).toFixed(1), y: top.toFixed(1), width: bw.toFixed(1), height: Math.max(0, H - B - top).toFixed(1), class: "bar " + (night.met ? "met" : "missed"), "data-date": night.date },
        s("title", {}, `${night.date} · ${(night.rate * 100).toFixed(2)}%`)),
    );
    const every = Math.ceil(n / 7);
    if (i % every === 0 || i === n - 1) {
      svg.appendChild(s("text", { x: cx, y: H - 12, class: "tick", "text-anchor": "middle" }, night.date.slice(5)));
    }
  });
  svg.appendChild(s("line", { x1: L, x2: W - R, y1: y(series.target), y2: y(series.target), class: "target" }));
  // The target's label above the plot, where no bar reaches.
  svg.appendChild(s("line", { x1: W - R - 120, x2: W - R - 100, y1: 10, y2: 10, class: "target" }));
  svg.appendChild(s("text", { x: W - R - 96, y: 14, class: "marker-label", "text-anchor": "start" }, `${opts.targetLabel || ""} ${(series.target * 100).toFixed(0)}%`));
  return h("div", { class: "chart-box" }, svg);
}
