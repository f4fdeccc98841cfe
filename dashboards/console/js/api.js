// The gateway's API, with the session cookie and the session's CSRF token on changes.

let csrf = null;
const signedOutListeners = [];

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code || "";
  }
}

export function setCsrf(token) {
  csrf = token;
}

/** Called when a request finds the session ended (401). */
export function onSignedOut(fn) {
  signedOutListeners.push(fn);
}

/**
 * api("/api/cases?open=true") → parsed JSON. Options: method, json (a body to send as JSON),
 * body + type (raw bytes), quiet401 (do not announce a sign-out).
 */
export async function api(path, opts = {}) {
  const method = opts.method || (opts.json !== undefined || opts.body ? "POST" : "GET");
  const headers = { Accept: "application/json" };
  let body;
  if (opts.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(opts.json);
  } else if (opts.body !== undefined) {
    headers["Content-Type"] = opts.type || "application/octet-stream";
    body = opts.body;
  }
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  let resp;
  try {
    resp = await fetch(path, { method, headers, body, credentials: "same-origin" });
  } catch (e) {
    throw new ApiError(0, "network", String(e.message || e));
  }
  if (resp.status === 204) return null;
  const type = resp.headers.get("content-type") || "";
  const data = type.includes("application/json") ? await resp.json().catch(() => null) : null;
  if (!resp.ok) {
    if (resp.status === 401 && !opts.quiet401) signedOutListeners.forEach((f) => f());
    throw new ApiError(resp.status, data && data.code, data && data.message);
  }
  return data;
}

/** Query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "" || v === false) continue;
    q.set(k, String(v));
  }
  const s = q.toString();
  return s ? "?" + s : "";
}
