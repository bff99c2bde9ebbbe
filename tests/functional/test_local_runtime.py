"""LocalRuntime with real handlers in real worker processes (tests/fixtures/runtime/template.yaml).

No mocks and no fixed sleeps: results arrive through invoke_sync or destination handlers feeding queues.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fave.invoke import Invoker, InvokeResult
from fave.invoke.base import (
    MAX_ASYNC_PAYLOAD_BYTES,
    MAX_SYNC_PAYLOAD_BYTES,
    FunctionNotFoundError,
    RetryableInvocationError,
    TerminalInvocationError,
    ThrottledInvocationError,
)
from fave.local.runtime import LocalRuntime
from fave.local.template import Template
from fave_shared.errors import NotFoundError, RetryableError, TerminalError, ValidationError
from fave_shared.schemas import DestinationEnvelope, LambdaError
from support.templates import RUNTIME_TEMPLATE as FIXTURE

BASIC = FIXTURE.parent / "functions" / "basic"
WAIT_S = 15  # generous upper bound for anything to arrive; tests normally finish far sooner

MakeRuntime = Callable[..., LocalRuntime]


@pytest.fixture
def make_runtime(
    runtime_template: Template, envelopes: queue.Queue[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> Iterator[MakeRuntime]:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    runtimes: list[LocalRuntime] = []

    def make(**kwargs: Any) -> LocalRuntime:
        kwargs.setdefault("destination_handlers", {"FanIn": envelopes.put, "DoneQueue": envelopes.put})
        kwargs.setdefault("env_overrides", {"BUCKET": "local-bucket", "FROM_OVERRIDE": "yes"})
        kwargs.setdefault("async_retry_delays_s", (0.05, 0.1))
        runtime = LocalRuntime(kwargs.pop("template", runtime_template), **kwargs)
        runtimes.append(runtime)
        return runtime

    yield make
    for runtime in runtimes:
        runtime.close()


def error_of(result: InvokeResult) -> dict[str, Any]:
    assert result.function_error == "Unhandled", result
    assert isinstance(result.payload, dict)
    LambdaError.model_validate(result.payload)
    return result.payload


def next_envelope(envelopes: queue.Queue[dict[str, Any]]) -> dict[str, Any]:
    envelope = envelopes.get(timeout=WAIT_S)
    # The runtime builds the dict by hand for speed: it must be exactly the schema's own dump.
    assert DestinationEnvelope.model_validate(envelope).model_dump(mode="json") == envelope
    return envelope


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


# -- synchronous invocations ---------------------------------------------------------------------------------


def test_sync_invocation_sees_lambda_environment(make_runtime: MakeRuntime) -> None:
    runtime = make_runtime()
    assert isinstance(runtime, Invoker)
    result = runtime.invoke_sync("Echo", {"hello": ["world", 1]})
    assert result.ok and result.function_error is None
    body = result.payload
    assert body["event"] == {"hello": ["world", 1]}
    assert body["pid"] != os.getpid()
    assert body["cwd"] == str(BASIC)
    assert body["sys_path_head"] == [
        str(BASIC),
        str(BASIC.parents[1] / "layer"),
        str(BASIC.parents[1] / "layer" / "python"),
    ]
    assert body["layer"] == "from-layer"
    assert body["env"] == {
        "GREETING": "hello",
        "SHARED": "from-function",
        "BUCKET": "local-bucket",  # unresolvable in the template, supplied by env_overrides
        "PLACE": "us-east-1/hello",
        "FLAG": "true",
        "FROM_OVERRIDE": "yes",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_NAME": "Echo",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_TIMEOUT": "5",
        "LAMBDA_TASK_ROOT": str(BASIC),
    }
    context = body["context"]
    assert context["aws_request_id"] == result.request_id != ""
    assert context["function_name"] == "Echo"
    assert context["function_version"] == "$LATEST"
    assert context["invoked_function_arn"] == "arn:aws:lambda:us-east-1:000000000000:function:Echo"
    assert context["memory_limit_in_mb"] == "256"
    assert context["log_group_name"] == "/aws/lambda/Echo"
    assert "[$LATEST]" in context["log_stream_name"]
    assert 0 < context["remaining_ms"] <= 5000


def test_handler_errors_have_lambda_payloads(make_runtime: MakeRuntime) -> None:
    runtime = make_runtime()
    result = runtime.invoke_sync("Boom", {"msg": "kaput"})
    error = error_of(result)
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "boom: kaput"
    assert error["requestId"] == result.request_id
    # The user's frames only, formatted like traceback.format_list (the runtime's own frames are cut).
    assert len(error["stackTrace"]) == 2
    assert error["stackTrace"][0].startswith(f'  File "{BASIC / "boom.py"}", line 9, in handler\n')
    assert "in _explode" in error["stackTrace"][1]

    marshal = error_of(runtime.invoke_sync("Echo", {"bad_return": True}))
    assert marshal["errorType"] == "Runtime.MarshalError"
    assert marshal["errorMessage"] == "Unable to marshal response: Object of type set is not JSON serializable"

    missing = error_of(runtime.invoke_sync("Missing", {}))
    assert missing["errorType"] == "Runtime.ImportModuleError"
    assert "No module named 'no_such_module'" in missing["errorMessage"]
    stats = runtime.stats()
    assert (stats["Boom"].invocations, stats["Boom"].errors) == (1, 1)
    assert stats["Echo"].cold_starts == 1  # an error inside the handler keeps the environment warm


def test_timeout_kills_the_environment(make_runtime: MakeRuntime) -> None:
    runtime = make_runtime()
    first_pid = runtime.invoke_sync("Sleepy", {"s": 0}).payload["pid"]
    started = time.monotonic()
    result = runtime.invoke_sync("Sleepy", {"s": 30})
    elapsed = time.monotonic() - started
    assert result.payload == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {result.request_id} Error: Task timed out after 1.00 seconds",
    }
    assert result.function_error == "Unhandled"
    assert 0.9 < elapsed < 5
    assert not alive(first_pid)
    assert runtime.invoke_sync("Sleepy", {"s": 0}).payload["pid"] != first_pid  # a fresh cold environment
    stats = runtime.stats()["Sleepy"]
    assert (stats.invocations, stats.timeouts, stats.errors, stats.cold_starts) == (3, 1, 1, 2)


def test_crashing_runtime_is_replaced(make_runtime: MakeRuntime) -> None:
    runtime = make_runtime()
    exited = runtime.invoke_sync("Crash", {"code": 3})
    assert error_of(exited) == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {exited.request_id} Error: Runtime exited with error: exit status 3",
    }
    killed = runtime.invoke_sync("Crash", {"signal": True})
    assert error_of(killed)["errorMessage"].endswith("Runtime exited with error: signal: killed")
    assert runtime.stats()["Crash"].cold_starts == 2
    assert runtime.environment_pids()["Crash"] == []


def test_large_payloads_cross_the_pipe_intact(make_runtime: MakeRuntime) -> None:
    runtime = make_runtime()
    big = {"blob": "x" * 3_000_000, "n": list(range(1000))}  # many pipe buffers each way
    assert runtime.invoke_sync("Echo", big).payload["event"] == big
    too_big = error_of(runtime.invoke_sync("Echo", {"reply_bytes": MAX_SYNC_PAYLOAD_BYTES}))
    assert too_big["errorType"] == "Function.ResponseSizeTooLarge"


def test_warm_environment_is_reused(make_runtime: MakeRuntime) -> None:
    runtime = make_runtime()
    results = [runtime.invoke_sync("Counter", {}).payload for _ in range(5)]
    assert {r["pid"] for r in results} == {results[0]["pid"]}
    assert [r["calls"] for r in results] == [1, 2, 3, 4, 5]
    assert {r["imports"] for r in results} == {1}  # the module was imported once
    stats = runtime.stats()["Counter"]
    assert (stats.invocations, stats.cold_starts) == (5, 1)


def test_invocations_run_in_parallel_up_to_the_limit(make_runtime: MakeRuntime) -> None:
    runtime = make_runtime(max_environments=4)
    with ThreadPoolExecutor(8) as pool:
        # Warm four environments first, so the timed round measures execution, not interpreter start-up.
        warm = list(pool.map(lambda _: runtime.invoke_sync("Sleepy", {"s": 0.3}), range(4)))
        assert len({r.payload["pid"] for r in warm}) == 4
        started = time.monotonic()
        results = list(pool.map(lambda _: runtime.invoke_sync("Sleepy", {"s": 0.5}), range(4)))
        elapsed = time.monotonic() - started
        assert all(r.ok for r in results)
        assert elapsed < 1.5, elapsed  # one after another would take 2 s
        assert runtime.stats()["Sleepy"].cold_starts == 4

        # ReservedConcurrentExecutions: 1 wins over max_environments: one environment, and a synchronous
        # invoke while another is in flight is throttled as Lambda throttles it (tests/functional/
        # test_function_caps.py); those that ran, ran one after another in that one environment.
        def counter(_: int) -> dict[str, Any] | None:
            try:
                return runtime.invoke_sync("Counter", {}).payload
            except ThrottledInvocationError:
                return None

        ran = [r for r in pool.map(counter, range(6)) if r is not None]
    assert len({r["pid"] for r in ran}) == 1
    assert sorted(r["calls"] for r in ran) == list(range(1, len(ran) + 1))


# -- asynchronous invocations and destinations ---------------------------------------------------------------


def test_async_retries_then_on_failure(
    make_runtime: MakeRuntime, envelopes: queue.Queue[dict[str, Any]], tmp_path: Path
) -> None:
    runtime = make_runtime()
    event = {"dir": str(tmp_path), "fail_times": 10}
    request_id = runtime.invoke_async("Flaky", event)
    envelope = next_envelope(envelopes)
    assert envelope["requestContext"] == {
        "requestId": request_id,
        "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:Flaky:$LATEST",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 3,  # 1 + MaximumRetryAttempts (2)
    }
    assert envelope["requestPayload"] == event
    assert envelope["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert envelope["responsePayload"]["errorType"] == "RuntimeError"
    assert envelope["responsePayload"]["errorMessage"] == "attempt 3 fails"
    assert envelope["timestamp"].endswith("Z")
    assert not DestinationEnvelope.model_validate(envelope).succeeded
    assert (tmp_path / "attempts").read_text() == "3"
    stats = runtime.stats()["Flaky"]
    assert (stats.invocations, stats.errors, stats.async_retries) == (3, 3, 2)

    runtime.invoke_async("Boom", {"msg": "async"})
    # Boom has MaximumRetryAttempts: 1
    assert next_envelope(envelopes)["requestContext"]["approximateInvokeCount"] == 2


def test_async_success_after_a_retry(
    make_runtime: MakeRuntime, envelopes: queue.Queue[dict[str, Any]], tmp_path: Path
) -> None:
    runtime = make_runtime()
    request_id = runtime.invoke_async("Flaky", {"dir": str(tmp_path), "fail_times": 1})
    envelope = next_envelope(envelopes)
    assert envelope["requestContext"]["requestId"] == request_id
    assert envelope["requestContext"]["condition"] == "Success"
    assert envelope["requestContext"]["approximateInvokeCount"] == 2
    assert envelope["responseContext"]["functionError"] is None
    assert envelope["responsePayload"] == {"attempts": 2}
    assert DestinationEnvelope.model_validate(envelope).succeeded
    assert runtime.stats()["Flaky"].async_retries == 1


def test_event_age_exceeded(
    make_runtime: MakeRuntime, runtime_template: Template, envelopes: queue.Queue[dict[str, Any]], tmp_path: Path
) -> None:
    flaky = runtime_template.functions["Flaky"]
    aged = dataclasses.replace(
        flaky, event_invoke_config=dataclasses.replace(flaky.event_invoke_config, max_event_age_s=1)
    )
    runtime = make_runtime(
        template=dataclasses.replace(runtime_template, functions={"Flaky": aged}), async_retry_delays_s=(5.0,)
    )
    runtime.invoke_async("Flaky", {"dir": str(tmp_path), "fail_times": 10})
    envelope = next_envelope(envelopes)
    # The retry would start after the event's maximum age: Lambda discards it instead of waiting.
    assert envelope["requestContext"]["condition"] == "EventAgeExceeded"
    assert envelope["requestContext"]["approximateInvokeCount"] == 1
    assert envelope["responsePayload"]["errorMessage"] == "attempt 1 fails"


def test_unregistered_destination_function_is_invoked_by_the_runtime(
    make_runtime: MakeRuntime, envelopes: queue.Queue[dict[str, Any]], tmp_path: Path
) -> None:
    # No handler for FanIn: the runtime invokes the FanIn *function* with Flaky's envelope, and FanIn's own
    # OnSuccess (DoneQueue, a registered handler) shows what it did.
    runtime = make_runtime(destination_handlers={"DoneQueue": envelopes.put})
    request_id = runtime.invoke_async("Flaky", {"dir": str(tmp_path), "fail_times": 0})
    done = next_envelope(envelopes)
    assert done["requestContext"]["functionArn"].endswith(":function:FanIn:$LATEST")
    assert done["requestPayload"]["requestContext"]["requestId"] == request_id  # FanIn's event: the envelope
    assert done["responsePayload"] == {"collected": request_id, "condition": "Success"}
    assert runtime.stats()["FanIn"].invocations == 1


# -- thread isolation ----------------------------------------------------------------------------------------


def test_thread_isolation(make_runtime: MakeRuntime, envelopes: queue.Queue[dict[str, Any]]) -> None:
    runtime = make_runtime(max_environments=1)
    result = runtime.invoke_sync("EchoThread", {"x": 1})
    assert result.payload["pid"] == os.getpid()
    assert result.payload["thread"] == "fave-local-EchoThread"
    assert result.payload["function_name"] == "EchoThread"
    assert result.payload["event"] == {"x": 1}
    assert error_of(runtime.invoke_sync("EchoThread", {"fail": "k"}))["errorType"] == "KeyError"

    started = time.monotonic()
    timed_out = runtime.invoke_sync("EchoThread", {"sleep": 3})
    assert 0.9 < time.monotonic() - started < 2.5  # reported at the timeout, not when the thread ends
    assert error_of(timed_out)["errorType"] == "Sandbox.Timedout"
    # The stuck thread no longer holds the only slot: a replacement serves the next invocation at once.
    assert runtime.invoke_sync("EchoThread", {"x": 2}).payload["event"] == {"x": 2}

    request_id = runtime.invoke_async("EchoThread", {"x": 3})
    envelope = next_envelope(envelopes)
    assert envelope["requestContext"]["requestId"] == request_id
    assert envelope["responsePayload"]["event"] == {"x": 3}
    stats = runtime.stats()["EchoThread"]
    assert (stats.invocations, stats.cold_starts, stats.timeouts, stats.errors) == (5, 1, 1, 2)
    assert runtime.environment_pids()["EchoThread"] == []


# -- refusals and shutdown -----------------------------------------------------------------------------------


def test_invalid_invocations_are_refused(make_runtime: MakeRuntime, runtime_template: Template) -> None:
    runtime = make_runtime()
    with pytest.raises(FunctionNotFoundError) as missing:
        runtime.invoke_sync("Nope", {})
    assert isinstance(missing.value, NotFoundError)
    with pytest.raises(ValidationError, match="not JSON"):
        runtime.invoke_sync("Echo", {"x": {1, 2}})
    with pytest.raises(ValidationError, match="over Lambda's limit"):
        runtime.invoke_sync("Echo", {"x": "a" * MAX_SYNC_PAYLOAD_BYTES})
    with pytest.raises(ValidationError, match="over Lambda's limit"):
        runtime.invoke_async("Echo", {"x": "a" * MAX_ASYNC_PAYLOAD_BYTES})
    throttled = dataclasses.replace(runtime_template.functions["Echo"], reserved_concurrency=0)
    zero = make_runtime(template=dataclasses.replace(runtime_template, functions={"Echo": throttled}))
    with pytest.raises(RetryableInvocationError) as info:
        zero.invoke_async("Echo", {})
    assert isinstance(info.value, RetryableError)


def test_close_stops_everything(make_runtime: MakeRuntime) -> None:
    runtime = make_runtime(max_environments=2)
    assert runtime.invoke_sync("Echo", {}).ok
    assert runtime.invoke_sync("Counter", {}).ok
    in_flight: queue.Queue[BaseException | InvokeResult] = queue.Queue()

    def call_sleepy() -> None:
        try:
            in_flight.put(runtime.invoke_sync("Sleepy", {"s": 0.9}))
        except BaseException as e:
            in_flight.put(e)

    caller = threading.Thread(target=call_sleepy)
    caller.start()
    deadline = time.monotonic() + WAIT_S
    while not runtime.environment_pids()["Sleepy"]:  # wait until Sleepy's environment exists
        assert time.monotonic() < deadline
        threading.Event().wait(0.01)
    pids = [pid for pids in runtime.environment_pids().values() for pid in pids]
    assert len(pids) == 3

    started = time.monotonic()
    runtime.close()
    assert time.monotonic() - started < 3
    caller.join(WAIT_S)
    outcome = in_flight.get(timeout=WAIT_S)
    if isinstance(outcome, BaseException):  # usually: closed while in flight
        assert isinstance(outcome, TerminalInvocationError) and isinstance(outcome, TerminalError)
    assert not any(alive(pid) for pid in pids)
    names = {f"fave-local-{function}" for function in ("Echo", "Counter", "Sleepy")}
    assert not [t for t in threading.enumerate() if t.name in names]
    runtime.close()  # idempotent
    with pytest.raises(TerminalInvocationError):
        runtime.invoke_sync("Echo", {})


def test_context_manager_and_template_path() -> None:
    with LocalRuntime(FIXTURE, env_overrides={"BUCKET": "b"}) as runtime:
        pid = runtime.invoke_sync("Counter", {}).payload["pid"]
        assert alive(pid)
    assert not alive(pid)
