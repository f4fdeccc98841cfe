// The console's shell: settings, sign-in, the layout with navigation, and the hash router.

import { api, setCsrf, onSignedOut, ApiError } from "./api.js";
import { h, fill } from "./dom.js";
import { t, lang, setLang, onLang } from "./i18n.js";
import { setOffset, zoneName } from "./time.js";
import { startLive, stopLive, onLiveState } from "./live.js";
import { casesPage } from "./cases.js";
import { caseDetailPage } from "./case-detail.js";
import { fieldPage } from "./field.js";
import { mapPage } from "./map.js";
import { devicesPage } from "./devices.js";
import { lightingPage } from "./lighting.js";

const app = document.getElementById("app");
const ctx = { me: null, settings: {}, can: () => false };
let cleanup = null;

/** The pages: route, title key, who sees it in the navigation, the page. */
const PAGES = [
  { path: "map", title: "nav.map", show: (c) => c.can("devices_read") && c.can("cases_read") && c.me.role !== "team_member", page: mapPage },
  { path: "cases", title: "nav.cases", show: (c) => c.can("cases_read") && c.me.role !== "team_member", page: casesPage },
  { path: "lighting", title: "nav.lighting", show: (c) => c.can("lighting_read") && c.me.role !== "team_member", page: lightingPage },
  { path: "devices", title: "nav.devices", show: (c) => c.can("devices_read") && c.me.role !== "team_member", page: devicesPage },
  { path: "field", title: "nav.field", show: (c) => c.me.role === "team_member", page: fieldPage },
  { path: "case", title: "case.title", show: (c) => c.can("cases_read"), page: caseDetailPage, hidden: true },
];

async function boot() {
  try {
    ctx.settings = await api("/console/settings.json");
  } catch (_) {
    ctx.settings = {};
  }
  setOffset(ctx.settings.utc_offset_min);
  onSignedOut(() => {
    if (ctx.me) {
      ctx.me = null;
      stopLive();
      showSignIn(t("signin.ended"));
    }
  });
  onLang(() => (ctx.me ? render() : showSignIn()));
  window.addEventListener("hashchange", () => ctx.me && render());
  try {
    const me = await api("/api/session", { quiet401: true });
    signedIn(me);
  } catch (_) {
    showSignIn();
  }
}

function signedIn(me) {
  ctx.me = me;
  setCsrf(me.csrf_token);
  const perms = new Set(me.permissions || []);
  ctx.can = (p) => perms.has(p);
  startLive();
  if (!location.hash || location.hash === "#/") location.hash = "#/" + defaultPage().path;
  render();
}

function defaultPage() {
  return PAGES.find((p) => p.show(ctx)) || PAGES[0];
}

function langSwitch() {
  return h(
    "button",
    {
      class: "lang",
      type: "button",
      title: t("lang.switch"),
      "data-test": "lang",
      onclick: () => setLang(lang() === "zh" ? "en" : "zh"),
    },
    lang() === "zh" ? "English" : "中文",
  );
}

function showSignIn(message) {
  document.title = t("app.title");
  const error = h("p", { class: "error", role: "alert", text: message || "" });
  const user = h("input", { name: "username", autocomplete: "username", required: true, autofocus: true });
  const pass = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const button = h("button", { type: "submit", class: "primary" }, t("signin.submit"));
  const form = h(
    "form",
    {
      class: "signin",
      onsubmit: async (e) => {
        e.preventDefault();
        button.disabled = true;
        error.textContent = "";
        try {
          const me = await api("/api/session", {
            json: { username: user.value.trim(), password: pass.value },
            quiet401: true,
          });
          signedIn(me);
        } catch (err) {
          error.textContent =
            err.status === 401 ? t("signin.wrong") : err.status === 429 ? t("signin.throttled") : t("error.network");
          button.disabled = false;
        }
      },
    },
    h("div", { class: "brand big" }, h("img", { src: "/console/icon.svg", alt: "" }), h("span", {}, t("app.title"))),
    h("label", {}, t("signin.user"), user),
    h("label", {}, t("signin.password"), pass),
    button,
    error,
    h("div", { class: "signin-foot" }, langSwitch()),
  );
  fill(app, h("main", { class: "signin-page" }, form));
}

function render() {
  if (cleanup) cleanup();
  cleanup = null;
  const [, path, arg] = (location.hash || "").split("?")[0].split("/");
  const visible = PAGES.filter((p) => p.show(ctx) && !p.hidden);
  let page = PAGES.find((p) => p.path === path);
  const content = h("main", { class: "content", id: "content" });
  const liveDot = h("span", { class: "live-dot" });
  const liveText = h("span", { class: "live-text" });
  const live = h("span", { class: "live", "data-test": "live" }, liveDot, liveText);
  const stopLiveState = onLiveState((s) => {
    liveDot.className = "live-dot " + s;
    live.dataset.state = s;
    liveText.textContent = t("live." + s);
  });
  const menu = h("button", {
    class: "menu",
    type: "button",
    "aria-label": t("nav.menu"),
    onclick: () => document.body.classList.toggle("nav-open"),
  }, "☰");
  const nav = h(
    "nav",
    { class: "nav" },
    visible.map((p) =>
      h("a", {
        href: "#/" + p.path,
        class: page && (page.path === p.path || (page.hidden && p === visible[0])) ? "active" : "",
        onclick: () => document.body.classList.remove("nav-open"),
      }, t(p.title)),
    ),
  );
  const who = h(
    "div",
    { class: "who" },
    live,
    h("span", { class: "user", "data-test": "user" }, `${ctx.me.user} · ${t("role." + ctx.me.role)}${ctx.me.team ? " · " + ctx.me.team : ""}`),
    langSwitch(),
    h("button", {
      type: "button",
      class: "signout",
      onclick: async () => {
        try {
          await api("/api/session", { method: "DELETE", quiet401: true });
        } catch (_) {
          /* signed out either way */
        }
        ctx.me = null;
        stopLive();
        showSignIn();
      },
    }, t("signin.out")),
  );
  fill(
    app,
    h("header", { class: "top" }, menu, h("a", { class: "brand", href: "#/" }, h("img", { src: "/console/icon.svg", alt: "" }), h("span", {}, t("app.title"))), nav, who),
    content,
    h("footer", { class: "foot" }, `${t("foot.times")} ${zoneName()} · streetgate ${ctx.settings.version || ""}`),
  );
  if (!page || !page.show(ctx) || (page.hidden && arg === undefined)) {
    if (visible.length === 0) {
      fill(content, h("p", { class: "empty" }, t("nav.nothing")));
      return;
    }
    page = visible[0];
    history.replaceState(null, "", "#/" + page.path);
    nav.querySelector(`a[href="#/${page.path}"]`)?.classList.add("active");
  }
  document.title = `${t(page.title)} · ${t("app.title")}`;
  const stops = [stopLiveState];
  const pageCtx = { ...ctx, onCleanup: (f) => stops.push(f) };
  const run = page.page(content, pageCtx, arg === undefined ? undefined : decodeURIComponent(arg));
  Promise.resolve(run).catch((e) => showError(content, e));
  cleanup = () => stops.forEach((f) => f());
}

export function showError(el, e) {
  const msg = e instanceof ApiError && e.status === 0 ? t("error.network") : e.message || String(e);
  fill(el, h("p", { class: "error", role: "alert" }, msg));
}

boot();
