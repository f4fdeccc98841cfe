// Devices: search and server-side paging over the inventory; one device's sequence numbers,
// latest readings, online state, battery and history chart.

import { api, query } from "./api.js";
import { h, fill } from "./dom.js";
import { t } from "./i18n.js";
import { fmt } from "./time.js";
import { lineChart, points, CHART_FIELD } from "./chart.js";
import { onDeviceEvent } from "./live.js";

const PAGE = 50;

export async function devicesPage(el, ctx, arg) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const f = { q: params.get("q") || "", kind: params.get("kind") || "", grid: params.get("grid") || "", offset: Number(params.get("offset")) || 0 };
  const form = h(
    "form",
    { class: "filters", onsubmit: (e) => { e.preventDefault(); apply(0); }, onchange: () => apply(0) },
    h("label", { class: "field" }, t("devices.search"), h("input", { name: "q", value: f.q, size: 16 })),
    h("label", { class: "field" }, t("filter.type"),
      h("select", { name: "kind" }, h("option", { value: "" }, t("filter.any")),
        ["streetlight", "manhole", "bin", "toilet"].map((k) => h("option", { value: k, selected: k === f.kind }, t("kind." + k))))),
    h("label", { class: "field" }, t("filter.grid"), h("input", { name: "grid", value: f.grid, size: 16, disabled: Boolean(ctx.me.grid) })),
  );
  function apply(offset) {
    const d = new FormData(form);
    location.hash = `#/devices${arg ? "/" + encodeURIComponent(arg) : ""}` + query({ q: (d.get("q") || "").trim(), kind: d.get("kind"), grid: (d.get("grid") || "").trim(), offset: offset || "" });
  }
  const list = h("div", { "data-test": "device-list" });
  const pager = h("div", { class: "pager" });
  const summary = h("p", { class: "summary" });
  const detail = h("div", { class: "device-detail" });
  fill(el, h("h1", {}, t("nav.devices")), form, h("div", { class: "case-grid" }, h("section", {}, summary, list, pager), detail));

  const data = await api("/api/devices" + query({ q: f.q, kind: f.kind, grid: ctx.me.grid ? "" : f.grid, limit: PAGE, offset: f.offset }));
  // Online state: offline devices from the answer, then every change from the live stream.
  const offline = new Set(data.offline || []);
  const cells = new Map();
  function stateCell(id, on) {
    const td = h("td", { "data-label": t("devices.online"), dataset: { state: id } });
    cells.set(id, td);
    setState(td, on);
    return td;
  }
  function setState(td, on) {
    fill(td, on === null ? "" : h("span", { class: "tag " + (on ? "green" : "grey") }, t(on ? "devices.is_online" : "devices.is_offline")));
  }
  ctx.onCleanup(onDeviceEvent((e) => {
    const td = cells.get(e.device_id);
    if (td) setState(td, e.online);
  }));
  summary.textContent = data.total ? t("list.range", { from: f.offset + 1, to: f.offset + data.devices.length, total: data.total }) : "";
  fill(
    list,
    data.devices.length
      ? h("table", { class: "cases" },
          h("thead", {}, h("tr", {}, [t("devices.id"), t("filter.type"), t("col.grid"), t("case.segment"), t("devices.online")].map((c) => h("th", {}, c)))),
          h("tbody", {}, data.devices.map((d) =>
            h("tr", { dataset: { deviceId: d.id }, class: d.id === arg ? "selected" : "", onclick: () => { location.hash = `#/devices/${encodeURIComponent(d.id)}` + query({ q: f.q, kind: f.kind, grid: f.grid, offset: f.offset || "" }); } },
              h("td", { "data-label": t("devices.id") }, d.id),
              h("td", { "data-label": t("filter.type") }, t("kind." + d.kind)),
              h("td", { "data-label": t("col.grid") }, d.grid),
              h("td", { "data-label": t("case.segment") }, d.road_segment || "—"),
              stateCell(d.id, offline.has(d.id) ? false : null)))))
      : h("p", { class: "empty" }, t("devices.none")),
  );
  fill(
    pager,
    h("button", { type: "button", disabled: f.offset === 0, onclick: () => apply(Math.max(0, f.offset - PAGE)) }, t("list.prev")),
    h("button", { type: "button", disabled: f.offset + PAGE >= data.total, onclick: () => apply(f.offset + PAGE) }, t("list.next")),
  );
  if (arg) await showDevice(detail, arg, ctx);
}

async function showDevice(box, id, ctx) {
  const enc = encodeURIComponent(id);
  const d = await api(`/api/devices/${enc}`);
  let latest = null;
  try {
    latest = await api(`/api/devices/${enc}/latest`);
  } catch (_) {
    latest = null;
  }
  const status = latest?.by_type?.status?.data;
  const telemetry = latest?.by_type?.telemetry;
  const battery = status?.battery_pct ?? telemetry?.data?.[d.kind]?.battery_pct;
  const online = d.offline ? false : status ? status.online : null;
  const spec = CHART_FIELD[d.kind];
  // The facts a device event updates, each in its own element.
  const onlineBox = h("dd", { "data-test": "device-online" });
  const batteryBox = h("dd", { "data-test": "device-battery" });
  const lastBox = h("dd", { "data-test": "device-last" });
  const seqBox = h("dd", { "data-test": "device-seq" });
  const gapsBox = h("dd", { "data-test": "device-gaps" });
  const restartsBox = h("dd", {});
  const chartBox = h("div", { class: "device-chart" });
  const showOnline = (on) =>
    fill(onlineBox, on === null || on === undefined ? "—" : h("span", { class: "tag " + (on ? "green" : "grey"), dataset: { online: String(on) } }, t(on ? "devices.is_online" : "devices.is_offline")));
  const showBattery = (b) => (batteryBox.textContent = b === undefined || b === null ? "—" : `${b}%`);
  showOnline(online);
  showBattery(battery);
  lastBox.textContent = latest ? fmt(latest.latest.received_ms) : "—";
  seqBox.textContent = d.last_seq === null ? "—" : String(d.last_seq);
  gapsBox.textContent = String(d.seq_gaps);
  restartsBox.textContent = String(d.seq_restarts);
  async function drawChart() {
    const history = await api(`/api/devices/${enc}/history?limit=300`);
    const pts = points(history.readings);
    fill(chartBox, pts.length ? lineChart(pts, { unit: spec ? spec.unit : "", label: d.id }) : h("p", { class: "muted" }, t("chart.none")));
  }
  await drawChart();
  fill(
    box,
    h("section", { class: "panel", "data-test": "device", dataset: { deviceId: d.id } },
      h("h2", {}, `${d.id} · ${t("kind." + d.kind)}`),
      h("dl", { class: "facts" },
        h("dt", {}, t("devices.online")), onlineBox,
        h("dt", {}, t("devices.battery")), batteryBox,
        h("dt", {}, t("devices.last_reading")), lastBox,
        h("dt", {}, t("devices.seq")), seqBox,
        h("dt", {}, t("devices.gaps")), gapsBox,
        h("dt", {}, t("devices.restarts")), restartsBox,
        h("dt", {}, t("col.grid")), h("dd", {}, d.grid),
        h("dt", {}, t("case.segment")), h("dd", {}, d.road_segment || "—"),
        h("dt", {}, t("devices.position")), h("dd", {}, `${d.lat.toFixed(5)}, ${d.lon.toFixed(5)}`)),
      spec ? h("h3", {}, t("field." + spec.field)) : null,
      chartBox),
  );
  // Live: the device's state as the gateway hears it, without a reload.
  let chartTimer = null;
  ctx.onCleanup(onDeviceEvent((e) => {
    if (e.device_id !== d.id) return;
    showOnline(e.online);
    if (e.battery_pct !== null && e.battery_pct !== undefined) showBattery(e.battery_pct);
    lastBox.textContent = fmt(e.at_ms);
    if (e.last_seq !== null && e.last_seq !== undefined) seqBox.textContent = String(e.last_seq);
    if (e.seq_gaps !== null && e.seq_gaps !== undefined) gapsBox.textContent = String(e.seq_gaps);
    if (e.seq_restarts !== null && e.seq_restarts !== undefined) restartsBox.textContent = String(e.seq_restarts);
    if (e.reading && !chartTimer) {
      chartTimer = setTimeout(() => {
        chartTimer = null;
        if (chartBox.isConnected) drawChart().catch(() => {});
      }, 1000);
    }
  }));
  ctx.onCleanup(() => chartTimer && clearTimeout(chartTimer));
}
