"""The HTML shells of the two pages. The pages fill themselves from ``/ui/api/`` with small scripts that only
ever set text (``textContent``), never markup, so nothing from the store is parsed as HTML; what is put in
here (the request id, the banner, the API base) is escaped."""

from __future__ import annotations

from html import escape

__all__ = ["list_page", "not_found_page", "request_page"]

_NO_API = (
    "Resume and cancel need the HTTP API: run `fave resume {id}` or `fave cancel {id}` in a shell, "
    "or open this request under `fave serve`."
)


def _shell(title: str, body_attrs: dict[str, str | None], main: str, scripts: list[str], banner: str | None) -> str:
    attrs = "".join(f' {k}="{escape(v)}"' for k, v in body_attrs.items() if v is not None)
    banner_html = f'<div id="banner" data-testid="banner">{escape(banner)}</div>' if banner else ""
    tags = "".join(f'<script src="/ui/static/{name}" defer></script>' for name in scripts)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>"
        '<link rel="icon" href="/ui/static/favicon.svg">'
        '<link rel="stylesheet" href="/ui/static/style.css">'
        f"{tags}</head>"
        f"<body{attrs}>{banner_html}"
        '<header><a href="/ui/" id="home-link">fave</a></header>'
        f"{main}</body></html>\n"
    )


def list_page(api_base: str | None, banner: str | None) -> str:
    main = """<main>
<h1>Requests</h1>
<div class="toolbar">
  <label>Status <select id="status-filter" data-testid="status-filter">
    <option value="">all</option><option>INIT</option><option>RUNNING</option><option>COMPLETED</option>
    <option>FAILED</option><option>CANCELLED</option><option>UNREADABLE</option>
  </select></label>
  <label><input type="checkbox" id="auto-refresh" data-testid="auto-refresh" checked> auto-refresh</label>
  <span id="list-updated" class="muted"></span>
</div>
<p id="list-error" class="error" role="alert" hidden></p>
<table id="requests" data-testid="requests">
  <thead><tr><th>request</th><th>status</th><th>pipeline</th><th>input</th><th>age</th><th>duration</th></tr></thead>
  <tbody id="requests-body"></tbody>
</table>
<p id="requests-empty" class="muted" hidden>No requests.</p>
<p id="requests-truncated" class="muted" hidden>Showing the newest requests only.</p>
</main>"""
    return _shell("fave: requests", {"data-page": "list"}, main, ["common.js", "list.js"], banner)


def request_page(request_id: str, api_base: str | None, banner: str | None) -> str:
    note = "" if api_base is not None else escape(_NO_API.format(id=request_id))
    disabled = "" if api_base is not None else " disabled"
    main = f"""<main>
<h1>Request <code id="request-id" data-testid="request-id">{escape(request_id)}</code>
  <span id="request-status" data-testid="request-status" class="status"></span></h1>
<p id="request-meta" class="muted"></p>
<p id="request-failure" class="error" data-testid="request-failure" hidden></p>
<p id="request-error" class="error" role="alert" hidden></p>
<div class="actions">
  <button id="resume-button" data-testid="resume-button" type="button"{disabled}>Resume</button>
  <button id="cancel-button" data-testid="cancel-button" type="button"{disabled}>Cancel</button>
  <span id="api-note" data-testid="api-note" class="muted">{note}</span>
  <pre id="action-result" data-testid="action-result" hidden></pre>
</div>
<section id="graph-section"><h2>Stages</h2>
  <div class="scroll"><svg id="dag" data-testid="dag" role="img" aria-label="the pipeline's stages"></svg></div>
</section>
<section id="grid-section"><h2>Tasks of <select id="stage-select" data-testid="stage-select"></select></h2>
  <div class="toolbar">
    <label>Status <select id="grid-status" data-testid="grid-status">
      <option value="">all</option><option>PENDING</option><option>RUNNING</option><option>SUCCEEDED</option>
      <option>FAILED</option><option>SKIPPED</option><option>CANCELLED</option>
    </select></label>
    <button id="grid-prev" data-testid="grid-prev" type="button">&larr; prev</button>
    <button id="grid-next" data-testid="grid-next" type="button">next &rarr;</button>
    <span id="grid-range" data-testid="grid-range" class="muted"></span>
  </div>
  <div class="grid-scroll"><table id="grid" data-testid="grid">
    <thead><tr><th>item</th><th>key</th><th>status</th><th>attempts</th><th>duration</th><th>error</th></tr></thead>
    <tbody id="grid-body"></tbody>
  </table></div>
  <p id="grid-empty" class="muted" hidden>No tasks on this page.</p>
  <div id="task-panel" data-testid="task-panel" hidden>
    <h3>Task <span id="task-title" data-testid="task-title"></span>
      <button id="task-close" data-testid="task-close" type="button">close</button></h3>
    <p id="task-error" data-testid="task-error" class="error"></p>
    <h4>Traceback</h4><pre id="task-traceback" data-testid="task-traceback"></pre>
    <h4>Failed attempts</h4><pre id="task-history" data-testid="task-history"></pre>
    <h4>Input</h4><div id="task-input" data-testid="task-input" class="json"></div>
    <h4>Output</h4><div id="task-output" data-testid="task-output" class="json"></div>
  </div>
</section>
<section id="timeline-section"><h2>Timeline</h2>
  <p id="timeline-note" data-testid="timeline-note" class="muted"></p>
  <div class="scroll"><svg id="timeline" data-testid="timeline" role="img" aria-label="task timeline"></svg></div>
</section>
<section id="result-section" hidden><h2>Result</h2>
  <div id="result" data-testid="result"></div>
</section>
</main>"""
    attrs = {"data-page": "request", "data-request-id": request_id, "data-api-base": api_base}
    return _shell(f"fave: {request_id}", attrs, main, ["common.js", "jsontree.js", "request.js"], banner)


def not_found_page(what: str, banner: str | None) -> str:
    main = f'<main><h1>Not found</h1><p id="not-found" data-testid="not-found">{escape(what)}</p></main>'
    return _shell("fave: not found", {"data-page": "not-found"}, main, [], banner)
