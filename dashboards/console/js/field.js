// The field team's phone: my team's open cases, nearest first, with large buttons to accept,
// return (退单) with a reason, and resolve with a note and photos.

import { api } from "./api.js";
import { h, fill } from "./dom.js";
import { t } from "./i18n.js";
import { fmtShort } from "./time.js";
import { onCaseEvent } from "./live.js";
import { stateBadge, casePlace } from "./cases.js";
import { actionBar } from "./case-detail.js";

/** A file input for photos (the phone's camera), with previews. */
export function photoInput() {
  const previews = h("div", { class: "previews" });
  const input = h("input", {
    type: "file",
    name: "photos",
    accept: "image/jpeg,image/png,image/webp",
    capture: "environment",
    multiple: true,
    onchange: () => {
      fill(previews);
      for (const f of input.files) {
        const url = URL.createObjectURL(f);
        previews.appendChild(h("img", { src: url, alt: f.name, class: "thumb", onload: () => URL.revokeObjectURL(url) }));
      }
    },
  });
  return {
    el: h("label", { class: "photo-input" }, t("field.photos"), input, previews),
    files: () => Array.from(input.files || []),
  };
}

/** Upload photos to a case, one request each (the raw bytes with their type). */
export async function uploadPhotos(caseId, files) {
  for (const f of files) {
    await api(`/api/cases/${caseId}/photos`, { body: f, type: f.type || "application/octet-stream" });
  }
}

/** The photos of a case as thumbnails that open the full picture. */
export function photoStrip(c) {
  const photos = c.photos || [];
  if (!photos.length) return null;
  return h(
    "div",
    { class: "photos", "data-test": "photos" },
    h("h3", {}, t("case.photos")),
    photos.map((p) => {
      const src = `/api/cases/${c.id}/photos/${p.id}`;
      return h("a", { href: src, target: "_blank", rel: "noopener" }, h("img", { src, alt: `${t("case.photo")} ${p.id}`, class: "thumb", loading: "lazy" }));
    }),
  );
}

const deviceCache = new Map();

async function placeOf(c) {
  const id = (c.devices || [])[0];
  if (!id) return null;
  if (!deviceCache.has(id)) {
    deviceCache.set(id, api(`/api/devices/${encodeURIComponent(id)}`).catch(() => null));
  }
  const d = await deviceCache.get(id);
  return d && Number.isFinite(d.lat) && Number.isFinite(d.lon) ? { lat: d.lat, lon: d.lon } : null;
}

/** Great-circle distance, metres. */
export function distance(a, b) {
  const R = 6371000;
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLon = (b.lon - a.lon) * rad;
  const x = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * R * Math.asin(Math.sqrt(x));
}

function where() {
  return new Promise((resolve) => {
    if (!navigator.geolocation) return resolve(null);
    navigator.geolocation.getCurrentPosition(
      (p) => resolve({ lat: p.coords.latitude, lon: p.coords.longitude }),
      () => resolve(null),
      { timeout: 5000, maximumAge: 60000 },
    );
  });
}

export async function fieldPage(el, ctx) {
  const status = h("p", { class: "muted" });
  const list = h("div", { class: "field-list", "data-test": "field-list" });
  fill(el, h("h1", {}, t("field.title", { team: ctx.me.team || "" })), status, list);
  let here = null;
  where().then((p) => {
    here = p;
    load();
  });

  async function load() {
    const data = await api("/api/cases?open=true&limit=100");
    const now = data.now_ms;
    const cases = await Promise.all(
      data.cases.map(async (c) => {
        const detail = await api(`/api/cases/${c.id}`).catch(() => c);
        const place = await placeOf(c);
        return { c: detail, place, dist: here && place ? distance(here, place) : null };
      }),
    );
    // The team's work first (dispatched, accepted), then what awaits verification; nearest first.
    const rank = (x) => (["dispatched", "accepted"].includes(x.c.state) ? 0 : 1);
    cases.sort((a, b) => rank(a) - rank(b) || (a.dist ?? Infinity) - (b.dist ?? Infinity) || a.c.id - b.c.id);
    // Never replace a form someone is filling in; the next event or action refreshes the list.
    if (list.querySelector("form.act-form")) return;
    status.textContent = here ? t("field.nearest") : t("field.no_location");
    if (!cases.length) {
      fill(list, h("p", { class: "empty" }, t("field.none")));
      return;
    }
    fill(
      list,
      cases.map(({ c, place, dist }) =>
        h(
          "article",
          { class: "field-card", dataset: { caseId: c.id, state: c.state } },
          h("header", {},
            h("a", { href: `#/case/${c.id}` }, `#${c.id} ${t("type." + c.case_type)}`),
            stateBadge(c, now),
            c.urgent ? h("span", { class: "tag red" }, t("case.urgent")) : null),
          h("p", { class: "place" }, casePlace(c), dist !== null ? h("span", { class: "dist" }, formatDistance(dist)) : null),
          h("p", { class: "muted" }, `${t("col.due")} ${c.due_ms ? fmtShort(c.due_ms, now) : "—"}`, c.overdue ? h("span", { class: "tag red" }, t("case.overdue")) : null),
          c.detail ? h("p", { class: "detail" }, c.detail) : null,
          place ? h("a", { class: "nav-link", href: `geo:${place.lat},${place.lon}` }, t("field.navigate")) : null,
          actionBar(c, () => load(), { big: true }),
        ),
      ),
    );
  }

  function formatDistance(m) {
    return m < 1000 ? ` · ${Math.round(m)} m` : ` · ${(m / 1000).toFixed(1)} km`;
  }

  let timer = null;
  ctx.onCleanup(
    onCaseEvent(() => {
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
