// Lighting: the lighting rate (亮灯率) of the city, grids and road segments against their
// target now and night by night, dark lamps, segment and single-lamp commands with a
// confirmation step and their outcome, and recent commands.

import { api } from "./api.js";
import { h, fill } from "./dom.js";
import { t } from "./i18n.js";
import { fmt } from "./time.js";
import { nightsChart } from "./chart.js";

const pct = (r) => `${(r * 100).toFixed(1)}%`;

export async function lightingPage(el, ctx) {
  const data = await api("/api/lighting");
  const result = h("div", { class: "command-result", role: "status" });
  const commands = h("div", {});
  // Night by night: the city (or the viewer's grid), a grid, or a segment (click its row).
  const nightsBox = h("div", {});
  const grids = [...new Set(data.segments.map((x) => x.grid))].sort();
  const nightsPick = h("select", { "data-test": "nights-scope", onchange: () => showNights(nightsPick.value ? { grid: nightsPick.value } : {}) },
    ctx.me.grid ? null : h("option", { value: "" }, t("lighting.whole_city")),
    grids.map((g) => h("option", { value: g }, `${t("col.grid")} ${g}`)));
  async function showNights(scope) {
    const q = new URLSearchParams();
    if (scope.grid) q.set("grid", scope.grid);
    if (scope.segment) q.set("segment", scope.segment);
    let r;
    try {
      r = await api("/api/lighting/nights" + (q.toString() ? "?" + q : ""));
    } catch (e) {
      fill(nightsBox, h("p", { class: "error" }, e.message));
      return;
    }
    const series = scope.segment ? r.segments.find((x) => x.name === scope.segment) : scope.grid ? r.grids.find((x) => x.name === scope.grid) : r.city || r.grids[0];
    const title = scope.segment ? `${t("case.segment")} ${scope.segment}` : scope.grid ? `${t("col.grid")} ${scope.grid}` : series && series.name !== "city" ? `${t("col.grid")} ${series.name}` : t("lighting.whole_city");
    if (!series || !series.nights.length) {
      fill(nightsBox, h("p", { class: "muted", dataset: { scope: title } }, t("lighting.no_nights")));
      return;
    }
    const met = series.nights.filter((n) => n.met).length;
    fill(nightsBox,
      h("p", { class: "summary", dataset: { scope: title } }, t("lighting.nights_met", { scope: title, met, nights: series.nights.length, target: pct(series.target) })),
      nightsChart(series, { label: title, targetLabel: t("lighting.target") }));
  }
  // One lamp: pick it (a dark lamp's button, or its id), confirm, send, see the outcome.
  const lampInput = h("input", { name: "lamp", size: 14, "data-test": "lamp-id", placeholder: t("lighting.lamp") });
  const lampButtons = h("span", { class: "row" });
  const lampBox = h("div", { class: "panel lamp-command", "data-test": "lamp-command" }, h("strong", {}, t("lighting.lamp_command")), lampInput, lampButtons);
  function pickLamp(id) {
    lampInput.value = id;
    lampActions();
    lampInput.focus();
  }
  function lampActions() {
    fill(lampButtons, ["on", "off", "resume_schedule"].map((a) =>
      h("button", { type: "button", dataset: { lampCommand: a }, onclick: () => lampConfirm(a) }, t("command." + a))));
  }
  function lampConfirm(a) {
    const id = lampInput.value.trim();
    if (!id) return;
    fill(lampButtons,
      h("span", {}, t("lighting.lamp_confirm", { action: t("command." + a), lamp: id })),
      h("button", { type: "button", class: "primary confirm", onclick: () => lampSend(a, id) }, t("lighting.send")),
      h("button", { type: "button", onclick: lampActions }, t("form.cancel")));
  }
  async function lampSend(a, id) {
    fill(lampButtons, h("span", { class: "muted" }, t("lighting.sending")));
    try {
      const r = await api(`/api/devices/${encodeURIComponent(id)}/command`, { json: { action: a } });
      const one = r.results && r.results[0];
      const state = one ? one.state : "failed";
      result.textContent = t("lighting.lamp_outcome", { lamp: id, outcome: t("command." + state) }) + (one && one.detail ? ` · ${one.detail}` : "");
      result.dataset.outcome = state;
    } catch (e) {
      result.textContent = e.message;
      result.dataset.outcome = "error";
    }
    lampActions();
    loadCommands();
  }
  lampActions();
  const rows = [...data.segments].sort((a, b) => a.rate - a.target - (b.rate - b.target));
  fill(
    el,
    h("h1", {}, t("nav.lighting")),
    h("div", { class: "kpis" },
      data.city ? h("div", { class: "kpi " + (!data.city.expected ? "" : data.city.below_target ? "red" : "green"), dataset: { kpi: "city" } },
        h("span", { class: "kpi-value" }, data.city.expected ? pct(data.city.rate) : "—"), h("span", { class: "kpi-label" }, `${t("lighting.city")} · ${t("lighting.target")} ${pct(data.city.target)}`)) : null,
      h("div", { class: "kpi" }, h("span", { class: "kpi-value" }, String(data.segments.filter((s) => s.below_target).length)), h("span", { class: "kpi-label" }, t("lighting.below"))),
      h("div", { class: "kpi" }, h("span", { class: "kpi-value" }, String(data.segments.reduce((n, s) => n + s.dark.length, 0))), h("span", { class: "kpi-label" }, t("lighting.dark")))),
    data.in_switch_on_hours ? null : h("p", { class: "muted" }, t("lighting.daytime")),
    h("section", { class: "panel", "data-test": "nights" }, h("div", { class: "nights-head" }, h("h2", {}, t("lighting.nights")), nightsPick), nightsBox),
    ctx.can("lamp_command") ? lampBox : null,
    result,
    h("table", { class: "cases", "data-test": "segments" },
      h("thead", {}, h("tr", {}, [t("case.segment"), t("col.grid"), t("lighting.lit"), t("lighting.rate"), t("lighting.dark"), ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows.map((s) =>
        h("tr", { class: s.below_target ? "tone-red" : "tone-green", dataset: { segment: s.segment }, onclick: () => showNights({ segment: s.segment }) },
          h("td", { "data-label": t("case.segment") }, s.segment),
          h("td", { "data-label": t("col.grid") }, s.grid),
          h("td", { "data-label": t("lighting.lit") }, `${s.lit} / ${s.expected}`),
          h("td", { "data-label": t("lighting.rate") }, pct(s.rate), s.below_target ? h("span", { class: "tag red" }, t("lighting.below_target")) : null),
          h("td", { "data-label": t("lighting.dark") }, s.dark.length ? s.dark.map((id) => h("button", { type: "button", class: "chip", dataset: { lamp: id }, title: t("lighting.lamp"), onclick: (e) => { e.stopPropagation(); pickLamp(id); } }, id)) : "—"),
          h("td", {}, ctx.can("lamp_command") ? commandButtons(s, result, () => loadCommands()) : null))))),
    ctx.can("commands_read") ? h("h2", {}, t("lighting.commands")) : null,
    commands,
  );
  async function loadCommands() {
    if (!ctx.can("commands_read")) return;
    const c = await api("/api/commands?limit=20");
    fill(commands, c.commands.length
      ? h("table", { class: "cases", "data-test": "commands" },
          h("thead", {}, h("tr", {}, [t("lighting.when"), t("devices.id"), t("lighting.command"), t("col.state"), t("lighting.by")].map((x) => h("th", {}, x)))),
          h("tbody", {}, c.commands.map((x) => h("tr", { class: x.state === "acked" ? "tone-green" : x.state === "sent" ? "tone-blue" : "tone-red" },
            h("td", {}, fmt(x.requested_ms)), h("td", {}, x.device_id), h("td", {}, Object.keys(x.action)[0] || ""),
            h("td", {}, t("command." + x.state), x.detail ? ` · ${x.detail}` : ""), h("td", {}, x.actor)))))
      : h("p", { class: "muted" }, t("lighting.no_commands")));
  }
  await Promise.all([loadCommands(), showNights(ctx.me.grid ? { grid: ctx.me.grid } : {})]);
}

/** on / off / resume for a segment, each behind a confirmation. */
function commandButtons(s, result, done) {
  const box = h("div", { class: "row" });
  const buttons = () =>
    fill(box, ["on", "off", "resume_schedule"].map((a) =>
      h("button", { type: "button", dataset: { command: a }, onclick: () => confirm(a) }, t("command." + a))));
  function confirm(a) {
    fill(box,
      h("span", {}, t("lighting.confirm", { action: t("command." + a), n: s.expected, segment: s.segment })),
      h("button", { type: "button", class: "primary confirm", onclick: () => send(a) }, t("lighting.send")),
      h("button", { type: "button", onclick: buttons }, t("form.cancel")));
  }
  async function send(a) {
    fill(box, h("span", { class: "muted" }, t("lighting.sending")));
    try {
      const r = await api(`/api/segments/${encodeURIComponent(s.segment)}/command`, { json: { action: a } });
      result.textContent = t("lighting.outcome", { segment: s.segment, acked: r.acked, total: r.total, rejected: r.rejected, timed_out: r.timed_out });
    } catch (e) {
      result.textContent = e.message;
    }
    buttons();
    done();
  }
  buttons();
  return box;
}
