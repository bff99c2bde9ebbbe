"""``fave invoke FUNCTION``: one function of a SAM template, run as ``sam local invoke`` runs it, by the real CLI.

The demo template's stages (tests/fixtures/demo), the bundled template.yaml with the shipped samples of
events/ (a stage event for NormalizeFunction, an HTTP event for the orchestrator), and a small template
written here for what the demo functions do not do (print, sleep past their timeout, echo their event).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from support import e2e
from support.demo import DEMO
from support.events import load_event

ROOT = Path(__file__).resolve().parents[2]
DEMO_TEMPLATE = str(DEMO.parent / "template.yaml")
SAMPLE = ROOT / "tests" / "fixtures" / "scenes20.mp4"

ECHO_APP = """
import os
import sys
import time


def handler(event, context):
    print("log line on stdout")
    print("log line on stderr", file=sys.stderr)
    if event.get("raise"):
        raise KeyError(event["raise"])
    time.sleep(event.get("sleep_s", 0))
    return {
        "event": event,
        "memory": os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"],
        "timeout": os.environ["AWS_LAMBDA_FUNCTION_TIMEOUT"],
        "remaining_ms": context.get_remaining_time_in_millis(),
        "colour": os.environ.get("COLOUR"),
    }
"""

ECHO_TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Resources:
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: echo
      Handler: app.handler
      Runtime: python3.11
      Timeout: 1
      MemorySize: 256
      Environment:
        Variables:
          COLOUR: blue
"""


def invoke(*args: str, stdin: str | None = None) -> e2e.Result:
    done = subprocess.run(
        e2e.fave_command("invoke", *args),
        cwd=ROOT,
        env=e2e.child_env(),
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return e2e.Result(done.returncode, done.stdout, done.stderr)


def write_json(path: Path, value: Any) -> str:
    path.write_text(json.dumps(value))
    return str(path)


def stage_event(tmp_path: Path, stage: str, request: dict[str, Any]) -> dict[str, Any]:
    """The shipped stage sample, sent to another stage with its store in ``tmp_path`` (the CLI rewrites nothing)."""
    event = load_event("stage-invocation.json")
    event["store"] = str(tmp_path / "store")
    event["task"]["stage"] = stage
    event["input"]["request"] = request
    return event


def echo_template(tmp_path: Path) -> str:
    (tmp_path / "echo").mkdir()
    (tmp_path / "echo" / "app.py").write_text(ECHO_APP)
    (tmp_path / "template.yaml").write_text(ECHO_TEMPLATE)
    return str(tmp_path / "template.yaml")


def test_a_demo_stage_answers_its_output_on_stdout(tmp_path: Path) -> None:
    event = write_json(tmp_path / "event.json", stage_event(tmp_path, "words", {"text": "to be or not"}))
    run = invoke("WordsFunction", "-e", event, "--template", DEMO_TEMPLATE)
    assert run.code == 0, run.describe()
    assert run.json == {"words": ["to", "be", "or", "not"], "greeting": "hello"}  # the template's DEMO_GREETING
    assert "REPORT RequestId: " in run.stderr and "Memory Size: 128 MB" in run.stderr


def test_env_vars_file_in_sams_format_reaches_the_function(tmp_path: Path) -> None:
    event = write_json(tmp_path / "event.json", stage_event(tmp_path, "words", {"text": "x"}))
    both = write_json(
        tmp_path / "both.json",
        {"Parameters": {"DEMO_GREETING": "from Parameters"}, "WordsFunction": {"DEMO_GREETING": "bonjour", "X": 1}},
    )
    run = invoke("WordsFunction", "-e", event, "--env-vars", both, "--template", DEMO_TEMPLATE)
    assert run.code == 0, run.describe()
    assert run.json["greeting"] == "bonjour"  # the function's own entry wins over Parameters
    assert "X not declared in WordsFunction's Environment: ignored" in run.stderr  # as sam does
    shared = write_json(tmp_path / "shared.json", {"Parameters": {"DEMO_GREETING": "hola"}, "ShoutFunction": {}})
    run = invoke("WordsFunction", "-e", event, "--env-vars", shared, "--template", DEMO_TEMPLATE)
    assert run.code == 0, run.describe()
    assert run.json["greeting"] == "hola"


def test_a_function_error_exits_1_with_lambdas_error_payload_on_stdout() -> None:
    run = invoke("WordsFunction", "--template", DEMO_TEMPLATE)  # no -e: the event is {}, no stage event
    assert run.code == 1, run.describe()
    error = run.json
    assert error["errorType"] == "ValidationError"
    assert "not a fave stage event" in error["errorMessage"]
    assert error["requestId"] and isinstance(error["stackTrace"], list)


def test_the_functions_output_is_on_stderr_and_stdout_holds_its_response_alone(tmp_path: Path) -> None:
    template = echo_template(tmp_path)
    event = write_json(tmp_path / "event.json", {"n": 1})
    run = invoke("EchoFunction", "-e", event, "--template", template)
    assert run.code == 0, run.describe()
    assert run.stdout.count("\n") == 1
    answer = run.json
    assert answer["event"] == {"n": 1}
    assert (answer["memory"], answer["timeout"], answer["colour"]) == ("256", "1", "blue")  # as the template says
    assert 0 < answer["remaining_ms"] <= 1000
    assert "log line on stdout" in run.stderr and "log line on stderr" in run.stderr
    assert "log line" not in run.stdout

    failing = write_json(tmp_path / "failing.json", {"raise": "missing"})
    run = invoke("EchoFunction", "-e", failing, "--template", template)
    assert run.code == 1, run.describe()
    assert run.json["errorType"] == "KeyError" and "log line on stdout" in run.stderr


def test_the_templates_timeout_ends_the_function(tmp_path: Path) -> None:
    template = echo_template(tmp_path)
    slow = write_json(tmp_path / "slow.json", {"sleep_s": 5})
    run = invoke("EchoFunction", "-e", slow, "--template", template)
    assert run.code == 1, run.describe()
    assert run.json["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in run.json["errorMessage"]


def test_the_event_from_standard_input(tmp_path: Path) -> None:
    template = echo_template(tmp_path)
    run = invoke("EchoFunction", "-e", "-", "--template", template, stdin='{"from": "stdin", "list": [1, 2]}')
    assert run.code == 0, run.describe()
    assert run.json["event"] == {"from": "stdin", "list": [1, 2]}


def one_line_error(run: e2e.Result) -> str:
    assert run.code == 2, run.describe()
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fave: error: "), run.describe()
    return lines[0]


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    line = one_line_error(invoke("NoSuchFunction", "--template", DEMO_TEMPLATE))
    assert "'NoSuchFunction'" in line
    assert "JoinFunction, MeasureFunction, OrchestratorFunction, ShoutFunction, WordsFunction" in line

    assert "no such file" in one_line_error(
        invoke("WordsFunction", "-e", str(tmp_path / "nope.json"), "--template", DEMO_TEMPLATE)
    )
    (tmp_path / "bad.json").write_text("{not json")
    bad = str(tmp_path / "bad.json")
    assert "not valid JSON" in one_line_error(invoke("WordsFunction", "-e", bad, "--template", DEMO_TEMPLATE))
    assert "not valid JSON" in one_line_error(
        invoke("WordsFunction", "-e", "-", "--template", DEMO_TEMPLATE, stdin="{")
    )
    assert "--env-vars" in one_line_error(invoke("WordsFunction", "--env-vars", bad, "--template", DEMO_TEMPLATE))
    wrong = write_json(tmp_path / "wrong.json", {"WordsFunction": ["DEMO_GREETING"]})
    assert "'WordsFunction'" in one_line_error(
        invoke("WordsFunction", "--env-vars", wrong, "--template", DEMO_TEMPLATE)
    )
    assert "template not found" in one_line_error(invoke("WordsFunction", "--template", str(tmp_path / "t.yaml")))


def test_the_shipped_stage_sample_runs_normalize(tmp_path: Path) -> None:
    event = load_event("stage-invocation.json")  # events/README.md: for NormalizeFunction
    event["store"] = str(tmp_path / "store")  # the sample's bucket exists nowhere: a local store, and the sample
    event["input"]["request"]["video_uri"] = str(SAMPLE)
    run = invoke("NormalizeFunction", "-e", write_json(tmp_path / "event.json", event))  # ./template.yaml
    assert run.code == 0, run.describe()
    output = run.json
    assert output["probe"]["duration_s"] == 20.0
    assert (tmp_path / "store" / output["video_key"]).stat().st_size == output["normalized"]["size_bytes"]


def test_the_shipped_http_sample_reaches_the_orchestrator(tmp_path: Path) -> None:
    env = write_json(tmp_path / "env.json", {"Parameters": {"FAVE_STORE": str(tmp_path / "store")}})
    run = invoke("OrchestratorFunction", "-e", str(ROOT / "events" / "http-status.json"), "--env-vars", env)
    assert run.code == 0, run.describe()  # an HTTP answer, even a 404, is no function error
    assert run.json["statusCode"] == 404
    assert str(tmp_path / "store") in json.loads(run.json["body"])["message"]
