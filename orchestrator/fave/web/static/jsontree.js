/* A collapsible JSON tree (details/summary), built with textContent only. Objects and arrays deeper than
   `openDepth` start closed; long strings are shown whole (they wrap). */
"use strict";

const jsonTree = (() => {
  const { el } = fave;

  function scalar(value) {
    if (value === null) return el("span", { class: "b" }, "null");
    if (typeof value === "string") return el("span", { class: "s" }, JSON.stringify(value));
    if (typeof value === "number") return el("span", { class: "n" }, String(value));
    if (typeof value === "boolean") return el("span", { class: "b" }, String(value));
    return el("span", {}, String(value));
  }

  function node(key, value, depth, openDepth) {
    const label = key === null ? [] : [el("span", { class: "k" }, `${key}: `)];
    if (value === null || typeof value !== "object") {
      return el("div", { class: "kv", "data-testid": "json-leaf" }, [...label, scalar(value)]);
    }
    const isArray = Array.isArray(value);
    const entries = isArray ? value.map((v, i) => [i, v]) : Object.entries(value);
    const brief = isArray ? `[${entries.length}]` : `{${entries.length}}`;
    const details = el("details", { "data-testid": "json-node" });
    if (depth < openDepth) details.open = true;
    details.appendChild(el("summary", {}, [...label, el("span", { class: "muted" }, brief)]));
    // Children are built when first opened: a big output must not cost the page up front.
    let built = false;
    const build = () => {
      if (built) return;
      built = true;
      for (const [k, v] of entries) details.appendChild(node(k, v, depth + 1, openDepth));
    };
    if (details.open) build();
    details.addEventListener("toggle", build);
    return details;
  }

  /** Replace the children of `container` with a tree of `value`. */
  function render(container, value, openDepth = 2) {
    fave.clear(container);
    container.appendChild(node(null, value, 0, openDepth));
  }

  return { render };
})();
