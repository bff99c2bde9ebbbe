/* fave web view: helpers shared by the pages. Everything from the store is put in the page with
   textContent (el()'s text argument), never as markup: item errors and outputs are user data. */
"use strict";

const fave = (() => {
  /** el("td", {class: "x", "data-item": 3}, "text" | [children]) */
  function el(tag, attrs, content) {
    const node = tag.startsWith("svg:")
      ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
      : document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(name, String(value));
    }
    if (Array.isArray(content)) content.forEach((child) => child && node.appendChild(child));
    else if (content !== undefined && content !== null) node.textContent = String(content);
    return node;
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function seconds(value) {
    if (value === null || value === undefined) return "";
    if (value < 1) return `${Math.round(value * 1000)} ms`;
    if (value < 120) return `${value.toFixed(value < 10 ? 2 : 1)} s`;
    if (value < 7200) return `${Math.floor(value / 60)} m ${Math.round(value % 60)} s`;
    return `${Math.floor(value / 3600)} h ${Math.round((value % 3600) / 60)} m`;
  }

  function age(created, now) {
    if (!created) return "";
    return `${seconds(Math.max(0, now - created))} ago`;
  }

  function statusBadge(status, testid) {
    return el("span", { class: `status status-${status}`, "data-testid": testid || "status", "data-status": status }, status);
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function show(node, visible) { node.hidden = !visible; }

  const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED", "UNREADABLE"]);

  return { el, getJSON, seconds, age, statusBadge, clear, show, TERMINAL };
})();
