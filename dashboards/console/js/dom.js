// Building DOM nodes. Text always goes in as text (textContent / text nodes), never as markup.

/**
 * h("div", {class: "x", onclick: fn, title: "..."}, child, "text", [children...])
 * Attributes starting with "on" become listeners; `text` sets textContent; `dataset` sets
 * data-* attributes; `null`/`false` children are skipped.
 */
export function h(tag, attrs, ...children) {
  const el = tag.includes(":")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.split(":")[1])
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v);
    } else if (k === "text") {
      el.textContent = String(v);
    } else if (k === "dataset") {
      Object.assign(el.dataset, v);
    } else if (k === "value" && "value" in el && el.namespaceURI !== "http://www.w3.org/2000/svg") {
      el.value = v;
    } else if (k === "checked" || k === "disabled" || k === "selected" || k === "multiple") {
      el[k] = Boolean(v);
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** SVG element. */
export function s(tag, attrs, ...children) {
  return h("svg:" + tag, attrs, ...children);
}
