"""LocalRuntime(function_env=...): each function's environment processes get their own variables on top of
``env_overrides`` (how the iam tier gives each function its own role's credentials), and no other's."""

from __future__ import annotations

from pathlib import Path

import pytest
from fave.local.runtime import LocalRuntime

RUNTIME = Path(__file__).resolve().parents[1] / "fixtures" / "runtime"

# Two functions running the same real echo handler (it returns the variables it sees), plus a thread one.
TEMPLATE = f"""
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.11
    CodeUri: {RUNTIME / "functions" / "basic"}
    Handler: echo.handler
    Timeout: 10
    Layers: [!Ref SharedLayer]
Resources:
  SharedLayer:
    Type: AWS::Serverless::LayerVersion
    Properties: {{ContentUri: {RUNTIME / "layer"}}}
  First:
    Type: AWS::Serverless::Function
  Second:
    Type: AWS::Serverless::Function
  Threaded:
    Type: AWS::Serverless::Function
    Metadata: {{FaveLocal: {{Isolation: thread}}}}
    Properties: {{CodeUri: {RUNTIME / "functions" / "threaded"}, Handler: app.handler}}
"""


@pytest.fixture
def template(tmp_path: Path) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE)
    return path


def test_each_function_gets_its_own_variables_over_the_shared_ones(template: Path) -> None:
    with LocalRuntime(
        template,
        env_overrides={"BUCKET": "shared", "FROM_OVERRIDE": "shared"},
        function_env={"First": {"BUCKET": "first-only", "PLACE": "first"}},
        max_environments=1,
    ) as runtime:
        first = runtime.invoke_sync("First", {})
        second = runtime.invoke_sync("Second", {})
    assert first.ok and second.ok, (first, second)
    assert first.payload["env"]["BUCKET"] == "first-only"  # its own entry wins over env_overrides
    assert first.payload["env"]["PLACE"] == "first"
    assert first.payload["env"]["FROM_OVERRIDE"] == "shared"  # what it does not set still comes through
    assert second.payload["env"]["BUCKET"] == "shared"  # another function's entry never leaks
    assert second.payload["env"]["PLACE"] is None


@pytest.mark.parametrize(
    ("function_env", "message"),
    [
        ({"Nope": {"A": "1"}}, "function_env: no function Nope"),
        ({"Threaded": {"A": "1"}}, "function_env: Threaded run in thread isolation"),
    ],
)
def test_function_env_must_name_process_functions(
    template: Path, function_env: dict[str, dict[str, str]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        LocalRuntime(template, function_env=function_env)
