/* A request's page: the DAG coloured by live status, the per-item grid of a stage (paged), a task's panel,
   the timeline, resume/cancel through the HTTP API, and the result. While the request runs, the summary is
   polled every second (one read of its state.json) and the graph, counts and grid are updated in place;
   polling stops when the request has ended. */
"use strict";

(() => {
  const { el, getJSON, seconds, statusBadge, clear, show, TERMINAL } = fave;
  const POLL_MS = 1000;
  const TIMELINE_EVERY = 3; // polls between timeline refreshes while running (it reads task shards)
  const PAGE = 100;
  const WATCH_MS = 120000;
  const MAX_BACKOFF_MS = 15000; // polling a request whose state cannot be read (a broken store, a 500)
  const body = document.body;
  const requestId = body.dataset.requestId;
  const apiBase = body.hasAttribute("data-api-base") ? body.dataset.apiBase : null;
  const api = `/ui/api/requests/${encodeURIComponent(requestId)}`;
  const $ = (id) => document.getElementById(id);

  const view = {
    summary: null,
    stage: null, // the stage the grid shows
    cursor: "", // the grid page's cursor
    back: [], // cursors of the pages before it
    item: undefined, // the task shown in the panel (null: a single-task stage)
    polls: 0,
    nodes: new Map(), // stage name -> its SVG group
    finalShown: false,
    polling: false,
    watch: null, // after resume/cancel: {from: status, until: ms} (see act)
    failures: 0, // summary reads that failed in a row
  };

  // ---- the header and the buttons ----------------------------------------------------------------------

  function renderHeader(s) {
    const status = $("request-status");
    status.textContent = s.status;
    status.className = `status status-${s.status}`;
    status.dataset.status = s.status;
    body.dataset.requestStatus = s.status;
    const running = s.finished_at ? "" : ` · running for ${seconds(s.now - (s.started_at || s.created_at))}`;
    const took = s.duration_s !== null ? ` · took ${seconds(s.duration_s)}` : "";
    $("request-meta").textContent =
      `pipeline ${s.pipeline} · ${s.summary || "(no input)"} · created ${new Date(s.created_at * 1000).toLocaleString()}` +
      took + running + (s.resumes ? ` · resumed ${s.resumes}×` : "");
    const failure = s.failure ? s.failure.reason || `${s.failure.error_type}: ${s.failure.message}` : s.cancel_reason;
    $("request-failure").textContent = failure || "";
    show($("request-failure"), Boolean(failure));
    if (apiBase !== null) {
      $("resume-button").disabled = s.status === "COMPLETED";
      $("cancel-button").disabled = TERMINAL.has(s.status);
    }
  }

  async function act(action) {
    const out = $("action-result");
    const url = `${apiBase}/requests/${encodeURIComponent(requestId)}/${action}`;
    const init = { method: "POST" };
    if (action === "cancel") {
      init.headers = { "Content-Type": "application/json" };
      init.body = JSON.stringify({ reason: "cancelled from the web view" });
    }
    $("resume-button").disabled = $("cancel-button").disabled = true;
    try {
      const response = await fetch(url, init);
      const text = await response.text();
      let shown = text;
      try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON: as it came */ }
      out.textContent = `${action}: HTTP ${response.status}\n${shown}`;
      out.dataset.action = action;
      out.dataset.httpStatus = String(response.status);
    } catch (e) {
      out.textContent = `${action}: ${e.message}`;
      out.dataset.action = action;
      out.dataset.httpStatus = "error";
    }
    show(out, true);
    // The API may queue the action (202) for the next step of the orchestrator: keep polling an ended request
    // until its status moves (or WATCH_MS pass), then as long as it runs.
    view.watch = { from: view.summary ? view.summary.status : null, until: Date.now() + WATCH_MS };
    startPolling();
  }

  // ---- the DAG --------------------------------------------------------------------------------------------

  function countsLine(st) {
    if (!st.fanned_out) return st.duration_s !== null ? seconds(st.duration_s) : "single task";
    return `${st.succeeded}/${st.total === null ? "?" : st.total} succeeded`;
  }

  function detailLine(st) {
    if (st.in_run === false) return "not selected";  // a subset run (fave run --stage) does not run it
    const parts = [];
    if (st.failed) parts.push(`${st.failed} failed`);
    if (st.running) parts.push(`${st.running} running`);
    if (st.pending) parts.push(`${st.pending} pending`);
    if (st.skipped) parts.push(`${st.skipped} skipped`);
    if (st.cancelled) parts.push(`${st.cancelled} cancelled`);
    return parts.join(" · ") || (st.fanned_out ? `for each ${st.for_each || ""}` : "");
  }

  function buildGraph(s) {
    const svg = $("dag");
    clear(svg);
    view.nodes.clear();
    const { layout } = s;
    svg.setAttribute("width", layout.width);
    svg.setAttribute("height", layout.height);
    svg.setAttribute("viewBox", `0 0 ${layout.width} ${layout.height}`);
    const defs = el("svg:defs", {}, [
      el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
        [el("svg:path", { d: "M0,0 L10,5 L0,10 z", fill: "#94a3b8" })]),
    ]);
    svg.appendChild(defs);
    for (const edge of layout.edges) {
      svg.appendChild(el("svg:path", { class: "edge", d: edge.path, "marker-end": "url(#arrow)", "data-testid": "dag-edge",
        "data-from": edge.from, "data-to": edge.to }));
    }
    for (const n of layout.nodes) {
      const g = el("svg:g", { class: "node", transform: `translate(${n.x},${n.y})`, "data-testid": "dag-node",
        "data-stage": n.name, tabindex: 0, role: "button" }, [
        el("svg:title", {}, n.name),
        el("svg:rect", { class: "box", width: n.w, height: n.h, rx: 6 }),
        el("svg:text", { class: "name", x: 10, y: 18 }, n.name.length > 22 ? `${n.name.slice(0, 21)}…` : n.name),
        el("svg:text", { class: "counts", x: 10, y: 35, "data-testid": "dag-node-counts" }, ""),
        el("svg:text", { class: "detail", x: 10, y: 50, "data-testid": "dag-node-detail" }, ""),
        el("svg:rect", { class: "bar-bg", x: 10, y: n.h - 9, width: n.w - 20, height: 4, rx: 2 }),
        el("svg:rect", { class: "bar-done", x: 10, y: n.h - 9, width: 0, height: 4, rx: 2 }),
      ]);
      g.addEventListener("click", () => selectStage(n.name));
      g.addEventListener("keydown", (e) => { if (e.key === "Enter") selectStage(n.name); });
      svg.appendChild(g);
      view.nodes.set(n.name, { g, w: n.w });
    }
  }

  function updateGraph(s) {
    const known = s.layout.nodes.map((n) => n.name).join("\n");
    if (svgKey !== known) { buildGraph(s); svgKey = known; }
    for (const st of s.stages) {
      const node = view.nodes.get(st.name);
      if (!node) continue;
      const { g, w } = node;
      g.setAttribute("class", `node s-${st.status}${st.in_run === false ? " not-in-run" : ""}${st.name === view.stage ? " selected" : ""}`);
      g.dataset.status = st.status;
      for (const key of ["total", "succeeded", "failed", "running", "pending", "skipped"]) g.dataset[key] = st[key] ?? "";
      g.querySelector(".counts").textContent = countsLine(st);
      g.querySelector(".detail").textContent = detailLine(st);
      const done = st.total ? (st.succeeded + st.failed + st.skipped + st.cancelled) / st.total : 0;
      g.querySelector(".bar-done").setAttribute("width", Math.round((w - 20) * Math.min(1, done)));
      g.querySelector("title").textContent =
        `${st.name}: ${st.status}\n${countsLine(st)}\n${detailLine(st)}` + (st.needs.length ? `\nneeds ${st.needs.join(", ")}` : "");
    }
  }
  let svgKey = null;

  // ---- the grid ---------------------------------------------------------------------------------------

  function fillStageSelect(s) {
    const select = $("stage-select");
    const names = s.stages.map((st) => st.name);
    if ([...select.options].map((o) => o.value).join("\n") !== names.join("\n")) {
      clear(select);
      for (const name of names) select.appendChild(el("option", { value: name }, name));
    }
    if (!view.stage) {
      const fanned = s.stages.find((st) => st.fanned_out) || s.stages[0];
      view.stage = fanned ? fanned.name : null;
    }
    if (view.stage) select.value = view.stage;
  }

  function selectStage(name) {
    if (view.stage === name) return;
    view.stage = name;
    view.cursor = "";
    view.back = [];
    $("stage-select").value = name;
    if (view.summary) updateGraph(view.summary);
    loadGrid();
  }

  const itemKey = (item) => (item === null ? "" : String(item));

  function fillRow(tr, r) {
    tr.dataset.status = r.status;
    const [, keyCell, statusCell, attempts, duration, error] = tr.children;
    keyCell.textContent = r.key ?? ""; // the item's key (declared field or content digest): user data, as text
    if (statusCell.firstChild?.dataset.status !== r.status) {
      clear(statusCell);
      statusCell.appendChild(statusBadge(r.status, "grid-status-badge"));
    }
    attempts.textContent = String(r.attempts);
    duration.textContent = seconds(r.duration_s);
    error.textContent = r.error ? `${r.error_type ? r.error_type + ": " : ""}${r.error}` : "";
    error.title = r.error || "";
    tr.classList.toggle("selected", view.item !== undefined && itemKey(view.item) === itemKey(r.item));
  }

  function gridRow(r) {
    const tr = el("tr", { class: "clickable", "data-testid": "grid-row", "data-item": itemKey(r.item) }, [
      el("td", { "data-testid": "grid-item" }, r.item === null ? "(single)" : String(r.item)),
      el("td", { class: "key-cell", "data-testid": "grid-key" }),
      el("td", { "data-testid": "grid-status-cell" }),
      el("td", { "data-testid": "grid-attempts" }),
      el("td", { "data-testid": "grid-duration" }),
      el("td", { class: "error-cell", "data-testid": "grid-error" }),
    ]);
    fillRow(tr, r);
    tr.addEventListener("click", () => loadTask(r.item));
    return tr;
  }

  async function loadGrid() {
    if (!view.stage) return;
    const stage = view.stage;
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (view.cursor) params.set("cursor", view.cursor);
    const status = $("grid-status").value;
    if (status) params.set("status", status);
    let page;
    try {
      page = await getJSON(`${api}/stages/${encodeURIComponent(stage)}?${params}`);
    } catch (e) {
      showError(`Could not load the tasks of ${stage}: ${e.message}`);
      return;
    }
    if (stage !== view.stage) return; // another stage was chosen meanwhile
    const tbody = $("grid-body");
    const rows = [...tbody.children];
    const same = rows.length === page.items.length && rows.every((tr, i) => tr.dataset.item === itemKey(page.items[i].item));
    if (same) rows.forEach((tr, i) => fillRow(tr, page.items[i])); // a poll: update in place, keep the elements
    else {
      clear(tbody);
      page.items.forEach((r) => tbody.appendChild(gridRow(r)));
    }
    show($("grid-empty"), page.items.length === 0);
    const grid = $("grid");
    grid.dataset.stage = stage;
    grid.dataset.cursor = view.cursor || "0";
    grid.dataset.nextCursor = page.next_cursor || "";
    $("grid-prev").disabled = view.back.length === 0;
    $("grid-next").disabled = !page.next_cursor;
    $("grid-next").dataset.cursor = page.next_cursor || "";
    const first = page.items.length ? page.items[0].item : null;
    const last = page.items.length ? page.items[page.items.length - 1].item : null;
    const total = page.fanned_out ? page.total : 1;
    $("grid-range").textContent = page.fanned_out
      ? (first === null ? `no rows from item ${view.cursor || 0}` : `items ${first}–${last}`) + ` of ${total}`
      : "a single task";
  }

  // ---- the task panel ----------------------------------------------------------------------------------

  async function loadTask(item) {
    view.item = item;
    const params = item === null ? "" : `?item=${item}`;
    const panel = $("task-panel");
    let task;
    try {
      task = await getJSON(`${api}/stages/${encodeURIComponent(view.stage)}/task${params}`);
    } catch (e) {
      showError(`Could not load the task: ${e.message}`);
      return;
    }
    panel.dataset.stage = task.stage;
    panel.dataset.item = task.item === null ? "" : task.item;
    panel.dataset.status = task.status;
    const keyText = task.key == null ? "" : ` (key ${task.key})`;
    $("task-title").textContent = `${task.stage}${task.item === null ? "" : ` item ${task.item}${keyText}`} · ${task.status} · attempt ${task.attempts}`;
    $("task-error").textContent = task.error ? `${task.error_type || "Error"}: ${task.error}` : "";
    $("task-traceback").textContent = task.traceback || "(no traceback)";
    $("task-history").textContent = task.history.length
      ? task.history.map((a) => `attempt ${a.attempt} (${seconds(a.duration_s)}): ${a.error_type}: ${a.error}`).join("\n")
      : "(none)";
    jsonTree.render($("task-input"), task.input, 2);
    jsonTree.render($("task-output"), task.output, 2);
    const opening = panel.hidden;
    show(panel, true);
    if (opening) panel.scrollIntoView({ block: "nearest" });
    for (const tr of $("grid-body").children) tr.classList.toggle("selected", tr.dataset.item === panel.dataset.item);
  }

  // ---- the timeline -----------------------------------------------------------------------------------

  async function loadTimeline() {
    let t;
    try { t = await getJSON(`${api}/timeline`); } catch (e) { showError(`Could not load the timeline: ${e.message}`); return; }
    const svg = $("timeline");
    clear(svg);
    const start = t.start;
    const now = Date.now() / 1000;
    const ends = t.stages.flatMap((st) => [st.end || (st.start !== null ? now : 0), ...st.bars.map((b) => b.end || now)]);
    const end = Math.max(t.end || now, ...ends, start + 0.001);
    const LEFT = 130, WIDTH = 900, STAGE_H = 14, BAR_H = 3, GAP = 6;
    const x = (v) => LEFT + ((v - start) / (end - start)) * WIDTH;
    let y = 6;
    const notes = [];
    for (const st of t.stages) {
      svg.appendChild(el("svg:text", { class: "label", x: 4, y: y + 11 }, st.stage));
      if (st.start !== null) {
        svg.appendChild(el("svg:rect", { class: `stage-bar fill-${st.status}`, x: x(st.start), y,
          width: Math.max(1, x(st.end || now) - x(st.start)), height: STAGE_H, "data-testid": "timeline-stage",
          "data-stage": st.stage }, [el("svg:title", {}, `${st.stage}: ${st.status} ${seconds((st.end || now) - st.start)}`)]));
      }
      y += STAGE_H + 2;
      for (const bar of st.bars) {
        if (bar.start === null) continue;
        const label = `${st.stage}${bar.item === null ? "" : ` item ${bar.item}`}: ${bar.status}, ${seconds((bar.end || now) - bar.start)}`;
        svg.appendChild(el("svg:rect", { class: `fill-${bar.status}`, x: x(bar.start), y,
          width: Math.max(1, x(bar.end || now) - x(bar.start)), height: BAR_H, "data-testid": "timeline-bar",
          "data-stage": st.stage, "data-item": bar.item === null ? "" : bar.item, "data-status": bar.status },
          [el("svg:title", {}, label)]));
        y += BAR_H + 1;
      }
      if (st.sampled) notes.push(`${st.stage}: ${st.shown} of ${st.total} tasks shown (a sample)`);
      y += GAP;
    }
    svg.appendChild(el("svg:line", { class: "axis", x1: LEFT, y1: y, x2: LEFT + WIDTH, y2: y }));
    svg.appendChild(el("svg:text", { class: "label", x: LEFT, y: y + 14 }, "0 s"));
    svg.appendChild(el("svg:text", { class: "label", x: LEFT + WIDTH - 60, y: y + 14 }, seconds(end - start)));
    svg.setAttribute("width", LEFT + WIDTH + 20);
    svg.setAttribute("height", y + 20);
    $("timeline-note").textContent = notes.length
      ? `Large stages are sampled: ${notes.join("; ")}.` : "Every task is shown.";
    svg.dataset.sampled = notes.length ? "true" : "false";
  }

  // ---- the result -------------------------------------------------------------------------------------

  function clock(s) {
    const m = Math.floor(s / 60);
    return `${m}:${(s - m * 60).toFixed(1).padStart(4, "0")}`;
  }

  function artifactUrl(key) {
    return `${api}/artifact?key=${encodeURIComponent(key)}`;
  }

  function renderVideo(container, result) {
    const { final, links } = result;
    const scenes = final.scenes || [];
    container.appendChild(el("p", { "data-testid": "result-query" },
      `${scenes.length} scene${scenes.length === 1 ? "" : "s"} for ${final.query ? JSON.stringify(final.query) : "no query"}`));
    scenes.forEach((scene, i) => {
      const frames = el("div", { class: "frames" });
      for (const link of (scene.links && scene.links.keyframes) || []) {
        const key = links[link];
        if (key) frames.appendChild(el("img", { src: artifactUrl(key), alt: `keyframe of scene ${i + 1}`, loading: "lazy",
          "data-testid": "keyframe", "data-key": key }));
        else frames.appendChild(el("code", {}, link));
      }
      const objects = Object.entries(scene.objects || {}).map(([k, v]) => `${k} ${(v * 100).toFixed(0)}%`).join(", ");
      container.appendChild(el("div", { class: "scene", "data-testid": "scene", "data-clip-index": scene.clip_index }, [
        frames,
        el("div", { class: "text" }, [
          el("div", { class: "time", "data-testid": "scene-time" },
            `${clock(scene.start_s)} – ${clock(scene.end_s)}  (clip ${scene.clip_index}, score ${Number(scene.score).toFixed(2)})`),
          objects ? el("div", { "data-testid": "scene-objects" }, `objects: ${objects}`) : null,
          el("blockquote", { "data-testid": "scene-transcript" }, scene.transcript || "(no speech)"),
          scene.matched_words && scene.matched_words.length
            ? el("div", { class: "muted" }, `matched words: ${scene.matched_words.join(", ")}`) : null,
        ]),
      ]));
    });
    const whole = el("details", {}, [el("summary", {}, "the whole result (JSON)")]);
    const tree = el("div", { class: "json", id: "result-json", "data-testid": "result-json" });
    whole.appendChild(tree);
    container.appendChild(whole);
    jsonTree.render(tree, final, 1);
  }

  async function loadResult() {
    view.finalShown = true;
    const container = $("result");
    let result;
    try { result = await getJSON(`${api}/final`); } catch (e) {
      clear(container);
      container.appendChild(el("p", { class: "error" }, `Could not load the result: ${e.message}`));
      show($("result-section"), true);
      return;
    }
    clear(container);
    container.dataset.kind = result.kind;
    if (result.kind === "video") renderVideo(container, result);
    else {
      const tree = el("div", { class: "json", id: "result-json", "data-testid": "result-json" });
      container.appendChild(tree);
      jsonTree.render(tree, result.final, 2);
    }
    show($("result-section"), true);
  }

  // ---- polling ----------------------------------------------------------------------------------------

  function showError(message) {
    $("request-error").textContent = message;
    show($("request-error"), Boolean(message));
  }

  async function refresh() {
    let s;
    try {
      s = await getJSON(api);
    } catch (e) {
      showError(`Could not load the request: ${e.message}`);
      view.failures += 1;
      return e.status === 404; // gone: stop; a passing error: try again, less and less often
    }
    showError("");
    view.failures = 0;
    const wasRunning = view.summary && !TERMINAL.has(view.summary.status);
    view.summary = s;
    renderHeader(s);
    fillStageSelect(s);
    updateGraph(s);
    if (view.watch && (s.status !== view.watch.from || Date.now() > view.watch.until)) view.watch = null;
    const ended = TERMINAL.has(s.status) && !view.watch;
    const tasks = [loadGrid()];
    if (view.polls % TIMELINE_EVERY === 0 || ended) tasks.push(loadTimeline());
    if (view.item !== undefined && wasRunning) tasks.push(loadTask(view.item));
    if (s.has_final && !view.finalShown) tasks.push(loadResult());
    await Promise.all(tasks);
    view.polls += 1;
    body.dataset.loaded = "true";
    return ended;
  }

  async function poll() {
    const ended = await refresh();
    if (ended) {
      view.polling = false;
      body.dataset.polling = "false";
      return;
    }
    setTimeout(poll, Math.min(POLL_MS * 2 ** view.failures, MAX_BACKOFF_MS));
  }

  function startPolling() {
    if (view.polling) return;
    view.polling = true;
    body.dataset.polling = "true";
    view.polls = 0;
    poll();
  }

  // ---- wiring ---------------------------------------------------------------------------------------

  $("stage-select").addEventListener("change", (e) => selectStage(e.target.value));
  $("grid-status").addEventListener("change", () => { view.cursor = ""; view.back = []; loadGrid(); });
  $("grid-next").addEventListener("click", () => {
    const next = $("grid-next").dataset.cursor;
    if (!next) return;
    view.back.push(view.cursor);
    view.cursor = next;
    loadGrid();
  });
  $("grid-prev").addEventListener("click", () => {
    if (!view.back.length) return;
    view.cursor = view.back.pop();
    loadGrid();
  });
  $("task-close").addEventListener("click", () => { view.item = undefined; show($("task-panel"), false); });
  if (apiBase !== null) {
    $("resume-button").addEventListener("click", () => act("resume"));
    $("cancel-button").addEventListener("click", () => act("cancel"));
  }
  startPolling();
})();
