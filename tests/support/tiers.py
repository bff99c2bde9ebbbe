"""Test tiers: the same functional suite against four S3 backends, chosen once per run.

``pytest --tier NAME`` or ``FAVE_TEST_TIER=NAME`` (the option wins; default ``moto``):

* ``moto``       - moto in-process (``mock_aws``). Fast. In-process moto does not serialise concurrent
  requests (a compare-and-swap race can lose an update), so the orchestrator function is invoked one
  event at a time, as ``serial`` says;
* ``server``     - ``fave.local.s3server.S3Server`` (moto over HTTP, writes serialised): atomic conditional
  writes, so destination events are delivered concurrently (several "orchestrator Lambdas" at once
  racing on state.json);
* ``localstack`` - LocalStack, a fresh bucket per test: the one that ``LOCALSTACK_HOST`` or ``AWS_ENDPOINT_URL``
  names (found through ``localstack_client``), else one started for the session in host mode from
  ``.venv-localstack`` (support/localstack.py). Skipped, saying why, where it cannot start or is not reachable.
  Serial, like ``moto``: LocalStack's S3 mishandles a key deleted while it is being read or written.
  On this tier the store contract suites run on LocalStack alone (``contract_backends``), and every test that
  does not reach LocalStack is deselected (it ran in the default run);
* ``aws``        - the bucket of the deployed stack ``AWS_SAM_STACK_NAME`` (its orchestrator function's
  ``FAVE_STORE``), under a fresh ``fave-tests/{uuid}/`` prefix that is deleted afterwards. Skipped without
  the variable or without AWS credentials. Stage functions still run on the local runtime here;
* ``iam``        - a moto server with IAM enforcement (``support.iam``) holding the demo template as SAM
  deploys it: the stack's bucket (emptied for each test) and one role per function. The orchestrator's
  store and Lambda invokes, and each stage function's processes, use their own role's credentials, so a
  call its role does not allow is refused (and a test that meets a refusal it did not expect fails).

Every test gets its own key prefix (the store and the ``uploads/`` prefix live under it), so tiers that
share a bucket never see each other's requests. Except on ``iam``: its bucket is the test's alone, in the
deployed layout (no prefix: ``s3://bucket``).

Fixtures: ``tier_backend`` (session: name, endpoint, environment for stage processes), ``tier``
(per test: an S3 client, the bucket, the prefix, ``store``, and the orchestrator function's own
``orchestrator_store`` / ``orchestrator_s3_client`` / ``orchestrator_invoker``), ``localstack_endpoint``
(session) and the contract suites' LocalStack backend, ``localstack_s3_client`` / ``localstack_store``
(bucket ``BUCKET``).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from fave_shared.store import S3Store

from support import localstack
from support.stores import BUCKET, make_s3_client, reset_moto_server

if TYPE_CHECKING:
    from fave.invoke.base import Invoker
    from types_boto3_s3 import S3Client

    from support.iam import IamStack

TIERS = ("moto", "server", "localstack", "aws", "iam")
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
    function_env: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per function logical id, more environment for its processes (tier iam: its role's credentials)."""
    iam: IamStack | None = None
    """The deployed roles (tier iam)."""

    def destinations(self, deliver: Any) -> Any:
        """The local runtime's destination handler: ``deliver``; on tier iam behind the stage role's
        ``sqs:SendMessage`` on CompletionsQueue and the orchestrator role's receive and delete there."""
        return deliver if self.iam is None else self.iam.authorise_destinations(deliver)


@dataclass
class Tier:
    """One test's slice of the tier: its S3 client, bucket and key prefix."""

    backend: TierBackend
    client: S3Client
    bucket: str
    prefix: str
    refusals_expected: bool = False
    """Tier iam: the test provokes refused calls on purpose (otherwise any refusal fails it)."""

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def store(self) -> S3Store:
        """The test's own view of the store (tier iam: the admin's)."""
        return S3Store(self.client, self.bucket, self.prefix)

    @property
    def orchestrator_s3_client(self) -> S3Client:
        """The orchestrator function's S3 client: on tier iam its role's, elsewhere the test's."""
        iam = self.backend.iam
        return self.client if iam is None else iam.client("s3", "OrchestratorFunction")  # type: ignore[no-any-return]

    @property
    def orchestrator_store(self) -> S3Store:
        return S3Store(self.orchestrator_s3_client, self.bucket, self.prefix)

    def orchestrator_invoker(self, runtime: Invoker) -> Invoker:
        """How the orchestrator function invokes: ``runtime`` itself; on tier iam the real ``LambdaInvoker``
        with its role's credentials, each invoke authorised by moto before ``runtime`` runs it."""
        iam = self.backend.iam
        return runtime if iam is None else iam.orchestrator_invoker(runtime)

    def orchestrator_self_invoker(self, function: Invoker) -> Invoker:
        """How the orchestrator function invokes itself: ``function`` (what runs it) itself; on tier iam a
        ``LambdaInvoker`` with its role's credentials, each invoke authorised by moto first."""
        iam = self.backend.iam
        return function if iam is None else iam.self_invoker(function)

    @property
    def upload_prefix(self) -> str:
        return f"{self.prefix}uploads/"

    @property
    def input_prefix(self) -> str:
        """Where a POST /requests source may be (``FAVE_INPUT_PREFIXES``), as a bucket key prefix."""
        return f"{self.prefix}inputs/"

    def source_uri(self, name: str = "a.mp4") -> str:
        """An allowed source for a request: ``s3://bucket/{prefix}inputs/{name}``."""
        return f"s3://{self.bucket}/{self.input_prefix}{name}"


def _localstack_backend(endpoint: str) -> TierBackend:
    return TierBackend(
        "localstack",
        endpoint=endpoint,
        # LocalStack's S3 (2026.3) breaks a key that is deleted while another request reads or writes it: the
        # GET's body is cut short, or the key's next PUT never answers. fave.app's lease (get / put / delete of
        # lease.json by racing invocations) does exactly that; real S3 and moto over HTTP take it.
        serial=True,
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
        return _localstack_backend(request.getfixturevalue("localstack_endpoint"))
    if name == "iam":
        stack: IamStack = request.getfixturevalue("iam_demo_stack")
        return TierBackend(
            "iam",
            endpoint=stack.server.endpoint,
            child_env=stack.child_env(),
            function_env=stack.function_env(),
            bucket=stack.bucket,
            iam=stack,
        )
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
    if tier_backend.iam is not None:
        yield from _iam_tier(request, tier_backend, tier_backend.iam)
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


def _iam_tier(request: pytest.FixtureRequest, backend: TierBackend, stack: IamStack) -> Iterator[Tier]:
    """The stack's bucket, empty, with the template's own policies. Fails the test on a refusal it did not
    expect: code that logs an error and carries on (the tick does) would otherwise hide it."""
    request.getfixturevalue("aws_env")
    stack.restore_policies()
    stack.empty_bucket()
    stack.purge_queues()
    mark = stack.server.mark()
    tier = Tier(backend, stack.client("s3"), stack.bucket, "")
    yield tier
    refused = stack.server.refusals(since=mark)
    if refused and not tier.refusals_expected:
        lines = "\n".join(f"  {r['principal']}: {r['action']} on {r['resource']} {r['context'] or ''}" for r in refused)
        raise AssertionError(f"tier iam: calls refused during the test:\n{lines}")


def _delete_prefix(client: S3Client, bucket: str, prefix: str) -> None:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


# -- LocalStack -----------------------------------------------------------------------------------------

LOCALSTACK_MARK = "localstack"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{LOCALSTACK_MARK}: the test runs against LocalStack (tier localstack)")


def contract_backends(config: pytest.Config, backends: Sequence[str]) -> list[Any]:
    """The store backends a contract suite runs on: ``backends``, or on tier localstack LocalStack alone.

    For ``metafunc.parametrize(NAME, contract_backends(...), indirect=True)``: the fixture NAME then gets the
    backend's name as ``request.param`` and its ``{name}_store`` (or ``{name}_s3_client``) fixture.
    """
    if selected_tier(config) == "localstack":
        return [pytest.param("localstack", marks=getattr(pytest.mark, LOCALSTACK_MARK))]
    return list(backends)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On tier localstack, deselect the tests that never reach LocalStack: they ran in the default run."""
    if selected_tier(config) != "localstack":
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        reaches = item.get_closest_marker(LOCALSTACK_MARK) or "tier_backend" in getattr(item, "fixturenames", ())
        (keep if reaches else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _configured_localstack() -> str | None:
    """The endpoint of a LocalStack someone configured (``AWS_ENDPOINT_URL`` or ``LOCALSTACK_HOST``), else None."""
    if not (os.environ.get("AWS_ENDPOINT_URL", "").strip() or os.environ.get("LOCALSTACK_HOST", "").strip()):
        return None
    from localstack_client.config import get_service_endpoint

    return get_service_endpoint("s3")


@pytest.fixture(scope="session")
def localstack_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """LocalStack's S3 endpoint: a configured LocalStack, else one started here for the session (host mode).

    Skips, saying why, when the configured one is not up or when LocalStack cannot start here (no virtualenv,
    no Python 3.13, or it dies: the reason ends with its log's last lines). Its log is in the pytest tmp dir.
    """
    configured = _configured_localstack()
    if configured is not None:
        try:
            localstack.wait_for_s3(configured, timeout=2.0)
        except localstack.LocalStackUnavailableError as exc:
            pytest.skip(f"tier localstack: LOCALSTACK_HOST / AWS_ENDPOINT_URL name {configured}, but {exc}")
        yield configured
        return
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(localstack.running(tmp_path_factory.mktemp("localstack")))
        except localstack.LocalStackUnavailableError as exc:
            pytest.skip(f"tier localstack: LocalStack cannot start here: {exc}")
        yield server.endpoint


@pytest.fixture
def localstack_s3_client(tier_backend: TierBackend, aws_env: None) -> Iterator[S3Client]:
    """A client on the tier's LocalStack with an empty bucket ``BUCKET`` (a contract suite's backend)."""
    if tier_backend.name != "localstack":
        raise pytest.UsageError(f"the localstack store backend needs --tier localstack, not {tier_backend.name}")
    client = make_s3_client(tier_backend.endpoint, s3={"addressing_style": "path"})
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):  # left over by an interrupted run
        client.create_bucket(Bucket=BUCKET)
    _delete_prefix(client, BUCKET, "")
    try:
        yield client
    finally:
        _delete_prefix(client, BUCKET, "")
        client.delete_bucket(Bucket=BUCKET)


@pytest.fixture
def localstack_store(localstack_s3_client: S3Client) -> S3Store:
    """An ``S3Store`` on bucket ``BUCKET`` of the tier's LocalStack."""
    return S3Store(localstack_s3_client, BUCKET)
