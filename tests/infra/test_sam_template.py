"""template.yaml against pipeline.yaml and the code (issue 4, requirement 5), on the template SAM deploys.

The template is translated by aws-sam-translator (in .venv-sam, as ``sam validate`` does); the checks in
``support.template_checks`` derive what each function must (and must not) be allowed to do from the code.
Each check is also shown to catch a broken copy of the template.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fave.core.dag import Pipeline
from fave.local.orchestrator import load_local_pipeline
from fave.local.template import Template, load_yaml
from support.app_lambda import DEMO_TEMPLATE
from support.cfn import Stack, allowed, function_role
from support.sam import TEMPLATE, translate_many, translated_template
from support.template_checks import (
    COMPLETIONS,
    ORCHESTRATOR,
    SQS_POLLER_POLICY,
    check_iam,
    check_no_wildcard_actions,
    check_source_reads,
    check_wiring,
    code_facts,
    managed_statements,
    orchestrator_env,
)

ROOT = TEMPLATE.parent


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return load_local_pipeline(ROOT / "pipeline.yaml")


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    return translated_template()


def raw_template() -> dict[str, Any]:
    doc: dict[str, Any] = load_yaml(TEMPLATE.read_text())
    return doc


def test_template_matches_the_pipeline(translated: dict[str, Any], pipeline: Pipeline) -> None:
    assert check_wiring(translated, pipeline) == []


def test_every_role_covers_its_code_and_no_more(
    translated: dict[str, Any], pipeline: Pipeline, template: Template
) -> None:
    assert check_iam(translated, pipeline, template) == []


def test_code_facts_find_the_request_level_folders() -> None:
    # What the IAM expectations are derived from: a change in the stages' code changes them.
    split = code_facts(ROOT / "functions" / "split")
    assert split.request_folders == {"clips/"} and split.lists and split.deletes
    normalize = code_facts(ROOT / "functions" / "normalize")
    assert normalize.request_folders == {"input/"} and not normalize.lists and not normalize.deletes
    assert code_facts(ROOT / "functions" / "detect").request_folders == frozenset()


# -- the checks catch broken templates ----------------------------------------------------------------------


def _resource(doc: dict[str, Any], lid: str) -> dict[str, Any]:
    props: dict[str, Any] = doc["Resources"][lid]["Properties"]
    return props


def _statements(doc: dict[str, Any], lid: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = _resource(doc, lid)["Policies"][0]["Statement"]
    return statements


def _completions_event(doc: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = _resource(doc, ORCHESTRATOR)["Events"]["Completions"]["Properties"]
    return props


@pytest.fixture(scope="module")
def broken() -> dict[str, dict[str, Any]]:
    """Broken copies of template.yaml, translated in one .venv-sam run."""
    mutations: dict[str, dict[str, Any]] = {}

    doc = raw_template()  # extract's results would go nowhere
    del _resource(doc, "ExtractFunction")["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    mutations["no_on_failure"] = doc

    doc = raw_template()  # extract could not write its keyframes
    for statement in _statements(doc, "ExtractFunction"):
        if statement["Sid"] == "WriteOwnArtifacts":
            statement["Resource"] = {"Fn::Sub": "${ArtifactsBucket.Arn}/requests/*/stages/extrakt/*"}
    mutations["extract_writes_elsewhere"] = doc

    doc = raw_template()  # detect could overwrite every stage's artifacts
    for statement in _statements(doc, "DetectFunction"):
        if statement["Sid"] == "WriteOwnArtifacts":
            statement["Resource"] = {"Fn::Sub": "${ArtifactsBucket.Arn}/requests/*"}
    mutations["detect_writes_everywhere"] = doc

    doc = raw_template()  # a wildcard action
    _statements(doc, "AudioFunction")[0]["Action"] = "s3:*"
    mutations["wildcard"] = doc

    doc = raw_template()  # the orchestrator cannot invoke transcribe
    for statement in _statements(doc, ORCHESTRATOR):
        if statement["Sid"] == "InvokeStages":
            statement["Resource"] = [r for r in statement["Resource"] if "-transcribe" not in r["Fn::Sub"]]
    mutations["no_invoke_transcribe"] = doc

    doc = raw_template()  # split can no longer list its clips (the stale-clip cleanup needs it)
    _resource(doc, "SplitFunction")["Policies"][0]["Statement"] = [
        s for s in _statements(doc, "SplitFunction") if s["Sid"] != "ListClips"
    ]
    mutations["split_cannot_list"] = doc

    doc = raw_template()  # the orchestrator's name for a stage function drifts from the function's name
    _resource(doc, ORCHESTRATOR)["Environment"]["Variables"]["FAVE_FUNCTION_DetectFunction"] = {
        "Fn::Sub": "${AWS::StackName}-detector"
    }
    mutations["env_drift"] = doc

    doc = raw_template()  # the orchestrator as issue 8 found it: it could delete neither its lease nor its mailbox
    _resource(doc, ORCHESTRATOR)["Policies"][0]["Statement"] = [
        s for s in _statements(doc, ORCHESTRATOR) if s["Sid"] != "LeaseAndMailbox"
    ]
    mutations["no_lease_and_mailbox_deletes"] = doc

    doc = raw_template()  # normalize as it was: any key of the bucket (idempotency records, other requests)
    statements = [s for s in _statements(doc, "NormalizeFunction") if s["Sid"] != "ReadRequests"]
    next(s for s in statements if s["Sid"] == "ReadSources")["Resource"] = {"Fn::Sub": "${ArtifactsBucket.Arn}/*"}
    _resource(doc, "NormalizeFunction")["Policies"][0]["Statement"] = statements
    mutations["normalize_reads_everything"] = doc

    doc = raw_template()  # normalize cannot read a source the API accepts under inputs/
    for statement in _statements(doc, "NormalizeFunction"):
        if statement["Sid"] == "ReadSources":
            statement["Resource"] = [r for r in statement["Resource"] if "inputs/" not in r["Fn::Sub"]]
    mutations["normalize_reads_no_inputs"] = doc

    # -- completions (issue 10): through CompletionsQueue, consumed in batches by the orchestrator alone
    doc = raw_template()  # extract's destination is the orchestrator again (one invocation per completion)
    _resource(doc, "ExtractFunction")["EventInvokeConfig"]["DestinationConfig"]["OnSuccess"] = {
        "Type": "Lambda",
        "Destination": {"Fn::GetAtt": [ORCHESTRATOR, "Arn"]},
    }
    mutations["destination_is_the_orchestrator"] = doc

    doc = raw_template()  # a failed request's completions would redeliver the whole batch
    del _completions_event(doc)["FunctionResponseTypes"]
    mutations["no_report_batch_item_failures"] = doc

    doc = raw_template()  # batches of one: an invocation per completion again
    _completions_event(doc).update(BatchSize=10, MaximumBatchingWindowInSeconds=0)
    mutations["no_batching_window"] = doc

    doc = raw_template()  # completions that keep failing are lost instead of kept
    del _resource(doc, COMPLETIONS)["RedrivePolicy"]
    mutations["no_redrive"] = doc

    doc = raw_template()  # nobody consumes the completions
    del _resource(doc, ORCHESTRATOR)["Events"]["Completions"]
    mutations["no_event_source_mapping"] = doc

    doc = raw_template()  # a stage consumes them too (and gets SAM's SQS polling policy for it)
    _resource(doc, "DetectFunction")["Events"] = {
        "Steal": copy.deepcopy(_resource(doc, ORCHESTRATOR)["Events"]["Completions"])
    }
    mutations["stage_consumes_completions"] = doc

    doc = raw_template()  # what Lambda refuses: a message would reappear while a batch is still being applied
    _resource(doc, COMPLETIONS)["VisibilityTimeout"] = 60
    mutations["short_visibility"] = doc

    names = list(mutations)
    # The demo pipeline's template rides along: one .venv-sam process for all (each costs seconds).
    translated = translate_many([*(mutations[n] for n in names), DEMO_TEMPLATE])
    return dict(zip([*names, "demo"], translated, strict=True))


def test_a_missing_destination_is_reported(broken: dict[str, dict[str, Any]], pipeline: Pipeline) -> None:
    assert check_wiring(broken["no_on_failure"], pipeline) == [
        "stage extract (ExtractFunction): OnFailure destination is None, not CompletionsQueue"
    ]


def test_completions_go_through_the_queue_in_batches(
    translated: dict[str, Any], broken: dict[str, dict[str, Any]], pipeline: Pipeline, template: Template
) -> None:
    """The wiring of issue 10: each check is shown to catch the copy that breaks it."""
    stack = Stack(broken["no_redrive"])
    queue = stack.arn(COMPLETIONS)
    orchestrator = stack.arn(ORCHESTRATOR)
    mapping = f"{ORCHESTRATOR}Completions"

    back_to_lambda = broken["destination_is_the_orchestrator"]
    assert check_wiring(back_to_lambda, pipeline) == [
        f"stage extract (ExtractFunction): OnSuccess destination is {orchestrator!r}, not {COMPLETIONS}"
    ]
    assert check_iam(back_to_lambda, pipeline, template) == [
        f"ExtractFunction may lambda:InvokeFunction on {orchestrator} (its completions go through {COMPLETIONS})"
    ]
    assert check_wiring(broken["no_report_batch_item_failures"], pipeline) == [
        f"{mapping}: no ReportBatchItemFailures in FunctionResponseTypes (a request whose completions fail would "
        "have the whole batch redelivered)"
    ]
    assert check_wiring(broken["no_batching_window"], pipeline) == [
        f"{mapping}: no batching window (MaximumBatchingWindowInSeconds 0): batches of one"
    ]
    assert check_wiring(broken["no_redrive"], pipeline) == [
        f"{COMPLETIONS}: no RedrivePolicy to another queue of the stack: a completion that keeps failing would be "
        "redelivered until it expires, then lost"
    ]
    assert check_wiring(broken["short_visibility"], pipeline) == [
        f"{COMPLETIONS}: VisibilityTimeout 60 s is shorter than {ORCHESTRATOR}'s timeout 900 s "
        "(Lambda refuses the event source mapping)"
    ]

    unconsumed = broken["no_event_source_mapping"]
    assert check_wiring(unconsumed, pipeline) == [
        f"{ORCHESTRATOR} consumes {COMPLETIONS} through 0 event source mappings, not 1"
    ]
    why = "(the event source mapping polls completions with its role)"
    assert check_iam(unconsumed, pipeline, template) == [
        f"{ORCHESTRATOR} may not {action} on {queue} {why}"
        for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
    ]

    mute = copy.deepcopy(translated)  # extract's role without what SAM grants it for its destinations
    role = mute["Resources"]["ExtractFunctionRole"]["Properties"]
    role["Policies"] = [p for p in role["Policies"] if "EventInvokeConfig" not in p["PolicyName"]]
    assert check_iam(mute, pipeline, template) == [
        f"ExtractFunction may not sqs:SendMessage on {queue} (its destination records)"
    ]

    stolen = broken["stage_consumes_completions"]
    assert check_wiring(stolen, pipeline) == [
        f"DetectFunction consumes {COMPLETIONS} (DetectFunctionSteal): only {ORCHESTRATOR} may"
    ]
    assert check_iam(stolen, pipeline, template) == [
        f"DetectFunction may {action} on {queue} (consuming completions is the orchestrator's)"
        for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
    ]


def test_sqs_polling_is_granted_by_sams_managed_policy(translated: dict[str, Any]) -> None:
    """What SAM's translation gives the orchestrator's role for its SQS event: AWSLambdaSQSQueueExecutionRole
    (receive, delete and read attributes on every queue: Resource "*"), and no inline statement; the stages'
    roles get an inline sqs:SendMessage on the queue per destination."""
    stack = Stack(translated)
    orchestrator = function_role(stack, ORCHESTRATOR)
    assert SQS_POLLER_POLICY in orchestrator.managed
    assert not any(a.startswith("sqs:Receive") for s in orchestrator.statements for a in s.actions)
    assert [
        (s.actions, s.resources) for s in managed_statements(SQS_POLLER_POLICY) if "sqs:ReceiveMessage" in s.actions
    ] == [
        (
            (
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "logs:CreateLogGroup",
                "logs:CreateLogStream",
                "logs:PutLogEvents",
            ),
            ("*",),
        )
    ]
    assert check_no_wildcard_actions(Stack(translated)) == []
    extract = function_role(stack, "ExtractFunction")
    sends = [s for s in extract.statements if "sqs:SendMessage" in s.actions]
    assert [(s.actions, s.resources) for s in sends] == [(("sqs:SendMessage",), (stack.arn(COMPLETIONS),))] * 2
    assert SQS_POLLER_POLICY not in extract.managed


def test_iam_mistakes_are_reported(broken: dict[str, dict[str, Any]], pipeline: Pipeline, template: Template) -> None:
    problems = check_iam(broken["extract_writes_elsewhere"], pipeline, template)
    assert problems and all(p.startswith("ExtractFunction may not s3:PutObject") for p in problems)

    problems = check_iam(broken["detect_writes_everywhere"], pipeline, template)
    assert any(p.startswith("DetectFunction may s3:PutObject") and "state.json" in p for p in problems)
    assert any("extract's artifacts" in p for p in problems)

    assert check_no_wildcard_actions(Stack(broken["wildcard"])) == [
        "AudioFunctionRole/AudioFunctionRolePolicy0: wildcard action s3:*"
    ]

    problems = check_iam(broken["no_invoke_transcribe"], pipeline, template)
    assert len(problems) == 2 and all("fave-test-transcribe" in p for p in problems), problems
    assert "may not lambda:InvokeFunction" in problems[0]
    assert "may not lambda:GetFunctionConfiguration" in problems[1]  # its tasks are cached: the code digest

    problems = check_iam(broken["split_cannot_list"], pipeline, template)
    assert problems == [
        "SplitFunction may not s3:ListBucket on arn:aws:s3:::"
        f"{Stack(broken['split_cannot_list']).physical_id('ArtifactsBucket')} "
        "with {'s3:prefix': 'requests/01JD2ZK0000000000000000000/clips/'} (lists clips/)"
    ]


def test_lease_and_mailbox_deletes_are_required(
    broken: dict[str, dict[str, Any]], pipeline: Pipeline, template: Template
) -> None:
    bucket = Stack(broken["no_lease_and_mailbox_deletes"]).physical_id("ArtifactsBucket")
    problems = check_iam(broken["no_lease_and_mailbox_deletes"], pipeline, template)
    request = "requests/01JD2ZK0000000000000000000"
    assert problems == [
        f"OrchestratorFunction may not s3:DeleteObject on arn:aws:s3:::{bucket}/{request}/metadata/lease.json "
        "(a lease is released by deleting it)",
        f"OrchestratorFunction may not s3:DeleteObject on arn:aws:s3:::{bucket}/{request}/inbox/"
        "00000000000000000001-0a1b2c3d4e5f.json (an applied message is removed)",
    ]


def test_normalize_reads_exactly_the_source_prefixes(
    translated: dict[str, Any], broken: dict[str, dict[str, Any]], pipeline: Pipeline, template: Template
) -> None:
    assert check_source_reads(translated, pipeline) == []
    assert "FAVE_INPUT_PREFIXES" in orchestrator_env(Stack(translated))  # set by the template, not defaulted

    everything = broken["normalize_reads_everything"]
    problems = check_iam(everything, pipeline, template)
    assert any("NormalizeFunction may s3:GetObject" in p and "idempotency/" in p for p in problems), problems
    assert any("NormalizeFunction may s3:GetObject" in p and "index/" in p for p in problems), problems
    assert check_source_reads(everything, pipeline) == [
        "stage normalize (NormalizeFunction) reads sources under [''], the orchestrator accepts them under "
        "['inputs/', 'uploads/'] (FAVE_INPUT_PREFIXES and FAVE_UPLOAD_PREFIX)"
    ]

    no_inputs = broken["normalize_reads_no_inputs"]
    problems = check_iam(no_inputs, pipeline, template)
    assert (
        len(problems) == 1
        and problems[0].startswith("NormalizeFunction may not s3:GetObject")
        and ("/inputs/video.mp4" in problems[0])
    ), problems
    assert check_source_reads(no_inputs, pipeline) == [
        "stage normalize (NormalizeFunction) reads sources under ['uploads/'], the orchestrator accepts them under "
        "['inputs/', 'uploads/'] (FAVE_INPUT_PREFIXES and FAVE_UPLOAD_PREFIX)"
    ]


def _written_policy(stack: Stack, function: str) -> list[dict[str, Any]]:
    """The statements of the policy a function's template writes (``Policies``), resolved."""
    role_id = stack.properties(function)["Role"]["Fn::GetAtt"][0]
    (policy,) = [p for p in stack.properties(role_id)["Policies"] if p["PolicyName"] == f"{role_id}Policy0"]
    statements: list[dict[str, Any]] = stack.resolve(policy["PolicyDocument"])["Statement"]
    return statements


def test_the_demo_orchestrator_has_the_real_orchestrators_policy(
    translated: dict[str, Any], broken: dict[str, dict[str, Any]], pipeline: Pipeline
) -> None:
    """The iam tier runs the demo pipeline (tests/fixtures/demo): what it proves about the orchestrator's
    role holds for template.yaml's because the policies are the same but for the functions invoked."""
    real, demo = Stack(translated), Stack(broken["demo"])
    demo_pipeline = load_local_pipeline(DEMO_TEMPLATE.parent / "pipeline.yaml")

    def without_invoked(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in s.items() if not (s["Sid"] == "InvokeStages" and k == "Resource")} for s in statements
        ]

    assert without_invoked(_written_policy(demo, ORCHESTRATOR)) == without_invoked(_written_policy(real, ORCHESTRATOR))
    for stack, pipe in ((real, pipeline), (demo, demo_pipeline)):
        (invoke,) = [s for s in _written_policy(stack, ORCHESTRATOR) if s["Sid"] == "InvokeStages"]
        functions = {ORCHESTRATOR} | {spec.function for spec in pipe.stages.values()}
        assert sorted(invoke["Resource"]) == sorted(stack.arn(f) for f in functions)
        env = orchestrator_env(stack)
        assert {
            f"FAVE_FUNCTION_{spec.function}": stack.physical_id(spec.function) for spec in pipe.stages.values()
        }.items() <= env.items()
    real_env, demo_env = orchestrator_env(real), orchestrator_env(demo)
    for name in ("FAVE_STORE", "FAVE_UPLOAD_PREFIX", "FAVE_INPUT_PREFIXES"):
        assert demo_env[name] == real_env[name], name
    assert demo.physical_id(ORCHESTRATOR) == real.physical_id(ORCHESTRATOR)  # the name it invokes itself by
    # The rest of the role is the same too: SAM's policies for the SQS event (the mapping polls with this role)
    # and for the dead-letter destination, and the managed policies; and the demo is wired as template.yaml is.
    real_role, demo_role = function_role(real, ORCHESTRATOR), function_role(demo, ORCHESTRATOR)
    xray = "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess"  # the demo has no Tracing: nothing calls X-Ray
    assert set(demo_role.managed) == set(real_role.managed) - {xray} and SQS_POLLER_POLICY in demo_role.managed
    assert _generated_policies(demo, ORCHESTRATOR) == _generated_policies(real, ORCHESTRATOR)
    assert check_wiring(broken["demo"], demo_pipeline) == []


def _generated_policies(stack: Stack, function: str) -> dict[str, Any]:
    """The inline policies SAM writes into a function's role besides the template's own (``Policies``)."""
    role_id = stack.properties(function)["Role"]["Fn::GetAtt"][0]
    return {
        p["PolicyName"]: stack.resolve(p["PolicyDocument"])
        for p in stack.properties(role_id)["Policies"]
        if p["PolicyName"] != f"{role_id}Policy0"
    }


def test_a_renamed_function_is_reported(broken: dict[str, dict[str, Any]], pipeline: Pipeline) -> None:
    problems = check_wiring(broken["env_drift"], pipeline)
    assert problems == [
        "stage detect (DetectFunction): the orchestrator's FAVE_FUNCTION_DetectFunction is 'fave-test-detector', "
        "the function is named 'fave-test-detect'"
    ]


# -- the AWS surface ------------------------------------------------------------------------------------------


def test_http_api_routes_and_iam_auth_by_default(translated: dict[str, Any]) -> None:
    for parameters, expected in (({}, [{"AWS_IAM": []}]), ({"ApiAuthorization": "NONE"}, [])):
        stack = Stack(translated, parameters)
        body = stack.resolve(stack.properties("Api")["Body"])
        routes = {(path, method.upper()) for path, item in body["paths"].items() for method in item}
        assert routes == {
            ("/requests", "POST"),
            ("/requests/{id}", "GET"),
            ("/requests/{id}/stages/{stage}", "GET"),
            ("/requests/{id}/resume", "POST"),
            ("/requests/{id}/reset", "POST"),
            ("/requests/{id}/cancel", "POST"),
            ("/queue", "POST"),
            ("/queue", "GET"),
            ("/openapi.json", "GET"),
            ("/docs", "GET"),
        }
        for item in body["paths"].values():
            for operation in item.values():
                assert operation["security"] == expected
                integration = operation["x-amazon-apigateway-integration"]
                assert integration["payloadFormatVersion"] == "2.0"
                assert stack.arn(ORCHESTRATOR) in integration["uri"]
        assert body["components"]["securitySchemes"]["AWS_IAM"]["x-amazon-apigateway-authtype"] == "awsSigv4"


def test_bucket_is_private_encrypted_tls_only_with_lifecycle(translated: dict[str, Any]) -> None:
    stack = Stack(translated)
    bucket = stack.resolve(stack.properties("ArtifactsBucket"))
    assert bucket["BucketName"] == bucket["BucketName"].lower()
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    expiring = {rule["Prefix"] for rule in bucket["LifecycleConfiguration"]["Rules"] if rule.get("ExpirationInDays")}
    upload_prefix = orchestrator_env(stack)["FAVE_UPLOAD_PREFIX"]
    assert {"requests/", "index/", upload_prefix} <= expiring
    # The upload trigger: the orchestrator, for objects created under FAVE_UPLOAD_PREFIX.
    (notification,) = bucket["NotificationConfiguration"]["LambdaConfigurations"]
    assert notification["Event"] == "s3:ObjectCreated:*"
    assert notification["Function"] == stack.arn(ORCHESTRATOR)
    assert notification["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": upload_prefix}]
    # TLS only: the bucket policy denies every request without it, to everyone.
    policy = stack.resolve(stack.properties("ArtifactsBucketPolicy"))["PolicyDocument"]
    from support.cfn import Statement

    statements = [Statement.parse(s) for s in policy["Statement"]]
    arn = stack.arn("ArtifactsBucket")
    insecure = {"aws:SecureTransport": "false"}
    assert all(s.effect == "Deny" for s in statements)
    assert any(s.matches("s3:GetObject", f"{arn}/requests/x", insecure) for s in statements)
    assert any(s.matches("s3:ListBucket", arn, insecure) for s in statements)
    assert not any(s.matches("s3:GetObject", f"{arn}/requests/x", {"aws:SecureTransport": "true"}) for s in statements)


def test_upload_prefix_agrees_with_the_entry_points(translated: dict[str, Any]) -> None:
    settings = pytest.importorskip("fave.app.settings", reason="fave.app (the orchestrator entry points) is absent")
    assert orchestrator_env(Stack(translated))["FAVE_UPLOAD_PREFIX"] == settings.DEFAULT_UPLOAD_PREFIX


def test_schedule_sends_the_tick(translated: dict[str, Any]) -> None:
    stack = Stack(translated)
    rules = [lid for lid in stack.resources if stack.type_of(lid) == "AWS::Events::Rule"]
    assert len(rules) == 1
    rule = stack.resolve(stack.properties(rules[0]))
    assert rule["ScheduleExpression"] == "rate(1 minute)"
    assert rule["Targets"][0]["Arn"] == stack.arn(ORCHESTRATOR)
    assert "Input" not in rule["Targets"][0]  # EventBridge's own "Scheduled Event" is the tick


def test_outputs_name_the_api_bucket_and_every_function(translated: dict[str, Any], template: Template) -> None:
    stack = Stack(translated)
    outputs = {name: stack.resolve(o["Value"]) for name, o in translated["Outputs"].items()}
    assert outputs["ApiUrl"] == f"https://{stack.physical_id('Api')}.execute-api.us-east-1.amazonaws.com"
    assert outputs["ArtifactsBucketName"] == stack.physical_id("ArtifactsBucket")
    for lid in template.functions:
        assert outputs[f"{lid}Name"] == stack.physical_id(lid)


def test_image_functions_take_no_layer_and_zip_functions_share_one(
    translated: dict[str, Any], template: Template
) -> None:
    stack = Stack(translated)
    for lid, spec in template.functions.items():
        props = stack.properties(lid)
        if spec.package_type == "Image":
            assert props["PackageType"] == "Image" and "Layers" not in props and "Runtime" not in props
            assert props["ImageConfig"]["Command"] == [spec.handler]
        else:
            assert props["Runtime"] == "python3.12"
            assert len(props["Layers"]) == 1


def test_statement_evaluation_basics() -> None:
    # The IAM helper itself: wildcards, conditions, explicit deny.
    doc = {
        "Resources": {
            "Fn": {"Type": "AWS::Lambda::Function", "Properties": {"Role": {"Fn::GetAtt": ["R", "Arn"]}}},
            "R": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "Policies": [
                        {
                            "PolicyName": "p",
                            "PolicyDocument": {
                                "Statement": [
                                    {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/a/*"},
                                    {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/a/secret"},
                                    {
                                        "Effect": "Allow",
                                        "Action": "s3:ListBucket",
                                        "Resource": "arn:aws:s3:::b",
                                        "Condition": {"StringLike": {"s3:prefix": "a/*"}},
                                    },
                                ]
                            },
                        }
                    ]
                },
            },
        }
    }
    statements = function_role(Stack(doc), "Fn").statements
    assert allowed(statements, "S3:GETOBJECT", "arn:aws:s3:::b/a/x/y")
    assert not allowed(statements, "s3:GetObject", "arn:aws:s3:::b/ab")
    assert not allowed(statements, "s3:GetObject", "arn:aws:s3:::b/a/secret")
    assert allowed(statements, "s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "a/1/"})
    assert not allowed(statements, "s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "b/"})
    assert not allowed(statements, "s3:ListBucket", "arn:aws:s3:::b")
    assert not allowed(copy.deepcopy(statements), "s3:PutObject", "arn:aws:s3:::b/a/x")
