// Cases: filters, a paged list that follows the live stream.

import { api, query } from "./api.js";
import { h, fill } from "./dom.js";
import { t, CASE_STATES, CASE_TYPES } from "./i18n.js";
import { fmtShort } from "./time.js";
import { onCaseEvent } from "./live.js";

const PAGE = 50;

/** The colour class of a case: red urgent/overdue, orange due within the hour, blue in
 * progress, green closed or verified, grey voided. */
export function caseTone(c, now) {
  if (c.state === "closed" || c.state === "verified") return "green";
  if (c.state === "voided") return "grey";
  const unresolved = ["registered", "dispatched", "accepted", "returned"].includes(c.state);
  if (c.overdue || (c.urgent && unresolved)) return "red";
  if (unresolved && c.due_ms && now && c.due_ms - now < 3600000) return "orange";
  return "blue";
}

export function stateBadge(c, now) {
  return h("span", { class: `badge ${caseTone(c, now)}`, dataset: { state: c.state } }, t("state." + c.state));
}

/** Where a case is: its segment, its device, or the whole fleet (a fleet-wide outage). */
export function casePlace(c) {
  const k = c.subject_key || "";
  if (k.startsWith("segment:place:")) return k.slice("segment:place:".length);
  if (k.startsWith("segment:")) return `${t("case.segment")} ${k.slice(8)}`;
  if (k.startsWith("device:")) return k.slice(7);
  if (k === "fleet") return t("case.fleet");
  return k;
}

function select(name, options, value, label) {
  return h(
    "label",
    { class: "field" },
    label,
    h(
      "select",
      { name },
      h("option", { value: "" }, t("filter.any")),
      options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)),
    ),
  );
}

export async function casesPage(el, ctx) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const f = {
    state: params.get("state") || "",
    type: params.get("type") || "",
    grid: params.get("grid") || ctx.me.grid || "",
    team: params.get("team") || ctx.me.team || "",
    urgent: params.get("urgent") === "true",
    overdue: params.get("overdue") === "true",
    open: params.get("open") !== "false",
    offset: Number(params.get("offset")) || 0,
  };
  const form = h(
    "form",
    {
      class: "filters",
      onchange: () => apply(),
      onsubmit: (e) => {
        e.preventDefault();
        apply();
      },
    },
    select("state", CASE_STATES.map((s) => [s, t("state." + s)]), f.state, t("filter.state")),
    select("type", CASE_TYPES.map((s) => [s, t("type." + s)]), f.type, t("filter.type")),
    h("label", { class: "field" }, t("filter.grid"), h("input", { name: "grid", value: f.grid, disabled: Boolean(ctx.me.grid), size: 16 })),
    h("label", { class: "field" }, t("filter.team"), h("input", { name: "team", value: f.team, disabled: Boolean(ctx.me.team), size: 12 })),
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "open", checked: f.open }), t("filter.open")),
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "urgent", checked: f.urgent }), t("filter.urgent")),
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "overdue", checked: f.overdue }), t("filter.overdue")),
  );
  function apply(offset = 0) {
    const d = new FormData(form);
    const next = {
      state: d.get("state") || "",
      type: d.get("type") || "",
      grid: ctx.me.grid ? "" : (d.get("grid") || "").trim(),
      team: ctx.me.team ? "" : (d.get("team") || "").trim(),
      urgent: d.get("urgent") ? "true" : "",
      overdue: d.get("overdue") ? "true" : "",
      open: d.get("open") ? "" : "false",
      offset: offset || "",
    };
    location.hash = "#/cases" + query(next);
  }
  const list = h("div", { class: "case-list", "data-test": "case-list" });
  const pager = h("div", { class: "pager" });
  const summary = h("p", { class: "summary" });
  fill(el, h("h1", {}, t("nav.cases")), form, summary, list, pager);

  let fresh = new Set();
  async function load() {
    const q = {
      state: f.state,
      type: f.type,
      grid: ctx.me.grid ? "" : f.grid,
      team: ctx.me.team ? "" : f.team,
      urgent: f.urgent ? "true" : "",
      overdue: f.overdue ? "true" : "",
      open: f.state ? "" : f.open ? "true" : "",
      limit: PAGE,
      offset: f.offset,
    };
    const data = await api("/api/cases" + query(q));
    const now = data.now_ms;
    summary.textContent = data.total
      ? t("list.range", { from: f.offset + 1, to: f.offset + data.cases.length, total: data.total })
      : "";
    if (!data.cases.length) {
      fill(list, h("p", { class: "empty" }, t("list.empty")));
    } else {
      fill(
        list,
        h(
          "table",
          { class: "cases" },
          h("thead", {}, h("tr", {},
            [t("col.id"), t("col.type"), t("col.state"), t("col.place"), t("col.grid"), t("col.team"), t("col.opened"), t("col.due")].map((c) => h("th", {}, c)))),
          h(
            "tbody",
            {},
            data.cases.map((c) =>
              h(
                "tr",
                {
                  class: `tone-${caseTone(c, now)}${fresh.has(c.id) ? " fresh" : ""}`,
                  dataset: { caseId: c.id, state: c.state },
                  onclick: () => (location.hash = `#/case/${c.id}`),
                },
                h("td", { "data-label": t("col.id") }, h("a", { href: `#/case/${c.id}` }, `#${c.id}`)),
                h("td", { "data-label": t("col.type") }, t("type." + c.case_type), c.urgent ? h("span", { class: "tag red" }, t("case.urgent")) : null),
                h("td", { "data-label": t("col.state") }, stateBadge(c, now), c.overdue ? h("span", { class: "tag red" }, t("case.overdue")) : null),
                h("td", { "data-label": t("col.place") }, casePlace(c)),
                h("td", { "data-label": t("col.grid") }, c.grid),
                h("td", { "data-label": t("col.team") }, c.team || "—"),
                h("td", { "data-label": t("col.opened") }, fmtShort(c.opened_ms, now)),
                h("td", { "data-label": t("col.due") }, c.due_ms ? fmtShort(c.due_ms, now) : "—"),
              ),
            ),
          ),
        ),
      );
    }
    fill(
      pager,
      h("button", { type: "button", disabled: f.offset === 0, onclick: () => apply(Math.max(0, f.offset - PAGE)) }, t("list.prev")),
      h("button", { type: "button", disabled: f.offset + PAGE >= data.total, onclick: () => apply(f.offset + PAGE) }, t("list.next")),
    );
  }

  // Live: reload the page of the list (at most every 300 ms) and mark what changed.
  let timer = null;
  ctx.onCleanup(
    onCaseEvent((e) => {
      fresh.add(e.case.id);
      if (timer) return;
      timer = setTimeout(() => {
        timer = null;
        load().catch(() => {});
      }, 300);
    }),
  );
  ctx.onCleanup(() => timer && clearTimeout(timer));
  await load();
}
