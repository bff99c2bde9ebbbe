"""What ``fave serve`` runs: a SAM template's stack on this machine, in one process tree, with no Docker.

``LocalServices(template, pipeline_path, store=DIR or s3://...)`` starts, around the template's functions in
``LocalRuntime`` worker processes (the orchestrator ``fave.app.handler`` included; it has a runtime of its own,
with up to ``ORCHESTRATOR_ENVIRONMENTS`` environments outside the core gate, so that an API call never waits
for the stages to free a core, as Lambda would scale it):

* ``gateway.Gateway``: the orchestrator's HTTP API (its ``HttpApi`` events; ``gateway.DEFAULT_ROUTES`` when the
  template declares none), each request a payload 2.0 event to the orchestrator function. Other paths go to
  ``fallback(store)`` (``fave serve``: the web view), whose store is the bucket as the functions see it (through
  the local endpoint, so the ``s3://`` links in results resolve);
* ``s3bucket.LocalBucket`` (store DIR): a local S3 endpoint holding the artifacts bucket, written through to
  DIR and loaded from it at start, whose new objects under the upload prefix (the orchestrator's S3 event
  filter, else its ``FAVE_UPLOAD_PREFIX``) invoke the orchestrator asynchronously with S3's event. With an
  ``s3://`` store, that store is used as it is and no endpoint is started;
* ``lambda_api.LambdaApi``: Lambda's Invoke API over the runtime, which the functions reach with boto3
  (``AWS_ENDPOINT_URL_LAMBDA``): the orchestrator invokes its stages and itself there;
* the queues the orchestrator consumes (``CompletionsQueue``: the stages' destinations), as
  ``fave.local.queues.LocalQueue`` with the template's event source mapping; destinations nobody consumes
  (``OrchestratorDeadLetterQueue``) are logged;
* the schedule tick at the template's rate (``TickSchedule``; ``tick_s`` overrides), an EventBridge scheduled
  event sent asynchronously to the orchestrator.

Every function gets the local endpoints in its environment (``env_overrides``): ``AWS_ENDPOINT_URL_LAMBDA``,
``AWS_ENDPOINT_URL_S3`` and dummy credentials (store DIR), a region, ``FAVE_STORE``, ``FAVE_PIPELINE``,
``FAVE_FUNCTION_<LogicalId>=<LogicalId>`` and ``FAVE_SELF_FUNCTION``; a variable the template sets with
``!Ref`` / ``!GetAtt`` of its bucket gets the local bucket's name / ARN.

Start-up: one tick at once, and a second one when a lease that a killed invocation left behind has expired.
With store DIR (this process is its only driver) every request that was RUNNING when the last ``fave serve``
stopped is resumed through the API (``POST /requests/{id}/resume``: every task that did not succeed runs
again), instead of waiting for its tasks' timeouts: their invocations died with that process. With an
``s3://`` store, another deployment may be driving them, so they get the ticks only.

``stop()``: the HTTP API and the tick stop first, then the invocations in flight get ``grace_s`` to finish
(requests' leases released), then the queues, the runtime (its worker processes), the Lambda API and the S3
endpoint. What was still running is resumed by the next start.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fave_shared.errors import FaveError, ValidationError
from fave_shared.store import LocalStore, ObjectStore, S3Store, open_store

from fave.invoke.base import Invoker, InvokeResult
from fave.keys import ACTIVE_PREFIX, lease_key
from fave.lease import LEASE_TTL_S
from fave.local.gateway import DEFAULT_ROUTES, OPENFAAS_ONLY_ROUTES, Gateway, Route, http_event, routes_of
from fave.local.lambda_api import LambdaApi
from fave.local.queues import EventSourceMapping, LocalQueue, QueueMessage, invoking
from fave.local.runtime import LocalRuntime
from fave.local.s3bucket import LocalBucket
from fave.local.template import ACCOUNT_ID, ORCHESTRATOR_HANDLER, Template

__all__ = [
    "DEFAULT_BUCKET",
    "DEFAULT_TICK_S",
    "LocalServices",
    "orchestrator_of",
    "tick_event",
    "tick_schedule",
    "upload_filter",
]

log = logging.getLogger("fave.local.serve")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

#: The local artifacts bucket's name (the deployed one is named after the account and stack).
DEFAULT_BUCKET = "fave-local"
#: The tick of a template without a Schedule event (template.yaml's default ``rate(1 minute)``).
DEFAULT_TICK_S = 60.0
#: Environments of the orchestrator function at most (API calls, steps, completion batches, ticks at once).
ORCHESTRATOR_ENVIRONMENTS = max(4, os.cpu_count() or 1)
#: How long ``stop`` waits for invocations in flight.
GRACE_S = 5.0
#: Credentials of the local endpoints (nothing checks them; botocore needs some to sign).
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "fave-local", "AWS_SECRET_ACCESS_KEY": "fave-local"}

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT_S = {"minute": 60, "hour": 3600, "day": 86400}


# ---- what the template says ---------------------------------------------------------------------------------


def orchestrator_of(template: Template) -> str:
    """The logical id of the template's orchestrator (``Handler: fave.app.handler``); ``ValidationError`` if none."""
    found = sorted(lid for lid, spec in template.functions.items() if spec.handler == ORCHESTRATOR_HANDLER)
    if not found:
        raise ValidationError(f"{template.path}: no function with Handler: {ORCHESTRATOR_HANDLER} to serve")
    return "OrchestratorFunction" if "OrchestratorFunction" in found else found[0]


def _events(template: Template, function: str) -> dict[str, dict[str, Any]]:
    resource = template.raw.get("Resources", {}).get(function)
    props = resource.get("Properties") if isinstance(resource, dict) else None
    events = props.get("Events") if isinstance(props, dict) else None
    if not isinstance(events, dict):
        return {}
    return {str(name): e for name, e in events.items() if isinstance(e, dict)}


def tick_schedule(template: Template, function: str) -> tuple[float, str]:
    """The seconds between ticks and where that comes from: the function's ``Schedule`` event (``rate(...)``,
    a parameter's value with ``!Ref``), else ``DEFAULT_TICK_S``. A ``cron(...)`` schedule ticks every minute."""
    for name, event in _events(template, function).items():
        if event.get("Type") != "Schedule":
            continue
        raw = (event.get("Properties") or {}).get("Schedule")
        if isinstance(raw, dict) and isinstance(raw.get("Ref"), str):
            raw = template.parameters.get(raw["Ref"])
        text = str(raw or "").strip()
        found = _RATE.match(text)
        if found is not None:
            return float(int(found[1]) * _UNIT_S[found[2].rstrip("s")]), f"{text} (event {name})"
        return DEFAULT_TICK_S, f"every minute ({text or 'no schedule'} of event {name} is not a rate)"
    return DEFAULT_TICK_S, "rate(1 minute) (the template has no Schedule event)"


def upload_filter(template: Template, function: str) -> tuple[str, str]:
    """The upload prefix and the name of the S3 event it comes from: the function's ``S3`` event for
    ``s3:ObjectCreated:*`` (its ``prefix`` filter rule), else (no event: ``""``) the function's
    ``FAVE_UPLOAD_PREFIX``, else ``uploads/``."""
    for name, event in _events(template, function).items():
        if event.get("Type") != "S3":
            continue
        props = event.get("Properties") or {}
        kinds = props.get("Events")
        kinds = [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else []
        if not any(str(kind).startswith("s3:ObjectCreated") for kind in kinds):
            continue
        rules = ((props.get("Filter") or {}).get("S3Key") or {}).get("Rules") or []
        prefix = next((r.get("Value") for r in rules if isinstance(r, dict) and r.get("Name") == "prefix"), "")
        return str(prefix or ""), name
    return template.functions[function].environment.get("FAVE_UPLOAD_PREFIX") or "uploads/", ""


def tick_event(region: str = "us-east-1") -> dict[str, Any]:
    """An EventBridge scheduled event (events/schedule-tick.json's shape), as the ``Schedule`` event sends it."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{ACCOUNT_ID}:rule/fave-serve-tick"],
        "detail": {},
    }


def _bucket_values(template: Template, bucket: str, store_uri: str) -> dict[str, dict[str, str]]:
    """Per function, the values of its unresolved variables that name the bucket (``!Ref B``: its name,
    ``!GetAtt B.Arn``: its ARN; ``FAVE_STORE``: the store)."""
    resources = template.raw.get("Resources", {})
    buckets = {lid for lid, r in resources.items() if isinstance(r, dict) and r.get("Type") == "AWS::S3::Bucket"}
    globals_ = ((template.raw.get("Globals") or {}).get("Function") or {}).get("Environment") or {}
    out: dict[str, dict[str, str]] = {}
    for lid, spec in template.functions.items():
        props = resources.get(lid, {}).get("Properties") or {}
        variables = {**(globals_.get("Variables") or {}), **((props.get("Environment") or {}).get("Variables") or {})}
        values: dict[str, str] = {}
        for name in spec.unresolved_environment:
            raw = variables.get(name)
            if name == "FAVE_STORE":
                values[name] = store_uri
            elif isinstance(raw, dict) and raw.get("Ref") in buckets:
                values[name] = bucket
            elif isinstance(raw, dict) and isinstance(raw.get("Fn::GetAtt"), list) and raw["Fn::GetAtt"][0] in buckets:
                values[name] = f"arn:aws:s3:::{bucket}"
        if values:
            out[lid] = values
    return out


# ---- the services --------------------------------------------------------------------------------------------


class _Functions:
    """An ``Invoker`` over the runtimes, each function to the one that runs it (they are set once started: the
    Lambda API starts first, since the runtimes' environments name its URL)."""

    def __init__(self) -> None:
        self.runtimes: list[Invoker] = []

    def _owner(self, function: str) -> Invoker | None:
        return next((runtime for runtime in self.runtimes if function in runtime.functions()), None)

    def _runtime(self, function: str) -> Invoker:
        runtime = self._owner(function)
        if runtime is not None:
            return runtime
        from fave.invoke.base import FunctionNotFoundError, TerminalInvocationError

        if not self.runtimes:
            raise TerminalInvocationError("the local runtime is not started yet")
        raise FunctionNotFoundError(f"no function {function!r}")

    def invoke_sync(self, function: str, payload: dict[str, Any]) -> InvokeResult:
        return self._runtime(function).invoke_sync(function, payload)

    def invoke_async(self, function: str, payload: dict[str, Any]) -> str:
        return self._runtime(function).invoke_async(function, payload)

    def functions(self) -> frozenset[str]:
        return frozenset().union(*(runtime.functions() for runtime in self.runtimes))

    def code_digest(self, function: str) -> str | None:
        runtime = self._owner(function)
        return runtime.code_digest(function) if runtime is not None else None

    def close(self) -> None:
        """Nothing: the services close the runtimes."""


class LocalServices:
    """A template's stack on this machine (see the module docs). ``start`` it, then ``stop`` it once."""

    def __init__(
        self,
        template: Template,
        pipeline_path: Path,
        *,
        store: str,
        host: str = "127.0.0.1",
        port: int = 3000,
        s3_port: int = 4566,
        tick_s: float | None = None,
        bucket: str = DEFAULT_BUCKET,
        region: str = "us-east-1",
        fallback: Callable[[ObjectStore], WsgiApp] | None = None,
        integration_timeout_s: float = 30.0,
        grace_s: float = GRACE_S,
    ) -> None:
        self.orchestrator = orchestrator_of(template)
        self.warnings: list[str] = []
        """What the banner should say about the template (and what ``fave serve`` changed to run it)."""
        self.template = template
        self.pipeline_path = pipeline_path
        self.host = host
        self.region = region
        self.local_s3 = not store.startswith("s3://")
        if self.local_s3:
            self.folder: Path | None = Path(store).expanduser().resolve()
            self.bucket = bucket
            self.store_uri = f"s3://{bucket}"
        else:
            self.folder = None
            self.bucket = store.removeprefix("s3://").split("/", 1)[0]
            self.store_uri = store
        routes = routes_of(template, self.orchestrator) or DEFAULT_ROUTES
        # An OpenFaaS gateway calls back here whatever the template declares (gateway.OPENFAAS_ONLY_ROUTES).
        self.routes: tuple[Route, ...] = routes + tuple(r for r in OPENFAAS_ONLY_ROUTES if r not in routes)
        self.upload_prefix, self.upload_event = upload_filter(template, self.orchestrator)
        template_tick, self.tick_source = tick_schedule(template, self.orchestrator)
        self.tick_s = template_tick if tick_s is None else tick_s
        if tick_s is not None:
            self.tick_source = f"every {tick_s:g} s (--tick; the template's: {self.tick_source})"
        self.unresolved: dict[str, list[str]] = {}
        """Per function, the template variables that still have no local value."""
        self.resumed: list[str] = []
        """The requests resumed at start (store DIR)."""
        self._port, self._s3_port = port, s3_port
        self._fallback = fallback
        self._timeout = integration_timeout_s
        self._grace = grace_s
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._uploads = threading.Condition()
        self._pending_uploads = 0
        self.store: ObjectStore = LocalStore(self.folder) if self.folder is not None else open_store(store)
        """Where the requests are, to read (the folder the bucket is mirrored into, or the s3:// store)."""
        self.s3: LocalBucket | None = None
        self.lambda_api: LambdaApi | None = None
        self.runtime: LocalRuntime | None = None
        """The orchestrator function's runtime."""
        self.stage_runtime: LocalRuntime | None = None
        """The other functions' runtime."""
        self.gateway: Gateway | None = None
        self.queues: list[LocalQueue] = []

    # -- start ----------------------------------------------------------------------------------------------

    def start(self) -> LocalServices:
        """Start everything (``ValidationError`` naming the option when a port is taken); ``stop`` undoes what
        started."""
        if self.local_s3:
            assert isinstance(self.store, LocalStore)
            self.s3 = LocalBucket(
                self.bucket,
                host=self.host,
                port=self._s3_port,
                mirror=self.store,
                upload_prefix=self.upload_prefix,
                notify=self._upload,
                region=self.region,
                configuration_id=self.upload_event or "fave-uploads",
            )
            _bind(self.s3.start, self.host, "--s3-port", self._s3_port)
        functions = _Functions()
        self.lambda_api = LambdaApi(functions, host="127.0.0.1", port=0, region=self.region).start()
        destinations: dict[str, Callable[[dict[str, Any]], None]] = {}
        consumed = {e.queue: e for e in self.template.function(self.orchestrator).event_sources if e.enabled}
        for name in self.template.queues:
            if name in consumed:
                queue = LocalQueue.from_template(self.template, name, dead_letter=_dead_letter, region=self.region)
                self.queues.append(queue)
                destinations[name] = queue.send_record
            else:
                destinations[name] = _logged_destination(name)
        env, function_env = self._environment(self.lambda_api.url)

        def runtime(names: set[str], **options: Any) -> LocalRuntime:
            only = replace(self.template, functions={n: s for n, s in self.template.functions.items() if n in names})
            own_env = {n: e for n, e in function_env.items() if n in names}
            return LocalRuntime(
                only, env_overrides=env, function_env=own_env, destination_handlers=destinations, **options
            )

        # The orchestrator in a runtime of its own, outside the core gate: its environments mostly wait (on S3, on
        # a synchronous stage run inline), and an API call must not queue behind the stages for a free core.
        self.runtime = runtime({self.orchestrator}, max_environments=ORCHESTRATOR_ENVIRONMENTS)
        functions.runtimes.append(self.runtime)
        stages = set(self.template.functions) - {self.orchestrator}
        if stages:
            self.stage_runtime = runtime(stages, prewarm=[f for f in self._prewarm() if f in stages])
            functions.runtimes.append(self.stage_runtime)
        for queue in self.queues:
            mapping = EventSourceMapping.of(consumed[queue.name])
            queue.consume(invoking(self.runtime, self.orchestrator), mapping)
        fallback = self._fallback(self._bucket_store()) if self._fallback is not None else None
        self.gateway = Gateway(
            self.runtime,
            self.orchestrator,
            self.routes,
            host=self.host,
            port=self._port,
            fallback=fallback,
            integration_timeout_s=self._timeout,
        )
        _bind(self.gateway.start, self.host, "--port", self._port)
        if self.local_s3:
            self.resumed = self._interrupted()
        self._spawn(self._tick_loop, "fave-serve-tick")
        if self.resumed:
            self._spawn(self._resume, "fave-serve-resume")
        return self

    def _bucket_store(self) -> ObjectStore:
        """The requests' store as the functions see it, for the web view: the bucket through the local endpoint
        (its links are the ``s3://`` ones the functions write into results, such as the keyframes of the video
        pipeline's answer), or the ``s3://`` store."""
        if self.s3 is None:
            return self.store
        import boto3
        from botocore.config import Config

        client = boto3.session.Session().client(
            "s3",
            endpoint_url=self._loopback(self.s3),
            region_name=self.region,
            aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(max_pool_connections=32),
        )
        return S3Store(client, self.bucket)

    def _loopback(self, bucket: LocalBucket) -> str:
        """The S3 endpoint's URL on the loopback interface (listening on every interface, it is there too)."""
        return f"http://127.0.0.1:{bucket.port}" if self.host in ("0.0.0.0", "::", "") else bucket.url

    def _environment(self, lambda_url: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        env = {
            "AWS_ENDPOINT_URL_LAMBDA": lambda_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "FAVE_STORE": self.store_uri,
            "FAVE_PIPELINE": str(self.pipeline_path),
            "FAVE_SELF_FUNCTION": self.orchestrator,
            **{f"FAVE_FUNCTION_{lid}": lid for lid in self.template.functions},
        }
        if self.s3 is not None:
            env.update(AWS_ENDPOINT_URL_S3=self._loopback(self.s3), **LOCAL_CREDENTIALS)
        values = _bucket_values(self.template, self.bucket, self.store_uri)
        function_env: dict[str, dict[str, str]] = {}
        for lid, spec in self.template.functions.items():
            own = values.get(lid, {})
            if own and spec.local_isolation == "process":
                function_env[lid] = own
            missing = [n for n in spec.unresolved_environment if n not in env and n not in function_env.get(lid, {})]
            if missing:
                self.unresolved[lid] = missing
        return env, function_env

    def _prewarm(self) -> list[str]:
        """The orchestrator, then the pipeline's functions in DAG order (what a request invokes, in turn)."""
        from fave.local.orchestrator import load_local_pipeline

        try:
            pipeline = load_local_pipeline(self.pipeline_path)
        except FaveError:
            return [self.orchestrator]
        stages = [pipeline.stages[name].function for name in pipeline.order]
        return list(dict.fromkeys([self.orchestrator, *stages]))

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    # -- what runs -----------------------------------------------------------------------------------------

    def _upload(self, event: dict[str, Any]) -> None:
        """The bucket's notification: an asynchronous invocation of the orchestrator (the PUT does not wait).

        Its first attempt runs on a thread of ours rather than in the runtime's queue, so that ``stop`` can wait
        for it: an upload S3 accepted just before a shutdown still becomes a request. A failed attempt goes to
        the runtime's asynchronous invocation (Lambda's retries, then the dead-letter destination)."""
        key = event["Records"][0]["s3"]["object"]["key"]
        if self._closing.is_set() or self.runtime is None:
            log.warning("upload %s while shutting down: no event sent (upload it again)", key)
            return
        with self._uploads:
            self._pending_uploads += 1
        threading.Thread(target=self._deliver_upload, args=(event, key), name="fave-serve-upload", daemon=True).start()
        log.info("s3://%s/%s created: event sent to %s", self.bucket, key, self.orchestrator)

    def _deliver_upload(self, event: dict[str, Any], key: str) -> None:
        try:
            assert self.runtime is not None
            if self.runtime.invoke_sync(self.orchestrator, event).function_error:
                self.runtime.invoke_async(self.orchestrator, event)
        except FaveError as exc:
            log.warning("upload %s: its event was not delivered: %s (upload it again)", key, exc)
        finally:
            with self._uploads:
                self._pending_uploads -= 1
                self._uploads.notify_all()

    def tick(self) -> None:
        """Send one scheduled event to the orchestrator, asynchronously."""
        if self.runtime is not None and not self._closing.is_set():
            try:
                self.runtime.invoke_async(self.orchestrator, tick_event(self.region))
            except FaveError as exc:
                log.warning("tick not sent: %s", exc)

    def _tick_loop(self) -> None:
        started = time.monotonic()
        # One tick now (requests whose kick was lost start, due retries run), one once a lease that a killed
        # invocation left behind has expired, then the schedule.
        due = [started, started + LEASE_TTL_S + 1.0]
        next_regular = started + self.tick_s
        while not self._closing.is_set():
            now = time.monotonic()
            if due and due[0] <= now:
                due.pop(0)
                self.tick()
                continue
            if next_regular <= now:
                next_regular = now + self.tick_s
                self.tick()
                continue
            wake = min([next_regular, *due[:1]])
            self._closing.wait(max(0.0, wake - now))

    def _interrupted(self) -> list[str]:
        """The requests that were RUNNING in the store (their invocations died with the last process)."""
        from fave.status import status_document

        found = []
        for key in self.store.list(ACTIVE_PREFIX):
            request_id = key.removeprefix(ACTIVE_PREFIX)
            try:
                if status_document(self.store, request_id)["status"] != "RUNNING":
                    continue
                driver = self._live_driver(request_id)
                if driver is not None:
                    log.warning(
                        "request %s: driven by process %s here (fave run / resume): not resumed", request_id, driver
                    )
                    continue
                found.append(request_id)
            except FaveError as exc:  # unreadable: the tick reports it
                log.warning("request %s: not resumed: %s", request_id, exc)
        return found

    def _live_driver(self, request_id: str) -> int | None:
        """The pid of a live CLI driver of this machine holding the request's lease (``fave.lease`` records the
        host and pid of a local driver; an invocation's lease names neither), else None."""
        try:
            record = json.loads(self.store.get(lease_key(request_id)).data)
        except (FaveError, ValueError):
            return None
        pid = record.get("pid") if isinstance(record, dict) else None
        if not isinstance(pid, int) or record.get("host") != socket.gethostname():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except OSError:
            return pid
        return pid

    def _resume(self) -> None:
        """``POST /requests/{id}/resume`` through the orchestrator for each interrupted request."""
        route = Route("POST", "/requests/{id}/resume")
        for request_id in self.resumed:
            if self._closing.is_set() or self.runtime is None:
                return
            path = f"/requests/{request_id}/resume"
            event = http_event(route, {"id": request_id}, method="POST", raw_path=path, headers=[("host", "fave")])
            try:
                result = self.runtime.invoke_sync(self.orchestrator, event)
            except FaveError as exc:
                log.warning("request %s: resume failed: %s", request_id, exc)
                continue
            status = result.payload.get("statusCode") if isinstance(result.payload, dict) else None
            if status != 202:
                log.warning("request %s: resume answered %s: %s", request_id, status, str(result.payload)[:300])

    # -- stop ----------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop taking work, give what runs ``grace_s`` to finish, then stop everything (see the module docs)."""
        self._closing.set()
        if self.gateway is not None:
            self.gateway.stop()
        for thread in self._threads:
            thread.join(timeout=self._grace)
        deadline = time.monotonic() + self._grace
        if self.gateway is not None:
            self.gateway.wait_idle(max(0.0, deadline - time.monotonic()))
        if self.lambda_api is not None:
            self.lambda_api.wait_idle(max(0.0, deadline - time.monotonic()))
        with self._uploads:
            self._uploads.wait_for(lambda: self._pending_uploads == 0, max(0.0, deadline - time.monotonic()))
        self._wait_for_leases(deadline)
        for queue in self.queues:
            queue.close()
        for runtime in (self.runtime, self.stage_runtime):
            if runtime is not None:
                runtime.close()
        if self.lambda_api is not None:
            self.lambda_api.stop()
        if self.s3 is not None:
            self.s3.stop()

    def _wait_for_leases(self, deadline: float) -> None:
        """Until ``deadline``: wait while an invocation holds an unfinished request (its lease exists), so it
        can commit and let go rather than leave a lease that blocks the next start for up to 30 s."""
        while time.monotonic() < deadline:
            try:
                held = any(
                    self.store.head(lease_key(key.removeprefix(ACTIVE_PREFIX))) is not None
                    for key in self.store.list(ACTIVE_PREFIX)
                )
            except FaveError:
                return
            if not held:
                return
            time.sleep(0.1)


def _bind(start: Callable[[], Any], host: str, option: str, port: int) -> None:
    """``start()`` a server; ``ValidationError`` naming ``option`` when its port is taken. Tried first with a
    socket of our own: werkzeug answers a taken port with a message of its own and ``sys.exit(1)``."""
    try:
        if port:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, port))
        start()
    except (OSError, SystemExit) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "in use"
        raise ValidationError(f"{option} {port}: cannot listen on {host}:{port} ({reason}): pick another") from None


def _dead_letter(message: QueueMessage) -> None:
    log.error("dead-lettered after %s receives: %s", message.receive_count, message.body[:500])


def _logged_destination(name: str) -> Callable[[dict[str, Any]], None]:
    def deliver(envelope: Mapping[str, Any]) -> None:
        log.error("%s (a destination): %s", name, json.dumps(envelope)[:1000])

    return deliver
