"""``LambdaInvoker.code_digest`` on moto's Lambda: what the result cache keys a deployed function's code by.

The digest follows ``GetFunctionConfiguration``'s ``CodeSha256`` and the layer versions; it is remembered for
``code_digest_ttl_s``; a function Lambda does not answer for is None (its tasks are not cached), never an error.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from fave.invoke.aws import LambdaInvoker
from moto import mock_aws

ROLE = "arn:aws:iam::123456789012:role/stage"


def _zip(body: str) -> bytes:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as z:
        z.writestr("app.py", body)
    return data.getvalue()


@pytest.fixture
def lam(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_LAMBDA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("lambda", region_name="us-east-1")
        iam = boto3.client("iam", region_name="us-east-1")
        iam.create_role(RoleName="stage", AssumeRolePolicyDocument="{}")
        client.create_function(
            FunctionName="fave-echo",
            Runtime="python3.12",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": _zip("def handler(e, c):\n    return e\n")},
        )
        yield client


def test_the_digest_changes_with_the_code_and_only_then(lam: Any) -> None:
    invoker = LambdaInvoker(lam, {"Echo": "fave-echo"})
    invoker.code_digest_ttl_s = 0
    first = invoker.code_digest("Echo")
    assert first is not None and len(first) == 64
    assert invoker.code_digest("Echo") == first  # same code, same digest
    lam.update_function_code(FunctionName="fave-echo", ZipFile=_zip("def handler(e, c):\n    return [e]\n"))
    second = invoker.code_digest("Echo")
    assert second is not None and second != first


def test_a_new_layer_version_changes_the_digest(lam: Any) -> None:
    invoker = LambdaInvoker(lam, {"Echo": "fave-echo"})
    invoker.code_digest_ttl_s = 0
    before = invoker.code_digest("Echo")
    arns = [
        lam.publish_layer_version(LayerName="shared", Content={"ZipFile": _zip(f"V = {n}\n")})["LayerVersionArn"]
        for n in (1, 2)
    ]
    lam.update_function_configuration(FunctionName="fave-echo", Layers=[arns[0]])
    with_one = invoker.code_digest("Echo")
    lam.update_function_configuration(FunctionName="fave-echo", Layers=[arns[1]])
    with_two = invoker.code_digest("Echo")
    assert len({before, with_one, with_two}) == 3


def test_the_digest_is_remembered_for_its_ttl(lam: Any) -> None:
    invoker = LambdaInvoker(lam, {"Echo": "fave-echo"})
    invoker.code_digest_ttl_s = 3600
    first = invoker.code_digest("Echo")
    lam.update_function_code(FunctionName="fave-echo", ZipFile=_zip("X = 2\n"))
    assert invoker.code_digest("Echo") == first  # no control-plane call per task
    invoker.code_digest_ttl_s = 0
    assert invoker.code_digest("Echo") != first


def test_an_unknown_function_has_no_digest_and_the_answer_is_remembered(lam: Any) -> None:
    invoker = LambdaInvoker(lam, {"Gone": "fave-gone"})
    assert invoker.code_digest("Gone") is None
    assert LambdaInvoker(lam, {}).code_digest("NotMapped") is None
    lam.create_function(
        FunctionName="fave-gone", Runtime="python3.12", Role=ROLE, Handler="app.handler", Code={"ZipFile": _zip("")}
    )
    assert invoker.code_digest("Gone") is None  # within the TTL: no call per step for a refused digest
    invoker.code_digest_ttl_s = 0
    assert invoker.code_digest("Gone") is not None


def test_the_ttl_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAVE_CODE_DIGEST_TTL", "5")
    assert LambdaInvoker(None, {}).code_digest_ttl_s == 5
    monkeypatch.setenv("FAVE_CODE_DIGEST_TTL", "soon")
    assert LambdaInvoker(None, {}).code_digest_ttl_s == 30


def test_memory_sizes_price_the_ledger_from_the_deployed_configuration(lam: Any) -> None:
    # The ledger's GB-seconds use each function's MemorySize; the same GetFunctionConfiguration gives it.
    lam.update_function_configuration(FunctionName="fave-echo", MemorySize=1769)
    invoker = LambdaInvoker(lam, {"Echo": "fave-echo", "Gone": "fave-gone"})
    assert invoker.memory_sizes() == {"Echo": 1769}  # a function Lambda does not describe is left out
    from fave.service import default_rates

    rates = default_rates(invoker)
    assert rates.memory_of("Echo") == 1769 and rates.memory_of("Gone") == rates.default_memory_mb
