"""The stage contract (docs/stages.md, docs/schemas/), checked on real runs (issue 11, requirement 2).

* Every event the orchestrator sends (sync and async, inline and by reference) matches
  ``stage-event.schema.json``; what comes back (sync results, destination records, the SQS batches of
  ``CompletionsQueue``, error payloads, terminal error results) matches the result schemas. The samples in
  ``events/`` too.
* A plain handler (no SDK) gets plain JSON, with no marker anywhere, up to what Lambda carries: an upstream
  output of 300 KB reaches an asynchronous stage inline (over the old 256 KB limit), 5 MB a synchronous one.
* Past that, a plain handler that reads ``event["input"]`` as the input fails, and the failure fave records
  says the input was passed by reference and names ``fave_shared.stage.resolve_event``, which does read it.
* A pipeline whose asynchronous stage's function has no destinations back to the orchestrator is refused when
  it is loaded, naming the stage and the function (``fave run``: exit 2, one line).

Real parts: the local runtime running generated handlers in worker processes, a local store, ``LocalQueue``
for the completions queue. The handlers write each event they get to a folder: that is what was sent.
"""

from __future__ import annotations

import functools
import json
import queue
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
import pytest
from fave import completions
from fave.core.model import RequestState, RequestStatus
from fave.local.orchestrator import load_local_pipeline, local_orchestrator
from fave.local.queues import EventSourceMapping, LocalQueue
from fave.local.runtime import LocalRuntime
from fave.pipeline import PipelineError
from fave.status import status_document
from fave_shared import refs
from fave_shared.outcome import ERROR_KEY
from fave_shared.store import LocalStore
from support import e2e

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "docs" / "schemas"
EVENTS = REPO / "events"
OLD_ASYNC_LIMIT = 256 * 1024
"""Lambda's asynchronous payload limit before October 2025: an event over it proves the new limit is used."""
HINT = "fave_shared.stage.resolve_event(event)"


# -- the schemas ----------------------------------------------------------------------------------------------


@functools.cache
def _documents() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        doc = json.loads(path.read_text())
        assert doc["$id"] == f"https://fave.invalid/schemas/{path.name}", path
        docs[doc["$id"]] = doc
    return docs


@functools.cache
def validator(name: str) -> Callable[[Any], Any]:
    """fastjsonschema's validator of docs/schemas/NAME; references between the files resolve to the files."""
    docs = _documents()
    handlers = {"https": lambda uri: docs[uri]}
    return fastjsonschema.compile(docs[f"https://fave.invalid/schemas/{name}"], handlers=handlers)


def check(name: str, value: Any) -> None:
    validator(f"{name}.schema.json")(value)


def rejects(name: str, value: Any) -> bool:
    try:
        check(name, value)
    except fastjsonschema.JsonSchemaValueException:
        return True
    return False


def test_schemas_are_valid_draft7_and_every_file_is_used() -> None:
    names = {uri.rsplit("/", 1)[1] for uri in _documents()}
    assert names == {
        "stage-event.schema.json",
        "stage-result-sync.schema.json",
        "stage-result-async.schema.json",
        "stage-error.schema.json",
        "ref-marker.schema.json",
        "completions-batch.schema.json",
    }
    for doc in _documents().values():
        jsonschema.Draft7Validator.check_schema(doc)
        validator(doc["$id"].rsplit("/", 1)[1])  # every reference resolves
    page = (REPO / "docs" / "stages.md").read_text()
    assert all(f"schemas/{name}" in page for name in names)


def test_sample_events_match_the_schemas() -> None:
    check("stage-event", json.loads((EVENTS / "stage-invocation.json").read_text()))
    for name in ("destination-success", "destination-failure"):
        check("stage-result-async", json.loads((EVENTS / f"{name}.json").read_text()))
    batch = json.loads((EVENTS / "sqs-completions.json").read_text())
    check("completions-batch", batch)
    for record in batch["Records"]:
        check("stage-result-async", json.loads(record["body"]))


def test_the_schemas_refuse_what_the_contract_does_not_allow() -> None:
    event = json.loads((EVENTS / "stage-invocation.json").read_text())
    assert rejects("stage-event", {**event, "mode": "later"})
    assert rejects("stage-event", {k: v for k, v in event.items() if k != "mode"})
    assert rejects("stage-event", {**event, "input": {"$ref": "k", "$extra": 1}})  # neither input nor marker
    assert not rejects("stage-event", {**event, "input": refs.marker("k", note="n")})
    item_without_index = {"request": {}, "needs": {}, "config": {}, "item": "x"}
    assert rejects("stage-event", {**event, "input": item_without_index})
    assert rejects("stage-result-sync", {"functionError": "Unhandled", "responsePayload": {"errorType": "E"}})
    half_terminal = {ERROR_KEY: {"errorType": "E", "terminal": True}}  # no errorMessage
    assert rejects("stage-result-sync", {"responsePayload": half_terminal})
    assert not rejects("stage-result-sync", {"responsePayload": {ERROR_KEY: 1, "other": 2}})  # an output
    batch = json.loads((EVENTS / "sqs-completions.json").read_text())
    batch["Records"][0]["eventSource"] = "aws:sns"
    assert rejects("completions-batch", batch)


# -- a pipeline of plain handlers ---------------------------------------------------------------------------

_CAPTURE = """\
import json
import pathlib

CAPTURE = pathlib.Path({capture!r})


def capture(event):
    task = event["task"]
    name = f"{{task['stage']}}-{{task['item']}}-{{task['attempt']}}.json"
    (CAPTURE / name).write_text(json.dumps(event))
"""

HANDLERS = {
    # A sync producer: an output of request.pad bytes and three words to fan out over, one request.long x 4 long.
    "emit": """
        def handler(event, context):
            capture(event)
            request = event["input"]["request"]
            return {"blob": "x" * request.get("pad", 0), "words": ["alpha", "beta" * request.get("long", 1), "gamma"]}
    """,
    # A plain producer that writes its output to the store itself and returns a marker to it.
    "parking": """
        from fave_shared.store import open_store


        def handler(event, context):
            capture(event)
            key = f"requests/{event['task']['request_id']}/stages/emit/blob.json"
            open_store(event["store"]).put(key, json.dumps({"blob": "y" * 12_345}).encode())
            return {"$ref": key}
    """,
    # A plain handler that ignores the SDK.
    "plain": """
        def handler(event, context):
            capture(event)
            return {"seen": len(event["input"]["needs"]["emit"]["blob"])}
    """,
    # The same, with the one line docs/stages.md asks for.
    "resolving": """
        from fave_shared.stage import resolve_event


        def handler(event, context):
            capture(event)
            event = resolve_event(event)
            needs = event["input"]["needs"]
            return {"seen": len(needs["emit"]["blob"]) if "emit" in needs else None, "needs": sorted(needs)}
    """,
    # An SDK stage: a word per item; "boom" is a terminal error.
    "sdk": """
        from fave_shared.errors import TerminalError
        from fave_shared.schemas import StageInput
        from fave_shared.stage import StageContext, stage
        from pydantic import BaseModel


        class EachInput(StageInput):
            item: str


        class EachOutput(BaseModel):
            word: str
            length: int


        @stage(EachInput)
        def body(inp: EachInput, ctx: StageContext) -> EachOutput:
            if inp.item == "boom":
                raise TerminalError("boom is not a word")
            return EachOutput(word=inp.item, length=len(inp.item))


        def handler(event, context):
            capture(event)
            return body(event, context)
    """,
}

_DESTINATIONS = """\
      EventInvokeConfig:
        MaximumRetryAttempts: 0
        DestinationConfig:
          OnSuccess: {{Type: SQS, Destination: !GetAtt CompletionsQueue.Arn}}
          OnFailure: {{Type: SQS, Destination: !GetAtt {on_failure}.Arn}}
"""

_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.11
    Timeout: 20
    MemorySize: 512
    Layers: [!Ref SharedLayer]
Resources:
  SharedLayer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: {repo}/shared
  CompletionsQueue:
    Type: AWS::SQS::Queue
  OtherQueue:
    Type: AWS::SQS::Queue
  OrchestratorFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: {repo}/orchestrator
      Handler: fave.app.handler
      Events:
        Completions:
          Type: SQS
          Properties:
            Queue: !GetAtt CompletionsQueue.Arn
  EmitFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/emit
      Handler: app.handler
  ParkingFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/parking
      Handler: app.handler
  PlainFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/plain
      Handler: app.handler
{back}
  ResolvingFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/resolving
      Handler: app.handler
{back}
  SdkFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/sdk
      Handler: app.handler
{back}
  BareFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/plain
      Handler: app.handler
  StrayFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/plain
      Handler: app.handler
{stray}
"""


@dataclass
class App:
    """A pipeline folder: template.yaml, the handlers, and the folder their events are written to."""

    root: Path
    events: Path
    store: LocalStore

    @property
    def template(self) -> Path:
        return self.root / "template.yaml"

    def pipeline(self, body: str, name: str = "pipeline.yaml") -> Path:
        path = self.root / name
        path.write_text("template: template.yaml\n" + textwrap.dedent(body))
        return path

    def run(self, pipeline: Path, request: dict[str, Any]) -> RequestState:
        orchestrator = local_orchestrator(pipeline, self.store, runtime_options={"async_retry_delays_s": ()})
        try:
            state = orchestrator.create(request)
            return orchestrator.drive(state.request_id, tick_s=0.02)
        finally:
            orchestrator.close()

    def event(self, stage: str, item: int | None = None, attempt: int = 1) -> dict[str, Any]:
        """The event the stage's handler got."""
        doc: dict[str, Any] = json.loads((self.events / f"{stage}-{item}-{attempt}.json").read_text())
        return doc

    def all_events(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        for path in sorted(self.events.glob("*.json")):
            yield path, json.loads(path.read_text())


@pytest.fixture
def app(tmp_path: Path) -> App:
    root = tmp_path / "app"
    events = tmp_path / "events"
    events.mkdir()
    for name, body in HANDLERS.items():
        folder = root / "functions" / name
        folder.mkdir(parents=True)
        code = _CAPTURE.format(capture=str(events)) + "\n" + textwrap.dedent(body)
        (folder / "app.py").write_text(code)
    back = _DESTINATIONS.format(on_failure="CompletionsQueue").rstrip("\n")
    stray = _DESTINATIONS.format(on_failure="OtherQueue").rstrip("\n")
    (root / "template.yaml").write_text(_TEMPLATE.format(repo=REPO, back=back, stray=stray))
    return App(root, events, LocalStore(tmp_path / "store"))


READ = """\
    name: read
    final: read
    defaults: {{timeout: 30s, retry: {{max_attempts: 0}}}}
    stages:
      emit: {{function: EmitFunction, mode: sync}}
      read: {{function: {function}, needs: [emit], mode: {mode}}}
"""


def size(event: dict[str, Any]) -> int:
    """Bytes of an event as sent (compact UTF-8 JSON)."""
    return refs.utf8_size(event)


# -- up to the limit: plain JSON ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "pad"),
    [
        ("async", 300_000),  # over Lambda's old 256 KB asynchronous limit, under its 1 MB
        ("sync", 5_000_000),  # under 6 MB
    ],
)
def test_plain_handler_gets_plain_json_up_to_what_lambda_carries(app: App, mode: str, pad: int) -> None:
    state = app.run(app.pipeline(READ.format(function="PlainFunction", mode=mode)), {"pad": pad})
    assert state.status is RequestStatus.COMPLETED, state.failure
    emitted = state.task("emit", None)
    assert emitted is not None and refs.is_ref(emitted.output)  # parked in the store by the orchestrator ...
    event = app.event("read")
    check("stage-event", event)
    assert refs.find_refs(event) == []  # ... and put back inline: no marker anywhere
    assert event["mode"] == mode and event["input"]["needs"]["emit"]["blob"] == "x" * pad
    assert pad < size(event) <= refs.event_limit(mode)
    if mode == "async":
        assert size(event) > OLD_ASYNC_LIMIT
    read = state.task("read", None)
    assert read is not None and read.output == {"seen": pad}


# -- past the limit: a marker, and an error that says so -----------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "pad", "threshold"),
    [
        ("async", 800_000, None),  # the real limit: over 768 KiB
        ("sync", 150_000, "100000"),  # 6 MB would be slow to move around: a lower limit, same code path
    ],
)
def test_plain_handler_past_the_limit_fails_saying_so_and_naming_the_helper(
    app: App, monkeypatch: pytest.MonkeyPatch, mode: str, pad: int, threshold: str | None
) -> None:
    if threshold is not None:
        monkeypatch.setenv(refs.OVERRIDE_VAR, threshold)
    state = app.run(app.pipeline(READ.format(function="PlainFunction", mode=mode)), {"pad": pad})
    assert state.status is RequestStatus.FAILED
    event = app.event("read")
    check("stage-event", event)
    marker = event["input"]
    assert refs.is_ref(marker) and set(marker) == {"$ref", "$note"}
    assert HINT in marker["$note"] and str(refs.event_limit(mode)) in marker["$note"]
    assert size(event) < 2048  # the input is in the store, whole
    stored = json.loads(app.store.get(marker["$ref"]).data)
    assert set(stored) == {"request", "needs", "config"}

    task = state.task("read", None)
    assert task is not None and task.error_type == "KeyError" and task.error is not None
    assert task.error.startswith("'needs' (event.input was passed by reference")
    assert HINT in task.error
    # What `fave status` shows.
    doc = status_document(app.store, state.request_id)
    assert "KeyError: 'needs'" in doc["failure"] and HINT in doc["failure"], doc["failure"]
    assert ("a synchronous" if mode == "sync" else "an asynchronous") in doc["failure"]


def test_resolve_event_reads_an_input_passed_by_reference(app: App) -> None:
    state = app.run(app.pipeline(READ.format(function="ResolvingFunction", mode="async")), {"pad": 800_000})
    assert state.status is RequestStatus.COMPLETED, state.failure
    assert refs.is_ref(app.event("read")["input"])
    read = state.task("read", None)
    assert read is not None and read.output == {"seen": 800_000, "needs": ["emit"]}


def test_a_plain_handler_may_return_its_output_by_reference(app: App) -> None:
    pipeline = app.pipeline(
        READ.format(function="PlainFunction", mode="async").replace("EmitFunction", "ParkingFunction")
    )
    state = app.run(pipeline, {})
    assert state.status is RequestStatus.COMPLETED, state.failure
    emitted = state.task("emit", None)
    assert emitted is not None and refs.is_ref(emitted.output)
    assert refs.find_refs(app.event("read")) == []  # put back inline for the plain handler downstream
    read = state.task("read", None)
    assert read is not None and read.output == {"seen": 12_345}


def test_the_note_is_added_only_where_a_marker_was_not_resolved() -> None:
    task = completions.Task("01M7Q5CQG08V1KSN1NN13VDKQ9", "read", None, 1)
    by_ref = {"fave": 1, "task": {}, "mode": "sync", "store": "s", "input": refs.marker("k", note="NOTE")}
    inline = {**by_ref, "input": {"request": {}, "needs": {}, "config": {}}}
    plain = {"errorType": "KeyError", "errorMessage": "'needs'", "stackTrace": ['  File "/var/task/app.py"\n']}
    sdk = {**plain, "stackTrace": ['  File "/opt/python/fave_shared/stage.py", line 1, in handler\n']}
    timeout = {"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 3.00 seconds"}

    def message(event: Any, error: dict[str, Any]) -> str:
        _, failed = completions.from_result(task, error, "Unhandled", event)
        return str(getattr(failed, "message", ""))

    assert message(by_ref, plain) == "'needs' (NOTE)"
    assert message(inline, plain) == "'needs'"  # the input was inline
    assert message(by_ref, sdk) == "'needs'"  # the SDK resolved it: something else went wrong
    assert message(by_ref, timeout) == "Task timed out after 3.00 seconds"  # not the handler's doing
    envelope = json.loads((EVENTS / "destination-failure.json").read_text())
    envelope["requestPayload"]["input"] = by_ref["input"]
    envelope["responsePayload"] = plain
    _, failed = completions.from_envelope(envelope)
    assert getattr(failed, "message", "") == "'needs' (NOTE)"


# -- every event and result of a run matches the schemas ------------------------------------------------------

FULL = """\
    name: contract
    final: gather
    defaults: {timeout: 30s, retry: {max_attempts: 0}}
    stages:
      emit: {function: EmitFunction, mode: sync}
      read: {function: ResolvingFunction, needs: [emit], mode: async}
      each: {function: SdkFunction, needs: [emit], for_each: emit.words, mode: async}
      gather: {function: ResolvingFunction, needs: [emit, each, read], mode: sync}
"""


@pytest.mark.parametrize("threshold", [None, "20000"])
def test_every_event_and_result_matches_the_schemas(
    app: App, monkeypatch: pytest.MonkeyPatch, threshold: str | None
) -> None:
    # Default limits: emit's 800 KB output is inline in gather's (sync) event, by reference in read's (async)
    # one. FAVE_PAYLOAD_THRESHOLD=20000: by reference in both, and the SDK stage's output too.
    if threshold is not None:
        monkeypatch.setenv(refs.OVERRIDE_VAR, threshold)
    pad = 800_000 if threshold is None else 30_000
    state = app.run(app.pipeline(FULL), {"pad": pad, "long": 10_000})
    assert state.status is RequestStatus.COMPLETED, state.failure

    sent = dict(app.all_events())
    assert len(sent) == 3 + 3
    by_ref = set()
    for path, event in sent.items():
        check("stage-event", event)
        if refs.is_ref(event["input"]):
            by_ref.add(path.stem)
            assert size(event) < 2048 and HINT in event["input"]["$note"]  # the input is in the store, whole
        else:
            assert refs.find_refs(event) == []  # inline: no marker anywhere
    # each-1's item is 40 KB; gather's input holds emit's output.
    assert by_ref == ({"read-None-1"} if threshold is None else {"read-None-1", "each-1-1", "gather-None-1"})
    assert app.event("gather")["mode"] == "sync" and app.event("read")["mode"] == "async"

    # What came back: the same events replayed through the same functions, results captured as delivered.
    with ReplayRuntime(app.template) as replay:
        for event in sent.values():
            function = {"emit": "EmitFunction", "each": "SdkFunction"}.get(event["task"]["stage"], "ResolvingFunction")
            if event["mode"] == "sync":
                check("stage-result-sync", replay.sync(function, event))
            else:
                replay.runtime.invoke_async(function, event)
        records = replay.records(3 + 1)
    assert {r["requestContext"]["condition"] for r in records} == {"Success"}
    outputs = [r["responsePayload"] for r in records if r["requestPayload"]["task"]["stage"] == "each"]
    if threshold is not None:  # the SDK returned its 40 KB output by reference
        assert any(refs.is_ref(output) for output in outputs)


def test_error_results_match_the_schemas(app: App) -> None:
    event = json.loads((EVENTS / "stage-invocation.json").read_text())
    event["store"] = app.store.uri
    by_ref = {**event, "task": {**event["task"], "stage": "read"}, "input": refs.marker("nowhere", note="n")}
    boom = {
        **event,
        "mode": "async",
        "task": {**event["task"], "stage": "each", "item": 0},
        "input": {"request": {}, "needs": {}, "config": {}, "item": "boom", "index": 0},
    }
    with ReplayRuntime(app.template) as replay:
        failed = replay.sync("PlainFunction", by_ref)  # KeyError: a function error
        check("stage-result-sync", failed)
        assert failed["functionError"] == "Unhandled" and failed["responsePayload"]["errorType"] == "KeyError"
        terminal = replay.sync("SdkFunction", {**boom, "mode": "sync"})  # returned, not raised
        check("stage-result-sync", terminal)
        assert terminal["functionError"] is None and terminal["responsePayload"][ERROR_KEY]["terminal"] is True
        replay.runtime.invoke_async("PlainFunction", {**by_ref, "mode": "async"})
        replay.runtime.invoke_async("SdkFunction", boom)
        records = replay.records(2)
    conditions = sorted(r["requestContext"]["condition"] for r in records)
    assert conditions == ["RetriesExhausted", "Success"]
    for record in records:
        if record["requestContext"]["condition"] == "RetriesExhausted":
            check("stage-error", record["responsePayload"])
        else:
            assert record["responsePayload"][ERROR_KEY]["errorType"] == "TerminalError"


class ReplayRuntime:
    """The app's functions on a LocalRuntime whose asynchronous results go to a LocalQueue for CompletionsQueue,
    consumed by a mapping that checks each batch against the schemas and keeps its records."""

    def __init__(self, template: Path) -> None:
        self.queue = LocalQueue("CompletionsQueue")
        self.runtime = LocalRuntime(
            template, destination_handlers={"CompletionsQueue": self.queue.send_record}, async_retry_delays_s=()
        )
        self._records: queue.SimpleQueue[dict[str, Any] | Exception] = queue.SimpleQueue()
        self.queue.consume(self._batch, EventSourceMapping(batch_size=10, batching_window_s=0.05))

    def _batch(self, event: dict[str, Any]) -> None:
        try:
            check("completions-batch", event)
            for record in event["Records"]:
                body = json.loads(record["body"])
                check("stage-result-async", body)
                self._records.put(body)
        except Exception as exc:  # raised in the test by records(), not lost in the mapping's thread
            self._records.put(exc)

    def sync(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        result = self.runtime.invoke_sync(function, event)
        return {"responsePayload": result.payload, "functionError": result.function_error}

    def records(self, count: int) -> list[dict[str, Any]]:
        got = []
        for _ in range(count):
            item = self._records.get(timeout=30)
            if isinstance(item, Exception):
                raise item
            got.append(item)
        return got

    def __enter__(self) -> ReplayRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.runtime.close()
        self.queue.close()


# -- an asynchronous stage needs destinations back to the orchestrator ---------------------------------------

ASYNC_ON = """\
    name: lost
    stages:
      emit: {{function: EmitFunction, mode: sync}}
      read: {{function: {function}, needs: [emit], mode: {mode}}}
"""


@pytest.mark.parametrize(
    ("function", "problem"),
    [
        ("BareFunction", "has no OnSuccess destination and no OnFailure destination"),
        ("StrayFunction", "has its OnFailure destination OtherQueue, which is not the orchestrator"),
    ],
)
def test_async_stage_without_a_way_back_is_refused_when_loaded(app: App, function: str, problem: str) -> None:
    with pytest.raises(PipelineError) as raised:
        load_local_pipeline(app.pipeline(ASYNC_ON.format(function=function, mode="async")))
    message = str(raised.value)
    assert "stage 'read'" in message and f"function {function} in template.yaml" in message, message
    assert problem in message and "point both at CompletionsQueue or OrchestratorFunction" in message
    # Synchronous, the same function is fine: its result comes back as the invoke's response.
    load_local_pipeline(app.pipeline(ASYNC_ON.format(function=function, mode="sync"), name="sync.yaml"))
    load_local_pipeline(app.pipeline(ASYNC_ON.format(function="PlainFunction", mode="async"), name="ok.yaml"))


def test_fave_run_refuses_it_in_one_line(app: App, tmp_path: Path) -> None:
    pipeline = app.pipeline(ASYNC_ON.format(function="BareFunction", mode="async"))
    store = tmp_path / "cli-store"
    proc = e2e.fave(
        "run", "--pipeline", str(pipeline), "--input", '{"pad": 1}',
        env=e2e.child_env({"FAVE_STORE": str(store)}), timeout=60,
    )  # fmt: skip
    assert proc.code == 2, proc.describe()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fave: error: "), proc.describe()
    assert "stage 'read'" in lines[0] and "function BareFunction" in lines[0] and "no OnSuccess" in lines[0]
    assert not (store / "requests").exists()
