"""template.yaml reading (files and code folders): Globals merge, layers, destinations, and one-line validation
errors. CloudFormation short tags (YAML text): tests/unit/test_yamlsafe.py."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from fave.local.template import EventInvokeConfig, QueueSpec, SqsEventSource, Template, load_template
from fave_shared.errors import NotFoundError, ValidationError
from support.templates import ROOT as REPOSITORY
from support.templates import RUNTIME_TEMPLATE as FIXTURE

ROOT = FIXTURE.parent


@pytest.fixture(autouse=True)
def _region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)


def write_template(tmp_path: Path, resources: str, *, extra: str = "") -> Path:
    """A template in tmp_path with a ``src`` code folder; ``resources`` is the indented Resources body."""
    (tmp_path / "src").mkdir(exist_ok=True)
    path = tmp_path / "template.yaml"
    body = "Transform: AWS::Serverless-2016-10-31\n" + textwrap.dedent(extra)
    body += "Resources:\n" + textwrap.indent(textwrap.dedent(resources), "  ")
    path.write_text(body)
    return path


# -- the fixture template ------------------------------------------------------------------------------------


def test_globals_are_merged_into_every_function(runtime_template: Template) -> None:
    template = runtime_template
    echo = template.functions["Echo"]
    assert echo.handler == "echo.handler"
    assert echo.code_uri == ROOT / "functions" / "basic"
    assert echo.code_uri.is_absolute()
    assert (echo.timeout_s, echo.memory_mb, echo.runtime) == (5, 256, "python3.11")
    assert echo.layers == (ROOT / "layer",)
    assert echo.python_path == (ROOT / "functions" / "basic", ROOT / "layer", ROOT / "layer" / "python")
    # Globals variables merged key by key, the function's own value winning.
    assert echo.environment == {
        "GREETING": "hello",  # !Ref of a parameter default
        "SHARED": "from-function",
        "PLACE": "us-east-1/hello",  # !Sub over a pseudo parameter and a parameter
        "FLAG": "true",  # CloudFormation renders booleans in lower case
    }
    assert echo.unresolved_environment == ("BUCKET",)  # !Ref Bucket: only a deployed stack knows
    assert template.functions["Boom"].environment == {"GREETING": "hello", "SHARED": "from-globals"}
    assert template.functions["Sleepy"].timeout_s == 1
    assert template.layers == {"SharedLayer": ROOT / "layer"}
    assert set(template.functions) == {
        "Echo", "Boom", "Sleepy", "Crash", "Flaky", "Counter", "Missing", "FanIn", "EchoThread",
    }  # fmt: skip


def test_parameters_and_region_can_be_overridden() -> None:
    template = load_template(FIXTURE, parameters={"Greeting": "hi"}, region="eu-west-1")
    assert template.functions["Echo"].environment["PLACE"] == "eu-west-1/hi"
    assert template.functions["Echo"].environment["GREETING"] == "hi"


def test_destinations_retries_concurrency_and_isolation(runtime_template: Template) -> None:
    functions = runtime_template.functions
    assert functions["Echo"].event_invoke_config == EventInvokeConfig(2, 21600, None, None)
    # OnSuccess is a !Ref, OnFailure a long-form Fn::GetAtt list
    assert functions["Flaky"].event_invoke_config == EventInvokeConfig(2, 3600, "FanIn", "FanIn")
    assert functions["Boom"].event_invoke_config == EventInvokeConfig(1, 21600, None, "FanIn")
    assert functions["FanIn"].event_invoke_config.on_success == "DoneQueue"
    assert functions["Counter"].reserved_concurrency == 1
    assert functions["Echo"].reserved_concurrency is None
    assert functions["EchoThread"].local_isolation == "thread"
    assert functions["EchoThread"].code_uri == ROOT / "functions" / "threaded"
    assert functions["Echo"].local_isolation == "process"
    assert functions["Echo"].package_type == "Zip"


def test_function_lookup_and_missing_file(runtime_template: Template, tmp_path: Path) -> None:
    template = runtime_template
    assert template.function("Echo").logical_id == "Echo"
    with pytest.raises(NotFoundError, match="Nope"):
        template.function("Nope")
    with pytest.raises(NotFoundError):
        load_template(tmp_path / "absent.yaml")


def test_duplicate_keys_and_bad_yaml_are_validation_errors(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text("Resources:\n  A: {Type: X}\n  A: {Type: Y}\n")
    with pytest.raises(ValidationError, match="duplicate key 'A'"):
        load_template(path)
    path.write_text("Resources: [\n")
    with pytest.raises(ValidationError, match="not valid YAML"):
        load_template(path)
    path.write_text("just: text\n")
    with pytest.raises(ValidationError, match="no Resources"):
        load_template(path)


# -- merging and special cases -------------------------------------------------------------------------------


def test_global_layers_concatenate_and_sub_destinations(tmp_path: Path) -> None:
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    path = write_template(
        tmp_path,
        """
        One: {Type: AWS::Serverless::LayerVersion, Properties: {ContentUri: one}}
        Two: {Type: AWS::Serverless::LayerVersion, Properties: {ContentUri: two}}
        Remote: {Type: AWS::Serverless::LayerVersion, Properties: {ContentUri: {Bucket: b, Key: k}}}
        Fn:
          Type: AWS::Serverless::Function
          Properties:
            Layers: [!Ref Two, !Ref Remote, "arn:aws:lambda:us-east-1:1:layer:x:1"]
            EventInvokeConfig:
              DestinationConfig:
                OnSuccess: {Type: Lambda, Destination: !Sub "${Other.Arn}"}
                OnFailure: {Type: Lambda, Destination: "arn:aws:lambda:us-east-1:1:function:f"}
        """,
        extra="""
        Globals:
          Function:
            Handler: app.handler
            CodeUri: src
            Layers: [!Ref One]
            Timeout: 30
        """,
    )
    spec = load_template(path).functions["Fn"]
    assert spec.layers == (tmp_path / "one", tmp_path / "two")  # Globals first, remote ones skipped
    assert spec.timeout_s == 30
    assert spec.event_invoke_config.on_success == "Other"
    assert spec.event_invoke_config.on_failure == "arn:aws:lambda:us-east-1:1:function:f"


def test_image_function_uses_docker_context_and_command(tmp_path: Path) -> None:
    (tmp_path / "image").mkdir()
    path = write_template(
        tmp_path,
        """
        Img:
          Type: AWS::Serverless::Function
          Metadata: {DockerContext: image, Dockerfile: Dockerfile}
          Properties:
            PackageType: Image
            ImageConfig: {Command: ["app.handler"]}
            ReservedConcurrentExecutions: 2
        """,
        extra="""
        Globals:
          Function:
            Handler: ignored.for_images
            CodeUri: does-not-exist
        """,
    )
    spec = load_template(path).functions["Img"]
    assert (spec.package_type, spec.handler, spec.code_uri) == ("Image", "app.handler", tmp_path / "image")
    assert spec.reserved_concurrency == 2


# -- validation errors: one line naming file, function and field ---------------------------------------------

FN = "Fn:\n  Type: AWS::Serverless::Function\n  Properties:\n"


@pytest.mark.parametrize(
    ("properties", "field", "problem"),
    [
        ("    CodeUri: src\n", "Handler", "missing"),
        ("    Handler: app.handler\n", "CodeUri", "missing"),
        ("    Handler: app.handler\n    CodeUri: nowhere\n", "CodeUri", "does not exist"),
        ("    Handler: app\n    CodeUri: src\n", "Handler", "module.function"),
        ("    Handler: app.handler\n    CodeUri: src\n    Timeout: soon\n", "Timeout", "integer"),
        ("    Handler: app.handler\n    CodeUri: src\n    Timeout: 0\n", "Timeout", "between 1 and 900"),
        ("    Handler: app.handler\n    CodeUri: src\n    Timeout: 901\n", "Timeout", "between 1 and 900"),
        ("    Handler: app.handler\n    CodeUri: src\n    MemorySize: 64\n", "MemorySize", "between"),
        (
            "    Handler: app.handler\n    CodeUri: src\n    EventInvokeConfig: {MaximumRetryAttempts: 3}\n",
            "MaximumRetryAttempts",
            "between 0 and 2",
        ),
        ("    Handler: app.handler\n    CodeUri: src\n    Layers: [!Ref Nope]\n", "Layers", "Nope"),
    ],
)
def test_invalid_function_fields(tmp_path: Path, properties: str, field: str, problem: str) -> None:
    path = write_template(tmp_path, FN + properties)
    with pytest.raises(ValidationError) as info:
        load_template(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert f"function Fn: {field}" in message
    assert problem in message


def test_invalid_isolation_and_missing_docker_context(tmp_path: Path) -> None:
    with_metadata = FN.replace("  Properties:", "  Metadata: {FaveLocal: {Isolation: vm}}\n  Properties:")
    path = write_template(tmp_path, with_metadata + "    Handler: app.handler\n    CodeUri: src\n")
    with pytest.raises(ValidationError, match=r"function Fn: Metadata\.FaveLocal\.Isolation: must be process"):
        load_template(path)
    path = write_template(tmp_path, FN + "    PackageType: Image\n")
    with pytest.raises(ValidationError, match=r"function Fn: Metadata\.DockerContext: missing"):
        load_template(path)


# -- intrinsics the deployable template uses -----------------------------------------------------------------

CONDITIONAL = """
Fn:
  Type: AWS::Serverless::Function
  Properties:
    Handler: app.handler
    CodeUri: src
    Environment:
      Variables:
        MODE: !If [IsProd, production, trial]
        ONLY_PROD: !If [IsProd, "yes", !Ref AWS::NoValue]
        NESTED: !If [NotProd, !Sub "${AWS::Region}-trial", !Ref AWS::NoValue]
        UNKNOWN: !If [Undecidable, a, b]
    EventInvokeConfig:
      DestinationConfig:
        OnSuccess: {Type: Lambda, Destination: !If [IsProd, !GetAtt Sink.Arn, !Ref AWS::NoValue]}
        OnFailure: {Type: Lambda, Destination: !If [NotProd, !Ref Sink, !GetAtt Other.Arn]}
Sink: {Type: AWS::Serverless::Function, Properties: {Handler: app.handler, CodeUri: src}}
Other: {Type: AWS::Serverless::Function, Properties: {Handler: app.handler, CodeUri: src}}
"""
CONDITIONS = """
Parameters:
  Stage: {Type: String, Default: prod, AllowedValues: [prod, trial]}
  Whatever: {Type: String}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  NotProd: !Not [!Condition IsProd]
  Undecidable: !And [!Condition IsProd, !Equals [!Ref Whatever, x]]
"""


def test_if_takes_the_branch_of_its_condition(tmp_path: Path) -> None:
    path = write_template(tmp_path, CONDITIONAL, extra=CONDITIONS)
    prod = load_template(path).functions["Fn"]
    assert prod.environment == {"MODE": "production", "ONLY_PROD": "yes"}  # NESTED: NoValue drops the key
    assert prod.unresolved_environment == ("UNKNOWN",)  # Whatever has no value: the condition is unknown
    assert (prod.event_invoke_config.on_success, prod.event_invoke_config.on_failure) == ("Sink", "Other")

    trial = load_template(path, parameters={"Stage": "trial"}).functions["Fn"]
    # IsProd is false, so And is false whatever Whatever is.
    assert trial.environment == {"MODE": "trial", "NESTED": "us-east-1-trial", "UNKNOWN": "b"}
    assert (trial.event_invoke_config.on_success, trial.event_invoke_config.on_failure) == (None, "Sink")

    known = load_template(path, parameters={"Whatever": "y"}).functions["Fn"]
    assert known.environment["UNKNOWN"] == "b"


def test_destination_arns_built_from_function_names(tmp_path: Path) -> None:
    path = write_template(
        tmp_path,
        """
        Orchestrator:
          Type: AWS::Serverless::Function
          Properties: {Handler: app.handler, CodeUri: src, FunctionName: !Sub "${AWS::StackName}-${Name}"}
        Unnamed: {Type: AWS::Serverless::Function, Properties: {Handler: app.handler, CodeUri: src}}
        Fn:
          Type: AWS::Serverless::Function
          Properties:
            Handler: app.handler
            CodeUri: src
            Environment:
              Variables:
                TARGET: !Ref Orchestrator
                TARGET_ARN: !GetAtt Orchestrator.Arn
                OTHER: !Sub "${Unnamed}"
            EventInvokeConfig:
              DestinationConfig:
                OnSuccess:
                  Type: Lambda
                  Destination: !Sub "arn:aws:lambda:${AWS::Region}:${AWS::AccountId}:function:${AWS::StackName}-${Name}"
                OnFailure: {Type: Lambda, Destination: "arn:aws:lambda:eu-west-1:1:function:local-orchestrator:live"}
        Elsewhere:
          Type: AWS::Serverless::Function
          Properties:
            Handler: app.handler
            CodeUri: src
            EventInvokeConfig:
              DestinationConfig:
                OnSuccess: {Type: Lambda, Destination: !Sub "arn:aws:lambda:${AWS::Region}:1:function:not-here"}
                OnFailure: {Type: Lambda, Destination: !Sub "arn:aws:lambda:${AWS::Region}:1:function:${Unnamed}"}
        """,
        extra="Parameters:\n  Name: {Type: String, Default: orchestrator}\n",
    )
    functions = load_template(path).functions
    config = functions["Fn"].event_invoke_config
    assert (config.on_success, config.on_failure) == ("Orchestrator", "Orchestrator")
    renamed = load_template(path, parameters={"Name": "other"}).functions["Fn"].event_invoke_config
    assert renamed.on_success == "Orchestrator"  # names and ARN follow the parameter together
    assert functions["Fn"].environment == {
        "TARGET": "local-orchestrator",
        "TARGET_ARN": "arn:aws:lambda:us-east-1:000000000000:function:local-orchestrator",
        "OTHER": "Unnamed",  # no FunctionName: the logical id is its local name
    }
    elsewhere = functions["Elsewhere"].event_invoke_config
    assert elsewhere.on_success == "arn:aws:lambda:us-east-1:1:function:not-here"
    assert elsewhere.on_failure == "Unnamed"


def test_image_code_from_the_dockerfile_folder_or_fave_local(tmp_path: Path) -> None:
    (tmp_path / "functions" / "heavy").mkdir(parents=True)
    (tmp_path / "local-code").mkdir()
    image = """
        {lid}:
          Type: AWS::Serverless::Function
          Metadata: {metadata}
          Properties: {{PackageType: Image, ImageConfig: {{Command: [app.handler]}}}}
    """
    resources = "".join(
        image.format(lid=lid, metadata=metadata)
        for lid, metadata in (
            ("Wide", "{Dockerfile: functions/heavy/Dockerfile, DockerContext: ., DockerTag: v1}"),
            ("Local", "{Dockerfile: Dockerfile, DockerContext: ., FaveLocal: {CodeUri: local-code}}"),
        )
    )
    functions = load_template(write_template(tmp_path, resources)).functions
    assert functions["Wide"].code_uri == tmp_path / "functions" / "heavy"
    assert functions["Local"].code_uri == tmp_path / "local-code"
    assert functions["Wide"].layers == () and functions["Wide"].handler == "app.handler"

    missing = image.format(lid="Gone", metadata="{Dockerfile: functions/gone/Dockerfile, DockerContext: .}")
    with pytest.raises(ValidationError, match=r"function Gone: Metadata\.Dockerfile: folder 'functions/gone'"):
        load_template(write_template(tmp_path, missing))


def test_the_repository_template_runs_locally(template: Template) -> None:
    """What `fave run` reads from template.yaml: every destination is CompletionsQueue, which the orchestrator
    consumes in batches; images run from their Dockerfile's folder, and only what a deployed stack knows stays
    unresolved."""
    root = REPOSITORY
    functions = template.functions
    for lid in ("ExtractFunction", "TranscribeFunction", "DetectFunction"):
        config = functions[lid].event_invoke_config
        assert (config.on_success, config.on_failure, config.max_retry_attempts) == (
            "CompletionsQueue",
            "CompletionsQueue",
            0,
        )
    assert functions["OrchestratorFunction"].event_sources == (
        SqsEventSource("Completions", "CompletionsQueue", 1000, 1, True, 2),
    )
    assert template.queue("CompletionsQueue") == QueueSpec("CompletionsQueue", 5400, 5, "OrchestratorDeadLetterQueue")
    assert all(not functions[lid].event_sources for lid in functions if lid != "OrchestratorFunction")
    for lid, folder in (("TranscribeFunction", "transcribe"), ("DetectFunction", "detect")):
        assert functions[lid].package_type == "Image"
        assert functions[lid].code_uri == root / "functions" / folder
        assert functions[lid].handler == "app.handler" and functions[lid].layers == ()
    assert functions["ExtractFunction"].layers == (root / "shared",)
    orchestrator = functions["OrchestratorFunction"]
    assert orchestrator.unresolved_environment == ("FAVE_STORE",)  # the bucket: wiring passes the store
    assert orchestrator.environment["FAVE_FUNCTION_ExtractFunction"] == "local-extract"


# -- SQS: queues and event source mappings (issue 10) ----------------------------------------------------------

QUEUES = """
Consumer:
  Type: AWS::Serverless::Function
  Properties:
    Handler: app.handler
    CodeUri: src
    Events:
      Api: {Type: HttpApi, Properties: {Path: /x, Method: GET}}
      Batches:
        Type: SQS
        Properties:
          Queue: !GetAtt Work.Arn
          BatchSize: 100
          MaximumBatchingWindowInSeconds: !Ref Window
          FunctionResponseTypes: [ReportBatchItemFailures]
          ScalingConfig: {MaximumConcurrency: 3}
      Defaults: {Type: SQS, Properties: {Queue: "arn:aws:sqs:us-east-1:1:elsewhere", Enabled: false}}
Producer:
  Type: AWS::Serverless::Function
  Properties:
    Handler: app.handler
    CodeUri: src
    EventInvokeConfig:
      DestinationConfig:
        OnSuccess: {Type: SQS, Destination: !GetAtt Work.Arn}
        OnFailure: {Type: SQS, Destination: !Ref Work}
Work:
  Type: AWS::SQS::Queue
  Properties:
    VisibilityTimeout: 60
    RedrivePolicy: {deadLetterTargetArn: !GetAtt Dead.Arn, maxReceiveCount: 4}
Textual:
  Type: AWS::SQS::Queue
  Properties:
    RedrivePolicy: '{"deadLetterTargetArn": "arn:aws:sqs:us-east-1:1:kept", "maxReceiveCount": 2}'
Dead: {Type: AWS::SQS::Queue}
"""


def test_sqs_events_and_queues_are_read(tmp_path: Path) -> None:
    template = load_template(
        write_template(tmp_path, QUEUES, extra="Parameters:\n  Window: {Type: Number, Default: 2}\n")
    )
    assert template.function("Consumer").event_sources == (  # the HttpApi event is SAM's business
        SqsEventSource("Batches", "Work", 100, 2, True, 3, True),
        SqsEventSource("Defaults", "arn:aws:sqs:us-east-1:1:elsewhere", 10, 0, False, None, False),
    )
    config = template.function("Producer").event_invoke_config
    assert (config.on_success, config.on_failure) == ("Work", "Work")
    assert template.queues == {
        "Work": QueueSpec("Work", 60, 4, "Dead"),
        "Textual": QueueSpec("Textual", 30, 2, "arn:aws:sqs:us-east-1:1:kept"),
        "Dead": QueueSpec("Dead"),
    }
    with pytest.raises(NotFoundError, match="no AWS::SQS::Queue 'Nope'"):
        template.queue("Nope")


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ("BatchSize: 100\n          MaximumBatchingWindowInSeconds: 0", "MaximumBatchingWindowInSeconds", "at least 1"),
        ("BatchSize: 10001", "BatchSize", "between 1 and 10000"),
        ("FunctionResponseTypes: [Everything]", "FunctionResponseTypes", "ReportBatchItemFailures"),
        ("ScalingConfig: {MaximumConcurrency: 1}", "ScalingConfig.MaximumConcurrency", "between 2 and 1000"),
        ("Queue: {Fn::Join: [x]}", "Queue", "must name a queue"),
    ],
)
def test_invalid_sqs_events(tmp_path: Path, change: str, field: str, problem: str) -> None:
    queue = "" if change.startswith("Queue:") else "Queue: arn:aws:sqs:us-east-1:1:q\n          "
    resources = FN + (
        "    Handler: app.handler\n    CodeUri: src\n    Events:\n      Batches:\n        Type: SQS\n"
        "        Properties:\n          " + queue + change + "\n"
    )
    path = write_template(tmp_path, resources)
    with pytest.raises(ValidationError) as info:
        load_template(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert f"function Fn: Events.Batches.{field}" in message and problem in message


def test_an_invalid_redrive_policy_names_the_queue(tmp_path: Path) -> None:
    path = write_template(
        tmp_path, "Q:\n  Type: AWS::SQS::Queue\n  Properties:\n    RedrivePolicy: {maxReceiveCount: 0}\n"
    )
    with pytest.raises(ValidationError, match=r"queue Q: RedrivePolicy.deadLetterTargetArn: must name a queue"):
        load_template(path)
    path.write_text(path.read_text().replace("{maxReceiveCount: 0}", "{deadLetterTargetArn: x, maxReceiveCount: 0}"))
    with pytest.raises(ValidationError, match=r"queue Q: RedrivePolicy.maxReceiveCount: must be between 1 and 1000"):
        load_template(path)
