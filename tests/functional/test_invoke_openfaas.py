"""``OpenFaaSInvoker``'s contract (issue 15, requirement 3) against a local gateway that speaks OpenFaaS's
protocol and runs the REAL demo stage functions (support/openfaas_gateway.py): results, function errors, the
gateway's 429 / 5xx / 4xx mapped like Lambda's, payload limits checked before sending, basic auth, the async
headers and the callback; the callback's translation into a destination record (``fave.app.callbacks``); how
``FAVE_INVOKER`` picks the invoker; and ``fave export --format openfaas``'s stack.yml and handler shim, run.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from fave import completions
from fave.core.model import TaskFailed, TaskSucceeded
from fave.invoke.base import (
    MAX_ASYNC_PAYLOAD_BYTES,
    MAX_SYNC_PAYLOAD_BYTES,
    FunctionNotFoundError,
    Invoker,
    RetryableInvocationError,
    TerminalInvocationError,
    ThrottledInvocationError,
    invocation_is_terminal,
)
from fave.invoke.openfaas import OpenFaaSInvoker, call_id, callback_url, function_name, stack_names
from fave_shared.errors import ValidationError
from support import e2e
from support.openfaas_gateway import OpenFaaSGateway

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tests" / "fixtures" / "demo" / "pipeline.yaml"
TEMPLATE = DEMO.with_name("template.yaml")
NAMES = {"words": "WordsFunction", "shout": "ShoutFunction", "measure": "MeasureFunction", "join": "JoinFunction"}
LOGICAL = {lid: name for name, lid in NAMES.items()}
REQUEST_ID = "01M8D4S70VJ0XHPQ8DFCEG1K38"


def event(
    stage: str,
    request: dict[str, Any],
    *,
    item: Any = None,
    index: int | None = None,
    attempt: int = 1,
    mode: str = "sync",
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "fave": 1,
        "task": {"request_id": REQUEST_ID, "stage": stage, "item": index, "attempt": attempt},
        "mode": mode,
        "store": "s3://unused",
        "input": {"request": request, "item": item, "index": index, "needs": {}, "config": config or {}},
    }


class Receiver:
    """The orchestrator's side of a callback: records what the queue worker POSTs."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                receiver.arrived.set()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def gateway() -> Iterator[OpenFaaSGateway]:
    running = OpenFaaSGateway(TEMPLATE, NAMES, user="admin", password="pw").start()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    try:
        yield running
    finally:
        running.close()


def invoker_for(gateway: OpenFaaSGateway, **options: Any) -> OpenFaaSInvoker:
    return OpenFaaSInvoker(gateway.url, LOGICAL, **{"user": "admin", "password": "pw", **options})


# ---- sync ------------------------------------------------------------------------------------------------


def test_sync_invoke_runs_the_function_and_sends_basic_auth(gateway: OpenFaaSGateway) -> None:
    invoker = invoker_for(gateway)
    assert isinstance(invoker, Invoker)
    result = invoker.invoke_sync("WordsFunction", event("words", {"text": "a bb"}))
    assert result.ok and result.payload == {"words": ["a", "bb"], "greeting": "hello"}
    call = gateway.calls[-1]
    assert call.path == "/function/words"
    assert call.headers["authorization"] == "Basic YWRtaW46cHc="  # admin:pw
    assert call.headers["content-type"] == "application/json"
    assert json.loads(call.body)["task"]["stage"] == "words"
    assert result.request_id  # the gateway's X-Call-Id


def test_a_function_error_is_a_result_with_lambda_s_error_payload(gateway: OpenFaaSGateway) -> None:
    payload = event("shout", {"text": "x", "fail": {"x": 1}}, item="x", index=0, config={"suffix": "!"})
    result = invoker_for(gateway).invoke_sync("ShoutFunction", payload)
    assert result.function_error == "Unhandled"
    assert result.payload["errorType"] == "ValueError" and "shout refused" in result.payload["errorMessage"]
    _, failed = completions.from_result(completions.Task(REQUEST_ID, "shout", 0, 1), result.payload, "Unhandled")
    assert isinstance(failed, TaskFailed) and failed.error_type == "ValueError" and not failed.terminal


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_429_is_a_throttle_a_5xx_retryable(gateway: OpenFaaSGateway, receiver: Receiver, mode: str) -> None:
    invoker = invoker_for(gateway, callback=receiver.url)
    call = invoker.invoke_sync if mode == "sync" else invoker.invoke_async
    payload = event("words", {"text": "a"}, mode=mode)
    gateway.throttle_first.add("words")
    with pytest.raises(ThrottledInvocationError, match="429"):
        call("WordsFunction", payload)
    gateway.errors_first["words"] = 1
    with pytest.raises(RetryableInvocationError, match="500") as raised:
        call("WordsFunction", payload)
    assert not isinstance(raised.value, ThrottledInvocationError) and not invocation_is_terminal(raised.value)
    call("WordsFunction", payload)  # then it runs
    gateway.wait_callbacks()


def test_4xx_are_terminal(gateway: OpenFaaSGateway) -> None:
    payload = event("words", {"text": "a"})
    with pytest.raises(TerminalInvocationError, match="401") as raised:
        invoker_for(gateway, password="wrong").invoke_sync("WordsFunction", payload)
    assert invocation_is_terminal(raised.value)
    gone = OpenFaaSInvoker(gateway.url, {"WordsFunction": "no-such"}, user="admin", password="pw")
    with pytest.raises(FunctionNotFoundError, match="404"):
        gone.invoke_sync("WordsFunction", payload)
    calls = len(gateway.calls)
    with pytest.raises(FunctionNotFoundError, match="FAVE_OPENFAAS_ShoutFunction"):
        gone.invoke_sync("ShoutFunction", payload)
    assert len(gateway.calls) == calls  # nothing sent


def test_payload_limits_are_checked_before_sending(gateway: OpenFaaSGateway, receiver: Receiver) -> None:
    invoker = invoker_for(gateway, callback=receiver.url)
    calls = len(gateway.calls)
    big = event("words", {"text": "x" * MAX_SYNC_PAYLOAD_BYTES})
    with pytest.raises(ValidationError, match="over Lambda's limit"):
        invoker.invoke_sync("WordsFunction", big)
    over_async = event("words", {"text": "x" * MAX_ASYNC_PAYLOAD_BYTES}, mode="async")
    with pytest.raises(ValidationError, match=f"limit of {MAX_ASYNC_PAYLOAD_BYTES}"):
        invoker.invoke_async("WordsFunction", over_async)
    with pytest.raises(ValidationError, match="not JSON"):
        invoker.invoke_sync("WordsFunction", {"x": float("nan")})
    assert len(gateway.calls) == calls


def test_a_gateway_that_is_down_is_retryable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    invoker = OpenFaaSInvoker(f"http://127.0.0.1:{port}", LOGICAL)
    with pytest.raises(RetryableInvocationError, match="connection to the OpenFaaS gateway failed"):
        invoker.invoke_sync("WordsFunction", event("words", {"text": "a"}))


# ---- async and the callback ------------------------------------------------------------------------------


def test_async_sends_the_callback_url_and_call_id_and_the_callback_carries_the_result(
    gateway: OpenFaaSGateway, receiver: Receiver
) -> None:
    invoker = invoker_for(gateway, callback=receiver.url + "/")
    payload = event("shout", {"text": "hi"}, item="hi", index=3, attempt=2, mode="async", config={"suffix": "!"})
    returned = invoker.invoke_async("ShoutFunction", payload)
    expected_id = call_id(REQUEST_ID, "shout", 3, 2)
    assert returned == expected_id and invoker.calls[expected_id] == f"{REQUEST_ID}/shout/3/2"
    sent = gateway.calls[-1]
    assert sent.path == "/async-function/shout"
    assert sent.headers["x-callback-url"] == callback_url(receiver.url, REQUEST_ID, "shout", 3, 2)
    assert sent.headers["x-callback-url"] == f"{receiver.url}/callbacks/{REQUEST_ID}?stage=shout&attempt=2&item=3"
    assert sent.headers["x-call-id"] == expected_id
    assert receiver.arrived.wait(30)
    path, headers, body = receiver.received[0]
    assert path == f"/callbacks/{REQUEST_ID}?stage=shout&attempt=2&item=3"
    assert headers["x-function-status"] == "200" and headers["x-call-id"] == expected_id
    assert json.loads(body)["word"] == "HI!"


def test_async_without_a_callback_url_is_a_configuration_error(gateway: OpenFaaSGateway) -> None:
    with pytest.raises(TerminalInvocationError, match="FAVE_CALLBACK_URL"):
        invoker_for(gateway).invoke_async("WordsFunction", event("words", {"text": "a"}, mode="async"))


def test_callbacks_become_the_destination_records_lambda_would_send() -> None:
    from fave.app.callbacks import destination_record

    query = {"stage": "shout", "item": "3", "attempt": "2"}
    good = {"x-function-status": "200", "x-call-id": call_id(REQUEST_ID, "shout", 3, 2)}
    request_id, done = completions.from_envelope(destination_record(REQUEST_ID, query, good, b'{"word": "HI!"}'))
    assert request_id == REQUEST_ID and done == TaskSucceeded("shout", 3, 2, {"word": "HI!"})
    error = json.dumps({"errorType": "ValueError", "errorMessage": "no", "stackTrace": ["  File x\n"]}).encode()
    _, failed = completions.from_envelope(
        destination_record(REQUEST_ID, query, {**good, "x-function-status": "500"}, error)
    )
    assert isinstance(failed, TaskFailed) and (failed.error_type, failed.message) == ("ValueError", "no")
    assert failed.traceback and failed.traceback.startswith("Traceback")
    # The watchdog's own failure (not the function's error payload): still a failed attempt, retried.
    _, timed_out = completions.from_envelope(
        destination_record(REQUEST_ID, query, {"x-function-status": "502"}, b"upstream timed out")
    )
    assert isinstance(timed_out, TaskFailed) and timed_out.error_type == "OpenFaaS.502" and not timed_out.terminal
    assert "upstream timed out" in timed_out.message
    with pytest.raises(ValidationError, match="X-Function-Status"):
        destination_record(REQUEST_ID, query, {}, b"{}")
    with pytest.raises(ValidationError, match="X-Call-Id"):
        destination_record(REQUEST_ID, {**query, "attempt": "1"}, good, b"{}")
    for bad, field in [({"attempt": "1"}, "stage"), ({"stage": "s", "attempt": "0"}, "attempt"),
                       ({"stage": "s", "attempt": "1", "item": "-1"}, "item")]:  # fmt: skip
        with pytest.raises(ValidationError, match=f"^{field}:"):
            destination_record(REQUEST_ID, bad, {"x-function-status": "200"}, b"{}")


# ---- configuration ---------------------------------------------------------------------------------------


def test_from_env_reads_the_stack_the_secrets_and_overrides(tmp_path: Path) -> None:
    stack = tmp_path / "stack.yml"
    done = e2e.fave("export", "--format", "openfaas", "--pipeline", str(DEMO), "-o", str(stack))
    assert done.code == 0, done.describe()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "basic-auth-user").write_text("admin\n")
    (secrets / "basic-auth-password").write_text("from-file\n")
    env = {
        "GATEWAY_URL": "http://gateway.openfaas:8080",
        "FAVE_OPENFAAS_STACK": str(stack),
        "FAVE_OPENFAAS_JoinFunction": "join-v2",
        "FAVE_CALLBACK_URL": "http://fave:3000",
    }
    invoker = OpenFaaSInvoker.from_env(env, secrets_dir=secrets)
    assert invoker.function_names == {
        "WordsFunction": "words",
        "ShoutFunction": "shout",
        "MeasureFunction": "measure",
        "JoinFunction": "join-v2",
    }
    assert invoker.functions() == frozenset(NAMES.values()) and invoker.callback == "http://fave:3000"
    assert invoker.code_digest("WordsFunction") is None and invoker.memory_sizes() == {}
    assert invoker._auth == "Basic YWRtaW46ZnJvbS1maWxl"  # admin:from-file
    # The variables win over the secret files.
    env_auth = OpenFaaSInvoker.from_env({**env, "OPENFAAS_USER": "u", "OPENFAAS_PASSWORD": "p"}, secrets_dir=secrets)
    assert env_auth._auth == "Basic dTpw"
    with pytest.raises(ValidationError, match="GATEWAY_URL"):
        OpenFaaSInvoker.from_env({}, secrets_dir=secrets)
    with pytest.raises(ValidationError, match="GATEWAY_URL"):
        OpenFaaSInvoker.from_env({"GATEWAY_URL": "gateway:8080"}, secrets_dir=secrets)


def test_fave_invoker_picks_the_invoker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fave.app.context import AppContext, ConfigurationError
    from fave.app.settings import Settings

    monkeypatch.setenv("FAVE_INVOKER", "openfaas")
    monkeypatch.setenv("GATEWAY_URL", "http://127.0.0.1:8080")
    monkeypatch.setenv("FAVE_OPENFAAS_WordsFunction", "words")
    assert isinstance(AppContext(Settings("", DEMO)).invoker, OpenFaaSInvoker)
    monkeypatch.delenv("GATEWAY_URL")
    with pytest.raises(ConfigurationError, match="GATEWAY_URL"):
        _ = AppContext(Settings("", DEMO)).invoker
    monkeypatch.setenv("FAVE_INVOKER", "knative")
    with pytest.raises(ConfigurationError, match="FAVE_INVOKER"):
        _ = AppContext(Settings("", DEMO)).invoker


# ---- the export --------------------------------------------------------------------------------------------


def test_function_names_are_dns_labels() -> None:
    assert function_name("WordsFunction") == "words"
    assert function_name("MakeClipsFunction") == "make-clips"
    assert function_name("ASRFunction") == "asr"
    assert function_name("Function") == "function"


def test_the_stack_file_follows_faas_cli_s_schema(tmp_path: Path) -> None:
    stack = tmp_path / "stack.yml"
    done = e2e.fave("export", "--format", "openfaas", "--pipeline", str(DEMO), "-o", str(stack), "--json")
    assert done.code == 0, done.describe()
    doc = yaml.safe_load(stack.read_text())
    assert doc["version"] == "1.0" and doc["provider"] == {"name": "openfaas", "gateway": "http://127.0.0.1:8080"}
    assert set(doc["functions"]) == set(NAMES)
    words = doc["functions"]["words"]
    assert words["lang"] == "python3-http" and words["handler"] == "./words" and words["image"] == "words:latest"
    assert words["environment"]["FAVE_LOGICAL_ID"] == "WordsFunction"
    assert words["environment"]["FAVE_HANDLER"] == "app.handler"
    assert words["environment"]["DEMO_GREETING"] == "hello"  # the template's Globals
    # The function's own Timeout (WordsFunction: 45; the others the Globals' 10) and MemorySize.
    assert words["environment"]["exec_timeout"] == "45s" and words["limits"] == {"memory": "128Mi"}
    assert doc["functions"]["shout"]["environment"]["read_timeout"] == "10s"
    assert stack_names(stack) == {lid: name for name, lid in NAMES.items()}
    for name in NAMES:
        assert (tmp_path / name / "handler.py").is_file() and (tmp_path / name / "app.py").is_file()
        assert "pydantic" in (tmp_path / name / "requirements.txt").read_text()
    report = done.json
    assert report["functions"] == LOGICAL and {r["feature"] for r in report["mapping"]} >= {"sync stage", "async stage"}
    # Without -o: the stack on stdout, the table on stderr.
    printed = e2e.fave("export", "--format", "openfaas", "--pipeline", str(DEMO))
    assert printed.code == 0 and yaml.safe_load(printed.stdout) == doc
    assert "async stage" in printed.stderr
    refused = e2e.fave("export", "--format", "openfaas", "--pipeline", str(DEMO), "--sam")
    assert refused.code == 2 and "--format asl" in refused.stderr and "Traceback" not in refused.stderr


_RUN_SHIM = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
os.environ["FAVE_HANDLER"] = "app.handler"
import handler
class Event:
    body = sys.argv[2].encode()
    headers = {"X-Call-Id": "c1"}
print(json.dumps(handler.handle(Event(), None)))
"""


@pytest.mark.parametrize(
    ("function", "payload", "status", "check"),
    [
        ("words", event("words", {"text": "a bb"}), 200, lambda b: b == {"words": ["a", "bb"], "greeting": ""}),
        (
            "shout",
            event("shout", {"fail": {"x": 1}}, item="x", index=0, config={"suffix": "!"}),
            500,
            lambda b: b["errorType"] == "ValueError" and "shout refused" in b["errorMessage"] and b["stackTrace"],
        ),
    ],
)
def test_the_exported_python3_http_handler_runs_the_stage(
    tmp_path: Path, function: str, payload: dict[str, Any], status: int, check: Any
) -> None:
    """The shim in its folder, in a fresh interpreter (as the template's container would import it): the stage's
    result with 200, or Lambda's error payload with 500 (what the invoker reads as a function error)."""
    stack = tmp_path / "stack.yml"
    assert e2e.fave("export", "--format", "openfaas", "--pipeline", str(DEMO), "-o", str(stack)).code == 0
    env = {k: v for k, v in e2e.child_env().items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", _RUN_SHIM, str(tmp_path / function), json.dumps(payload)],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["statusCode"] == status and answer["headers"]["Content-Type"] == "application/json"
    assert check(json.loads(answer["body"]))


def test_docs_export_md_lists_every_openfaas_row() -> None:
    """docs/export.md's OpenFaaS section has a row for every feature the export reports, named alike."""
    from fave.export.openfaas import openfaas_rows
    from fave.local.orchestrator import load_local_pipeline

    doc = (ROOT / "docs" / "export.md").read_text()
    section = doc[doc.index("## OpenFaaS: `FAVE_INVOKER=openfaas`") :]
    documented = {line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ")}
    for row in openfaas_rows(load_local_pipeline(DEMO)):
        assert row.feature in documented, row.feature


def test_a_callback_secret_signs_the_call_ids(
    gateway: OpenFaaSGateway, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fave.app.callbacks import destination_record

    signed = call_id(REQUEST_ID, "shout", 0, 1, "k")
    assert signed.startswith("fave-") and signed not in (
        call_id(REQUEST_ID, "shout", 0, 1),
        call_id(REQUEST_ID, "shout", 0, 1, "j"),
    )
    invoker = invoker_for(gateway, callback=receiver.url, callback_secret="k")
    payload = event("shout", {"text": "hi"}, item="hi", index=0, mode="async", config={"suffix": "!"})
    assert invoker.invoke_async("ShoutFunction", payload) == signed
    assert gateway.calls[-1].headers["x-call-id"] == signed
    assert receiver.arrived.wait(30) and receiver.received[0][1]["x-call-id"] == signed
    monkeypatch.setenv("FAVE_CALLBACK_SECRET", "k")
    query = {"stage": "shout", "item": "0", "attempt": "1"}
    _, done = completions.from_envelope(
        destination_record(REQUEST_ID, query, {"x-function-status": "200", "x-call-id": signed}, b"{}")
    )
    assert isinstance(done, TaskSucceeded)
    for refused in (
        {"x-function-status": "200"},
        {"x-function-status": "200", "x-call-id": call_id(REQUEST_ID, "shout", 0, 1)},
    ):
        with pytest.raises(ValidationError, match="X-Call-Id"):
            destination_record(REQUEST_ID, query, refused, b"{}")
    assert OpenFaaSInvoker.from_env({"GATEWAY_URL": gateway.url, "FAVE_CALLBACK_SECRET": "k"}).callback_secret == "k"
