"""Test tiers: the same functional suite against four S3 backends, chosen once per run.

``pytest --tier NAME`` or ``FAVE_TEST_TIER=NAME`` (the option wins; default ``moto``):

* ``moto``       - moto in-process (``mock_aws``). Fast. In-process moto does not serialise concurrent
  requests (a compare-and-swap race can lose an update), so the orchestrator function is invoked one
  event at a time, as ``serial`` says;
* ``server``     - a ``ThreadedMotoServer`` over HTTP: atomic conditional writes, so destination events
  are delivered concurrently (several "orchestrator Lambdas" at once racing on state.json);
* ``localstack`` - LocalStack at ``localstack_client``'s S3 endpoint (``LOCALSTACK_HOST``, default
  ``localhost:4566``; or ``AWS_ENDPOINT_URL``), a fresh bucket per test. Skipped when it is not reachable;
* ``aws``        - the bucket of the deployed stack ``AWS_SAM_STACK_NAME`` (its orchestrator function's
  ``FAVE_STORE``), under a fresh ``fave-tests/{uuid}/`` prefix that is deleted afterwards. Skipped without
  the variable or without AWS credentials. Stage functions still run on the local runtime here.

Every test gets its own key prefix (the store and the ``uploads/`` prefix live under it), so tiers that
share a bucket never see each other's requests.

Fixtures: ``tier_backend`` (session: name, endpoint, environment for stage processes) and ``tier``
(per test: an S3 client, the bucket, the prefix, ``store``).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from fave_shared.store import S3Store

from support.stores import BUCKET, make_s3_client, reset_moto_server

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

TIERS = ("moto", "server", "localstack", "aws")
ENV_VAR = "FAVE_TEST_TIER"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--tier",
        choices=TIERS,
        default=None,
        help=f"S3 backend of the functional tier suite (default: ${ENV_VAR}, else moto)",
    )


def selected_tier(config: pytest.Config) -> str:
    name = config.getoption("--tier") or os.environ.get(ENV_VAR) or "moto"
    if name not in TIERS:
        raise pytest.UsageError(f"{ENV_VAR}={name!r}: expected one of {', '.join(TIERS)}")
    return str(name)


@dataclass
class TierBackend:
    """What a tier is for the whole session."""

    name: str
    endpoint: str | None = None
    serial: bool = False
    """Invoke the orchestrator function one event at a time (in-process moto is not atomic)."""
    child_env: dict[str, str] = field(default_factory=dict)
    """Environment for stage-function processes, so they reach the same S3."""
    bucket: str | None = None
    """The deployed stack's bucket (tier aws)."""


@dataclass
class Tier:
    """One test's slice of the tier: its S3 client, bucket and key prefix."""

    backend: TierBackend
    client: S3Client
    bucket: str
    prefix: str

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def store(self) -> S3Store:
        return S3Store(self.client, self.bucket, self.prefix)

    @property
    def upload_prefix(self) -> str:
        return f"{self.prefix}uploads/"


def _reachable(url: str, timeout: float = 1.0) -> str | None:
    """None if ``url`` answers at all (any HTTP status), else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError:
        return None
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _localstack_backend() -> TierBackend:
    try:
        from localstack_client.config import get_service_endpoint
    except ImportError:  # pragma: no cover - localstack-client is in requirements/dev.txt
        pytest.skip("tier localstack: localstack-client is not installed")
    endpoint = get_service_endpoint("s3") or "http://localhost:4566"
    problem = _reachable(f"{endpoint}/_localstack/health")
    if problem is not None:
        pytest.skip(
            f"tier localstack: no LocalStack at {endpoint} ({problem}); start it, or set LOCALSTACK_HOST / "
            "AWS_ENDPOINT_URL"
        )
    return TierBackend(
        "localstack",
        endpoint=endpoint,
        child_env={
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
    )


def _aws_backend() -> TierBackend:
    stack = os.environ.get("AWS_SAM_STACK_NAME", "").strip()
    if not stack:
        pytest.skip("tier aws: set AWS_SAM_STACK_NAME to the name of a deployed fave stack")
    import boto3

    session = boto3.session.Session()
    if session.get_credentials() is None:
        pytest.skip(f"tier aws: no AWS credentials found for stack {stack} (profile, environment or role)")
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        resources = session.client("cloudformation").describe_stack_resources(StackName=stack)["StackResources"]
        functions = [r["PhysicalResourceId"] for r in resources if r["ResourceType"] == "AWS::Lambda::Function"]
        lam = session.client("lambda")
        store_uri = None
        for name in functions:
            config = lam.get_function_configuration(FunctionName=name)
            env = config.get("Environment", {}).get("Variables", {})
            if config.get("Handler") == "fave.app.handler" and env.get("FAVE_STORE", "").startswith("s3://"):
                store_uri = env["FAVE_STORE"]
                break
    except (BotoCoreError, ClientError) as exc:
        pytest.skip(f"tier aws: cannot read stack {stack}: {exc}")
    if store_uri is None:
        pytest.skip(f"tier aws: stack {stack} has no fave.app.handler function with FAVE_STORE=s3://...")
    bucket = store_uri.removeprefix("s3://").split("/", 1)[0]
    return TierBackend("aws", bucket=bucket)


@pytest.fixture(scope="session")
def tier_backend(request: pytest.FixtureRequest) -> TierBackend:
    """The session's tier (skips the tests that use it when the backend is not available)."""
    name = selected_tier(request.config)
    if name == "moto":
        return TierBackend("moto", serial=True)
    if name == "server":
        endpoint: str = request.getfixturevalue("moto_server")
        return TierBackend(
            "server",
            endpoint=endpoint,
            child_env={
                "AWS_ENDPOINT_URL_S3": endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
            },
        )
    if name == "localstack":
        return _localstack_backend()
    return _aws_backend()


@pytest.fixture
def tier(request: pytest.FixtureRequest, tier_backend: TierBackend) -> Iterator[Tier]:
    """This test's S3 client, bucket and fresh key prefix on the session's tier."""
    prefix = f"fave-tests/{uuid.uuid4().hex[:12]}/"
    if tier_backend.name == "moto":
        client: S3Client = request.getfixturevalue("moto_s3_client")
        yield Tier(tier_backend, client, BUCKET, prefix)
        return
    if tier_backend.name == "server":
        request.getfixturevalue("aws_env")
        assert tier_backend.endpoint is not None
        reset_moto_server(tier_backend.endpoint)
        client = make_s3_client(tier_backend.endpoint)
        client.create_bucket(Bucket=BUCKET)
        yield Tier(tier_backend, client, BUCKET, prefix)
        return
    if tier_backend.name == "localstack":
        request.getfixturevalue("aws_env")
        client = make_s3_client(tier_backend.endpoint, s3={"addressing_style": "path"})
        bucket = f"fave-test-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=bucket)
        try:
            yield Tier(tier_backend, client, bucket, prefix)
        finally:
            _delete_prefix(client, bucket, "")
            client.delete_bucket(Bucket=bucket)
        return
    import boto3

    assert tier_backend.bucket is not None
    client = boto3.session.Session().client("s3")
    try:
        yield Tier(tier_backend, client, tier_backend.bucket, prefix)
    finally:
        _delete_prefix(client, tier_backend.bucket, prefix)


def _delete_prefix(client: S3Client, bucket: str, prefix: str) -> None:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
