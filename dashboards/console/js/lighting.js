// Lighting: the lighting rate (亮灯率) of the city, grids and road segments against their
// target, dark lamps, segment commands with a confirmation step, and recent commands.

import { api } from "./api.js";
import { h, fill } from "./dom.js";
import { t } from "./i18n.js";
import { fmt } from "./time.js";

const pct = (r) => `${(r * 100).toFixed(1)}%`;

export async function lightingPage(el, ctx) {
  const data = await api("/api/lighting");
  const result = h("div", { class: "command-result", role: "status" });
  const commands = h("div", {});
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
    result,
    h("table", { class: "cases", "data-test": "segments" },
      h("thead", {}, h("tr", {}, [t("case.segment"), t("col.grid"), t("lighting.lit"), t("lighting.rate"), t("lighting.dark"), ""].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows.map((s) =>
        h("tr", { class: s.below_target ? "tone-red" : "tone-green", dataset: { segment: s.segment } },
          h("td", { "data-label": t("case.segment") }, s.segment),
          h("td", { "data-label": t("col.grid") }, s.grid),
          h("td", { "data-label": t("lighting.lit") }, `${s.lit} / ${s.expected}`),
          h("td", { "data-label": t("lighting.rate") }, pct(s.rate), s.below_target ? h("span", { class: "tag red" }, t("lighting.below_target")) : null),
          h("td", { "data-label": t("lighting.dark") }, s.dark.length ? s.dark.join(", ") : "—"),
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
  await loadCommands();
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
