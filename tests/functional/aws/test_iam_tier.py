"""The iam tier itself (``--tier iam``; skipped on the others): every call is made with the caller's own role,
a call the role does not allow is refused and surfaces as an error, and a broken policy breaks the run.

Each test gives one role a broken copy of its policy (``IamStack.use_policies``; the tier puts the template's
back for the next test) and says which refusals it expects.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from fave import cache
from fave.invoke.base import TerminalInvocationError
from fave.keys import inbox_prefix, lease_key
from fave.local.template import load_yaml
from fave_shared.errors import TerminalError
from support.app_lambda import DEMO_TEMPLATE, OrchestratorLambda, configure_app
from support.demo import TEXT
from support.iam import COMPLETIONS, ORCHESTRATOR, IamStack
from support.sam import translate_many
from support.tiers import Tier

Mutation = Callable[[dict[str, Any]], None]


@pytest.fixture
def iam(tier: Tier) -> IamStack:
    if tier.backend.iam is None:
        pytest.skip("the iam tier's own tests: run with --tier iam")
    tier.refusals_expected = True  # each test checks the refusals it provokes itself
    return tier.backend.iam


def _statements(doc: dict[str, Any], lid: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = doc["Resources"][lid]["Properties"]["Policies"][0]["Statement"]
    return statements


def _statement(doc: dict[str, Any], lid: str, sid: str) -> dict[str, Any]:
    return next(s for s in _statements(doc, lid) if s.get("Sid") == sid)


def _no_lease_delete(doc: dict[str, Any]) -> None:
    statement = _statement(doc, ORCHESTRATOR, "LeaseAndMailbox")
    statement["Resource"] = [r for r in statement["Resource"] if "lease.json" not in str(r)]


def _no_invoke_shout(doc: dict[str, Any]) -> None:
    statement = _statement(doc, ORCHESTRATOR, "InvokeStages")
    statement["Resource"] = [r for r in statement["Resource"] if "-shout" not in str(r)]


def _shout_writes_elsewhere(doc: dict[str, Any]) -> None:
    _statement(doc, "ShoutFunction", "WriteOwnArtifacts")["Resource"] = {
        "Fn::Sub": "${ArtifactsBucket.Arn}/requests/*/stages/shouted/*"
    }


def _list_only_the_inbox(doc: dict[str, Any]) -> None:
    _statement(doc, ORCHESTRATOR, "ListBucket")["Condition"] = {"StringLike": {"s3:prefix": "requests/*/inbox/*"}}


def _no_code_digest(doc: dict[str, Any]) -> None:
    _statement(doc, ORCHESTRATOR, "InvokeStages")["Action"] = "lambda:InvokeFunction"


MUTATIONS: dict[str, Mutation] = {
    "no_code_digest": _no_code_digest,
    "no_lease_delete": _no_lease_delete,
    "no_invoke_shout": _no_invoke_shout,
    "shout_writes_elsewhere": _shout_writes_elsewhere,
    "list_only_the_inbox": _list_only_the_inbox,
}


@pytest.fixture(scope="module")
def broken(tier_backend: Any) -> dict[str, dict[str, Any]]:
    """Broken copies of the demo template (tests/fixtures/demo/template.yaml), translated in one SAM run."""
    if tier_backend.iam is None:
        pytest.skip("the iam tier's own tests: run with --tier iam")
    docs = []
    for mutate in MUTATIONS.values():
        doc: dict[str, Any] = load_yaml(DEMO_TEMPLATE.read_text())
        mutate(doc)
        docs.append(doc)
    translated = translate_many(docs)
    return dict(zip(MUTATIONS, translated, strict=True))


def start(lam: OrchestratorLambda, tier: Tier, text: str = TEXT, **extra: Any) -> str:
    body = {"video_uri": tier.source_uri(), "extra": {"text": text, **extra}}
    code, response, _ = lam.http("http-start.json", body=body, without_headers=("idempotency-key",))
    assert code == 202, response
    return str(response["request_id"])


def refused(iam: IamStack, since: int) -> set[tuple[str, str, str]]:
    """(role, action, resource) of every refusal since ``since``; the role is the function's logical id."""
    by_role = {role: lid for lid, role in iam.roles.items()}
    return {
        (by_role.get(r["principal"].split("/")[1], r["principal"]), r["action"], r["resource"])
        for r in iam.server.refusals(since)
    }


def test_each_function_has_its_own_role(iam: IamStack) -> None:
    for lid, role in iam.roles.items():
        identity = iam.client("sts", lid).get_caller_identity()
        assert identity["Arn"] == f"arn:aws:sts::123456789012:assumed-role/{role}/{lid}"


def test_without_the_lease_delete_a_request_started_over_http_never_applies_its_completions(
    iam: IamStack, orchestrator_lambda: OrchestratorLambda, tier: Tier, broken: dict[str, dict[str, Any]]
) -> None:
    """The issue's run: template.yaml's orchestrator could not delete its lease, so the first step's lease
    stayed, and every completion after it was queued in a mailbox that nobody applied."""
    lam = orchestrator_lambda
    lam.hold()
    iam.use_policies(broken["no_lease_delete"])
    mark = iam.server.mark()
    request_id = start(lam, tier)
    lam.settle()  # the first step: takes the lease, runs words, dispatches two shouts, cannot let go
    assert tier.store.head(lease_key(request_id)) is not None
    for envelope in held(lam, _of_request(request_id), 2):
        assert lam.deliver(envelope).get("queued") is True  # left in the mailbox for a holder that is gone
    assert len(list(tier.store.list(inbox_prefix(request_id)))) == 2
    assert lam.status(request_id)["stages"]["shout"]["succeeded"] == 0
    lease = f"arn:aws:s3:::{iam.bucket}/{lease_key(request_id)}"
    assert refused(iam, mark) == {(ORCHESTRATOR, "s3:DeleteObject", lease)}


def test_an_invoke_the_orchestrator_may_not_make_never_runs(
    iam: IamStack, orchestrator_lambda: OrchestratorLambda, tier: Tier, broken: dict[str, dict[str, Any]]
) -> None:
    lam = orchestrator_lambda
    lam.hold()  # a shout that ran would leave its result here
    iam.use_policies(broken["no_invoke_shout"])
    mark = iam.server.mark()
    request_id = start(lam, tier, "one two")
    doc = lam.wait(request_id, tick=True)
    assert doc["status"] == "FAILED" and "AccessDenied" in doc["failure"], doc
    shout = f"arn:aws:lambda:us-east-1:123456789012:function:{iam.function_names['ShoutFunction']}"
    # Its code digest (GetFunctionConfiguration: the cache's key, rerun's fingerprint) is refused too.
    assert refused(iam, mark) - {(ORCHESTRATOR, "lambda:GetFunctionConfiguration", shout)} == {
        (ORCHESTRATOR, "lambda:InvokeFunction", shout)
    }
    assert held(lam, _of_request(request_id), 0, wait_s=1.0) == []  # no shout of this request ever ran

    invoker = tier.orchestrator_invoker(lam.runtime)  # the real LambdaInvoker's error for a refusal
    with pytest.raises(TerminalInvocationError, match="AccessDenied"):
        invoker.invoke_async("ShoutFunction", {"fave": 1})


def test_a_stage_writes_with_its_own_role(
    iam: IamStack, orchestrator_lambda: OrchestratorLambda, tier: Tier, broken: dict[str, dict[str, Any]]
) -> None:
    lam = orchestrator_lambda
    # A shout output over what an async destination record carries (1 MiB with the event) is stored by the shout
    # process, under its prefix.
    padded = {"pad_word": "two", "pad_bytes": 1_100_000}
    done = lam.wait(start(lam, tier, "one two", **padded))
    assert done["status"] == "COMPLETED", done
    keys = list(tier.store.list(f"requests/{done['request_id']}/stages/shout/"))
    assert [key.split("/stages/")[1] for key in keys] == ["shout/00001/output-1.json"], keys

    iam.use_policies(broken["shout_writes_elsewhere"], functions=("ShoutFunction",))
    mark = iam.server.mark()
    failed = lam.wait(start(lam, tier, "one two", **padded), tick=True)
    assert failed["status"] == "FAILED" and "AccessDenied" in failed["failure"], failed
    assert {(role, action) for role, action, _ in refused(iam, mark)} == {("ShoutFunction", "s3:PutObject")}


def test_a_refused_store_call_is_the_stores_error_and_is_not_retried(iam: IamStack, tier: Tier) -> None:
    store = tier.orchestrator_store
    mark = iam.server.mark()
    with pytest.raises(TerminalError, match="AccessDenied"):
        store.put("uploads/video.mp4", b"not the orchestrator's to write")
    assert len(iam.server.refusals(mark)) == 1  # one request reached the server: no retry
    assert tier.store.head("uploads/video.mp4") is None


def test_a_condition_moto_ignores_is_decided_by_the_projects_evaluator(
    iam: IamStack, tier: Tier, broken: dict[str, dict[str, Any]]
) -> None:
    """moto treats ``StringLike s3:prefix`` as always met; the server asks ``support.cfn.allowed`` instead."""
    iam.use_policies(broken["list_only_the_inbox"])
    request_id = "01M7Q5CQG08V1KSN1NN13VDKQ9"
    store = tier.orchestrator_store
    mark = iam.server.mark()
    assert list(store.list(inbox_prefix(request_id))) == []  # allowed by the condition
    with pytest.raises(TerminalError, match="AccessDenied"):
        list(store.list(f"requests/{request_id}/metadata/"))
    decisions = [(d["decider"], d["allowed"], d["context"]) for d in iam.server.decisions(mark)]
    assert decisions == [
        ("fave", True, {"s3:prefix": inbox_prefix(request_id)}),
        ("fave", False, {"s3:prefix": f"requests/{request_id}/metadata/"}),
    ]


def test_a_destination_the_stage_may_not_deliver_is_dropped(
    iam: IamStack, orchestrator_lambda: OrchestratorLambda
) -> None:
    """Lambda delivers a stage's result with the stage's role: SAM grants it sqs:SendMessage on CompletionsQueue
    (and nothing on the orchestrator, which it no longer invokes)."""
    lam = orchestrator_lambda
    lam.hold()
    ours = _with_payload({"not": "a stage event"})
    lam.runtime.invoke_async("ShoutFunction", {"not": "a stage event"})  # fails: its OnFailure destination
    assert held(lam, ours, 1)[0]["requestContext"]["condition"] == "RetriesExhausted"

    translated = copy.deepcopy(iam.stack.template)
    role = translated["Resources"]["ShoutFunctionRole"]["Properties"]
    role["Policies"] = [p for p in role["Policies"] if "EventInvokeConfig" not in p["PolicyName"]]
    iam.use_policies(translated, functions=("ShoutFunction",))
    mark = iam.server.mark()
    lam.runtime.invoke_async("ShoutFunction", {"not": "a stage event"})
    queue = iam.stack.arn(COMPLETIONS)
    assert _wait_for(lambda: refused(iam, mark)) == {("ShoutFunction", "sqs:SendMessage", queue)}
    assert held(lam, ours, 0, wait_s=1.0) == []  # dropped
    with pytest.raises(ClientError, match="AccessDenied"):  # nor may a stage invoke the orchestrator itself
        iam.client("lambda", "ShoutFunction").invoke(
            FunctionName=iam.function_names[ORCHESTRATOR], InvocationType="DryRun", Payload=b"{}"
        )


def test_completions_the_orchestrator_may_not_receive_never_arrive(
    iam: IamStack, orchestrator_lambda: OrchestratorLambda, tier: Tier
) -> None:
    """The event source mapping reads CompletionsQueue with the orchestrator's role: without SAM's
    AWSLambdaSQSQueueExecutionRole (sqs:ReceiveMessage, DeleteMessage, GetQueueAttributes) nothing reaches it."""
    lam = orchestrator_lambda
    translated = copy.deepcopy(iam.stack.template)
    role = translated["Resources"]["OrchestratorFunctionRole"]["Properties"]
    role["ManagedPolicyArns"] = [arn for arn in role["ManagedPolicyArns"] if "SQSQueueExecutionRole" not in arn]
    iam.use_policies(translated)
    mark = iam.server.mark()
    request_id = start(lam, tier, "one two")
    queue = iam.stack.arn(COMPLETIONS)
    receive = (ORCHESTRATOR, "sqs:ReceiveMessage", queue)
    assert _wait_for(lambda: receive in refused(iam, mark)), refused(iam, mark)
    lam.settle()
    assert refused(iam, mark) == {receive}
    assert lam.sqs_records == 0 and lam.status(request_id)["stages"]["shout"]["succeeded"] == 0
    attributes = iam.client("sqs").get_queue_attributes(
        QueueUrl=iam.queue_url(), AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert int(attributes["ApproximateNumberOfMessages"]) >= 1  # sent by the shouts, left in the queue

    iam.restore_policies()  # the mapping may read again: its next poll delivers everything waiting
    iam.poll_completions()
    assert lam.wait(request_id)["status"] == "COMPLETED"
    assert lam.sqs_records >= 4  # two shouts and two measures


def held(
    lam: OrchestratorLambda, match: Callable[[dict[str, Any]], bool], count: int, wait_s: float = 20.0
) -> list[dict[str, Any]]:
    """The held destination envelopes that ``match``: waits until ``count`` arrived, or ``wait_s`` (when
    ``count`` is 0: waits ``wait_s`` for any). Envelopes of other tests' invocations still running in the
    session's runtime are skipped."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait_s
    while (count == 0 or len(found) < count) and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            envelope = lam.held.get(timeout=max(0.01, deadline - time.monotonic()))
            if match(envelope):
                found.append(envelope)
    return found


def _of_request(request_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda envelope: envelope.get("requestPayload", {}).get("task", {}).get("request_id") == request_id


def _with_payload(payload: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    return lambda envelope: envelope.get("requestPayload") == payload


def _wait_for(probe: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_a_cached_stage_is_keyed_by_its_deployed_code_read_with_the_orchestrators_role(
    iam: IamStack,
    orchestrator_lambda: OrchestratorLambda,
    tier: Tier,
    broken: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The result cache on Lambda: ``LambdaInvoker.code_digest`` calls ``GetFunctionConfiguration`` with the
    orchestrator's role (template.yaml allows it on the stage functions). Without that permission the stage is
    not cached, and the request still completes."""
    lam = orchestrator_lambda
    monkeypatch.setenv("FAVE_CODE_DIGEST_TTL", "0")  # every key asks Lambda: the refusal below is not hidden
    configure_app(lam, tier, DEMO_TEMPLATE.parent / "pipeline-cached.yaml")
    mark = iam.server.mark()
    first = lam.wait(start(lam, tier, "cache me"))
    assert first["status"] == "COMPLETED", first
    words = lam.invocations("WordsFunction")
    second = lam.wait(start(lam, tier, "cache me"))
    assert second["status"] == "COMPLETED", second
    assert lam.invocations("WordsFunction") == words  # words came from the cache
    assert refused(iam, mark) == set()

    iam.use_policies(broken["no_code_digest"])
    mark = iam.server.mark()
    third = lam.wait(start(lam, tier, "cache me"))
    assert third["status"] == "COMPLETED", third
    assert lam.invocations("WordsFunction") == words + 1  # the code is unknown: no cache, words ran
    arn = f"arn:aws:lambda:us-east-1:123456789012:function:{iam.function_names['WordsFunction']}"
    assert (ORCHESTRATOR, "lambda:GetFunctionConfiguration", arn) in refused(iam, mark)


def test_the_orchestrators_role_writes_and_reads_a_packs_base_and_its_delta(iam: IamStack, tier: Tier) -> None:
    """A cached fan-out's pack (``cache/packs/``) and, for a run that changed a few of its rows, its delta
    (``cache/deltas/``): both written (conditional puts) and read with the orchestrator's own role."""
    store = tier.orchestrator_store
    pack = "e" * 64
    elements = [{"id": i} for i in range(200)]
    keys: list[str | None] = [f"{i:064x}" for i in range(200)]
    first = cache.PackRun(keys, [{"o": i} for i in range(200)], ["01JFIRST"] * 200, elements)
    mark = iam.server.mark()
    assert cache.write_pack(store, pack, first, source="01JFIRST", stage="s", known=None)
    read = cache.read_pack(store, pack)
    changed = cache.PackRun(
        [*keys[:3], "f" * 64, *keys[4:]],
        [*first.outputs[:3], {"o": "new"}, *first.outputs[4:]],
        [*first.sources[:3], "01JSECOND", *first.sources[4:]],
        [*elements[:3], {"id": 3, "v": 1}, *elements[4:]],
    )
    assert cache.write_pack(store, pack, changed, source="01JSECOND", stage="s", known=read)
    assert tier.store.head(cache.delta_object(pack)) is not None  # a delta, not a new base
    again = cache.read_pack(store, pack)
    assert again.row("f" * 64) == ({"o": "new"}, "01JSECOND") and again.elements[3] == {"id": 3, "v": 1}
    assert refused(iam, mark) == set()
