"""The ``iam`` test tier: every AWS call a function makes is made with that function's own role, from the
SAM-translated template, and refused when the role does not allow it.

A moto server of its own (``support/iam_server.py``: moto's IAM enforcement, plus the two gaps it closes)
holds one "deployed" template (``IamStack.deploy``):

* the stack's bucket, named as the translated template names it, with no key prefix (the deployed layout);
* one IAM role per function, as SAM translates it: its trust policy and inline policies, every intrinsic
  evaluated to strings by ``support.cfn.Stack`` (a document without ``Version`` gets 2012-10-17: see
  ``_versioned``). Of the managed policies SAM attaches, AWSLambdaSQSQueueExecutionRole (for the
  orchestrator's SQS event: what the event source mapping polls with) is given to the role as an inline
  policy of the same name and AWS's document (as moto ships it: ``EMULATED_MANAGED_POLICIES``); the others
  are not attached: AWSLambdaBasicExecutionRole (CloudWatch Logs) and, with ``Tracing: Active``,
  AWSXrayWriteOnlyAccess, since no call under test is a Logs or X-Ray API call, moto loads AWS managed
  policies only on request (``iam.load_aws_managed_policies``, seconds per reset), and tests/infra checks
  nothing else is attached;
* every SQS queue of the template, under its deployed name (``CompletionsQueue``, the asynchronous stages'
  destination, and the dead-letter queue);
* every function registered in moto Lambda under its deployed name (``lambda.use_docker: false``: moto
  runs nothing), so an invoke is authorised by moto like a real one;
* credentials per function from ``sts:AssumeRole`` of its role, and an admin user for the test's own calls.

Only then is enforcement switched on (``POST /moto-api/reset-auth 0``); from there every request is checked.

Who calls with what:

* the orchestrator (``fave.app``, in this process): ``client("s3", ORCHESTRATOR)``, and for its stage
  invokes and its own steps ``orchestrator_invoker(inner)`` / ``self_invoker(inner)``: real
  ``LambdaInvoker``s whose clients call moto with the orchestrator's credentials. A botocore ``after-call``
  hook (``RouteToRuntime``) runs an invoke moto accepted on ``inner`` (the local runtime, or the test's
  orchestrator for its own steps); one moto refused raises its AccessDenied as on AWS, and nothing runs.
  ``after-call`` rather than a ``DryRun`` probe: the invoke that is authorised is the very call the real
  invoker makes (its function name from ``FAVE_FUNCTION_*``, its invocation type and payload), and moto's
  answer, not a guess, decides whether the local runtime sees it;
* each stage function (a process of the local runtime): ``function_env()[lid]``, its role's credentials
  (``LocalRuntime(function_env=...)``), and ``child_env()``, the endpoint;
* a stage's destination delivery, which Lambda makes with the stage's role, and the event source mapping
  that reads it, with the orchestrator's: ``authorise_destinations`` sends the record to the moto queue
  with the stage's credentials (``sqs:SendMessage``), receives and deletes it there with the orchestrator's
  (``sqs:ReceiveMessage``, ``sqs:DeleteMessage``; ``sqs:GetQueueAttributes`` once, as Lambda checks when the
  mapping is created), and only then hands it on to the test's local queue (``fave.local.queues``), which
  plays the batching;
* the test itself: ``client("s3")`` (the admin user).

Refusals surface: botocore retries neither 403s nor 412s, so a refused store call is the store's
``TerminalError`` ("AccessDenied"), a refused invoke a ``TerminalInvocationError``. The server logs every
refusal (``IamServer.refusals``); the tier fails a test whose run saw one it did not expect.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import threading
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from support.cfn import Stack

if TYPE_CHECKING:  # imported where used: sessions without the iam tier never import botocore for it
    from fave.invoke.aws import LambdaInvoker
    from fave.invoke.base import Invoker
    from types_boto3_lambda.client import LambdaClient

ORCHESTRATOR = "OrchestratorFunction"
COMPLETIONS = "CompletionsQueue"
#: AWS-managed policies given to a role (as an inline policy with AWS's document) when SAM attaches them.
EMULATED_MANAGED_POLICIES = ("arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole",)
REGION = "us-east-1"
ADMIN = "admin"
ADMIN_USER = "fave-tests-admin"
_SERVER_SCRIPT = Path(__file__).with_name("iam_server.py")
_ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def env(self) -> dict[str, str]:
        env = {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key}
        if self.session_token:
            env["AWS_SESSION_TOKEN"] = self.session_token
        return env


class IamServer:
    """The moto server process with IAM enforcement (``support/iam_server.py``) and its control API."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.decision_log = workdir / "iam-decisions.jsonl"
        self.decision_log.write_text("")
        self._stderr = (workdir / "iam-server.log").open("wb")
        self._process = subprocess.Popen(
            [sys.executable, str(_SERVER_SCRIPT), str(self.decision_log)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().decode().strip()
        if not line.startswith("http://"):
            self.close()
            log = (workdir / "iam-server.log").read_text()[-2000:]
            raise RuntimeError(f"the IAM moto server did not start: {line!r}\n{log}")
        self.endpoint = line

    def post(self, path: str, body: Any = b"") -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            self.endpoint + path, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def enforce(self, on: bool) -> None:
        """IAM checks on every request from now on, or none."""
        self.post("/moto-api/reset-auth", b"0" if on else b"inf")

    def reset(self) -> None:
        self.post("/moto-api/reset")

    def mark(self) -> int:
        """A position in the decision log (``refusals(since=...)``)."""
        return self.decision_log.stat().st_size

    def decisions(self, since: int = 0) -> list[dict[str, Any]]:
        """What the server logged: every refusal and every decision of the project's evaluator."""
        with self.decision_log.open("rb") as log:
            log.seek(since)
            return [json.loads(line) for line in log.read().splitlines() if line.strip()]

    def refusals(self, since: int = 0) -> list[dict[str, Any]]:
        return [d for d in self.decisions(since) if not d["allowed"]]

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()  # the server's signal to stop
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._stderr.close()


def _minimal_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


def role_policies(stack: Stack, function: str) -> tuple[str, dict[str, Any], dict[str, dict[str, Any]]]:
    """A translated function's role: its logical id, trust policy and inline policies (resolved), with the
    emulated managed policies it has (``EMULATED_MANAGED_POLICIES``) as inline policies of their names."""
    role_id = stack.properties(function)["Role"]["Fn::GetAtt"][0]
    role = stack.properties(role_id)
    trust = _versioned(stack.resolve(role["AssumeRolePolicyDocument"]))
    policies = {
        str(p["PolicyName"]): _versioned(stack.resolve(p["PolicyDocument"])) for p in role.get("Policies") or []
    }
    for arn in stack.resolve(role.get("ManagedPolicyArns") or []):
        if arn in EMULATED_MANAGED_POLICIES:
            policies[arn.rsplit("/", 1)[-1]] = _aws_managed_document(arn)
    return role_id, trust, policies


def _aws_managed_document(arn: str) -> dict[str, Any]:
    """An AWS-managed policy's document, as moto ships it."""
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    document: dict[str, Any] = json.loads(aws_managed_policies_data)[arn.rsplit("/", 1)[-1]]["Document"]
    return document


def _versioned(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with ``Version: 2012-10-17`` if it has none (SAM writes the ``Policies`` statements as
    given). IAM reads such a document as 2008-10-17, which differs only in not expanding policy variables;
    moto accepts 2012-10-17 only. So a document that has a policy variable is refused here, not rewritten."""
    if "Version" in document:
        return document
    if "${" in json.dumps(document):
        raise ValueError(f"a policy without Version uses a policy variable (IAM would not expand it): {document}")
    return {"Version": "2012-10-17", **document}


@dataclass
class IamStack:
    """A SAM-translated template deployed on an ``IamServer`` (see the module docs)."""

    server: IamServer
    stack: Stack
    bucket: str
    admin: Credentials
    roles: dict[str, str]
    """function logical id -> role name"""
    credentials: dict[str, Credentials]
    """function logical id -> its role's session credentials"""
    function_names: dict[str, str]
    """function logical id -> deployed function name"""
    _policies: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    queue_urls: dict[str, str] = field(default_factory=dict)
    """queue logical id -> its URL on the server"""
    _consumers: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    _changed: bool = False
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def deploy(cls, server: IamServer, translated: Mapping[str, Any]) -> IamStack:
        """Reset the server and set the stack up on it (enforcement off meanwhile, on at the end)."""
        server.enforce(False)
        server.reset()
        server.post("/moto-api/config", {"lambda": {"use_docker": False}})
        stack = Stack(translated)
        setup = _Setup(server.endpoint)
        iam = setup.client("iam")
        iam.create_user(UserName=ADMIN_USER)
        key = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]
        iam.put_user_policy(UserName=ADMIN_USER, PolicyName="everything", PolicyDocument=json.dumps(_ALLOW_ALL))
        bucket = stack.physical_id("ArtifactsBucket")
        setup.client("s3").create_bucket(Bucket=bucket)
        sqs = setup.client("sqs")
        queue_urls: dict[str, str] = {}
        for lid in stack.resources:
            if stack.type_of(lid) == "AWS::SQS::Queue":
                url = queue_urls[lid] = sqs.create_queue(QueueName=stack.physical_id(lid))["QueueUrl"]
                assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"] == {
                    "QueueArn": stack.arn(lid)
                }, "the queue's ARN in moto is not the one the policies name"
        functions = [lid for lid in stack.resources if stack.type_of(lid) == "AWS::Lambda::Function"]
        roles: dict[str, str] = {}
        credentials: dict[str, Credentials] = {}
        names: dict[str, str] = {}
        policies: dict[str, dict[str, dict[str, Any]]] = {}
        lam, sts = setup.client("lambda"), setup.client("sts")
        for lid in functions:
            role_id, trust, inline = role_policies(stack, lid)
            role_name = stack.physical_id(role_id)
            arn = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
            for name, document in inline.items():
                iam.put_role_policy(RoleName=role_name, PolicyName=name, PolicyDocument=json.dumps(document))
            props = stack.properties(lid)
            names[lid] = stack.physical_id(lid)
            lam.create_function(
                FunctionName=names[lid],
                Runtime="python3.12",
                Role=arn,
                Handler=str(props.get("Handler") or "app.handler"),
                Code={"ZipFile": _minimal_zip()},  # image functions too: moto runs nothing either way
            )
            session = sts.assume_role(RoleArn=arn, RoleSessionName=lid)["Credentials"]
            credentials[lid] = Credentials(session["AccessKeyId"], session["SecretAccessKey"], session["SessionToken"])
            roles[lid] = role_name
            policies[lid] = inline
        server.enforce(True)
        return cls(
            server,
            stack,
            bucket,
            Credentials(key["AccessKeyId"], key["SecretAccessKey"]),
            roles,
            credentials,
            names,
            policies,
            queue_urls=queue_urls,
        )

    # -- clients and environments ----------------------------------------------------------------------

    def principal(self, who: str) -> Credentials:
        return self.admin if who == ADMIN else self.credentials[who]

    def client(self, service: str, who: str = ADMIN) -> Any:
        """A boto3 client of ``who`` (``admin`` or a function's logical id), made once and kept."""
        with self._lock:
            client = self._clients.get((service, who))
            if client is None:
                client = self._clients[(service, who)] = self.new_client(service, who)
            return client

    def new_client(self, service: str, who: str = ADMIN) -> Any:
        """A new boto3 client of ``who``, configured as the code's own clients are: S3 like
        ``default_s3_client`` (standard retries, which never retry a 403), Lambda like
        ``LambdaInvoker.default_client`` (no retries at all)."""
        from botocore.config import Config

        from support.stores import boto_session

        if service == "lambda":
            config = Config(read_timeout=910, connect_timeout=10, retries={"total_max_attempts": 1})
        else:
            config = Config(max_pool_connections=64, retries={"mode": "standard", "max_attempts": 5})
        creds = self.principal(who)
        return boto_session().client(
            service,
            endpoint_url=self.server.endpoint,
            region_name=REGION,
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
            aws_session_token=creds.session_token,
            config=config,
        )

    def child_env(self) -> dict[str, str]:
        """For every function process: every AWS service at the server (credentials: ``function_env``)."""
        return {"AWS_ENDPOINT_URL": self.server.endpoint, "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}

    def function_env(self) -> dict[str, dict[str, str]]:
        """Per function logical id: its role's credentials."""
        return {lid: creds.env() for lid, creds in self.credentials.items()}

    def orchestrator_env(self) -> dict[str, str]:
        """The orchestrator function's environment as deployed (every intrinsic evaluated)."""
        variables = self.stack.resolve(self.stack.properties(ORCHESTRATOR).get("Environment", {})).get("Variables", {})
        return {str(k): str(v) for k, v in variables.items()}

    def orchestrator_invoker(self, inner: Invoker) -> LambdaInvoker:
        """The orchestrator's invoker as on AWS (``LambdaInvoker.from_env``, its role's credentials), with
        each invoke moto accepts run on ``inner``."""
        from fave.invoke.aws import LambdaInvoker

        client: LambdaClient = self.new_client("lambda", ORCHESTRATOR)  # its own: hooks are per client
        RouteToRuntime(inner, self.function_names).attach(client)
        return LambdaInvoker.from_env(client, environ=self.orchestrator_env())

    def self_invoker(self, inner: Invoker) -> LambdaInvoker:
        """The orchestrator invoking itself as ``fave.app`` does on Lambda (a ``LambdaInvoker`` naming the
        function ``FAVE_SELF_FUNCTION``, else its own name, as Lambda's ``AWS_LAMBDA_FUNCTION_NAME`` says), with
        its role's credentials; an invoke moto accepts runs on ``inner``."""
        from fave.invoke.aws import LambdaInvoker

        name = self.orchestrator_env().get("FAVE_SELF_FUNCTION") or self.function_names[ORCHESTRATOR]
        client: LambdaClient = self.new_client("lambda", ORCHESTRATOR)
        RouteToRuntime(inner, self.function_names).attach(client)
        return LambdaInvoker(client, {ORCHESTRATOR: name})

    def queue_url(self, lid: str = COMPLETIONS) -> str:
        """The URL of the template's queue ``lid`` on the server."""
        return self.queue_urls[lid]

    def authorise_destinations(self, deliver: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
        """``deliver`` behind what a destination record meets on AWS between a stage and the orchestrator: the
        stage's role sends it to CompletionsQueue, the orchestrator's role (the event source mapping's pollers)
        receives and deletes it. A refused send is dropped, as Lambda drops it; a refused receive leaves it in
        the queue, never delivered; a refused delete still delivers it (SQS would deliver it again later).
        Every refusal is logged by the server. Lambda checks at once, as it does when the mapping is created,
        that the orchestrator may read the queue's attributes (a refusal raises here)."""
        by_logical_id = set(self.credentials)
        url = self.queue_url()
        self.client("sqs", ORCHESTRATOR).get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
        self._consumers.append(deliver)

        def authorised(envelope: dict[str, Any]) -> None:
            from botocore.exceptions import ClientError

            arn = str(envelope.get("requestContext", {}).get("functionArn", ""))
            source = arn.split(":")[6] if arn.count(":") >= 6 else ""
            if source not in by_logical_id:  # not a function of the stack: nothing to check it against
                deliver(envelope)
                return
            try:
                self.client("sqs", source).send_message(QueueUrl=url, MessageBody=json.dumps(envelope))
            except ClientError:
                return
            self._poll_completions(url, deliver)

        return authorised

    def poll_completions(self) -> None:
        """Poll CompletionsQueue now, for what waits there (a receive that was refused left it): Lambda's
        pollers poll all the time; here each delivery polls after its send, and a test may ask for one more."""
        for deliver in self._consumers:
            self._poll_completions(self.queue_url(), deliver)

    def _poll_completions(self, url: str, deliver: Callable[[dict[str, Any]], None]) -> None:
        """Receive (and delete) with the orchestrator's role whatever the queue holds, and deliver it. Each
        sender polls after its send, so nothing is left behind by senders racing each other."""
        from botocore.exceptions import ClientError

        sqs = self.client("sqs", ORCHESTRATOR)
        while True:
            try:
                messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            except ClientError:
                return
            if not messages:
                return
            for message in messages:
                deliver(json.loads(message["Body"]))
                with contextlib.suppress(ClientError):
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def purge_queues(self) -> None:
        """Empty every queue of the stack (messages a test's refused receive left behind)."""
        sqs = self.client("sqs")
        for url in self.queue_urls.values():  # not PurgeQueue: SQS (and moto) allow one per minute
            while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
                entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)]
                sqs.delete_message_batch(QueueUrl=url, Entries=entries)

    # -- state between tests -----------------------------------------------------------------------------

    def use_policies(self, translated: Mapping[str, Any], functions: tuple[str, ...] = (ORCHESTRATOR,)) -> None:
        """Give ``functions``' roles the inline policies ``translated`` has for them (a broken copy, say),
        until ``restore_policies``."""
        stack = Stack(translated)
        iam = self.client("iam")
        self._changed = True
        for lid in functions:
            _, _, inline = role_policies(stack, lid)
            self._put_policies(iam, lid, inline)

    def restore_policies(self) -> None:
        if self._changed:
            iam = self.client("iam")
            for lid, inline in self._policies.items():
                self._put_policies(iam, lid, inline)
            self._changed = False

    def _put_policies(self, iam: Any, lid: str, inline: Mapping[str, Any]) -> None:
        role = self.roles[lid]
        for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
            if name not in inline:
                iam.delete_role_policy(RoleName=role, PolicyName=name)
        for name, document in inline.items():
            iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(document))

    def empty_bucket(self) -> None:
        s3 = self.client("s3")
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})


class _Setup:
    """Clients for setting a stack up while enforcement is off (any credentials do)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def client(self, service: str) -> Any:
        from support.stores import boto_session

        return boto_session().client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )


class RouteToRuntime:
    """botocore hooks on a Lambda client: an ``Invoke`` that moto accepted runs on ``inner`` (a local
    runtime), and its response becomes the call's result; a refused one raises as moto answered it."""

    def __init__(self, inner: Invoker, function_names: Mapping[str, str]) -> None:
        self.inner = inner
        self.logical_ids = {name: lid for lid, name in function_names.items()}

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build.lambda.Invoke", self._remember)
        client.meta.events.register("after-call.lambda.Invoke", self._run)

    @staticmethod
    def _remember(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["fave_invoke"] = dict(params)

    def _run(self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        from botocore.response import StreamingBody

        if http_response.status_code >= 300:
            return  # refused or unknown: botocore raises moto's error
        call = context["fave_invoke"]
        name = str(call["FunctionName"])
        function = self.logical_ids[name.split(":")[6] if name.startswith("arn:") else name]
        payload = json.loads(call.get("Payload") or b"null")
        kind = call.get("InvocationType", "RequestResponse")
        if kind == "DryRun":
            return
        if kind == "Event":
            request_id = self.inner.invoke_async(function, payload)
            parsed["StatusCode"] = 202
        else:
            result = self.inner.invoke_sync(function, payload)
            body = json.dumps(result.payload).encode()
            parsed["Payload"] = StreamingBody(io.BytesIO(body), len(body))
            parsed["StatusCode"] = 200
            parsed.pop("FunctionError", None)
            if result.function_error:
                parsed["FunctionError"] = result.function_error
            request_id = result.request_id
        parsed.setdefault("ResponseMetadata", {})["RequestId"] = request_id


def deploy_template(server: IamServer, template: Path) -> IamStack:
    """Translate ``template`` with SAM (skips without .venv-sam) and deploy it on ``server``."""
    from support.sam import translate

    return IamStack.deploy(server, translate(template))


@pytest.fixture(scope="session")
def iam_demo_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamStack]:
    """The demo pipeline's template (tests/fixtures/demo) deployed on an IAM server of the session's own."""
    from support.app_lambda import DEMO_TEMPLATE

    server = IamServer(tmp_path_factory.mktemp("iam-demo"))
    try:
        yield deploy_template(server, DEMO_TEMPLATE)
    finally:
        server.close()
