// One case: facts, the actions the caller may take now (from the server), the timeline, and
// the readings of its devices around the fault.

import { api } from "./api.js";
import { h, fill } from "./dom.js";
import { t } from "./i18n.js";
import { fmt } from "./time.js";
import { onCaseEvent } from "./live.js";
import { stateBadge, casePlace } from "./cases.js";
import { lineChart, points, CHART_FIELD } from "./chart.js";
import { photoInput, uploadPhotos, photoStrip } from "./field.js";

/** Actions that need a text, and whether it is required. */
const TEXT = {
  dispatch: { field: "team", required: true },
  return: { field: "reason", required: true },
  void: { field: "reason", required: true },
  resolve: { field: "note", required: false, photos: true },
  verify: { field: "note", required: false },
  rework: { field: "note", required: false },
  reopen: { field: "note", required: false },
  supervise: { field: "note", required: true },
};

/**
 * The action buttons of a case, each opening its small form when the action needs a text.
 * `done(case)` after a transition.
 */
export function actionBar(c, done, { big = false } = {}) {
  const bar = h("div", { class: "actions" + (big ? " big" : ""), "data-test": "actions" });
  const formBox = h("div", { class: "action-form" });
  const error = h("p", { class: "error", role: "alert" });
  for (const a of c.actions || []) {
    bar.appendChild(
      h("button", {
        type: "button",
        class: `act act-${a}` + (a === "void" || a === "return" || a === "rework" ? " warn" : " primary"),
        dataset: { action: a },
        onclick: () => open(a),
      }, t("action." + a)),
    );
  }
  if (!(c.actions || []).length) bar.appendChild(h("span", { class: "muted" }, t("case.no_actions")));

  async function send(body, photos) {
    error.textContent = "";
    try {
      if (photos && photos.length) await uploadPhotos(c.id, photos);
      const next = await api(`/api/cases/${c.id}/transitions`, { json: body });
      fill(formBox);
      done(next);
    } catch (e) {
      error.textContent = e.message;
    }
  }

  function open(a) {
    const spec = TEXT[a];
    if (!spec) {
      // One click: accept, close.
      send({ action: a });
      return;
    }
    const input =
      spec.field === "team"
        ? h("input", { name: "team", value: c.team || "", required: true })
        : h("textarea", { name: spec.field, rows: 3, required: spec.required });
    const photos = spec.photos ? photoInput() : null;
    fill(
      formBox,
      h(
        "form",
        {
          class: "act-form",
          dataset: { action: a },
          onsubmit: (e) => {
            e.preventDefault();
            const text = input.value.trim();
            if (spec.required && !text) {
              error.textContent = t("form.required", { what: t("field." + spec.field) });
              return;
            }
            send({ action: a, [spec.field]: text }, photos ? photos.files() : null);
          },
        },
        h("label", {}, t("field." + spec.field) + (spec.required ? " *" : ""), input),
        photos ? photos.el : null,
        h("div", { class: "row" },
          h("button", { type: "submit", class: "primary confirm" }, t("action." + a)),
          h("button", { type: "button", onclick: () => fill(formBox) }, t("form.cancel"))),
      ),
    );
    input.focus();
  }
  return h("div", { class: "action-area" }, bar, formBox, error);
}

function timeline(c) {
  // The photos go into the timeline at the time they were attached.
  const items = [
    ...(c.history || []).map((e) => ({ at: e.at_ms, e })),
    ...(c.photos || []).map((p) => ({ at: p.uploaded_ms, p })),
  ].sort((a, b) => a.at - b.at);
  return h(
    "ol",
    { class: "timeline", "data-test": "timeline" },
    items.map(({ e, p }) =>
      p
        ? h("li", { class: "tl-photo", dataset: { action: "photo" } },
            h("div", { class: "tl-head" },
              h("time", {}, fmt(p.uploaded_ms)),
              h("strong", {}, t("history.photo")),
              h("span", { class: "actor" }, p.uploader)),
            h("a", { href: `/api/cases/${c.id}/photos/${p.id}`, target: "_blank", rel: "noopener" },
              h("img", { class: "thumb", src: `/api/cases/${c.id}/photos/${p.id}`, alt: `${t("case.photo")} ${p.id}`, loading: "lazy" })))
        :
      h(
        "li",
        { class: "tl-" + e.to, dataset: { action: e.action } },
        h("div", { class: "tl-head" },
          h("time", {}, fmt(e.at_ms)),
          h("strong", {}, t("history." + e.action, null, e.action)),
          h("span", { class: "muted" }, e.from ? `${t("state." + e.from)} → ${t("state." + e.to)}` : t("state." + e.to)),
          h("span", { class: "actor" }, actorName(e.actor))),
        e.note ? h("p", { class: "note" }, e.note) : null,
      ),
    ),
  );
}

function actorName(a) {
  return a === "system" || a === "sensor" ? t("actor." + a) : a;
}

function fact(label, value) {
  return [h("dt", {}, label), h("dd", {}, value === null || value === undefined || value === "" ? "—" : value)];
}

function sensorLine(c) {
  if (c.source !== "sensor") return null;
  if (c.state === "closed" || c.state === "verified") {
    // Verified by the gateway from the sensor's readings (the actor is the system), or by hand.
    const v = (c.history || []).filter((e) => e.action === "verify").pop();
    if (v && (v.actor === "system" || v.actor === "sensor")) return h("span", { class: "tag green" }, t("sensor.verified"));
    if (v) return t("sensor.verified_by", { who: v.actor });
    return t("sensor.closed");
  }
  if (c.condition_active) return h("span", { class: "tag red" }, t("sensor.active"));
  if (c.clear_since_ms) return h("span", { class: "tag green" }, t("sensor.clear_since", { time: fmt(c.clear_since_ms) }));
  return t("sensor.clear");
}

async function deviceCharts(box, c) {
  const from = c.opened_ms - 2 * 3600000;
  const to = (c.closed_ms || c.now_ms || Date.now()) + 30 * 60000;
  const devices = (c.devices || []).slice(0, 6);
  if (!devices.length) {
    fill(box);
    return;
  }
  const markers = [{ t: c.opened_ms, label: t("chart.opened"), cls: "red" }];
  for (const e of c.history || []) {
    if (e.to === "resolved") markers.push({ t: e.at_ms, label: t("chart.resolved"), cls: "blue" });
    if (e.to === "closed") markers.push({ t: e.at_ms, label: t("chart.closed"), cls: "green" });
  }
  fill(box, h("h2", {}, t("case.devices")));
  for (const id of devices) {
    const card = h("div", { class: "device-card", dataset: { device: id } }, h("h3", {}, id));
    box.appendChild(card);
    try {
      const data = await api(`/api/devices/${encodeURIComponent(id)}/history?limit=1000&from_ms=${from}&to_ms=${to}`);
      const pts = points(data.readings);
      const kind = data.readings.find((r) => r.kind)?.kind;
      const spec = CHART_FIELD[kind];
      card.firstChild.textContent = `${id} · ${kind ? t("kind." + kind) : ""}${spec ? " · " + t("field." + spec.field) : ""}`;
      card.appendChild(
        pts.length
          ? lineChart(pts, { from, to, unit: spec ? spec.unit : "", markers, label: id })
          : h("p", { class: "muted" }, t("chart.none")),
      );
    } catch (e) {
      card.appendChild(h("p", { class: "muted" }, e.message));
    }
  }
}

export async function caseDetailPage(el, ctx, id) {
  const head = h("div", { class: "case-head" });
  const facts = h("dl", { class: "facts" });
  const actions = h("div", {});
  const photos = h("div", {});
  const history = h("div", {});
  const charts = h("div", { class: "charts" });
  fill(
    el,
    h("p", {}, h("a", { href: ctx.me.role === "team_member" ? "#/field" : "#/cases", class: "back" }, "← " + t("case.back"))),
    head,
    h("div", { class: "case-grid" },
      h("section", { class: "panel" }, facts, actions, photos),
      h("section", { class: "panel" }, h("h2", {}, t("case.timeline")), history)),
    charts,
  );

  function show(c) {
    const now = c.now_ms;
    document.title = `#${c.id} ${t("type." + c.case_type)} · ${t("app.title")}`;
    fill(
      head,
      h("h1", {}, `#${c.id} ${t("type." + c.case_type)} `, stateBadge(c, now),
        c.urgent ? h("span", { class: "tag red" }, t("case.urgent")) : null,
        c.overdue ? h("span", { class: "tag red" }, t("case.overdue")) : null),
    );
    fill(
      facts,
      fact(t("col.place"), casePlace(c)),
      fact(t("col.grid"), c.grid),
      fact(t("col.team"), c.team),
      fact(t("case.source"), t("source." + c.source)),
      fact(t("col.opened"), fmt(c.opened_ms)),
      fact(t("col.due"), fmt(c.due_ms)),
      c.closed_ms ? fact(t("case.closed_at"), fmt(c.closed_ms)) : null,
      fact(t("case.sensor"), sensorLine(c)),
      c.rework_count ? fact(t("case.rework_count"), String(c.rework_count)) : null,
      c.returned_count ? fact(t("case.returned_count"), String(c.returned_count)) : null,
      fact(t("case.detail"), h("span", { class: "pre" }, c.detail)),
    );
    fill(actions, actionBar(c, (next) => show(next)));
    fill(photos, photoStrip(c));
    fill(history, timeline(c));
  }

  let c = await api(`/api/cases/${encodeURIComponent(id)}`);
  show(c);
  deviceCharts(charts, c);
  ctx.onCleanup(
    onCaseEvent(async (e) => {
      if (e.case.id !== c.id) return;
      c = await api(`/api/cases/${c.id}`);
      // Keep a form someone is filling in; the action's answer shows the case as it is then.
      if (actions.querySelector("form.act-form")) return;
      show(c);
    }),
  );
}
