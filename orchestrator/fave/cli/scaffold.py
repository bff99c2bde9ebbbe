"""``fave new pipeline NAME`` and ``fave new stage NAME``: a working non-video pipeline to start from.

``new pipeline`` writes a folder that ``fave run --pipeline NAME/pipeline.yaml`` runs at once: pipeline.yaml
(a declared input, one stage), template.yaml (the orchestrator function, the completions queue its
asynchronous stages report to, the stage function with its destinations, one role per function, as the
project's own template.yaml is wired), the stage written with the SDK (functions/hello/app.py) and its test.

``new stage`` adds a stage to such a folder: the function and its test, the template's function resource
(destinations when asynchronous), the orchestrator's ``FAVE_FUNCTION_*`` variable and invoke permission, and
the stage in pipeline.yaml (after the final stage unless ``--needs`` or ``--for-each`` says otherwise; a
stage that follows the final one becomes final, since a request completes when its final stage succeeds);
the result is loaded again before anything is written (a stage that would not
load writes nothing). The template is edited as text at the ``# fave new stage:`` markers the scaffold
leaves (a YAML round trip would lose its comments and ``!Sub`` tags); a template without them gets an error
that says which lines to add by hand.

The orchestrator's code and the shared layer are the installed ``fave`` and ``fave_shared`` folders, named
by a relative path from the new folder (what ``sam build`` and the local runtime both read).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from fave_shared.errors import FaveError

from fave.core.dag import NAME_PATTERN, ancestors

__all__ = ["ScaffoldError", "new_pipeline", "new_stage"]

ENV_MARKER = "# fave new stage: FAVE_FUNCTION_ variables above this line"
ARN_MARKER = "# fave new stage: stage function ARNs above this line"
_STAGE_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_FOR_EACH = re.compile(rf"({NAME_PATTERN})\.([A-Za-z0-9_.]+)")


class ScaffoldError(FaveError):
    """Something ``fave new`` refuses, in one line (exit 2); nothing was written."""


@dataclass(frozen=True)
class StageSpec:
    name: str
    mode: str
    needs: tuple[str, ...] = ()
    for_each: str | None = None

    @property
    def function(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_")) + "Function"

    @property
    def model(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_"))


def _check_name(kind: str, name: str) -> None:
    if not _STAGE_NAME.fullmatch(name):
        raise ScaffoldError(
            f"{kind} name {name[:60]!r}: use a lower-case letter, then up to 39 lower-case letters, digits or '_'"
        )


def _code_dirs(root: Path) -> tuple[str, str]:
    """The orchestrator's code folder and the shared layer's, relative to ``root`` (forward slashes)."""
    import fave_shared

    import fave

    orchestrator = Path(fave.__file__).resolve().parent.parent
    shared = Path(fave_shared.__file__).resolve().parent.parent
    return (
        Path(os.path.relpath(orchestrator, root.resolve())).as_posix(),
        Path(os.path.relpath(shared, root.resolve())).as_posix(),
    )


# ---- text of the files ---------------------------------------------------------------------------------

_BUCKET = "fave-${AWS::AccountId}-${AWS::Region}-${StackSuffix}"
_SUFFIX = '- StackSuffix: !Select [0, !Split ["-", !Select [2, !Split ["/", !Ref AWS::StackId]]]]'


def _template(name: str, orchestrator_dir: str, shared_dir: str) -> str:
    arn = "arn:${AWS::Partition}:s3:::" + _BUCKET
    return f"""\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Description: fave pipeline {name} (fave new pipeline). Runs locally with `fave run --pipeline pipeline.yaml`;
  deploys with `sam build && sam deploy --guided`.

# Wiring, as the fave project's own template.yaml: the orchestrator consumes CompletionsQueue in batches; every
# asynchronous stage's OnSuccess and OnFailure destinations point at it (fave refuses to load a pipeline whose
# async stage would never report back). Each function runs under its own role: a stage reads requests/* and
# writes only under requests/{{id}}/stages/<its stage>/. `fave new stage NAME` adds a stage at the markers.
# No upload trigger (pipeline.yaml has no `trigger:`): no request names a source, so nothing reads uploads/.
# Adding one takes, as in the fave examples (examples/sales/template.yaml): FAVE_UPLOAD_PREFIX and
# FAVE_INPUT_PREFIXES in the orchestrator's environment, its S3 Upload event and ReadUploads statement, and
# a ReadSources statement on the first stage's function.

Globals:
  Function:
    Runtime: python3.11
    Timeout: 30
    MemorySize: 256
    Layers: [!Ref SharedLayer]

Resources:
  ArtifactsBucket:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: !Sub
        - {_BUCKET}
        {_SUFFIX}

  SharedLayer:  # fave_shared: the stage SDK and the object store
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: {shared_dir}
      CompatibleRuntimes: [python3.11]
    Metadata:
      BuildMethod: python3.11

  CompletionsQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 360  # 6 x the orchestrator's timeout
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt OrchestratorDeadLetterQueue.Arn
        maxReceiveCount: 5

  OrchestratorDeadLetterQueue:
    Type: AWS::SQS::Queue

  OrchestratorFunction:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: !Sub "${{AWS::StackName}}-orchestrator"
      CodeUri: {orchestrator_dir}
      Handler: fave.app.handler
      Timeout: 60
      EventInvokeConfig:
        MaximumRetryAttempts: 2
        DestinationConfig:
          OnFailure: {{Type: SQS, Destination: !GetAtt OrchestratorDeadLetterQueue.Arn}}
      Events:
        Completions:
          Type: SQS
          Properties:
            Queue: !GetAtt CompletionsQueue.Arn
            BatchSize: 1000
            MaximumBatchingWindowInSeconds: 1
            FunctionResponseTypes: [ReportBatchItemFailures]
      Environment:
        Variables:
          FAVE_STORE: !Sub
            - s3://{_BUCKET}
            {_SUFFIX}
          FAVE_PIPELINE: pipeline.yaml
          {ENV_MARKER}
      Policies:
        - Statement:
            - Sid: RequestState
              Effect: Allow
              Action: [s3:GetObject, s3:PutObject]
              Resource:
                - !Sub
                  - {arn}/requests/*
                  {_SUFFIX}
                - !Sub
                  - {arn}/index/*
                  {_SUFFIX}
                - !Sub
                  - {arn}/idempotency/*
                  {_SUFFIX}
                - !Sub
                  - {arn}/alerts/sent/*
                  {_SUFFIX}
            # Deletes are scoped to what the orchestrator replaces or releases: never state, results or a
            # stage's artifacts. A commit deletes the task-shard versions it replaced; a lease is released,
            # and an applied mailbox message removed, by deleting it; an active marker is dropped when done.
            - Sid: SupersededShards
              Effect: Allow
              Action: s3:DeleteObject
              Resource: !Sub
                - {arn}/requests/*/metadata/tasks/*
                {_SUFFIX}
            - Sid: LeaseAndMailbox
              Effect: Allow
              Action: s3:DeleteObject
              Resource:
                - !Sub
                  - {arn}/requests/*/metadata/lease.json
                  {_SUFFIX}
                - !Sub
                  - {arn}/requests/*/inbox/*
                  {_SUFFIX}
            - Sid: AdmissionQueue  # fave.queue: entries and index markers; the tick drains it
              Effect: Allow
              Action: [s3:GetObject, s3:PutObject, s3:DeleteObject]
              Resource: !Sub
                - {arn}/queue/*
                {_SUFFIX}
            - Sid: ActiveMarkers
              Effect: Allow
              Action: s3:DeleteObject
              Resource: !Sub
                - {arn}/index/active/*
                {_SUFFIX}
            - Sid: ListBucket  # also what makes S3 answer 404 rather than 403 for a missing key
              Effect: Allow
              Action: s3:ListBucket
              Resource: !Sub
                - {arn}
                {_SUFFIX}
            - Sid: InvokeStages  # and itself: the asynchronous step that runs a request the API accepted
              Effect: Allow
              # GetFunctionConfiguration: the result cache keys a stage's tasks by its deployed code
              # (CodeSha256 and layer versions: fave.invoke.aws.LambdaInvoker.code_digest).
              Action: [lambda:InvokeFunction, lambda:GetFunctionConfiguration]
              Resource:
                {_arn_line(StageSpec("orchestrator", "sync"))}
                {ARN_MARKER}

  # Stages (fave new stage NAME adds one below).
"""


def _function_resource(spec: StageSpec) -> str:
    destinations = ""
    if spec.mode == "async":
        destinations = """
      EventInvokeConfig:
        MaximumRetryAttempts: 0  # fave retries by the pipeline's retry policy
        MaximumEventAgeInSeconds: 3600
        DestinationConfig:
          OnSuccess: {Type: SQS, Destination: !GetAtt CompletionsQueue.Arn}
          OnFailure: {Type: SQS, Destination: !GetAtt CompletionsQueue.Arn}"""
    return f"""
  {spec.function}:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: !Sub "${{AWS::StackName}}-{spec.name.replace("_", "-")}"
      CodeUri: functions/{spec.name}
      Handler: app.handler{destinations}
      Policies:
        - Statement:
            - Sid: ReadRequests
              Effect: Allow
              Action: s3:GetObject
              Resource: !Sub "${{ArtifactsBucket.Arn}}/requests/*"
            - Sid: WriteOwnArtifacts
              Effect: Allow
              Action: s3:PutObject
              Resource: !Sub "${{ArtifactsBucket.Arn}}/requests/*/stages/{spec.name}/*"
"""


def _env_line(spec: StageSpec) -> str:
    return f'FAVE_FUNCTION_{spec.function}: !Sub "${{AWS::StackName}}-{spec.name.replace("_", "-")}"'


def _arn_line(spec: StageSpec) -> str:
    return (
        '- !Sub "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${AWS::StackName}-'
        f'{spec.name.replace("_", "-")}"'
    )


def _pipeline_yaml(name: str) -> str:
    return f"""\
# fave pipeline {name}: run it with `fave run --pipeline pipeline.yaml [--input '{{"name": "you"}}']`.
# Reference: the fave README ("Any pipeline") and docs/stages.md (what a stage receives and returns).
name: {name}
template: template.yaml
final: hello                # its output becomes the request's final.json
input:                      # what a request carries: checked before anything is stored
  fields:
    name: {{type: string, default: world, max_length: 200, description: "who to greet"}}
defaults:
  timeout: 1m
  retry: {{max_attempts: 2, interval: 1s, backoff_rate: 2, max_delay: 30s, jitter: full}}
profiles:
  default: {{}}
  shout: {{hello: {{punctuation: "!!!"}}}}   # fave run --profile shout
stages:
  hello: {{function: HelloFunction, mode: async, config: {{punctuation: "."}}}}
"""


def _stage_yaml(spec: StageSpec) -> str:
    parts = [f"function: {spec.function}", f"mode: {spec.mode}"]
    if spec.needs:
        parts.insert(1, f"needs: [{', '.join(spec.needs)}]")
    if spec.for_each is not None:
        parts.insert(2 if spec.needs else 1, f"for_each: {spec.for_each}")
    return f"  {spec.name}: {{{', '.join(parts)}}}\n"


_HELLO_APP = '''\
"""Stage hello: greet the request's name (written with the stage SDK: docs/stages.md)."""

from fave_shared.schemas import StageInput
from fave_shared.stage import StageContext, stage
from pydantic import BaseModel, Field


class HelloConfig(BaseModel):
    punctuation: str = Field(".", max_length=10)


class HelloInput(StageInput):
    """The request's input is ``inp.request`` (pipeline.yaml's ``input:``); ``inp.config`` the stage's config."""


class HelloOutput(BaseModel):
    greeting: str


@stage(HelloInput)
def handler(inp: HelloInput, ctx: StageContext) -> HelloOutput:
    config = HelloConfig.model_validate(inp.config)
    name = str(getattr(inp.request, "name", None) or "world")
    return HelloOutput(greeting=f"hello, {name}{config.punctuation}")
'''


def _stage_app(spec: StageSpec) -> str:
    item = "the fan-out element (``for_each``)" if spec.for_each else "None: this stage is not fanned out"
    return f'''\
"""Stage {spec.name} (fave new stage): replace the body with the stage's work (docs/stages.md)."""

from typing import Any

from fave_shared.schemas import StageInput
from fave_shared.stage import StageContext, stage
from pydantic import BaseModel


class {spec.model}Input(StageInput):
    """``request``: the request's input; ``needs``: upstream outputs by stage; ``item``: {item}."""


class {spec.model}Output(BaseModel):
    stage: str
    item: Any = None
    needs: list[str]


@stage({spec.model}Input)
def handler(inp: {spec.model}Input, ctx: StageContext) -> {spec.model}Output:
    return {spec.model}Output(stage=ctx.task.stage, item=inp.item, needs=sorted(inp.needs))
'''


def _stage_test(spec: StageSpec, expected: str, request: str) -> str:
    return f'''\
"""Stage {spec.name}, called as Lambda calls it: an event in, the result out (run: pytest tests/)."""

import importlib.util
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "functions" / "{spec.name}" / "app.py"


def _handler():
    spec = importlib.util.spec_from_file_location("{spec.name}_app", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def test_{spec.name}(tmp_path):
    event = {{
        "fave": 1,
        "task": {{"request_id": "01TEST", "stage": "{spec.name}", "item": None, "attempt": 1}},
        "mode": "{spec.mode}",
        "store": str(tmp_path),
        "input": {{"request": {request}, "needs": {{}}, "config": {{}}}},
    }}
    assert _handler()(event) == {expected}
'''


def _readme(name: str) -> str:
    return f"""\
# {name}

A fave pipeline (made by `fave new pipeline {name}`).

- Run it on this machine: `fave run --pipeline pipeline.yaml --input '{{"name": "you"}}'`
  (`fave status ID --stage hello` shows its task; `fave list` lists the requests).
- Test its stages: `pytest tests/`.
- Add a stage: `fave new stage NAME --needs hello [--for-each STAGE.FIELD] [--mode sync|async]`.
- Deploy: `sam build && sam deploy --guided` (template.yaml: one role per function, results through
  CompletionsQueue).
"""


# ---- commands ------------------------------------------------------------------------------------------


def new_pipeline(name: str, directory: Path) -> Path:
    """Write the pipeline folder ``directory/name``; returns it. Refuses an existing non-empty folder."""
    _check_name("pipeline", name)
    root = directory / name
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ScaffoldError(f"{root}: already exists and is not an empty folder")
    orchestrator_dir, shared_dir = _code_dirs(root)
    hello = StageSpec("hello", "async")
    template = _template(name, orchestrator_dir, shared_dir)
    template = template.replace(ENV_MARKER, f"{_env_line(hello)}\n          {ENV_MARKER}")
    template = template.replace(ARN_MARKER, f"{_arn_line(hello)}\n                {ARN_MARKER}")
    files = {
        "pipeline.yaml": _pipeline_yaml(name),
        "template.yaml": template + _function_resource(hello),
        "functions/hello/app.py": _HELLO_APP,
        "tests/test_hello.py": _stage_test(hello, "{'greeting': 'hello, you.'}", "{'name': 'you'}"),
        "README.md": _readme(name),
        ".gitignore": "# fave run's default store, and sam build's output\nfave-artifacts/\n.aws-sam/\n",
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def new_stage(
    name: str,
    pipeline_path: Path,
    *,
    needs: tuple[str, ...] = (),
    for_each: str | None = None,
    mode: str | None = None,
) -> Path:
    """Add stage ``name`` to the pipeline at ``pipeline_path`` (see the module docs); returns its app.py."""
    from fave.local.orchestrator import load_local_pipeline
    from fave.pipeline import PipelineError

    _check_name("stage", name)
    if not pipeline_path.is_file():
        raise ScaffoldError(f"{pipeline_path}: no such pipeline file (give --pipeline PATH)")
    try:
        pipeline = load_local_pipeline(pipeline_path)
    except PipelineError as exc:
        raise ScaffoldError(f"the pipeline does not load as it is: {exc}") from None
    if name in pipeline.stages:
        raise ScaffoldError(f"stage '{name}' already exists in {pipeline_path}")
    if not needs and for_each is None:
        needs = (pipeline.final,)  # by default the chain grows: the new stage follows the final one
    unknown = [n for n in needs if n not in pipeline.stages]
    if unknown:
        raise ScaffoldError(f"--needs: no stage {', '.join(unknown)} (stages: {', '.join(pipeline.order)})")
    if for_each is not None:
        match = _FOR_EACH.fullmatch(for_each)
        if match is None or match.group(1) not in pipeline.stages:
            raise ScaffoldError(f"--for-each {for_each!r}: expected STAGE.FIELD of an existing stage")
        if match.group(1) not in needs:
            needs = (*needs, match.group(1))
    spec = StageSpec(name, mode or ("async" if for_each else "sync"), needs, for_each)
    if for_each is not None and pipeline.final in ancestors(pipeline.stages, needs):
        raise ScaffoldError(
            f"stage '{name}' would follow the final stage '{pipeline.final}' and is fanned out, but a request ends "
            "with a single task: fan out from a stage before the final one (--needs), or add the fan-out and the "
            "stage that joins it to pipeline.yaml together by hand"
        )
    root = pipeline_path.parent
    template_path = pipeline.template_path
    template = template_path.read_text(encoding="utf-8")
    if spec.function in template:
        raise ScaffoldError(f"{template_path.name}: already has a resource named {spec.function}")
    missing = [m for m in (ENV_MARKER, ARN_MARKER) if m not in template]
    if missing:
        raise ScaffoldError(
            f"{template_path.name} has no '{missing[0]}' marker (it was not made by fave new pipeline): add "
            f"{spec.function} to it by hand, with {_env_line(spec)!r} in the orchestrator's environment"
        )
    template = _insert_before(template, ENV_MARKER, _env_line(spec))
    template = _insert_before(template, ARN_MARKER, _arn_line(spec))
    template = template.rstrip("\n") + "\n" + _function_resource(spec)
    text = pipeline_path.read_text(encoding="utf-8")
    if not re.search(r"^stages:\s*$", text, re.MULTILINE) or re.search(r"^stages:.*\n(?:.*\n)*^\S", text, re.M):
        raise ScaffoldError(
            f"{pipeline_path.name}: expected 'stages:' as the file's last section, one stage per line under "
            f"it; add this line by hand: {_stage_yaml(spec).strip()}"
        )
    new_text = text.rstrip("\n") + "\n" + _stage_yaml(spec)
    if pipeline.final in ancestors(pipeline.stages, spec.needs):
        # The request completes when its final stage succeeds: a stage after it becomes the final one.
        new_text, moved = re.subn(rf"^final:\s*{re.escape(pipeline.final)}\b", f"final: {name}", new_text, flags=re.M)
        if not moved:
            raise ScaffoldError(f"{pipeline_path.name}: no 'final: {pipeline.final}' line to move to '{name}'")
    app = root / "functions" / name / "app.py"
    test = root / "tests" / f"test_{name}.py"
    for path in (app, test):
        if path.exists():
            raise ScaffoldError(f"{path}: already exists")
    originals = {pipeline_path: text, template_path: template_path.read_text(encoding="utf-8")}
    written: list[Path] = []
    try:
        template_path.write_text(template, encoding="utf-8")
        pipeline_path.write_text(new_text, encoding="utf-8")
        app.parent.mkdir(parents=True, exist_ok=True)
        test.parent.mkdir(parents=True, exist_ok=True)
        app.write_text(_stage_app(spec), encoding="utf-8")
        written.append(app)
        expected = f"{{'stage': '{name}', 'item': None, 'needs': []}}"
        test.write_text(_stage_test(spec, expected, "{}"), encoding="utf-8")
        written.append(test)
        load_local_pipeline(pipeline_path)  # the template is read again: it is cached by size and mtime
    except (PipelineError, OSError) as exc:
        for path, original in originals.items():
            path.write_text(original, encoding="utf-8")
        for path in written:
            path.unlink(missing_ok=True)
        for folder in (app.parent, test.parent):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise ScaffoldError(f"stage '{name}' would not load, nothing was changed: {exc}") from None
    return app


def _insert_before(text: str, marker: str, line: str) -> str:
    """``line`` on its own line just above the marker's, indented as it is."""
    start = text.index(marker)
    indent = text[text.rindex("\n", 0, start) + 1 : start]
    return text[:start] + line + "\n" + indent + text[start:]
