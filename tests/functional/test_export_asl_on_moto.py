"""``fave export --format asl`` verified by running (issue 15, requirements 1 and 2): the exported state machine
runs on moto's Step Functions with its real ASL interpreter (``execute_state_machine``), its ``lambda:invoke``
tasks routed to fave's local runtime over the pipeline's own template.yaml by a botocore ``before-call`` hook
(moto runs Lambda code only in Docker), so the SAME stage functions run; the execution's output must equal
``fave run``'s final.json for the same request. The definitions also pass an ASL validator (cfn-lint's E3601
schema of state machine definitions), and the ``--sam`` copy of template.yaml passes ``sam validate --lint`` and
cfn-lint (.venv-sam).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fave.local.runtime import LocalRuntime
from support import e2e
from support.demo import demo_variant
from support.engines import fave_run
from support.sam import SAM_VENV
from support.stores import threaded_moto_server

pytest.importorskip("antlr4", reason="moto's Step Functions interpreter needs moto[stepfunctions] (antlr4)")
pytest.importorskip("jsonpath_ng", reason="moto's Step Functions interpreter needs moto[stepfunctions]")

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tests" / "fixtures" / "demo" / "pipeline.yaml"
SALES = ROOT / "examples" / "sales"
WEEKLY = ROOT / "examples" / "weekly"
REGION = "us-east-1"
ACCOUNT = "123456789012"
REQUEST_ID = "01M8D4S70VJ0XHPQ8DFCEG1K38"
BUCKET = "fave-export"
CFN_LINT = SAM_VENV / "bin" / "cfn-lint"
SAM = SAM_VENV / "bin" / "sam"


def function_arn(function: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}"


class Machines:
    """moto's Step Functions (executing) with Lambda invokes answered by a LocalRuntime."""

    def __init__(self, runtime: LocalRuntime) -> None:
        import boto3

        self.runtime = runtime
        self.invoked: list[tuple[str, dict[str, Any]]] = []
        self.sfn = boto3.client("stepfunctions", region_name=REGION)
        self.s3 = boto3.client("s3", region_name=REGION)

    def objects(self, prefix: str = "") -> dict[str, Any]:
        """The JSON objects in the test bucket under ``prefix``, by key."""
        listed = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
        return {o["Key"]: json.loads(self.s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()) for o in listed}

    def invoke(self, params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        """botocore ``before-call.lambda.Invoke``: run the function named by the ARN in the URL on the local
        runtime and answer as Lambda's Invoke does (Payload, FunctionError on a function error)."""
        from botocore.awsrequest import AWSResponse
        from botocore.response import StreamingBody

        name = urllib.parse.unquote(params["url_path"].split("/functions/", 1)[1].split("/", 1)[0])
        function = name.split(":function:", 1)[1].split(":")[0] if ":function:" in name else name
        payload = json.loads(params["body"])
        self.invoked.append((function, payload))
        result = self.runtime.invoke_sync(function, payload)
        body = json.dumps(result.payload).encode()
        parsed: dict[str, Any] = {
            "StatusCode": 200,
            "Payload": StreamingBody(io.BytesIO(body), len(body)),
            "ResponseMetadata": {"HTTPStatusCode": 200, "RequestId": result.request_id, "HTTPHeaders": {}},
        }
        if result.function_error:
            parsed["FunctionError"] = result.function_error
        return AWSResponse(f"https://lambda.{REGION}.amazonaws.com", 200, {}, None), parsed

    def run(self, definition: dict[str, Any], machine_input: dict[str, Any], name: str = REQUEST_ID) -> dict[str, Any]:
        """Create the machine, start an execution named ``name``, wait for its end; its describe_execution."""
        arn = self.sfn.create_state_machine(
            name=f"fave-{time.monotonic_ns()}",
            definition=json.dumps(definition),
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/fave-export",
        )["stateMachineArn"]
        execution = self.sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps(machine_input))
        deadline = time.monotonic() + 120
        while True:
            described: dict[str, Any] = self.sfn.describe_execution(executionArn=execution["executionArn"])
            if described["status"] != "RUNNING" or time.monotonic() > deadline:
                return described
            time.sleep(0.05)

    def maps_entered(self, execution_arn: str) -> set[str]:
        events = self.sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
        return {e["stateEnteredEventDetails"]["name"] for e in events if e["type"] == "MapStateEntered"}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto server in this process: it shares moto's backends with ``mock_aws``, so the stage functions
    (processes of the local runtime) read the bucket the machine writes (a DISTRIBUTED Map's ``$ref`` lists)."""
    with threaded_moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def machines(s3_endpoint: str) -> Iterator[Callable[[Path], Machines]]:
    """moto's Step Functions (executing state machines) and S3 (bucket ``BUCKET``) for the test;
    ``machines(pipeline_file)`` answers its Lambda invokes with a LocalRuntime over that pipeline's template,
    whose functions reach moto's S3 through ``s3_endpoint``."""
    import boto3
    from fave.local.orchestrator import load_local_pipeline
    from moto import mock_aws

    opened: list[Machines] = []
    aws = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION}  # fmt: skip

    def open_for(pipeline: Path) -> Machines:
        runtime = LocalRuntime(load_local_pipeline(pipeline).template_path, env_overrides=aws)
        m = Machines(runtime)
        assert boto3.DEFAULT_SESSION is not None
        boto3.DEFAULT_SESSION.events.register("before-call.lambda.Invoke", m.invoke)
        opened.append(m)
        return m

    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        previous = boto3.DEFAULT_SESSION
        boto3.setup_default_session()  # moto's interpreter makes its Lambda clients from the default session
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        try:
            yield open_for
        finally:
            for m in opened:
                boto3.DEFAULT_SESSION.events.unregister("before-call.lambda.Invoke", m.invoke)
                m.runtime.close()
            boto3.DEFAULT_SESSION = previous


def export(pipeline: Path, out: Path, *flags: str) -> dict[str, Any]:
    """``fave export --format asl`` through the CLI; the definition it wrote, and the table it printed."""
    done = e2e.fave("export", "--format", "asl", "--pipeline", str(pipeline), "-o", str(out), *flags, "--json")
    assert done.code == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["written"]["definition"] == str(out)
    definition: dict[str, Any] = json.loads(out.read_text())
    return definition


def machine_input(state: dict[str, Any], functions: set[str] | frozenset[str], store: Path | str) -> dict[str, Any]:
    return {"request": state["input"], "store": str(store), "functions": {f: function_arn(f) for f in functions}}


def functions_of(pipeline: Path) -> frozenset[str]:
    from fave.local.orchestrator import load_local_pipeline

    return load_local_pipeline(pipeline).functions


@dataclass(frozen=True)
class Case:
    pipeline: Path
    request: dict[str, Any]
    profile: str = "default"
    flags: tuple[str, ...] = ()
    error: str | None = None
    cause: str = ""
    map_ran: str | None = None
    store: str | None = None
    """The machine's store on moto's S3 (a DISTRIBUTED Map keeps its items and results there); None: a folder."""


DEMO_MAP = "each words.words (shout, measure)"
SALES_CSV = str(SALES / "data" / "sales.csv")
RUNS = [
    pytest.param(Case(DEMO, {"text": "the quick brown fox"}, map_ran=DEMO_MAP), id="demo"),
    # One item and none: a chained group's results are still one list per stage (docs/export.md, "collect").
    pytest.param(Case(DEMO, {"text": "solo"}, map_ran=DEMO_MAP), id="demo-one-item"),
    pytest.param(Case(DEMO, {"text": ""}), id="demo-no-item"),
    # A failed first attempt is retried by the Retrier; the stage sees attempt 2 (join reports attempts).
    pytest.param(Case(DEMO, {"text": "a bb ccc", "fail": {"bb": 1}}, "loud"), id="demo-retry-loud-profile"),
    pytest.param(
        Case(
            DEMO,
            {"text": "one two three four"},
            flags=("--distributed",),
            map_ran=DEMO_MAP,
            store=f"s3://{BUCKET}/runs",
        ),
        id="demo-distributed",
    ),
    # Above 3 items the DISTRIBUTED copy of the Map runs, at 3 or fewer the INLINE one (checked below).
    pytest.param(
        Case(
            DEMO,
            {"text": "one two three four"},
            flags=("--distributed-above", "3"),
            map_ran=f"{DEMO_MAP} (distributed)",
            store=f"s3://{BUCKET}",
        ),
        id="demo-above-3",
    ),
    pytest.param(
        Case(
            DEMO,
            {"text": "one two three"},
            flags=("--distributed-above", "3"),
            map_ran=DEMO_MAP,
            store=f"s3://{BUCKET}/a/b/c",
        ),
        id="demo-up-to-3",
    ),
    pytest.param(Case(SALES / "pipeline.yaml", {"source": SALES_CSV}), id="sales"),
    pytest.param(
        Case(
            SALES / "pipeline.yaml",
            {"source": SALES_CSV, "top": 2, "currency": "USD"},
            "strict",
            ("--distributed",),
            store=f"s3://{BUCKET}/sales",
        ),
        id="sales-distributed-strict",
    ),
]


@pytest.mark.parametrize("case", RUNS)
def test_the_exported_machine_gives_fave_run_s_final_output(
    case: Case, machines: Callable[[Path], Machines], tmp_path: Path
) -> None:
    state, final = fave_run(case.pipeline, case.request, tmp_path / "fave", case.profile)
    assert state["status"] == "COMPLETED" and final is not None
    definition = export(case.pipeline, tmp_path / "machine.asl.json", *case.flags)
    sfn = machines(case.pipeline)
    store = case.store or tmp_path / "sfn"
    described = sfn.run(definition, machine_input(state, functions_of(case.pipeline), store))
    assert described["status"] == "SUCCEEDED", (described.get("error"), described.get("cause"))
    assert json.loads(described["output"]) == final
    if case.store is not None:
        distributed = "--distributed" in case.flags or (case.map_ran or "").endswith("(distributed)")
        _check_the_store(sfn, case.store, distributed)
    # The stages saw fave's event: the execution's name as the request id, the stages fave ran, attempts from 1.
    stages = {p["task"]["stage"] for _, p in sfn.invoked}
    assert stages == {name for name, stage in state["stages"].items() if stage["total"]}
    assert {p["task"]["request_id"] for _, p in sfn.invoked} == {REQUEST_ID}
    assert min(p["task"]["attempt"] for _, p in sfn.invoked) == 1
    if case.map_ran is not None:
        assert sfn.maps_entered(described["executionArn"]) == {case.map_ran}


def _check_the_store(sfn: Machines, store: str, distributed: bool) -> None:
    """A DISTRIBUTED Map's items (its ItemReader's) and each per-item stage's outputs are in the
    store, under the request's export folder; the stage after it got each list as ONE list marker,
    ``{"$ref": ".../{stage}/[0:N].json"}``, standing for the items' outputs in item order (no list of
    markers anywhere: the state holds O(1) per stage). An INLINE Map writes nothing there."""
    prefix = store.removeprefix(f"s3://{BUCKET}").strip("/")
    prefix = f"{prefix}/" if prefix else ""
    export = f"requests/{REQUEST_ID}/export/"
    objects = sfn.objects(prefix + export)
    per_item: dict[str, dict[int, Any]] = {}
    for _, payload in sfn.invoked:
        if payload["task"]["item"] is not None:
            per_item.setdefault(payload["task"]["stage"], {})[payload["task"]["item"]] = payload["input"]["item"]
    later = [p for _, p in sfn.invoked if any(n in per_item for n in p["input"]["needs"]) and p["task"]["item"] is None]
    if not distributed:
        assert objects == {}
        assert later and all(
            isinstance(p["input"]["needs"][n], list) for p in later for n in per_item if n in p["input"]["needs"]
        )
        return
    (items_key,) = [k for k in objects if k.endswith("/items.json")]
    unit = items_key.removeprefix(prefix + export).split("/")[0]
    first = next(iter(per_item.values()))
    assert objects[items_key] == [first[i] for i in range(len(first))]
    assert later
    from fave_shared import refs

    for payload in later:
        for stage in per_item:
            if stage not in payload["input"]["needs"]:
                continue
            given = payload["input"]["needs"][stage]
            assert given == {"$ref": f"{export}{unit}/{stage}/[0:{len(first)}].json"}
            assert refs.list_keys(given) == [f"{export}{unit}/{stage}/{i}.json" for i in range(len(first))]
            assert all(prefix + key in objects for key in refs.list_keys(given) or ())
            assert f"{prefix}{export}{unit}/{stage}.json" not in objects


def test_weekly_with_a_keyed_per_item_chain(machines: Callable[[Path], Machines], tmp_path: Path) -> None:
    catalogue = json.loads((WEEKLY / "data" / "week1.json").read_text())
    catalogue["entries"] = catalogue["entries"][:12]  # moto's interpreter takes ~50 ms a state: keep it short
    source = tmp_path / "week.json"
    source.write_text(json.dumps(catalogue))
    pipeline = WEEKLY / "pipeline.yaml"
    state, final = fave_run(pipeline, {"catalogue": str(source)}, tmp_path / "fave")
    assert final is not None
    definition = export(pipeline, tmp_path / "machine.asl.json")
    described = machines(pipeline).run(definition, machine_input(state, functions_of(pipeline), tmp_path / "sfn"))
    assert described["status"] == "SUCCEEDED", described.get("cause")
    assert json.loads(described["output"]) == final


FAILURES = [
    # Raised on every attempt: retried, then the Catch names the stage and keeps the error's type.
    pytest.param(Case(DEMO, {"text": "a bb", "fail": {"bb": 9}}, error="ValueError", cause="stage shout failed: "),
                 id="retries"),
    # A terminal error result (returned, not raised): no retry, the stage's own error type.
    pytest.param(Case(DEMO, {"text": "a bb", "bad_word": "bb"}, error="TerminalError",
                      cause="stage shout failed: 'bb' can never be shouted"), id="terminal"),
    # load refuses a CSV without the columns it needs (written by the test at {tmp}).
    pytest.param(Case(SALES / "pipeline.yaml", {"source": "{tmp}/bad.csv"}, error="ValidationError",
                      cause="stage load failed: source: missing column"), id="sales-terminal"),
]  # fmt: skip


@pytest.mark.parametrize("case", FAILURES)
def test_a_failed_stage_fails_the_execution_as_it_fails_the_request(
    case: Case, machines: Callable[[Path], Machines], tmp_path: Path
) -> None:
    request = json.loads(json.dumps(case.request).replace("{tmp}", str(tmp_path)))
    if "source" in request:
        Path(request["source"]).write_text("day,amount\n1,2\n")
    state, final = fave_run(case.pipeline, request, tmp_path / "fave")
    assert state["status"] == "FAILED" and final is None
    assert state["failure"]["error_type"] == case.error
    definition = export(case.pipeline, tmp_path / "machine.asl.json")
    sfn = machines(case.pipeline)
    described = sfn.run(definition, machine_input(state, functions_of(case.pipeline), tmp_path / "sfn"))
    assert described["status"] == "FAILED"
    assert described["error"] == case.error
    assert described["cause"].startswith(case.cause), described["cause"]
    failed = state["failure"]["stage"]
    item = 1 if failed == "shout" else None  # "bb", the failing word; load is a single task
    tries = [p["task"]["attempt"] for _, p in sfn.invoked if (p["task"]["stage"], p["task"]["item"]) == (failed, item)]
    # As fave: 1 + max_attempts (2) attempts of a raised error, one of a terminal error result.
    assert sorted(tries) == ([1, 2, 3] if case.error == "ValueError" else [1])


def every_state(machine: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every state of a machine, inside Parallel branches and Map ItemProcessors too."""
    for state in machine["States"].values():
        yield state
        for inner in [*state.get("Branches", []), *([state["ItemProcessor"]] if "ItemProcessor" in state else [])]:
            yield from every_state(inner)


def _require(tool: Path) -> Path:
    if not tool.exists():
        pytest.skip(f"{SAM_VENV.name} is missing: `./dev setup` creates it from requirements/sam.txt")
    return tool


def _as_cloudformation(definition: dict[str, Any]) -> dict[str, Any]:
    import re

    placeholders = sorted(set(re.findall(r"\$\{(\w+)\}", json.dumps(definition))))
    props = {"RoleArn": f"arn:aws:iam::{ACCOUNT}:role/r", "Definition": definition}
    if placeholders:
        props["DefinitionSubstitutions"] = {name: "x" for name in placeholders}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {"Machine": {"Type": "AWS::StepFunctions::StateMachine", "Properties": props}},
    }


def _cfn_lint(*paths: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(_require(CFN_LINT)), *map(str, paths)], capture_output=True, text=True,
                          timeout=300, check=False, cwd=cwd)  # fmt: skip


def test_every_export_passes_an_asl_validator(tmp_path: Path) -> None:
    """cfn-lint's E3601 checks a state machine's Definition against its ASL schema (states, fields, their
    types and ranges); a definition broken on purpose shows it does."""
    from fave.export.asl import AslOptions, export_asl
    from fave.local.orchestrator import load_local_pipeline

    files = []
    for pipeline in (DEMO, SALES / "pipeline.yaml", WEEKLY / "pipeline.yaml", ROOT / "pipeline.yaml"):
        loaded = load_local_pipeline(pipeline)
        for options in (
            AslOptions(),
            AslOptions(distributed=True),
            AslOptions(distributed_above=100),
            AslOptions(arns="substitutions", distributed=True),  # with a ResultWriter
        ):
            definition = export_asl(loaded, options).definition
            path = tmp_path / f"{pipeline.parent.name}-{len(files)}.json"
            path.write_text(json.dumps(_as_cloudformation(definition)))
            files.append(path)
    done = _cfn_lint(*files)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = json.loads(files[0].read_text())
    states = broken["Resources"]["Machine"]["Properties"]["Definition"]["States"]
    states["words"]["Retry"][0]["MaxAttempts"] = -1
    states["words"]["Unknown"] = 1
    files[0].write_text(json.dumps(broken))
    done = _cfn_lint(files[0])
    assert done.returncode != 0 and done.stdout.count("E3601") == 2, done.stdout


def test_the_sam_copy_passes_sam_validate_and_cfn_lint(tmp_path: Path) -> None:
    """examples/sales copied with its relative paths intact (../../shared, ../../orchestrator), exported with
    ``--sam``: the copy beside its template.yaml holds the state machine and passes both linters."""
    sam = _require(SAM)
    (tmp_path / "examples").mkdir()
    shutil.copytree(SALES, tmp_path / "examples" / "sales", ignore=shutil.ignore_patterns("tests", "__pycache__"))
    for folder in ("shared", "orchestrator"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    pipeline = tmp_path / "examples" / "sales" / "pipeline.yaml"
    # Both kinds of Map behind the length Choice: the role must also start its own child executions.
    done = e2e.fave("export", "--format", "asl", "--pipeline", str(pipeline), "--sam", "--distributed-above", "100")
    assert done.code == 0, done.stderr
    copy = pipeline.with_name("template.asl.yaml")
    assert "SalesStateMachine" in done.stderr and copy.exists()
    from fave.local.template import load_yaml

    doc = load_yaml(copy.read_text())
    original = load_yaml((SALES / "template.yaml").read_text())
    assert set(doc["Resources"]) == {*original["Resources"], "SalesStateMachine"}
    props = doc["Resources"]["SalesStateMachine"]["Properties"]
    assert props["Definition"]["States"]["load"]["Parameters"]["FunctionName"] == "${LoadFunctionArn}"
    assert props["DefinitionSubstitutions"]["LoadFunctionArn"] == {"Fn::GetAtt": ["LoadFunction", "Arn"]}
    statements = [st["Sid"] for policy in props["Policies"] for st in policy.get("Statement", [])]
    assert statements == ["DistributedMapChildren", "DistributedMapRuns", "DistributedMapResultWriter"]
    # The ResultWriter's bucket: the store's, by name.
    writers = [st["ResultWriter"] for st in every_state(props["Definition"]) if "ResultWriter" in st]
    assert writers and all(w["Parameters"]["Bucket"] == "${FaveBucket}" for w in writers)
    # The DISTRIBUTED Map writes its items and outputs to the store's bucket: the role may read and write it.
    bucket = props["DefinitionSubstitutions"]["FaveStore"]["Fn::Sub"].removeprefix("s3://${").removesuffix("}")
    assert {"S3CrudPolicy": {"BucketName": {"Ref": bucket}}} in props["Policies"]
    assert props["DefinitionSubstitutions"]["FaveBucket"] == {"Ref": bucket}
    validated = subprocess.run(
        [str(sam), "validate", "--lint", "-t", str(copy)],
        env={**e2e.child_env(), "SAM_CLI_TELEMETRY": "0"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    linted = _cfn_lint(copy)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_export_prints_the_mapping_table_on_stderr_and_the_definition_on_stdout() -> None:
    done = e2e.fave("export", "--format", "asl", "--pipeline", str(DEMO))
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout)["StartAt"] == "start"
    assert "per-item chaining" in done.stderr and "exact" in done.stderr
    assert "note: each words.words (shout, measure): MaxConcurrency 2" in done.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "bpmn"], "got 'bpmn'"),
        ([], "the following arguments are required: --format"),
        (["--format", "asl", "--sam", "/nowhere/else.yaml"], "--sam: write the copy beside"),
        (["--format", "asl", "--pipeline", "/no/such/pipeline.yaml"], "/no/such/pipeline.yaml"),
        (["--format", "asl", "--pipeline", str(DEMO), "-o", "/no/such/dir/m.json"], "-o: cannot write"),
        (["--format", "asl", "--distributed-above", "-1"], "--distributed-above: must be >= 0, got -1"),
        (["--format", "asl", "--distributed-above", "x"], "--distributed-above: invalid int value: 'x'"),
        (["--format", "asl", "--distributed", "--distributed-above", "5"], "not both"),
        (["--format", "asl", "--result-writer", "bucket/x"], "--result-writer: expected s3://bucket[/prefix]"),
        (["--format", "asl", "--result-writer", "s3://bkt/it's"], '--result-writer: the prefix "it\'s" may hold'),
        (["--format", "asl", "--result-writer", "s3://b", "--sam"], "give one or the other"),
        (["--format", "prefect", "--result-writer", "s3://bucket"], "are for --format asl"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv: list[str], message: str) -> None:
    done = e2e.fave("export", *argv)
    assert done.code == 2
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_docs_export_md_lists_every_row_of_the_table() -> None:
    """docs/export.md's table has a row for every feature the export reports, named alike."""
    from fave.export.asl import AslOptions, asl_rows
    from fave.local.orchestrator import load_local_pipeline

    doc = (ROOT / "docs" / "export.md").read_text()
    documented = {line.split("|")[1].strip() for line in doc.splitlines() if line.startswith("| ")}

    for options in (AslOptions(), AslOptions(distributed=True)):
        for row in asl_rows(load_local_pipeline(DEMO), options, ()):
            assert row.feature in documented, row.feature


def test_tolerated_failures_on_a_distributed_map_give_null_at_the_failed_item_as_fave(
    machines: Callable[[Path], Machines], tmp_path: Path
) -> None:
    """docs/export.md, "tolerated_failures": the request and the execution both succeed with one item of three
    failed, and the stage after the Map gets null at the failed item's position, as fave passes it: the failed
    item's child execution writes null for its outputs before it fails (the Map's own result list, in the
    state, would have no entry for it)."""
    pipeline = demo_variant(
        tmp_path, ("    max_concurrency: 2\n", "    max_concurrency: 2\n    tolerated_failures: 1\n")
    )
    state, final = fave_run(pipeline, {"text": "a bb ccc", "bad_word": "bb"}, tmp_path / "fave")
    assert final == {"text": "A! CCC!", "total_length": 6, "missing": [1], "attempts": [1, 0, 1]}
    definition = export(pipeline, tmp_path / "machine.asl.json", "--distributed")
    sfn = machines(pipeline)
    described = sfn.run(definition, machine_input(state, functions_of(pipeline), f"s3://{BUCKET}"))
    assert described["status"] == "SUCCEEDED", described.get("cause")
    assert json.loads(described["output"]) == final
    stored = sfn.objects(f"requests/{REQUEST_ID}/export/shout_items/")
    assert stored[f"requests/{REQUEST_ID}/export/shout_items/shout/1.json"] is None
    # (moto never ends a Map on its tolerated-failure threshold: not checked here.)


def test_a_chain_with_a_single_task_stage_in_between_runs_as_maps_of_their_own(
    machines: Callable[[Path], Machines], tmp_path: Path
) -> None:
    """measure needs shout item by item and `again`, which needs every shout: no one Map can hold shout and
    measure, so each is a Map of its own and measure takes its item's shout by index (States.ArrayGetItem)."""
    pipeline = demo_variant(
        tmp_path,
        (
            "  measure: {function: MeasureFunction, needs: [shout],",
            "  again: {function: WordsFunction, needs: [shout], mode: sync}\n"
            "  measure: {function: MeasureFunction, needs: [shout, again],",
        ),
    )
    state, final = fave_run(pipeline, {"text": "one two three"}, tmp_path / "fave")
    assert final is not None and final["text"] == "ONE! TWO! THREE!"
    definition = export(pipeline, tmp_path / "machine.asl.json")
    sfn = machines(pipeline)
    described = sfn.run(definition, machine_input(state, functions_of(pipeline), tmp_path / "sfn"))
    assert described["status"] == "SUCCEEDED", described.get("cause")
    assert json.loads(described["output"]) == final
    assert sfn.maps_entered(described["executionArn"]) == {"each words.words (shout)", "each words.words (measure)"}


def _history(sfn: Machines, execution_arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    token: dict[str, str] = {}
    while True:
        page = sfn.sfn.get_execution_history(executionArn=execution_arn, maxResults=1000, **token)
        events += page["events"]
        if not page.get("nextToken"):
            return events
        token = {"nextToken": page["nextToken"]}


def largest_state(sfn: Machines, execution_arn: str) -> int:
    """Bytes of the largest state document the parent execution passed between its states (each state's
    input as entered and output as exited, from its history)."""
    sizes = [0]
    for event in _history(sfn, execution_arn):
        for details, field in (("stateEnteredEventDetails", "input"), ("stateExitedEventDetails", "output")):
            if field in event.get(details, {}):
                sizes.append(len(event[details][field].encode()))
    return max(sizes)


def _fast_demo(tmp_path: Path) -> Path:
    """The demo pipeline without its MaxConcurrency 2 (moto runs a DISTRIBUTED Map's children a few at a time
    anyway) and measure's 2 s timeout (a busy machine may take longer: moto then trips over its own
    States.Timeout in the child's Fail state), beside the test's files."""
    return demo_variant(tmp_path, ("    max_concurrency: 2\n", ""), (" mode: async, timeout: 2s}", " mode: async}"))


def test_a_distributed_map_keeps_the_state_the_same_size_whatever_its_items(
    machines: Callable[[Path], Machines], tmp_path: Path
) -> None:
    """The largest state of the parent execution grows from 20 items to 200 by the request's text, the words
    list and the final output, which the state holds anyway (the request, the upstream and the final stages'
    outputs), and by nothing per item: each per-item stage's outputs are ONE list marker whatever the count
    (before: one ``{"$ref"}`` marker per item in the state, ~90 bytes each, which capped a DISTRIBUTED Map near
    2,500 items). The output still equals ``fave run``'s."""
    pipeline = _fast_demo(tmp_path)
    definition = export(pipeline, tmp_path / "machine.asl.json", "--distributed")
    sfn = machines(pipeline)
    grown: dict[int, int] = {}
    events: dict[int, int] = {}
    for n in (20, 200):
        request = {"text": " ".join(f"w{i}" for i in range(n))}
        state, final = fave_run(pipeline, request, tmp_path / f"fave-{n}")
        assert final is not None and final["text"] == " ".join(f"W{i}!" for i in range(n))
        name = f"{REQUEST_ID[:-3]}{n:03d}"
        described = sfn.run(definition, machine_input(state, functions_of(pipeline), f"s3://{BUCKET}/n"), name)
        assert described["status"] == "SUCCEEDED", described.get("cause")
        assert json.loads(described["output"]) == final
        inherent = sum(
            len(json.dumps(v, separators=(",", ":"))) for v in (request["text"], request["text"].split(), final)
        )
        largest = largest_state(sfn, described["executionArn"])
        grown[n], events[n] = largest - inherent, len(_history(sfn, described["executionArn"]))
        # docs/export.md quotes these (pytest -s shows them).
        print(f"{n} items: largest state {largest} bytes ({inherent} of them held anyway), {events[n]} events")
    # What is left once those are taken off: the same but for the digits of
    # the count in the markers ("[0:200]" against "[0:20]") and in ids; a marker per item would add ~16 KiB.
    assert abs(grown[200] - grown[20]) < 64, grown
    # Nor does the parent's history grow per item (before: an INLINE Map of ~4 events per item made the list).
    assert events[200] == events[20], events


def test_the_sam_machine_s_result_writer_puts_the_map_run_s_manifest_in_the_store(
    machines: Callable[[Path], Machines], tmp_path: Path
) -> None:
    """With ``--sam`` the store's bucket is a DefinitionSubstitution, known before the run: the DISTRIBUTED
    Map has a ResultWriter under ``requests/{id}/export/{unit}/results/``. Run here with the substitutions
    CloudFormation would make. moto writes the manifest only, with no result files (``ResultFiles`` empty:
    docs/export.md, the gap), where Step Functions also writes the children's inputs and outputs; downstream
    stages read the per-item objects either way, so the output is still ``fave run``'s."""
    from fave.export.asl import RESULTS_BUCKET, AslOptions, export_asl
    from fave.local.orchestrator import load_local_pipeline

    pipeline = _fast_demo(tmp_path)
    state, final = fave_run(pipeline, {"text": "one two three"}, tmp_path / "fave")
    exported = export_asl(load_local_pipeline(pipeline), AslOptions(arns="substitutions", distributed=True))
    values = {name: function_arn(f) for name, f in exported.substitutions.items()}
    values.update({"FaveStore": f"s3://{BUCKET}", RESULTS_BUCKET: BUCKET})
    text = json.dumps(exported.definition)
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    definition = json.loads(text)
    (writer,) = [st["ResultWriter"] for st in every_state(definition) if "ResultWriter" in st]
    assert writer["Parameters"]["Bucket"] == BUCKET
    sfn = machines(pipeline)
    described = sfn.run(definition, {"request": state["input"]})
    assert described["status"] == "SUCCEEDED", described.get("cause")
    assert json.loads(described["output"]) == final
    results = f"requests/{REQUEST_ID}/export/shout_items/results/"
    written = sfn.objects(results)
    (key,) = written
    run_id = key.removeprefix(results).removesuffix("/manifest.json")
    assert key == f"{results}{run_id}/manifest.json"
    manifest = written[key]
    assert manifest["DestinationBucket"] == BUCKET
    assert manifest["MapRunArn"].endswith(run_id) and ":mapRun:" in manifest["MapRunArn"]
    assert manifest["ResultFiles"] == {"FAILED": [], "PENDING": [], "SUCCEEDED": []}  # moto: no result files
    # The per-item objects the next stage read are there beside it.
    assert set(sfn.objects(f"requests/{REQUEST_ID}/export/shout_items/shout/")) == {
        f"requests/{REQUEST_ID}/export/shout_items/shout/{i}.json" for i in range(3)
    }


def test_result_writer_names_a_bucket_known_at_export_time_without_sam(
    machines: Callable[[Path], Machines], tmp_path: Path
) -> None:
    """``--result-writer s3://bucket/prefix``: the DISTRIBUTED Map of a plain export (the store comes with the
    execution input) gets a ResultWriter with that bucket, its results under the prefix; the table says "exact".
    On moto: the manifest lands there (with no result files, moto's gap) and the output is still ``fave run``'s."""
    pipeline = _fast_demo(tmp_path)
    state, final = fave_run(pipeline, {"text": "one two three"}, tmp_path / "fave")
    out = tmp_path / "machine.asl.json"
    done = e2e.fave(
        "export", "--format", "asl", "--pipeline", str(pipeline), "-o", str(out), "--distributed",
        "--result-writer", f"s3://{BUCKET}/runs/", "--json",
    )  # fmt: skip
    assert done.code == 0, done.stderr
    rows = {row["feature"]: row for row in json.loads(done.stdout)["mapping"]}
    assert rows["Map run results (ResultWriter)"]["mapping"] == "exact"
    definition = json.loads(out.read_text())
    (writer,) = [st["ResultWriter"] for st in every_state(definition) if "ResultWriter" in st]
    assert writer["Parameters"]["Bucket"] == BUCKET
    sfn = machines(pipeline)
    described = sfn.run(definition, machine_input(state, functions_of(pipeline), f"s3://{BUCKET}/store"))
    assert described["status"] == "SUCCEEDED", described.get("cause")
    assert json.loads(described["output"]) == final
    results = f"runs/requests/{REQUEST_ID}/export/shout_items/results/"
    (key,) = sfn.objects(results)
    assert key.endswith("/manifest.json")
    assert sfn.objects(results)[key]["DestinationBucket"] == BUCKET
    # The items' own objects are in the store (its prefix), where the next stage read them.
    assert set(sfn.objects(f"store/requests/{REQUEST_ID}/export/shout_items/shout/")) == {
        f"store/requests/{REQUEST_ID}/export/shout_items/shout/{i}.json" for i in range(3)
    }
