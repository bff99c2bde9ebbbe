"""A moto server that enforces IAM, for the ``iam`` test tier. ``support.iam`` runs it as its own process::

    python tests/support/iam_server.py DECISIONS.jsonl   # prints http://127.0.0.1:PORT once it listens

It stops when its standard input closes (so it never outlives the test session that started it). Its own
process, because moto's IAM switch (``INITIAL_NO_AUTH_ACTION_COUNT``) and the two additions below are
process-wide: in-process moto (``mock_aws``) elsewhere in the session is untouched.

moto 5.2 checks every signed request against the identity policies of the caller (an IAM user, or the role
behind assumed-role credentials: ``moto.iam.access_control``). Two gaps matter for fave's policies; both are
closed here, and nothing else of moto's decision is changed:

1. **Lambda calls.** ``BaseResponse.call_action`` authorises against ``self._determine_resource()`` when
   the response class has one (SQS, IAM and STS do), else against ``"*"``. ``LambdaResponse`` has none, so
   an Allow scoped to function ARNs never matches and every ``Invoke`` is refused. Here it gets one: the ARN
   of the function the request path names. moto also names the action after the API operation
   (``lambda:Invoke``), which no policy grants; it is renamed to IAM's ``lambda:InvokeFunction``. moto's own
   evaluator then decides.
2. **Conditions.** moto evaluates no condition of an identity policy: it passes no request context, and
   knows only ``StringEquals`` (any other operator counts as met), so split's ``s3:ListBucket`` with
   ``StringLike s3:prefix requests/*/clips/*`` would let it list any prefix. For a call that a statement
   *with a Condition* could match, the decision is the project's evaluator's (``support.cfn.allowed``) on the
   same policies, with the request's context (``s3:prefix``, ``s3:delimiter`` from the query string).

3. **Signatures of bodiless Lambda calls.** moto recomputes a request's SigV4 signature with
   ``data=self._body or self._data``: for a ``GET`` (``GetFunctionConfiguration``, which the result cache's
   code digest calls) the body is empty and ``_data`` holds the parsed parameters, so the payload moto hashes is
   not the empty one botocore signed and every such call answers ``SignatureDoesNotMatch``. Here a request
   without a body is recomputed as one.

Every refusal and every decision taken by the project's evaluator is appended to ``DECISIONS.jsonl`` as
``{"decider": "moto"|"fave", "allowed", "principal", "action", "resource", "context"}``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: support.cfn

from support.cfn import Statement, allowed

_FUNCTION_IN_PATH = re.compile(r"/functions/([^/]+)")
_S3_CONTEXT_KEYS = {"prefix": "s3:prefix", "delimiter": "s3:delimiter"}
#: moto names a Lambda call's IAM action after the API operation; IAM's name differs for these.
_IAM_ACTIONS = {"lambda:Invoke": "lambda:InvokeFunction", "lambda:InvokeWithResponseStream": "lambda:InvokeFunction"}


class DecisionLog:
    """Appends one JSON line per decision worth knowing about (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(self, **record: Any) -> None:
        line = json.dumps(record, sort_keys=True)
        with self._lock, self.path.open("a") as out:
            out.write(line + "\n")


def lambda_resource(response: Any) -> str:
    """The ARN of the function a Lambda API request names (``*`` for account-level calls)."""
    match = _FUNCTION_IN_PATH.search(response.path)
    if match is None:
        return "*"
    name = unquote(match.group(1))
    if name.startswith("arn:"):
        return ":".join(name.split(":")[:7])  # without a version or alias qualifier
    name = name.split(":", 1)[0]
    return f"arn:aws:lambda:{response.region}:{response.current_account}:function:{name}"


def request_context(path: str) -> dict[str, str]:
    """IAM condition keys a request carries, as far as fave's policies use them (S3 list parameters)."""
    query = parse_qs(urlsplit(path).query)
    return {key: query[name][0] for name, key in _S3_CONTEXT_KEYS.items() if name in query}


def statements_of(policies: list[Any]) -> list[Statement]:
    from moto.iam.access_control import IAMPolicy

    statements = []
    for policy in policies:
        document = IAMPolicy(policy)._policy_json
        raw = document["Statement"]
        for item in raw if isinstance(raw, list) else [raw]:
            statements.append(Statement.parse(item))
    return statements


def install(log: DecisionLog) -> None:
    """Patch moto (this process only): the Lambda resource and the condition fallback (module docs)."""
    from moto.awslambda.responses import LambdaResponse
    from moto.iam.access_control import IAMRequestBase

    LambdaResponse._determine_resource = lambda_resource  # type: ignore[attr-defined]
    moto_check = IAMRequestBase.check_action_permitted
    moto_request = IAMRequestBase._create_aws_request

    def create_aws_request(self: Any) -> Any:
        if self._method in ("GET", "HEAD", "DELETE") and not self._body and isinstance(self._data, dict):
            data, self._data = self._data, {}  # the signed payload was empty (gap 3 in the module docs)
            try:
                return moto_request(self)
            finally:
                self._data = data
        return moto_request(self)

    IAMRequestBase._create_aws_request = create_aws_request  # type: ignore[method-assign]

    def check_action_permitted(self: Any, resource: str) -> None:
        action = self._action = _IAM_ACTIONS.get(self._action, self._action)
        principal = self._access_key.arn
        statements = statements_of(self._access_key.collect_policies())
        if any(s.conditions and replace(s, conditions={}).matches(action, resource, {}) for s in statements):
            context = request_context(self._path)
            verdict = allowed(statements, action, resource, context)
            log.write(
                decider="fave", allowed=verdict, principal=principal, action=action, resource=resource, context=context
            )
            if not verdict:
                self._raise_access_denied()
            return
        try:
            moto_check(self, resource)
        except Exception:
            log.write(decider="moto", allowed=False, principal=principal, action=action, resource=resource, context={})
            raise

    IAMRequestBase.check_action_permitted = check_action_permitted  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    log = DecisionLog(Path(argv[0]))
    install(log)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"http://{host}:{port}", flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
