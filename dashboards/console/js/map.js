// The overview (一张图): a map of devices, open cases and grid outlines, with the numbers the
// centre is judged on beside it and the newest cases. Zoomed out the server answers per grid.

import { api } from "./api.js";
import { h, fill } from "./dom.js";
import { t } from "./i18n.js";
import { fmtShort, localDate } from "./time.js";
import { onCaseEvent, onDeviceEvent } from "./live.js";
import { caseTone, stateBadge, casePlace } from "./cases.js";

const TONES = { red: "#d93025", orange: "#e8710a", blue: "#1a73e8", green: "#188038", grey: "#80868b" };

let leaflet = null;

/** Leaflet, loaded once (a classic script from the gateway: window.L). */
function loadLeaflet() {
  if (leaflet) return leaflet;
  leaflet = new Promise((resolve, reject) => {
    document.head.appendChild(h("link", { rel: "stylesheet", href: "/console/vendor/leaflet/leaflet.css" }));
    const script = h("script", { src: "/console/vendor/leaflet/leaflet.js" });
    script.addEventListener("load", () => resolve(window.L));
    script.addEventListener("error", () => reject(new Error("leaflet")));
    document.head.appendChild(script);
  });
  return leaflet;
}

// WGS-84 → GCJ-02 (the datum of Chinese tile servers), the published approximation.
const A = 6378245.0;
const EE = 0.00669342162296594323;
function outOfChina(lat, lon) {
  return lon < 72.004 || lon > 137.8347 || lat < 0.8293 || lat > 55.8271;
}
function tLat(x, y) {
  let r = -100 + 2 * x + 3 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * Math.sqrt(Math.abs(x));
  r += ((20 * Math.sin(6 * x * Math.PI) + 20 * Math.sin(2 * x * Math.PI)) * 2) / 3;
  r += ((20 * Math.sin(y * Math.PI) + 40 * Math.sin((y / 3) * Math.PI)) * 2) / 3;
  r += ((160 * Math.sin((y / 12) * Math.PI) + 320 * Math.sin((y * Math.PI) / 30)) * 2) / 3;
  return r;
}
function tLon(x, y) {
  let r = 300 + x + 2 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * Math.sqrt(Math.abs(x));
  r += ((20 * Math.sin(6 * x * Math.PI) + 20 * Math.sin(2 * x * Math.PI)) * 2) / 3;
  r += ((20 * Math.sin(x * Math.PI) + 40 * Math.sin((x / 3) * Math.PI)) * 2) / 3;
  r += ((150 * Math.sin((x / 12) * Math.PI) + 300 * Math.sin((x / 30) * Math.PI)) * 2) / 3;
  return r;
}
export function wgs84ToGcj02(lat, lon) {
  if (outOfChina(lat, lon)) return [lat, lon];
  let dLat = tLat(lon - 105, lat - 35);
  let dLon = tLon(lon - 105, lat - 35);
  const radLat = (lat / 180) * Math.PI;
  let magic = Math.sin(radLat);
  magic = 1 - EE * magic * magic;
  const sq = Math.sqrt(magic);
  dLat = (dLat * 180) / (((A * (1 - EE)) / (magic * sq)) * Math.PI);
  dLon = (dLon * 180) / ((A / sq) * Math.cos(radLat) * Math.PI);
  return [lat + dLat, lon + dLon];
}

function kpi(label, value, tone, test) {
  return h("div", { class: "kpi" + (tone ? " " + tone : ""), dataset: { kpi: test } }, h("span", { class: "kpi-value" }, value), h("span", { class: "kpi-label" }, label));
}

export async function mapPage(el, ctx) {
  const gcj = ctx.settings.coordinates === "gcj02";
  const toMap = (lat, lon) => (gcj ? wgs84ToGcj02(lat, lon) : [lat, lon]);
  const mapBox = h("div", { class: "map", id: "map", "data-test": "map" });
  const kpis = h("div", { class: "kpis", "data-test": "kpis" });
  const newest = h("ol", { class: "newest", "data-test": "newest" });
  const legend = h(
    "div",
    { class: "legend" },
    [["red", "legend.red"], ["orange", "legend.orange"], ["blue", "legend.blue"], ["green", "legend.green"], ["grey", "legend.grey"]].map(([c, k]) =>
      h("span", {}, h("i", { class: "dot " + c }), t(k)),
    ),
  );
  fill(
    el,
    h("div", { class: "overview" },
      h("section", { class: "map-area" }, kpis, mapBox, legend),
      h("aside", { class: "panel side" }, h("h2", {}, t("map.newest")), newest)),
  );
  const L = await loadLeaflet();
  const centre = ctx.settings.center || [35.7476, 114.2975];
  const map = L.map(mapBox, { zoomControl: true, attributionControl: true, preferCanvas: true }).setView(toMap(centre[0], centre[1]), ctx.settings.zoom || 14);
  if (ctx.settings.tile_url) {
    L.tileLayer(ctx.settings.tile_url, { attribution: ctx.settings.tile_attribution || "", maxZoom: 19 }).addTo(map);
  } else {
    mapBox.classList.add("no-tiles");
  }
  const layer = L.layerGroup().addTo(map);
  ctx.onCleanup(() => map.remove());

  let lighting = null;
  async function loadLighting() {
    if (!ctx.can("lighting_read")) return;
    try {
      lighting = await api("/api/lighting");
    } catch (_) {
      lighting = null;
    }
  }

  // The device markers drawn now, by device id.
  const markers = new Map();
  let fitted = false;
  async function draw() {
    const b = map.getBounds();
    // The box in WGS-84 (GCJ-02 offsets are a few hundred metres: widen the box by as much).
    const pad = gcj ? 0.01 : 0;
    const bbox = [b.getWest() - pad, b.getSouth() - pad, b.getEast() + pad, b.getNorth() + pad].map((x) => x.toFixed(5)).join(",");
    const data = await api(`/api/map?bbox=${bbox}&zoom=${map.getZoom()}`);
    const now = data.now_ms;
    nowMs = now;
    layer.clearLayers();
    markers.clear();
    const segRate = new Map((lighting?.segments || []).map((s) => [s.segment, s]));
    for (const g of data.grids) {
      const tone = g.overdue_cases || g.urgent_cases ? TONES.red : g.open_cases ? TONES.blue : "#5f6b7a";
      L.polygon(g.outline.map((p) => toMap(p[0], p[1])), { color: tone, weight: 1.5, fillOpacity: data.mode === "grids" ? 0.12 : 0.03, interactive: data.mode === "grids" })
        .bindTooltip(`${t("col.grid")} ${g.grid} · ${t("map.devices")} ${g.devices} · ${t("map.open")} ${g.open_cases}`)
        .addTo(layer);
      if (data.mode === "grids" && g.open_cases) {
        L.circleMarker(toMap(g.center[0], g.center[1]), { radius: 8 + Math.min(12, g.open_cases * 2), color: "#fff", weight: 2, fillColor: tone, fillOpacity: 0.9 })
          .bindTooltip(`${g.open_cases}`, { permanent: true, direction: "center", className: "count" })
          .addTo(layer);
      }
    }
    if (data.mode === "points") {
      // Road segments coloured by lighting rate against their target.
      const bySeg = new Map();
      for (const d of data.devices) if (d.segment && d.kind === "streetlight") (bySeg.get(d.segment) || bySeg.set(d.segment, []).get(d.segment)).push(d);
      for (const [seg, lamps] of bySeg) {
        const r = segRate.get(seg);
        if (!r || lamps.length < 2) continue;
        lamps.sort((a, b) => a.lon - b.lon || a.lat - b.lat);
        L.polyline(lamps.map((d) => toMap(d.lat, d.lon)), { color: r.below_target ? TONES.red : TONES.green, weight: 5, opacity: 0.55 })
          .bindTooltip(`${seg} · ${t("map.lighting")} ${(r.rate * 100).toFixed(1)}% / ${(r.target * 100).toFixed(0)}%`)
          .addTo(layer);
      }
      for (const d of data.devices) {
        const marker = L.circleMarker(toMap(d.lat, d.lon), { radius: 3, weight: 0, fillColor: d.offline ? TONES.grey : "#3c4a5c", fillOpacity: d.offline ? 0.9 : 0.55 })
          .bindTooltip(`${d.id} · ${t("kind." + d.kind)}${d.offline ? " · " + t("map.offline") : ""}`)
          .addTo(layer);
        markers.set(d.id, { marker, offline: d.offline });
      }
      for (const c of data.cases) {
        L.circleMarker(toMap(c.lat, c.lon), { radius: 9, color: "#fff", weight: 2, fillColor: TONES[caseTone(c, now)], fillOpacity: 0.95 })
          .bindTooltip(`#${c.id} ${t("type." + c.case_type)} · ${t("state." + c.state)}`)
          .on("click", () => (location.hash = `#/case/${c.id}`))
          .addTo(layer);
      }
    }
    // The first time, show the whole city (every grid the caller sees).
    if (!fitted) {
      fitted = true;
      const all = await api("/api/map?zoom=0");
      const pts = all.grids.flatMap((g) => g.outline.map((p) => toMap(p[0], p[1])));
      if (pts.length) {
        map.fitBounds(L.latLngBounds(pts).pad(0.05));
        return; // the move draws the fitted view
      }
    }
    summary = data.summary;
    renderKpis();
  }

  // The figures the centre is judged on: open and overdue now (the map's answer), registered
  // and closed today and the month's on-time closure rate (按期处置率) from the evaluation.
  let summary = null;
  let nowMs = null;
  let today = null;
  let month = null;
  function renderKpis() {
    const s = summary;
    if (!s) return;
    const city = lighting?.city;
    const pct = (r) => (r === null || r === undefined ? "—" : `${(r * 100).toFixed(1)}%`);
    const num = (n) => Number(n).toLocaleString("en-US");
    fill(
      kpis,
      today ? kpi(t("map.registered_today"), num(today.registered), "", "registered-today") : null,
      today ? kpi(t("map.closed_today"), num(today.closed), today.closed ? "green" : "", "closed-today") : null,
      kpi(t("map.open"), num(s.open_cases), s.open_cases ? "blue" : "", "open"),
      kpi(t("filter.urgent"), num(s.urgent_cases), s.urgent_cases ? "red" : "", "urgent"),
      kpi(t("map.overdue_now"), num(s.overdue_cases), s.overdue_cases ? "red" : "", "overdue"),
      month ? kpi(t("map.on_time_month"), pct(month.on_time_rate), month.on_time_rate === null ? "" : month.on_time_rate >= 0.9 ? "green" : "orange", "on-time") : null,
      city ? kpi(t("map.lighting"), city.expected ? `${(city.rate * 100).toFixed(1)}%` : "—", city.expected ? (city.below_target ? "red" : "green") : "", "lighting") : null,
      kpi(t("map.online"), `${num(s.devices - s.offline_devices)} / ${num(s.devices)}`, s.offline_devices ? "orange" : "green", "online"),
    );
  }
  async function loadFigures() {
    if (!ctx.can("evaluation_read") || nowMs === null) return;
    const date = localDate(nowMs);
    const grid = ctx.me.grid ? `&grid=${encodeURIComponent(ctx.me.grid)}` : "";
    try {
      const [d, m] = await Promise.all([
        api(`/api/evaluation?period=day&at=${date}${grid}`),
        api(`/api/evaluation?period=month&at=${date.slice(0, 7)}${grid}`),
      ]);
      today = d.city;
      month = m.city;
    } catch (_) {
      today = month = null;
    }
    renderKpis();
  }

  async function loadNewest() {
    const data = await api("/api/cases?limit=12");
    fill(
      newest,
      data.cases.map((c) =>
        h("li", { class: "tone-" + caseTone(c, data.now_ms), dataset: { caseId: c.id } },
          h("a", { href: `#/case/${c.id}` }, `#${c.id} ${t("type." + c.case_type)}`),
          stateBadge(c, data.now_ms),
          h("div", { class: "muted" }, `${casePlace(c)} · ${fmtShort(c.opened_ms, data.now_ms)}`)),
      ),
    );
    if (!data.cases.length) newest.appendChild(h("li", { class: "muted" }, t("list.empty")));
  }

  let timer = null;
  const refresh = () => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      draw().catch(() => {});
      loadNewest().catch(() => {});
    }, 400);
  };
  // The evaluation reads the month's cases: at most every 5 s however busy the stream is.
  let figuresTimer = null;
  const refreshFigures = () => {
    if (figuresTimer) return;
    figuresTimer = setTimeout(() => {
      figuresTimer = null;
      loadFigures().catch(() => {});
    }, 5000);
  };
  map.on("moveend", () => draw().catch(() => {}));
  ctx.onCleanup(onCaseEvent(() => {
    refresh();
    refreshFigures();
  }));
  // Device state: a marker turns grey when its device goes offline and back when it is heard
  // from again; a change of online state also refreshes the figures.
  ctx.onCleanup(onDeviceEvent((e) => {
    const m = markers.get(e.device_id);
    if (m && m.offline !== !e.online) {
      m.offline = !e.online;
      m.marker.setStyle({ fillColor: m.offline ? TONES.grey : "#3c4a5c", fillOpacity: m.offline ? 0.9 : 0.55 });
      m.marker.setTooltipContent(`${e.device_id} · ${t("kind." + e.kind)}${m.offline ? " · " + t("map.offline") : ""}`);
      mapBox.dataset.lastDeviceChange = `${e.device_id}:${m.offline ? "offline" : "online"}`;
    }
    if (e.status_changed) refresh();
  }));
  // The lighting rate changes with the automation's tick: every minute is enough for a screen.
  const every = setInterval(() => loadLighting().then(refresh), 60000);
  ctx.onCleanup(() => {
    clearInterval(every);
    if (timer) clearTimeout(timer);
    if (figuresTimer) clearTimeout(figuresTimer);
  });
  await loadLighting();
  await Promise.all([draw(), loadNewest()]);
  await loadFigures();
}
