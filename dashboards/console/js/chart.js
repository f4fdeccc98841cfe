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
