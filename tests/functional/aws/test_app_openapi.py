"""The HTTP API describes itself (issue 12, requirement 4): ``GET /openapi.json`` is an OpenAPI 3 document of
every route of template.yaml with the status codes it really answers, and ``GET /docs`` a Swagger UI page that
loads nothing from another host.

Every documented answer of every route is then produced by a real request (real handler, the tier's S3, the
demo's stage functions; a store on a port nobody listens on for the 503s) and its body checked against the
schema the document gives for it."""

from __future__ import annotations

import base64
import gzip
import json
import re
import socket
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest
import yaml
from fave.app.http_guard import MAX_BODY_BYTES
from fave.invoke import LambdaInvoker
from fave.keys import lease_key, state_key
from fave.lease import Leases
from fave.queue import AdmissionQueue
from fave_shared.store import S3Store
from support.app_lambda import DEMO, OrchestratorLambda, configure_app
from support.declared_input import WORDS_INPUT, demo_with_input, serve
from support.events import ROOT, SAMPLE_REQUEST_ID, load_event
from support.stores import make_s3_client
from support.tiers import Tier

DOC_ROUTES = {"GET /openapi.json", "GET /docs"}
BIG = json.dumps({"reason": "x" * (MAX_BODY_BYTES + 1)})


class _Template(yaml.SafeLoader):
    """template.yaml's own tags (!Ref, !Sub...) read as nothing: only the routes' literal paths matter here."""


_Template.add_multi_constructor("!", lambda loader, suffix, node: None)


def template_routes() -> set[str]:
    """``METHOD /path`` of every HttpApi event of the orchestrator function in template.yaml."""
    template = yaml.load((ROOT / "template.yaml").read_text(encoding="utf-8"), Loader=_Template)
    events = template["Resources"]["OrchestratorFunction"]["Properties"]["Events"].values()
    return {f"{e['Properties']['Method']} {e['Properties']['Path']}" for e in events if e["Type"] == "HttpApi"}


def _path_parameters(route: str, path: str) -> dict[str, str]:
    names = route.split(" ", 1)[1].split("/")
    return {n[1:-1]: v for n, v in zip(names, path.split("/"), strict=True) if n.startswith("{")}


def call(
    lam: OrchestratorLambda,
    route: str,
    path: str | None = None,
    *,
    body: Any = None,
    query: str = "",
    headers: dict[str, str] | None = None,
    stage: str = "$default",
) -> tuple[int, Any, dict[str, str]]:
    """``route`` (``METHOD /template/{path}``) at ``path`` as API Gateway sends it (payload format 2.0, from the
    shipped sample): status, body (JSON decoded unless HTML; a gzip body unzipped) and headers."""
    method, template_path = route.split(" ", 1)
    path = path or template_path
    event = load_event("http-status.json")
    event["routeKey"] = event["requestContext"]["routeKey"] = route
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["stage"] = stage
    event["rawQueryString"] = query
    if query:
        event["queryStringParameters"] = dict(part.split("=", 1) for part in query.split("&"))
    event["pathParameters"] = _path_parameters(route, path.removeprefix(f"/{stage}"))
    if not event["pathParameters"]:
        del event["pathParameters"]
    if body is not None:
        event["body"] = body if isinstance(body, str) else json.dumps(body)
        event["headers"]["content-type"] = "application/json"
        event["headers"]["content-length"] = str(len(event["body"].encode()))
    event["headers"].update({k.lower(): v for k, v in (headers or {}).items()})
    response = lam.invoke(event)
    raw = response.get("body") or ""
    if response.get("isBase64Encoded"):
        raw = gzip.decompress(base64.b64decode(raw)).decode()
    answered = {k.lower(): v for k, v in response.get("headers", {}).items()}
    text = answered.get("content-type", "").startswith("text/html")
    return response["statusCode"], raw if text else json.loads(raw or "null"), answered


def openapi(lam: OrchestratorLambda, **kwargs: Any) -> dict[str, Any]:
    code, doc, headers = call(lam, "GET /openapi.json", **kwargs)
    assert code == 200, doc
    assert headers["content-type"] == "application/json"
    assert isinstance(doc, dict)
    return doc


def operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The document's operations by template route (``{request_id}`` is the template's ``{id}``)."""
    return {
        f"{method.upper()} {path.replace('{request_id}', '{id}')}": operation
        for path, item in doc["paths"].items()
        for method, operation in item.items()
    }


def refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref":
                yield item
            else:
                yield from refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs(item)


def lease_released(lam: OrchestratorLambda, request_id: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while lam.store.head(lease_key(request_id)) is not None:
        assert time.monotonic() < deadline, f"request {request_id}: its lease was not released in {timeout_s} s"
        time.sleep(0.02)


class Answers:
    """Checks each real answer against the document, and remembers which (route, code) were seen."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.operations = operations(doc)
        self.seen: set[tuple[str, int]] = set()

    def check(self, route: str, answer: tuple[int, Any, dict[str, str]], code: int) -> Any:
        status, body, headers = answer
        assert status == code, (route, status, body)
        documented = self.operations[route]["responses"]
        assert str(code) in documented, f"{route} answered {code}, which the document does not list"
        schema = documented[str(code)]["content"]["application/json"]["schema"]
        fastjsonschema.compile({**schema, "components": self.doc["components"]})(body)
        if code >= 400:  # every error: {"message", "errors"?}, nothing else
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}
            assert set(body) <= {"message", "errors"} and body["message"], body
        for header in documented[str(code)].get("headers", {}):
            if header != "Idempotent-Replayed":  # only on a replay
                assert header.lower() in headers, (route, code, header, headers)
        self.seen.add((route, code))
        return body


# ---- the document ---------------------------------------------------------------------------------------------

REAL_ANSWERS = {
    "POST /requests": {202, 400, 413, 422, 500, 503},
    "GET /requests/{id}": {200, 400, 404, 500, 503},
    "GET /requests/{id}/stages/{stage}": {200, 400, 404, 500, 503},
    "POST /requests/{id}/resume": {202, 400, 404, 409, 413, 500, 503},
    "POST /requests/{id}/reset": {200, 400, 404, 409, 413, 500, 503},
    "POST /requests/{id}/cancel": {200, 202, 400, 404, 409, 413, 500, 503},
    "POST /queue": {202, 400, 413, 503},
    "GET /queue": {200, 400, 503},
}


def test_openapi_json_is_an_openapi_3_document_of_every_route_and_its_answers(
    orchestrator_lambda: OrchestratorLambda,
) -> None:
    doc = openapi(orchestrator_lambda)
    assert doc["openapi"].startswith("3.") and doc["info"]["title"] == "fave" and doc["info"]["version"]
    assert doc["servers"] == [{"url": "/"}]
    # Every route template.yaml deploys but the documentation's own is described, and nothing else.
    assert set(operations(doc)) == template_routes() - DOC_ROUTES
    assert {route: {int(c) for c in op["responses"]} for route, op in operations(doc).items()} == REAL_ANSWERS
    for route, operation in operations(doc).items():
        assert operation["operationId"] and operation["summary"]
        for code, response in operation["responses"].items():
            assert response["description"], (route, code)
            assert set(response["content"]) == {"application/json"}, (route, code)
        for name in re.findall(r"\{(\w+)\}", route.split(" ", 1)[1].replace("{id}", "{request_id}")):
            (param,) = [p for p in operation["parameters"] if p["name"] == name]
            assert param["in"] == "path" and param["required"] is True
    # Every reference resolves inside the document; Powertools' unused validation schemas are gone.
    schemas = doc["components"]["schemas"]
    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    assert not {"HTTPValidationError", "ValidationError"} & set(schemas)
    start = operations(doc)["POST /requests"]
    assert start["requestBody"]["required"] is True
    assert start["requestBody"]["content"]["application/json"]["schema"]["type"] == "object"
    stage = {p["name"]: p for p in operations(doc)["GET /requests/{id}/stages/{stage}"]["parameters"]}
    assert stage["limit"]["schema"] == {**stage["limit"]["schema"], "minimum": 1, "maximum": 1000}


def test_each_documented_answer_is_what_a_real_request_gets(
    orchestrator_lambda: OrchestratorLambda, tier: Tier
) -> None:
    lam = orchestrator_lambda
    answers = Answers(openapi(lam))
    check = answers.check
    start, status, stage = "POST /requests", "GET /requests/{id}", "GET /requests/{id}/stages/{stage}"
    resume, cancel = "POST /requests/{id}/resume", "POST /requests/{id}/cancel"
    reset = "POST /requests/{id}/reset"
    join = {"stages": ["join"]}
    words = {"video_uri": lam.source_uri, "extra": {"text": "a b c"}}

    # A request run to completion: nothing left to resume.
    done = check(start, call(lam, start, body=words), 202)["request_id"]
    assert lam.wait(done)["status"] == "COMPLETED"
    # Its last step may still hold the lease for a moment after the commit that ended it (its outbox, its
    # garbage): a reset then would rightly answer 409 busy. Wait for the lease to be let go.
    lease_released(lam, done)
    check(resume, call(lam, resume, f"/requests/{done}/resume"), 409)
    # ...until a stage of it is reset (400 naming the field for an unknown stage or a bad body).
    bad = check(reset, call(lam, reset, f"/requests/{done}/reset", body={"stages": ["nope"]}), 400)
    assert bad["errors"][0]["field"] == "stages" and "'nope'" in bad["message"]
    assert check(reset, call(lam, reset, f"/requests/{done}/reset", body={}), 400)["errors"][0]["field"] == "stages"
    marked = check(reset, call(lam, reset, f"/requests/{done}/reset", body=join), 200)
    assert marked["reset"] == {"stages": {"join": 1}, "downstream": False} and marked["status"] == "COMPLETED"
    check(resume, call(lam, resume, f"/requests/{done}/resume"), 202)
    lam.settle()
    assert lam.wait(done)["status"] == "COMPLETED"

    lam.hold()
    key = {"Idempotency-Key": "openapi-1"}
    accepted = check(start, call(lam, start, body=words, headers=key), 202)
    running = accepted["request_id"]
    check(start, call(lam, start, body={**words, "extra": {"text": "other"}}, headers=key), 422)
    assert check(start, call(lam, start, body="{not json"), 400)["errors"][0]["field"] == "body"
    assert check(start, call(lam, start, body={**words, "profile": "nope"}), 400)["errors"][0]["field"] == "profile"
    check(start, call(lam, start, body={**words, "extra": {"blob": "x" * MAX_BODY_BYTES}}), 413)
    lam.settle()
    lam.take(2)

    for route, path in (
        (status, "/requests/{}"),
        (stage, "/requests/{}/stages/words"),
        (resume, "/requests/{}/resume"),
        (cancel, "/requests/{}/cancel"),
    ):
        check(route, call(lam, route, path.format(SAMPLE_REQUEST_ID)), 404)  # no such request
        check(route, call(lam, route, path.format("..%2F..%2Fetc")), 400)
    check(reset, call(lam, reset, f"/requests/{SAMPLE_REQUEST_ID}/reset", body=join), 404)
    check(reset, call(lam, reset, "/requests/..%2F..%2Fetc/reset", body=join), 400)
    check(reset, call(lam, reset, f"/requests/{running}/reset", body=join), 409)  # it runs
    check(status, call(lam, status, f"/requests/{running}"), 200)
    check(stage, call(lam, stage, f"/requests/{running}/stages/words"), 200)
    check(stage, call(lam, stage, f"/requests/{running}/stages/nope"), 404)
    bad_limit = check(stage, call(lam, stage, f"/requests/{running}/stages/words", query="limit=0"), 400)
    assert bad_limit["errors"][0] == {**bad_limit["errors"][0], "field": "limit", "in": "query"}
    for route in (resume, cancel, reset):
        check(route, call(lam, route, f"/requests/{running}/{route.rsplit('/', 1)[1]}", body=BIG), 413)
    check(cancel, call(lam, cancel, f"/requests/{running}/cancel", body={"reason": "openapi"}), 200)
    check(cancel, call(lam, cancel, f"/requests/{running}/cancel"), 409)
    check(resume, call(lam, resume, f"/requests/{running}/resume"), 202)
    lam.settle()  # the resumed step ran

    # Another invocation holds a request: the cancel is left to it (202); then its state becomes unreadable.
    busy = lam.start("d e")
    lam.take(2)
    assert Leases(lam.store, lam.clock).try_acquire(busy, 60) is not None
    assert check(cancel, call(lam, cancel, f"/requests/{busy}/cancel"), 202)["queued"] is True
    lam.store.put(state_key(busy), b"{this is not json")
    for route, path in (
        (status, "/requests/{}"),
        (stage, "/requests/{}/stages/words"),
        (resume, "/requests/{}/resume"),
        (cancel, "/requests/{}/cancel"),
    ):
        assert busy in check(route, call(lam, route, path.format(busy)), 500)["message"]
    assert busy in check(reset, call(lam, reset, f"/requests/{busy}/reset", body=join), 500)["message"]

    # The admission queue: an entry added (and removed at once: no tick or request's end may admit it here).
    queue_add, queue_list = "POST /queue", "GET /queue"
    added = check(queue_add, call(lam, queue_add, body={"entries": [{"input": words, "key": "openapi"}]}), 202)
    pipeline = check(queue_list, call(lam, queue_list), 200)["pipeline"]
    AdmissionQueue(lam.store, pipeline).remove(added["entries"][0]["id"])
    refused = check(queue_add, call(lam, queue_add, body={"entries": [{"input": {"video_uri": 5}}]}), 400)
    assert refused["errors"][0]["field"] == "entries[0].input.video_uri"
    check(queue_add, call(lam, queue_add, body=BIG), 413)
    check(queue_list, call(lam, queue_list, query="status=nope"), 400)

    # A function deployed without its FAVE_FUNCTION_* names: 500 configuration error.
    import fave.app

    settings = fave.app.current().settings
    fave.app.configure(settings=settings, store=tier.orchestrator_store, invoker=LambdaInvoker.from_env(environ={}))
    assert check(start, call(lam, start, body=words), 500)["message"].startswith("configuration error: ")

    # The store unreachable (a port nobody listens on): 503 with Retry-After on every route.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = S3Store(make_s3_client(f"http://127.0.0.1:{port}", retries={"max_attempts": 1}), tier.bucket)
    fave.app.configure(
        settings=settings, store=dead, pipeline=DEMO, invoker=tier.orchestrator_invoker(lam.runtime), clock=lam.clock
    )
    check(start, call(lam, start, body=words), 503)
    for route, path in (
        (status, "/requests/{}"),
        (stage, "/requests/{}/stages/words"),
        (resume, "/requests/{}/resume"),
        (cancel, "/requests/{}/cancel"),
    ):
        check(route, call(lam, route, path.format(running)), 503)
    check(reset, call(lam, reset, f"/requests/{running}/reset", body=join), 503)
    check(queue_add, call(lam, queue_add, body={"entries": [{"input": words}]}), 503)
    check(queue_list, call(lam, queue_list), 503)

    documented = {(route, int(code)) for route, op in answers.operations.items() for code in op["responses"]}
    assert answers.seen == documented


def test_the_body_of_post_requests_is_the_pipelines_declared_input(
    orchestrator_lambda: OrchestratorLambda, tier: Tier, tmp_path: Path
) -> None:
    lam = orchestrator_lambda
    serve(lam, tier, demo_with_input(tmp_path))  # the "words" input: text required, lang defaulted...
    body = operations(openapi(lam))["POST /requests"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert "words" in body["description"]
    assert schema["required"] == ["text"] and schema["additionalProperties"] is False
    assert set(schema["properties"]) == {*WORDS_INPUT["fields"], "profile"}
    assert schema["properties"]["lang"] == {**schema["properties"]["lang"], "enum": ["en", "fr"], "default": "en"}
    # What the document says is what the route does.
    validate = fastjsonschema.compile(schema)
    good, bad = {"text": "a b", "lang": "fr"}, {"text": "a b", "lang": "de"}
    validate(good)
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        validate(bad)
    lam.hold()
    assert call(lam, "POST /requests", body=good)[0] == 202
    assert call(lam, "POST /requests", body=bad)[0] == 400
    lam.settle()

    configure_app(lam, tier)  # the demo declares no input: any object
    schema = operations(openapi(lam))["POST /requests"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["type"] == "object" and "properties" not in schema


# ---- the page -------------------------------------------------------------------------------------------------


class _Links(HTMLParser):
    """Every URL the page's markup would load or link (src, href, srcset, url(...) in inline style)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls.extend(v or "" for k, v in attrs if k in ("src", "href", "srcset", "action", "data"))


def test_docs_is_a_swagger_ui_page_on_the_document_that_loads_nothing_from_elsewhere(
    orchestrator_lambda: OrchestratorLambda,
) -> None:
    lam = orchestrator_lambda
    code, page, headers = call(lam, "GET /docs")
    assert code == 200 and headers["content-type"].startswith("text/html")
    links = _Links()
    links.feed(page)
    assert links.urls == ["openapi.json"]  # the document, next to the page (a stage prefix included)
    assert "link" not in links.tags and "iframe" not in links.tags
    assert "SwaggerUIBundle" in page and "validatorUrl: null" in page  # no validator.swagger.io badge
    for style in re.findall(r"<style>(.*?)</style>", page, re.S):
        assert not re.search(r"url\(\s*['\"]?(https?:)?//", style)  # CSS loads no remote font or image
    # The page carries the document itself.
    embedded = page[page.index("spec: ") + len("spec: ") :]
    spec, _ = json.JSONDecoder().raw_decode(embedded)
    assert spec == openapi(lam)

    # Compressed when the client takes gzip (the page inlines Swagger UI: ~1.7 MB, ~0.5 MB zipped).
    zipped = lam.invoke({**_docs_event(), "headers": {**_docs_event()["headers"], "accept-encoding": "gzip"}})
    assert zipped["isBase64Encoded"] is True and zipped["headers"]["Content-Encoding"] == "gzip"
    assert gzip.decompress(base64.b64decode(zipped["body"])).decode() == page
    assert len(zipped["body"]) < len(page) / 2

    # On a named stage (its name prefixes the raw path) the document's server is the stage's base path.
    assert openapi(lam, path="/prod/openapi.json", stage="prod")["servers"] == [{"url": "/prod"}]


def _docs_event() -> dict[str, Any]:
    event = load_event("http-status.json")
    event["routeKey"] = event["requestContext"]["routeKey"] = "GET /docs"
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/docs"
    del event["pathParameters"]
    return event
