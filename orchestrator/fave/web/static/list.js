/* The request list: /ui/api/requests, filtered by status, refreshed every 3 s while auto-refresh is on. */
"use strict";

(() => {
  const { el, getJSON, seconds, age, statusBadge, show } = fave;
  const REFRESH_MS = 3000; // each refresh reads every listed request's state.json
  const filter = document.getElementById("status-filter");
  const auto = document.getElementById("auto-refresh");
  const body = document.getElementById("requests-body");
  const errorLine = document.getElementById("list-error");
  let timer = null;

  const initial = new URLSearchParams(location.search).get("status");
  if (initial) filter.value = initial.toUpperCase();

  function row(r, now) {
    const link = el("a", { href: `/ui/requests/${encodeURIComponent(r.request_id)}`, "data-testid": "request-link" }, r.request_id);
    const duration = r.duration_s !== null && r.duration_s !== undefined
      ? seconds(r.duration_s)
      : (r.started_at || r.created_at) && !r.terminal ? `${seconds(now - (r.started_at || r.created_at))} so far` : "";
    return el("tr", { "data-testid": "request-row", "data-request-id": r.request_id, "data-status": r.status }, [
      el("td", {}, [link]),
      el("td", {}, [statusBadge(r.status, "request-row-status")]),
      el("td", { "data-testid": "request-row-pipeline" }, r.pipeline || "-"),
      el("td", { "data-testid": "request-row-summary" }, r.error || r.summary || ""),
      el("td", { "data-testid": "request-row-age" }, age(r.created_at, now)),
      el("td", { "data-testid": "request-row-duration" }, duration),
    ]);
  }

  async function load() {
    const status = filter.value;
    const url = "/ui/api/requests" + (status ? `?status=${encodeURIComponent(status)}` : "");
    try {
      const data = await getJSON(url);
      if (filter.value !== status) return; // the filter changed while this was in flight
      const fresh = data.requests.map((r) => row(r, data.now));
      const old = [...body.children];
      const same = old.length === fresh.length && old.every((tr, i) => tr.dataset.requestId === fresh[i].dataset.requestId);
      // A refresh with the same requests replaces each row's cells, not the rows a test or a person may be using.
      if (same) old.forEach((tr, i) => { tr.dataset.status = fresh[i].dataset.status; tr.replaceChildren(...fresh[i].childNodes); });
      else body.replaceChildren(...fresh);
      show(document.getElementById("requests-empty"), data.requests.length === 0);
      show(document.getElementById("requests-truncated"), data.truncated);
      document.getElementById("list-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
      show(errorLine, false);
      document.body.dataset.loaded = "true";
    } catch (e) {
      errorLine.textContent = `Could not load the requests: ${e.message}`;
      show(errorLine, true);
    }
  }

  function schedule() {
    clearTimeout(timer);
    if (auto.checked) timer = setTimeout(async () => { await load(); schedule(); }, REFRESH_MS);
  }

  filter.addEventListener("change", () => {
    const url = new URL(location.href);
    if (filter.value) url.searchParams.set("status", filter.value); else url.searchParams.delete("status");
    history.replaceState(null, "", url);
    load();
  });
  auto.addEventListener("change", schedule);
  load().then(schedule);
})();
