"""Routing of the web view: every path under ``/ui``; anything else is a 404.

```
GET /ui/                                              the request list (HTML)
GET /ui/requests/{id}                                 a request's page (HTML)
GET /ui/static/{file}                                 the pages' CSS and scripts (package data)
GET /ui/api/requests?status=S&limit=N                 the list (views.request_list)
GET /ui/api/requests/{id}                             summary: stages, counts, DAG layout (polled)
GET /ui/api/requests/{id}/stages/{stage}?cursor=C&limit=N&status=S   a page of the stage's tasks
GET /ui/api/requests/{id}/stages/{stage}/task?item=K  one task: traceback, input, output
GET /ui/api/requests/{id}/timeline                    the Gantt's bars (sampled for large stages)
GET /ui/api/requests/{id}/final                       final.json, its kind and its artifact links
GET /ui/api/requests/{id}/artifact?key=K              an object of the request (artifacts.readable_key)
```

Errors are JSON ``{"error": message}``: 404 naming the request, stage, item or key that is not there, 400
naming the query parameter that is wrong, 405 for a method other than GET/HEAD.
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from collections.abc import Iterable
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from fave_shared.errors import ConflictError, NotFoundError, ValidationError

from fave.ids import validate_request_id
from fave.keys import state_key
from fave.persistence import CorruptStateError
from fave.status import MAX_PAGE_LIMIT, PAGE_LIMIT
from fave.web import pages, views
from fave.web.artifacts import content_type, readable_key
from fave.web.tasks import TASK_STATUSES, filtered_page, task_detail
from fave.web.timeline import timeline

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from fave_shared.store import ObjectStore

__all__ = ["PREFIX", "make_app"]

PREFIX = "/ui"
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
_JSON = "application/json"
_LIST_STATUSES = frozenset({"INIT", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "UNREADABLE"})


class _Answer:
    """A response: status line, headers, body."""

    def __init__(self, status: str, body: bytes, kind: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.status, self.body, self.kind, self.headers = status, body, kind, list(headers)


def _json(value: Any, status: str = "200 OK") -> _Answer:
    # "<" as \u003c: the same JSON, and no "<script>" of an item's error in a body, whatever reads it as.
    text = json.dumps(value, default=str).replace("<", "\\u003c")
    return _Answer(status, text.encode(), _JSON, [("Cache-Control", "no-store")])


def _error(status: str, message: str) -> _Answer:
    return _json({"error": message}, status)


class _Query:
    """The query string, each parameter checked with a message naming it (a 400)."""

    def __init__(self, text: str) -> None:
        self._values = parse_qs(text, keep_blank_values=True)

    def text(self, name: str) -> str | None:
        values = self._values.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise ValidationError(f"{name}: given {len(values)} times")
        return values[0]

    def number(self, name: str, default: int, low: int, high: int) -> int:
        text = self.text(name)
        if text is None or text == "":
            return default
        if not (text.isascii() and text.isdigit() and len(text) <= 12) or not low <= int(text) <= high:
            raise ValidationError(f"{name}: must be a whole number from {low} to {high}, got {text[:40]!r}")
        return int(text)

    def choice(self, name: str, allowed: Iterable[str]) -> str | None:
        text = self.text(name)
        if not text:
            return None
        options = sorted(allowed)
        if text.upper() not in options:
            raise ValidationError(f"{name}: must be one of {', '.join(options)}, got {text[:40]!r}")
        return text.upper()


def _request_id(text: str) -> str:
    try:
        return validate_request_id(text)
    except ValidationError:
        raise NotFoundError(f"no request {text[:80]!r}") from None


def _static(name: str) -> _Answer:
    dot = name.rfind(".")
    kind = STATIC_TYPES.get(name[dot:]) if dot > 0 else None
    if kind is None or "/" in name or name.startswith("."):
        return _error("404 Not Found", f"no static file {name[:80]!r}")
    try:
        data = resources.files("fave.web").joinpath("static", name).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return _error("404 Not Found", f"no static file {name[:80]!r}")
    return _Answer("200 OK", data, kind, [("Cache-Control", "no-cache")])


class _Router:
    def __init__(self, store: ObjectStore, api_base: str | None, banner: str | None) -> None:
        self.store, self.api_base, self.banner = store, api_base, banner

    def html(self, page: str, status: str = "200 OK") -> _Answer:
        return _Answer(status, page.encode(), "text/html; charset=utf-8", [("Cache-Control", "no-store")])

    def route(self, path: str, query: _Query) -> _Answer:
        if path in (PREFIX, PREFIX + "/"):
            return self.html(pages.list_page(self.api_base, self.banner))
        parts = path[len(PREFIX) + 1 :].split("/")
        match parts:
            case ["requests", rid]:
                request_id = _request_id(rid)
                if self.store.head(state_key(request_id)) is None:
                    return self.html(pages.not_found_page(f"no request {request_id}", self.banner), "404 Not Found")
                return self.html(pages.request_page(request_id, self.api_base, self.banner))
            case ["static", name]:
                return _static(name)
            case ["api", "requests", rid, "artifact"]:
                return self.artifact(rid, query)
            case ["api", *rest]:
                return _json(self.api(rest, query))
        raise NotFoundError(f"no page {path[:120]!r}")

    def api(self, parts: list[str], query: _Query) -> Any:
        store = self.store
        match parts:
            case ["requests"]:
                status = query.choice("status", _LIST_STATUSES)
                limit = query.number("limit", views.LIST_LIMIT, 1, 10_000)
                return views.request_list(store, status=status, limit=limit)
            case ["requests", rid]:
                return views.request_summary(store, _request_id(rid))
            case ["requests", rid, "stages", stage]:
                request_id = _request_id(rid)
                cursor = query.number("cursor", 0, 0, 10**12 - 1)
                limit = query.number("limit", PAGE_LIMIT, 1, MAX_PAGE_LIMIT)
                status = query.choice("status", TASK_STATUSES)
                return filtered_page(store, request_id, stage, cursor=cursor, limit=limit, status=status)
            case ["requests", rid, "stages", stage, "task"]:
                request_id = _request_id(rid)
                text = query.text("item")
                item = None if text in (None, "") else query.number("item", 0, 0, 10**12 - 1)
                return task_detail(store, request_id, stage, item)
            case ["requests", rid, "timeline"]:
                return timeline(store, _request_id(rid))
            case ["requests", rid, "final"]:
                return views.final_view(store, _request_id(rid))
        raise NotFoundError(f"no API {'/'.join(parts)[:120]!r}")

    def artifact(self, rid: str, query: _Query) -> _Answer:
        request_id = _request_id(rid)
        key = query.text("key")
        if not key:
            raise ValidationError("key: required (an object key of the request)")
        key = readable_key(self.store, request_id, key)
        try:
            data = self.store.get(key).data
        except NotFoundError:
            raise NotFoundError(f"request {request_id} has no artifact {key[:80]!r}") from None
        kind, inline = content_type(key)
        # A header is Latin-1 and a key any UTF-8: the suggested file name keeps only safe ASCII.
        name = re.sub(r"[^A-Za-z0-9._-]", "_", key.rsplit("/", 1)[-1])
        headers = [
            ("Content-Security-Policy", "default-src 'none'; sandbox"),
            ("Content-Disposition", f'{"inline" if inline else "attachment"}; filename="{name}"'),
            ("Cache-Control", "no-cache"),
        ]
        if not inline:
            kind = "application/octet-stream"
        elif kind.startswith("text/"):
            kind += "; charset=utf-8"  # what the stage SDK writes
        return _Answer("200 OK", data, kind, headers)


def _csp(api_base: str | None) -> str:
    connect = "'self'"
    if api_base:
        parts = urlsplit(api_base)
        if parts.scheme in ("http", "https") and parts.netloc:
            connect += f" {parts.scheme}://{parts.netloc}"
    return (
        f"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
        f"connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def make_app(store: ObjectStore, *, api_base: str | None = "", banner: str | None = None) -> WSGIApplication:
    """The web view of ``store`` as a WSGI application answering every path under ``/ui`` (404 for others).

    ``api_base``: where the HTTP API is, for the resume and cancel buttons (``""``: the same origin, as under
    ``fave serve``; ``None``: no API, the buttons are disabled and say which command to run instead).
    ``banner``: a line shown on every page."""
    router = _Router(store, api_base.rstrip("/") if api_base else api_base, banner)
    csp = _csp(api_base)

    def answer(environ: WSGIEnvironment) -> _Answer:
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            return _error("404 Not Found", f"no page {path[:120]!r}")
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _Answer("405 Method Not Allowed", b'{"error": "only GET"}', _JSON, [("Allow", "GET, HEAD")])
        query = _Query(environ.get("QUERY_STRING", ""))
        try:
            return router.route(path, query)
        except NotFoundError as exc:
            return _error("404 Not Found", str(exc))
        except ValidationError as exc:
            return _error("400 Bad Request", str(exc))
        except ConflictError as exc:  # the state kept changing under a read: worth another try
            return _error("503 Service Unavailable", str(exc))
        except CorruptStateError as exc:  # the request is broken, not the view: say so, no traceback
            return _error("500 Internal Server Error", str(exc))
        except Exception as exc:  # a broken request's state, a store that fails: a 500, and the server lives on
            traceback.print_exc(file=sys.stderr)
            return _error("500 Internal Server Error", f"{type(exc).__name__}: {str(exc)[:300]}")

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        reply = answer(environ)
        headers = [
            ("Content-Type", reply.kind),
            ("Content-Length", str(len(reply.body))),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            *reply.headers,
        ]
        if not any(name == "Content-Security-Policy" for name, _ in reply.headers):
            headers.append(("Content-Security-Policy", csp))
        start_response(reply.status, headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [reply.body]

    return app
