"""``FAVE_INVOKER=openfaas`` end to end (issue 15, requirement 3): ``fave serve`` runs the demo pipeline's
orchestrator with the OpenFaaS invoker against a local gateway that speaks OpenFaaS's protocol
(support/openfaas_gateway.py: the REAL demo stage functions on the local runtime), whose queue worker calls back
``fave serve``'s ``POST /callbacks/{request_id}``. The request's final.json must equal ``fave run``'s (the local
runtime, no OpenFaaS) for the same input, through a 429 (re-queued, no attempt spent), gateway 500s (retried),
a function error in an asynchronous stage (retried by the pipeline's policy), every callback delivered twice
(counted once), and late and unknown callbacks (harmless).

The function names come from ``fave export --format openfaas``'s stack.yml (``FAVE_OPENFAAS_STACK``), which the
gateway reads too: the export is what maps logical ids to names on both sides.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fave.invoke.openfaas import LOGICAL_ID_ENV, call_id
from support import e2e
from support.openfaas_gateway import OpenFaaSGateway
from support.served import Served

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tests" / "fixtures" / "demo" / "pipeline.yaml"
TEMPLATE = DEMO.with_name("template.yaml")
USER, PASSWORD = "admin", "s3cret"
SECRET = "callback-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fave_run(request: dict[str, Any], store: Path) -> tuple[dict[str, Any], Any]:
    """``fave run`` on the local runtime: its state.json and final.json."""
    e2e.fave("run", "--pipeline", str(DEMO), "--input", json.dumps(request), "--store", str(store), "--json")
    (state_file,) = store.glob("requests/*/metadata/state.json")
    final = state_file.with_name("final.json")
    return json.loads(state_file.read_text()), json.loads(final.read_text()) if final.exists() else None


class Setup:
    def __init__(self, served: Served, gateway: OpenFaaSGateway, stack: Path) -> None:
        self.served, self.gateway, self.stack = served, gateway, stack

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("openfaas")
    stack = base / "bundle" / "stack.yml"
    stack.parent.mkdir()
    done = e2e.fave("export", "--format", "openfaas", "--pipeline", str(DEMO), "-o", str(stack))
    assert done.code == 0, done.describe()
    functions = yaml.safe_load(stack.read_text())["functions"]
    names = {name: spec["environment"][LOGICAL_ID_ENV] for name, spec in functions.items()}
    gateway = OpenFaaSGateway(
        TEMPLATE,
        names,
        user=USER,
        password=PASSWORD,
        callback_delay_s=0.2,
        duplicate_callbacks=2,
        throttle_first={"shout"},
        # A gateway 500 on an asynchronous stage and on the synchronous single-task stage: both retried (the
        # single task's retry survives the reload of every step, as on Lambda).
        errors_first={"measure": 1, "words": 1},
    ).start()
    port = _free_port()
    env = e2e.child_env(
        {
            "FAVE_INVOKER": "openfaas",
            "GATEWAY_URL": gateway.url,
            "OPENFAAS_USER": USER,
            "OPENFAAS_PASSWORD": PASSWORD,
            "FAVE_OPENFAAS_STACK": str(stack),
            "FAVE_CALLBACK_URL": f"http://127.0.0.1:{port}",
            "FAVE_CALLBACK_SECRET": SECRET,
        }
    )
    args = (
        "serve",
        "--pipeline",
        str(DEMO),
        "--store",
        str(base / "store"),
        "--port",
        str(port),
        "--s3-port",
        "0",
        "--tick",
        "1",
    )
    served = Served(e2e.start_fave(*args, env=env, log_dir=base / "logs"), base / "logs", base / "store")
    # The functions reach the store as fave serve's functions do: through its S3 endpoint.
    gateway.set_runtime_env(
        {
            "AWS_ENDPOINT_URL_S3": served.s3,
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "y",
            "AWS_REGION": "us-east-1",
        }
    )
    try:
        yield Setup(served, gateway, stack)
    finally:
        if served.process.poll() is None:
            served.stop()
        gateway.close()


def _state(served: Served, request_id: str) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((served.store / "requests" / request_id / "metadata" / "state.json").read_text())
    return state


@pytest.mark.parametrize(
    "request_body",
    [
        pytest.param({"text": "the quick brown fox"}, id="demo"),
        # shout raises on bb's first attempt: the callback carries X-Function-Status 500 and Lambda's error payload.
        pytest.param({"text": "a bb ccc", "fail": {"bb": 1}}, id="function-error-retried"),
    ],
)
def test_a_request_on_openfaas_ends_with_fave_run_s_final_output(
    setup: Setup, request_body: dict[str, Any], tmp_path: Path
) -> None:
    _, expected = fave_run(request_body, tmp_path / "run")
    assert expected is not None
    code, accepted = setup.served.call("POST", "/requests", request_body)
    assert code == 202, accepted
    doc = setup.served.wait(accepted["request_id"], timeout=60)
    assert doc["status"] == "COMPLETED", (doc, setup.served.stderr())
    assert doc["final"] == expected
    gateway = setup.gateway
    # The scripted refusals happened (on the first request): shout's 429, measure's and words' 500.
    assert not gateway.throttle_first and gateway.errors_first == {"measure": 0, "words": 0}
    paths = [call.path for call in gateway.calls]
    # Sync stages through /function, async ones through /async-function, every call with the basic-auth header.
    assert any(p == "/function/words" for p in paths) and any(p == "/async-function/shout" for p in paths)
    assert all(call.headers.get("authorization", "").startswith("Basic ") for call in gateway.calls)
    for call in gateway.calls:
        if call.path.startswith("/async-function/"):
            assert call.headers["x-callback-url"].startswith(f"{setup.served.api}/callbacks/")
            assert call.headers["x-call-id"].startswith("fave-")
            # Signed with FAVE_CALLBACK_SECRET: the call id the callback route expects for the task in the URL.
            query = dict(urllib.parse.parse_qsl(call.headers["x-callback-url"].split("?", 1)[1]))
            rid = call.headers["x-callback-url"].split("/callbacks/", 1)[1].split("?", 1)[0]
            item = int(query["item"]) if "item" in query else None
            assert call.headers["x-call-id"] == call_id(rid, query["stage"], item, int(query["attempt"]), SECRET)


def test_duplicated_callbacks_are_counted_once_and_throttles_spend_no_attempt(setup: Setup) -> None:
    code, accepted = setup.served.call("POST", "/requests", {"text": "one two three"})
    assert code == 202
    request_id = accepted["request_id"]
    doc = setup.served.wait(request_id, timeout=60)
    assert doc["status"] == "COMPLETED", doc
    setup.gateway.wait_callbacks()
    mine = [c for c in setup.gateway.callbacks if f"/callbacks/{request_id}?" in c[0]]
    # Each async task (3 shout + 3 measure) was called back twice and every delivery was answered 200...
    assert len(mine) == 2 * 6 and {answer for _, _, answer in mine} == {200}
    # ...yet each counted once: one attempt per task, each stage's tasks succeeded once.
    state = _state(setup.served, request_id)
    assert doc["final"]["attempts"] == [1, 1, 1]
    assert state["ledger"]["invocations"] == 1 + 3 + 3 + 1


def test_late_unknown_and_malformed_callbacks_are_harmless(setup: Setup) -> None:
    _, accepted = setup.served.call("POST", "/requests", {"text": "late"})
    request_id = accepted["request_id"]
    doc = setup.served.wait(request_id, timeout=60)
    assert doc["status"] == "COMPLETED"
    setup.gateway.wait_callbacks()
    before = (setup.served.store / "requests" / request_id / "metadata" / "state.json").read_bytes()
    url = next(c[0] for c in setup.gateway.callbacks if f"/callbacks/{request_id}?" in c[0])
    shout_call = next(c for c in setup.gateway.calls if c.headers.get("x-callback-url") == url)
    headers = {"X-Function-Status": "200", "X-Call-Id": shout_call.headers["x-call-id"]}
    # Late: the request has ended; the completion is one the engine has already counted.
    assert setup.post(url, json.dumps({"word": "LATE!", "pid": 1, "attempt": 1}).encode(), headers) == 200
    # A failure for the same (succeeded) task changes nothing either.
    error = {"errorType": "ValueError", "errorMessage": "too late"}
    assert setup.post(url, json.dumps(error).encode(), {**headers, "X-Function-Status": "500"}) == 200
    after_doc = setup.served.call("GET", f"/requests/{request_id}")[1]
    assert after_doc["status"] == "COMPLETED" and after_doc["final"] == doc["final"]
    after = json.loads((setup.served.store / "requests" / request_id / "metadata" / "state.json").read_text())
    was = json.loads(before)
    # The same tasks, counts and invocations (reading the state to apply a callback costs S3 GETs, counted).
    assert after["status"] == was["status"] and after["stages"] == was["stages"]
    assert after["ledger"]["invocations"] == was["ledger"]["invocations"]
    # Unknown request: 404, nothing created.
    unknown = "01M8D4S70VJ0XHPQ8DFCEG1K38"
    unknown_url = f"{setup.served.api}/callbacks/{unknown}?stage=shout&item=0&attempt=1"
    signed = call_id(unknown, "shout", 0, 1, SECRET)
    assert setup.post(unknown_url, b"{}", {"X-Function-Status": "200", "X-Call-Id": signed}) == 404
    assert not (setup.served.store / "requests" / unknown).exists()
    # Not a callback of this task: its call id names another task, or the status is missing -> 400 naming it.
    other = url.replace("attempt=1", "attempt=2")
    assert setup.post(other, b"{}", headers) == 400
    assert setup.post(url, b"{}", {"X-Call-Id": headers["X-Call-Id"]}) == 400
    # With FAVE_CALLBACK_SECRET, a callback without the task's signed call id is refused: the unsigned one, none.
    assert setup.post(url, b"{}", {"X-Function-Status": "200", "X-Call-Id": call_id(request_id, "shout", 0, 1)}) == 400
    assert setup.post(url, b"{}", {"X-Function-Status": "200"}) == 400
