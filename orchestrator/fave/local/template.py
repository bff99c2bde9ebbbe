"""Read an AWS SAM ``template.yaml`` into what the local runtime needs to run its functions.

Only the parts that change how a function runs are read: handler, code folder, layers, timeout, memory,
environment, asynchronous invocation settings (retries, event age, destinations), reserved concurrency, its
SQS event sources (``Events: {Type: SQS}``, for ``fave.local.queues``), the SQS queues (visibility timeout,
redrive policy) and a fave-only ``Metadata: {FaveLocal: {Isolation: thread}}`` switch. Everything else
(policies, other events, outputs) is left to SAM/CloudFormation.

CloudFormation short tags (``!Ref``, ``!GetAtt``, ``!Sub`` ...) are read as their long forms
(``{"Ref": ...}``, ``{"Fn::GetAtt": [...]}``), so the rest of the code sees one shape. Intrinsics are
resolved only where that is possible without a deployed stack: parameters with defaults, pseudo parameters
(``AWS::Region`` ...), and ``!Sub``/``!Join`` over those. An environment variable whose value cannot be
resolved (``!Ref Bucket``) is left out of ``FunctionSpec.environment`` and named in
``FunctionSpec.unresolved_environment``; the local runtime's ``env_overrides`` can supply it by name.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml
from fave_shared.errors import NotFoundError, ValidationError

from fave.yamlsafe import HardenedLoader, load_file, load_text

__all__ = [
    "ACCOUNT_ID",
    "ORCHESTRATOR_HANDLER",
    "CfnLoader",
    "EventInvokeConfig",
    "FunctionSpec",
    "QueueSpec",
    "SqsEventSource",
    "Template",
    "load_template",
    "load_template_once",
    "load_yaml",
    "template_functions",
]

#: The account id the local runtime pretends to run in (ARNs, ``AWS::AccountId``).
ACCOUNT_ID = "000000000000"
#: The orchestrator's entry point: a function with this handler is the orchestrator (its async stages report
#: back to it, or to a queue it consumes).
ORCHESTRATOR_HANDLER = "fave.app.handler"

DEFAULT_TIMEOUT_S = 3
DEFAULT_MEMORY_MB = 128
MAX_TIMEOUT_S = 900
MIN_MEMORY_MB, MAX_MEMORY_MB = 128, 10240

_FUNCTION_TYPE = "AWS::Serverless::Function"
_LAYER_TYPES = ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion")
_QUEUE_TYPE = "AWS::SQS::Queue"

# ---------------------------------------------------------------------------------------------------------
# YAML with CloudFormation short tags


class CfnLoader(HardenedLoader):
    """A hardened ``SafeLoader`` (``fave.yamlsafe``: duplicate keys, alias bombs, depth) that reads
    CloudFormation short tags as long-form intrinsic dicts.

    Also (like CloudFormation) keeps ISO dates as strings (``AWSTemplateFormatVersion: 2010-09-09``,
    policy ``Version: 2012-10-17``).
    """

    # PyYAML would turn 2010-09-09 into a datetime.date; CloudFormation treats it as text.
    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


def _construct_tag(long_name: str) -> Any:
    def construct(loader: CfnLoader, node: yaml.Node) -> dict[str, Any]:
        # deep=True: nested short tags (``!Base64 !Sub ...``) must be built now, not left as placeholders.
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            assert isinstance(node, yaml.MappingNode)
            value = loader.construct_mapping(node, deep=True)
        return {long_name: value}

    return construct


def _construct_getatt(loader: CfnLoader, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        # "Resource.Attribute"; the attribute itself may contain dots (Endpoint.Address).
        resource, _, attribute = str(loader.construct_scalar(node)).partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    if isinstance(node, yaml.SequenceNode):
        return {"Fn::GetAtt": loader.construct_sequence(node, deep=True)}
    raise yaml.constructor.ConstructorError(None, None, "!GetAtt needs 'A.B' or [A, B]", node.start_mark)


for _short in (
    "Sub", "Join", "If", "Equals", "Select", "FindInMap", "ImportValue", "Split", "GetAZs",
    "Base64", "Not", "And", "Or", "Cidr", "Length", "ToJsonString",
):  # fmt: skip
    CfnLoader.add_constructor(f"!{_short}", _construct_tag(f"Fn::{_short}"))
CfnLoader.add_constructor("!Ref", _construct_tag("Ref"))
CfnLoader.add_constructor("!Condition", _construct_tag("Condition"))
CfnLoader.add_constructor("!GetAtt", _construct_getatt)


def load_yaml(text: str) -> Any:
    """Parse CloudFormation YAML (or JSON) text with ``CfnLoader``. Raises ``yaml.YAMLError``."""
    return load_text(text, CfnLoader)


# ---------------------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class EventInvokeConfig:
    """Asynchronous invocation settings (SAM ``EventInvokeConfig``), with Lambda's defaults.

    ``on_success`` / ``on_failure`` are the logical ids of the destinations (from ``!GetAtt X.Arn`` or
    ``!Ref X``), or a literal ARN string as written, or None.
    """

    max_retry_attempts: int = 2
    max_event_age_s: int = 21600
    on_success: str | None = None
    on_failure: str | None = None


@dataclass(frozen=True)
class SqsEventSource:
    """A function's SQS event (SAM ``Events: {NAME: {Type: SQS}}``: an event source mapping), with Lambda's
    defaults. ``queue`` is the queue's logical id (from ``!GetAtt Q.Arn`` or ``!Ref Q``), or its ARN as written.
    """

    name: str
    queue: str
    batch_size: int = 10
    batching_window_s: int = 0
    report_batch_item_failures: bool = False
    #: ``ScalingConfig.MaximumConcurrency``: at most this many batches at once (None: Lambda scales freely).
    maximum_concurrency: int | None = None
    enabled: bool = True


@dataclass(frozen=True)
class QueueSpec:
    """An ``AWS::SQS::Queue``: what changes how its messages are delivered (SQS's defaults otherwise).

    ``dead_letter_queue`` is the logical id (or the ARN as written) its ``RedrivePolicy`` names; a message
    received ``max_receive_count`` times without being deleted goes there.
    """

    logical_id: str
    visibility_timeout_s: int = 30
    max_receive_count: int | None = None
    dead_letter_queue: str | None = None


@dataclass(frozen=True)
class FunctionSpec:
    """One ``AWS::Serverless::Function`` with Globals merged in, ready to run locally."""

    logical_id: str
    handler: str
    code_uri: Path
    timeout_s: int = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    runtime: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    #: Variables declared with a value that cannot be resolved locally (supply via ``env_overrides``).
    unresolved_environment: tuple[str, ...] = ()
    layers: tuple[Path, ...] = ()
    event_invoke_config: EventInvokeConfig = field(default_factory=EventInvokeConfig)
    reserved_concurrency: int | None = None
    package_type: Literal["Zip", "Image"] = "Zip"
    local_isolation: Literal["process", "thread"] = "process"
    event_sources: tuple[SqsEventSource, ...] = ()

    @property
    def python_path(self) -> tuple[Path, ...]:
        """``sys.path`` entries of the function, in Lambda's order: its code, then each layer and its
        ``python/`` folder (a built Python layer keeps packages under ``python/``, a source one at its root).
        """
        paths = [self.code_uri]
        for layer in self.layers:
            paths += [layer, layer / "python"]
        return tuple(paths)


@dataclass(frozen=True)
class Template:
    """The runnable parts of a SAM template. ``raw`` is the whole parsed document (long-form intrinsics)."""

    path: Path
    functions: Mapping[str, FunctionSpec]
    layers: Mapping[str, Path] = field(default_factory=dict)
    parameters: Mapping[str, str] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)
    queues: Mapping[str, QueueSpec] = field(default_factory=dict)

    def function(self, logical_id: str) -> FunctionSpec:
        """The function with this logical id; ``NotFoundError`` if the template has none."""
        try:
            return self.functions[logical_id]
        except KeyError:
            raise NotFoundError(
                f"{self.path}: no AWS::Serverless::Function {logical_id!r} "
                f"(functions: {', '.join(sorted(self.functions)) or 'none'})"
            ) from None

    def queue(self, logical_id: str) -> QueueSpec:
        """The SQS queue with this logical id; ``NotFoundError`` if the template has none."""
        try:
            return self.queues[logical_id]
        except KeyError:
            raise NotFoundError(
                f"{self.path}: no AWS::SQS::Queue {logical_id!r} (queues: {', '.join(sorted(self.queues)) or 'none'})"
            ) from None

    def orchestrator_destinations(self) -> frozenset[str]:
        """The destinations that lead back to the orchestrator: its functions (``Handler: fave.app.handler``)
        and every SQS queue one of them consumes through an enabled event source mapping (``CompletionsQueue``
        in template.yaml)."""
        orchestrators = [f for f in self.functions.values() if f.handler == ORCHESTRATOR_HANDLER]
        queues = {e.queue for f in orchestrators for e in f.event_sources if e.enabled}
        return frozenset({f.logical_id for f in orchestrators} | queues)

    def completion_problem(self, logical_id: str) -> str | None:
        """Why an asynchronous invocation of this function would never report back to the orchestrator (both
        ``EventInvokeConfig`` destinations must lead there: ``orchestrator_destinations``), or None. The text
        follows "function F has ..."."""
        config = self.function(logical_id).event_invoke_config
        back = self.orchestrator_destinations()
        wrong = []
        for condition, target in (("OnSuccess", config.on_success), ("OnFailure", config.on_failure)):
            if target is None:
                wrong.append(f"no {condition} destination")
            elif target not in back:
                wrong.append(f"its {condition} destination {target}, which is not the orchestrator")
        if not wrong:
            return None
        fix = (
            f"point both at {' or '.join(sorted(back))}"
            if back
            else f"the template has no orchestrator function (Handler: {ORCHESTRATOR_HANDLER}) to point them at"
        )
        return f"{' and '.join(wrong)} (EventInvokeConfig.DestinationConfig): {fix}"


# ---------------------------------------------------------------------------------------------------------
# Loading


def load_template(
    path: str | os.PathLike[str],
    *,
    parameters: Mapping[str, str] | None = None,
    region: str | None = None,
) -> Template:
    """Read a SAM template and every function in it.

    ``parameters`` override the template's parameter defaults (like ``--parameter-overrides``). ``region``
    resolves ``AWS::Region`` (default: ``AWS_REGION``, ``AWS_DEFAULT_REGION``, then ``us-east-1``).
    Raises ``NotFoundError`` if the file does not exist and ``ValidationError`` (one line naming the file,
    function and field) for anything that cannot run.
    """
    file = Path(path).resolve()
    try:
        doc = load_file(file, CfnLoader)  # YamlInputError (a ValidationError) names the file
    except FileNotFoundError:
        raise NotFoundError(f"{file}: template not found") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("Resources"), dict):
        raise ValidationError(f"{file}: not a CloudFormation template (no Resources mapping)")
    return _Reader(file, doc, parameters or {}, region or _default_region()).read()


def template_functions(path: Path) -> frozenset[str]:
    """The function logical ids of the SAM template at ``path`` (what ``fave.pipeline.load_pipeline`` needs)."""
    return frozenset(load_template_once(path).functions)


_loaded: dict[tuple[Path, int, int, str], Template] = {}
_loaded_lock = threading.Lock()


def load_template_once(path: str | os.PathLike[str]) -> Template:
    """``load_template(path)``, read once per process while the file is unchanged (same size and mtime).

    ``fave run`` needs a template twice, for the pipeline's function ids and for the runtime; parsing the
    bundled template.yaml with the hardened YAML loader takes ~30 ms. The result is shared: read-only."""
    file = Path(path).resolve()
    try:
        stat = file.stat()
    except OSError:
        return load_template(file)  # let it say why
    key = (file, stat.st_mtime_ns, stat.st_size, _default_region())
    with _loaded_lock:
        template = _loaded.get(key)
    if template is None:
        template = load_template(file)
        with _loaded_lock:
            if len(_loaded) >= 8:
                _loaded.clear()
            _loaded[key] = template
    return template


def _default_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


_SUB_VAR = re.compile(r"\$\{([^}]*)\}")
_SUB_ARN_ONLY = re.compile(r"^\$\{([A-Za-z0-9]+)(?:\.Arn)?\}$")
_NO_VALUE = {"Ref": "AWS::NoValue"}


class _Reader:
    """One template read: holds the document and the resolution context (parameters, pseudo parameters)."""

    def __init__(self, file: Path, doc: dict[str, Any], overrides: Mapping[str, str], region: str) -> None:
        self.file = file
        self.root = file.parent
        self.doc = doc
        self.resources: dict[str, Any] = doc["Resources"]
        self.region = region
        self.parameters = self._parameters(overrides)
        conditions = doc.get("Conditions")
        self.conditions: dict[str, Any] = conditions if isinstance(conditions, dict) else {}
        self._function_names: dict[str, str] | None = None

    def fail(self, where: str, message: str) -> ValidationError:
        return ValidationError(f"{self.file}: {where}: {message}")

    def read(self) -> Template:
        layers = {
            lid: self._layer_path(lid, res)
            for lid, res in self.resources.items()
            if isinstance(res, dict) and res.get("Type") in _LAYER_TYPES
        }
        globals_ = self.doc.get("Globals") or {}
        function_globals = globals_.get("Function") or {} if isinstance(globals_, dict) else {}
        if not isinstance(function_globals, dict):
            raise self.fail("Globals.Function", "must be a mapping")
        functions: dict[str, FunctionSpec] = {}
        queues: dict[str, QueueSpec] = {}
        for lid, res in self.resources.items():
            if isinstance(res, dict) and res.get("Type") == _FUNCTION_TYPE:
                functions[lid] = self._function(lid, res, function_globals, layers)
            elif isinstance(res, dict) and res.get("Type") == _QUEUE_TYPE:
                queues[lid] = self._queue(lid, res)
        return Template(
            path=self.file,
            functions=MappingProxyType(functions),
            layers=MappingProxyType({k: v for k, v in layers.items() if v is not None}),
            parameters=MappingProxyType(dict(self.parameters)),
            raw=self.doc,
            queues=MappingProxyType(queues),
        )

    # -- parameters and intrinsics ------------------------------------------------------------------------

    def _parameters(self, overrides: Mapping[str, str]) -> dict[str, str]:
        declared = self.doc.get("Parameters") or {}
        values: dict[str, str] = {}
        for name, decl in declared.items() if isinstance(declared, dict) else ():
            if name in overrides:
                values[name] = str(overrides[name])
            elif isinstance(decl, dict) and "Default" in decl:
                values[name] = _scalar_text(decl["Default"])
        return values

    def resolve(self, value: Any) -> str | None:
        """The text a value has at deploy time, or None if only a deployed stack could tell.

        A function's ``!Ref`` is its name (its ``FunctionName`` if that resolves, else its logical id, the
        name the local runtime knows it by) and ``${Fn.Arn}`` its ARN in the local account.
        """
        if isinstance(value, (str, int, float, bool)):
            return _scalar_text(value)
        if not (isinstance(value, dict) and len(value) == 1):
            return None
        ((fn, arg),) = value.items()
        if fn == "Ref":
            return self._ref(arg)
        if fn == "Fn::Sub":
            return self._sub(arg)
        if fn == "Fn::If":
            chosen = self.choose(value)
            return None if chosen is value or chosen == _NO_VALUE else self.resolve(chosen)
        if fn == "Fn::GetAtt" and isinstance(arg, list) and len(arg) == 2 and arg[1] == "Arn":
            return self._function_arn(arg[0])
        if fn == "Fn::Join" and isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], list):
            parts = [self.resolve(part) for part in arg[1]]
            delimiter = self.resolve(arg[0])
            if delimiter is None or any(p is None for p in parts):
                return None
            return delimiter.join(p for p in parts if p is not None)
        return None

    def _ref(self, name: Any) -> str | None:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": "local",
        }
        if not isinstance(name, str):
            return None
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        names = self.function_names()
        return next((n for n, lid in names.items() if lid == name), None)

    def _function_arn(self, lid: Any) -> str | None:
        name = self._ref(lid) if isinstance(lid, str) and lid in self.function_names().values() else None
        return None if name is None else f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{name}"

    def function_names(self) -> dict[str, str]:
        """``{function name: logical id}`` of every function: its ``FunctionName`` if that resolves locally,
        else its logical id."""
        if self._function_names is None:
            self._function_names = {}  # while resolving FunctionNames, functions have no names yet
            names: dict[str, str] = {}
            for lid, res in self.resources.items():
                if isinstance(res, dict) and res.get("Type") == _FUNCTION_TYPE:
                    props = res.get("Properties")
                    explicit = props.get("FunctionName") if isinstance(props, dict) else None
                    names[(self.resolve(explicit) if explicit is not None else None) or lid] = lid
            self._function_names = names
        return self._function_names

    # -- conditions -----------------------------------------------------------------------------------------

    def choose(self, value: Any) -> Any:
        """``value`` with every outer ``Fn::If`` whose condition can be decided locally replaced by its branch
        (which may be ``{"Ref": "AWS::NoValue"}``); an undecidable ``Fn::If`` is returned as it is."""
        while isinstance(value, dict) and len(value) == 1 and "Fn::If" in value:
            arg = value["Fn::If"]
            if not (isinstance(arg, list) and len(arg) == 3 and isinstance(arg[0], str)):
                return value
            decided = self.condition(arg[0])
            if decided is None:
                return value
            value = arg[1] if decided else arg[2]
        return value

    def condition(self, name: str, seen: frozenset[str] = frozenset()) -> bool | None:
        """The value of the template condition ``name`` with the parameters' values, or None if unknown."""
        if name in seen or name not in self.conditions:
            return None
        return self._condition(self.conditions[name], seen | {name})

    def _condition(self, expr: Any, seen: frozenset[str]) -> bool | None:
        if not (isinstance(expr, dict) and len(expr) == 1):
            return None
        ((fn, arg),) = expr.items()
        if fn == "Condition":
            return self.condition(arg, seen) if isinstance(arg, str) else None
        if not isinstance(arg, list):
            return None
        if fn == "Fn::Equals" and len(arg) == 2:
            left, right = self.resolve(arg[0]), self.resolve(arg[1])
            return None if left is None or right is None else left == right
        values = [self._condition(item, seen) for item in arg]
        if fn == "Fn::Not" and len(values) == 1:
            return None if values[0] is None else not values[0]
        if fn == "Fn::And" and values:
            return False if False in values else (None if None in values else True)
        if fn == "Fn::Or" and values:
            return True if True in values else (None if None in values else False)
        return None

    def _sub(self, arg: Any) -> str | None:
        if isinstance(arg, str):
            text, variables = arg, {}
        elif isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str) and isinstance(arg[1], dict):
            text, variables = arg
        else:
            return None
        unresolved = False

        def replace(match: re.Match[str]) -> str:
            nonlocal unresolved
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} is an escaped literal "${Literal}"
                return "${" + name[1:] + "}"
            if name in variables:
                resolved = self.resolve(variables[name])
            elif name.endswith(".Arn"):
                resolved = self._function_arn(name.removesuffix(".Arn"))
            else:
                resolved = self._ref(name)
            if resolved is None:
                unresolved = True
                return ""
            return resolved

        result = _SUB_VAR.sub(replace, text)
        return None if unresolved else result

    # -- functions ------------------------------------------------------------------------------------------

    def _function(
        self, lid: str, res: dict[str, Any], function_globals: dict[str, Any], layers: dict[str, Path | None]
    ) -> FunctionSpec:
        local = res.get("Properties") or {}
        if not isinstance(local, dict):
            raise self.fail(f"function {lid}", "Properties must be a mapping")
        package_type = self.resolve(local.get("PackageType", function_globals.get("PackageType", "Zip")))
        if package_type not in ("Zip", "Image"):
            raise self.fail(f"function {lid}: PackageType", f"must be Zip or Image, got {package_type!r}")
        globals_ = function_globals
        if package_type == "Image":
            # SAM rejects these Globals on image functions; ignoring them keeps the merge honest.
            globals_ = {k: v for k, v in globals_.items() if k not in ("Handler", "Runtime", "CodeUri", "Layers")}
        props = _merge_globals(globals_, local)
        metadata = res.get("Metadata") or {}
        if package_type == "Image":
            handler, code_uri = self._image_code(lid, props, metadata)
        else:
            handler = self._required_text(lid, props, "Handler")
            code_uri = self._code_dir(f"function {lid}: CodeUri", self._required_text(lid, props, "CodeUri"))
        if "." not in handler.strip(".") or handler.endswith("."):
            raise self.fail(f"function {lid}: Handler", f"must look like module.function, got {handler!r}")
        environment, unresolved = self._environment(lid, props.get("Environment"))
        return FunctionSpec(
            logical_id=lid,
            handler=handler,
            code_uri=code_uri,
            timeout_s=self._int(lid, props, "Timeout", default=DEFAULT_TIMEOUT_S, low=1, high=MAX_TIMEOUT_S),
            memory_mb=self._int(
                lid, props, "MemorySize", default=DEFAULT_MEMORY_MB, low=MIN_MEMORY_MB, high=MAX_MEMORY_MB
            ),
            runtime=self.resolve(props["Runtime"]) if "Runtime" in props else None,
            environment=environment,
            unresolved_environment=unresolved,
            layers=self._function_layers(lid, props.get("Layers"), layers),
            event_invoke_config=self._event_invoke_config(lid, props.get("EventInvokeConfig")),
            reserved_concurrency=(
                self._int(lid, props, "ReservedConcurrentExecutions", default=0, low=0, high=10**6)
                if props.get("ReservedConcurrentExecutions") is not None
                else None
            ),
            package_type="Image" if package_type == "Image" else "Zip",
            local_isolation=self._isolation(lid, metadata),
            event_sources=self._event_sources(lid, props.get("Events")),
        )

    def _required_text(self, lid: str, props: dict[str, Any], key: str) -> str:
        if props.get(key) is None:
            raise self.fail(f"function {lid}: {key}", "missing (set it on the function or in Globals.Function)")
        value = self.resolve(props[key])
        if not value:
            raise self.fail(f"function {lid}: {key}", f"must be a local string, got {props[key]!r}")
        return value

    def _code_dir(self, where: str, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if not path.is_dir():
            raise self.fail(where, f"folder {relative!r} does not exist (looked in {path})")
        return path

    def _image_code(self, lid: str, props: dict[str, Any], metadata: Any) -> tuple[str, Path]:
        """Handler and code folder of an image function.

        The handler is ``ImageConfig.Command[0]``. The code folder is ``Metadata.FaveLocal.CodeUri`` if set,
        else the Dockerfile's folder (``Metadata.Dockerfile``, relative to ``DockerContext``: a context wider
        than the function, such as the repository root, is common), else ``DockerContext`` itself.
        """
        metadata = metadata if isinstance(metadata, dict) else {}
        fave_local = metadata.get("FaveLocal")
        code_uri = fave_local.get("CodeUri") if isinstance(fave_local, dict) else None
        if code_uri is not None:
            if not isinstance(code_uri, str):
                raise self.fail(f"function {lid}: Metadata.FaveLocal.CodeUri", f"must be a folder, got {code_uri!r}")
            code_dir = self._code_dir(f"function {lid}: Metadata.FaveLocal.CodeUri", code_uri)
        else:
            context = metadata.get("DockerContext")
            if not isinstance(context, str):
                raise self.fail(f"function {lid}: Metadata.DockerContext", "missing (needed for PackageType Image)")
            dockerfile = metadata.get("Dockerfile", "Dockerfile")
            if not isinstance(dockerfile, str):
                raise self.fail(f"function {lid}: Metadata.Dockerfile", f"must be a path, got {dockerfile!r}")
            folder = str(Path(context) / Path(dockerfile).parent)
            code_dir = self._code_dir(f"function {lid}: Metadata.Dockerfile", folder)
        image_config = props.get("ImageConfig")
        command = image_config.get("Command") if isinstance(image_config, dict) else None
        if not (isinstance(command, list) and command and isinstance(command[0], str)):
            raise self.fail(f"function {lid}: ImageConfig.Command", "missing (its first item is the handler)")
        return command[0], code_dir

    def _int(self, lid: str, props: dict[str, Any], key: str, *, default: int, low: int, high: int) -> int:
        return self._int_at(f"function {lid}: {key}", props.get(key), default=default, low=low, high=high)

    def _int_at(self, where: str, raw: Any, *, default: int, low: int, high: int) -> int:
        if raw is None:
            return default
        text = self.resolve(raw)
        try:
            if text is None or isinstance(raw, bool):
                raise ValueError
            value = int(text)
        except ValueError:
            raise self.fail(where, f"must be an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise self.fail(where, f"must be between {low} and {high}, got {value}")
        return value

    # -- SQS: queues and event source mappings ---------------------------------------------------------------

    def _event_sources(self, lid: str, events: Any) -> tuple[SqsEventSource, ...]:
        """The function's ``Type: SQS`` events (other event types are left to SAM)."""
        if events is None:
            return ()
        if not isinstance(events, dict):
            raise self.fail(f"function {lid}: Events", "must be a mapping")
        sources = []
        for name, event in events.items():
            if isinstance(event, dict) and event.get("Type") == "SQS":
                sources.append(self._sqs_event(f"function {lid}: Events.{name}", str(name), event.get("Properties")))
        return tuple(sources)

    def _sqs_event(self, where: str, name: str, props: Any) -> SqsEventSource:
        if not isinstance(props, dict):
            raise self.fail(where, "Properties must be a mapping")
        queue = self._target_id(props.get("Queue"))
        if queue is None:
            raise self.fail(
                f"{where}.Queue", f"must name a queue (!GetAtt Queue.Arn or an ARN), got {props.get('Queue')!r}"
            )
        # Lambda's limits for a standard queue; a batch over 10 needs a batching window.
        batch = self._int_at(f"{where}.BatchSize", props.get("BatchSize"), default=10, low=1, high=10_000)
        window = self._int_at(
            f"{where}.MaximumBatchingWindowInSeconds",
            props.get("MaximumBatchingWindowInSeconds"),
            default=0,
            low=0,
            high=300,
        )
        if batch > 10 and window < 1:
            raise self.fail(f"{where}.MaximumBatchingWindowInSeconds", f"must be at least 1 with BatchSize {batch}")
        types = props.get("FunctionResponseTypes") or []
        if not isinstance(types, list) or any(t != "ReportBatchItemFailures" for t in types):
            raise self.fail(f"{where}.FunctionResponseTypes", f"must be [ReportBatchItemFailures] or [], got {types!r}")
        scaling = props.get("ScalingConfig")
        concurrency = None
        if scaling is not None:
            raw = scaling.get("MaximumConcurrency") if isinstance(scaling, dict) else scaling
            where_scaling = f"{where}.ScalingConfig.MaximumConcurrency"
            concurrency = self._int_at(where_scaling, raw, default=1000, low=2, high=1000)
        enabled = props.get("Enabled", True)
        if not isinstance(enabled, bool):
            raise self.fail(f"{where}.Enabled", f"must be true or false, got {enabled!r}")
        return SqsEventSource(
            name=name,
            queue=queue,
            batch_size=batch,
            batching_window_s=window,
            report_batch_item_failures=bool(types),
            maximum_concurrency=concurrency,
            enabled=enabled,
        )

    def _queue(self, lid: str, res: dict[str, Any]) -> QueueSpec:
        props = res.get("Properties") or {}
        if not isinstance(props, dict):
            raise self.fail(f"queue {lid}", "Properties must be a mapping")
        visibility = self._int_at(
            f"queue {lid}: VisibilityTimeout", props.get("VisibilityTimeout"), default=30, low=0, high=43_200
        )
        redrive = self.choose(props.get("RedrivePolicy"))
        if isinstance(redrive, str):  # CloudFormation also takes the policy as JSON text
            try:
                redrive = json.loads(redrive)
            except ValueError:
                raise self.fail(f"queue {lid}: RedrivePolicy", "is text but not JSON") from None
        if redrive is None or redrive == _NO_VALUE:
            return QueueSpec(lid, visibility)
        if not isinstance(redrive, dict):
            raise self.fail(f"queue {lid}: RedrivePolicy", f"must be a mapping, got {redrive!r}")
        target = self._target_id(redrive.get("deadLetterTargetArn"))
        if target is None:
            raise self.fail(f"queue {lid}: RedrivePolicy.deadLetterTargetArn", "must name a queue")
        count = self._int_at(
            f"queue {lid}: RedrivePolicy.maxReceiveCount", redrive.get("maxReceiveCount"), default=0, low=1, high=1000
        )
        return QueueSpec(lid, visibility, max_receive_count=count, dead_letter_queue=target)

    def _target_id(self, value: Any) -> str | None:
        """The logical id that ``!GetAtt X.Arn`` / ``!Ref X`` / ``!Sub "${X.Arn}"`` names, else the text of an
        ARN as written (None if neither)."""
        value = self.choose(value)
        if isinstance(value, dict):
            target = _intrinsic_target(value)
            if target is not None:
                return target
        return self.resolve(value) if value is not None and value != _NO_VALUE else None

    def _environment(self, lid: str, env: Any) -> tuple[dict[str, str], tuple[str, ...]]:
        variables = env.get("Variables") if isinstance(env, dict) else None
        if variables is None:
            return {}, ()
        if not isinstance(variables, dict):
            raise self.fail(f"function {lid}: Environment.Variables", "must be a mapping")
        resolved: dict[str, str] = {}
        unresolved: list[str] = []
        for name, raw in variables.items():
            value = self.choose(raw)
            if value == _NO_VALUE:
                continue  # CloudFormation drops the key
            text = self.resolve(value)
            if text is None:
                unresolved.append(str(name))
            else:
                resolved[str(name)] = text
        return resolved, tuple(unresolved)

    def _layer_path(self, lid: str, res: dict[str, Any]) -> Path | None:
        props = res.get("Properties") or {}
        content = props.get("ContentUri", props.get("Content"))
        if not isinstance(content, str):
            return None  # an S3 location: nothing local to put on sys.path
        return self._code_dir(f"layer {lid}: ContentUri", content)

    def _function_layers(self, lid: str, refs: Any, layers: dict[str, Path | None]) -> tuple[Path, ...]:
        if refs is None:
            return ()
        if not isinstance(refs, list):
            raise self.fail(f"function {lid}: Layers", "must be a list")
        paths: list[Path] = []
        for ref in refs:
            if isinstance(ref, dict) and set(ref) == {"Ref"}:
                name = ref["Ref"]
                if name not in layers:
                    if name in self.parameters:
                        continue  # a layer ARN passed as a parameter: not available locally
                    raise self.fail(f"function {lid}: Layers", f"!Ref {name} is not a LayerVersion resource")
                path = layers[name]
                if path is not None and path not in paths:
                    paths.append(path)
            # literal ARNs and other intrinsics name published layers we cannot fetch: skipped
        return tuple(paths)

    def _event_invoke_config(self, lid: str, config: Any) -> EventInvokeConfig:
        if config is None:
            return EventInvokeConfig()
        if not isinstance(config, dict):
            raise self.fail(f"function {lid}: EventInvokeConfig", "must be a mapping")
        retries = self._int(lid, config, "MaximumRetryAttempts", default=2, low=0, high=2)
        max_age = self._int(lid, config, "MaximumEventAgeInSeconds", default=21600, low=1, high=21600)
        destinations = config.get("DestinationConfig") or {}
        return EventInvokeConfig(
            max_retry_attempts=retries,
            max_event_age_s=max_age,
            on_success=self._destination_id(destinations.get("OnSuccess")),
            on_failure=self._destination_id(destinations.get("OnFailure")),
        )

    def _destination_id(self, config: Any) -> str | None:
        """The logical id a ``DestinationConfig.OnSuccess``/``OnFailure`` points at, or the ARN as written.

        ``!Ref X``, ``!GetAtt X.Arn`` and ``!Sub "${X.Arn}"`` name X. An ARN (literal or ``!Sub``) of a
        function whose ``FunctionName`` is in this template, such as
        ``!Sub "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${AWS::StackName}-x"``,
        names that function. ``!If`` takes the branch its condition selects with the parameters' values.
        """
        destination = self.choose(config.get("Destination")) if isinstance(config, dict) else None
        if destination is None or destination == _NO_VALUE:
            return None
        if isinstance(destination, dict):
            target = _intrinsic_target(destination)
            if target is not None:
                return target
        text = self.resolve(destination)
        if text is None:
            return None
        return self.function_names().get(_lambda_function_name(text), text)

    def _isolation(self, lid: str, metadata: Any) -> Literal["process", "thread"]:
        fave_local = metadata.get("FaveLocal") if isinstance(metadata, dict) else None
        isolation = fave_local.get("Isolation", "process") if isinstance(fave_local, dict) else "process"
        if isolation not in ("process", "thread"):
            raise self.fail(
                f"function {lid}: Metadata.FaveLocal.Isolation",
                f"must be process or thread, got {isolation!r}",
            )
        return "thread" if isolation == "thread" else "process"


def _merge_globals(globals_: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
    """SAM's Globals rules: maps merge key by key, lists concatenate (globals first), scalars are replaced.

    An intrinsic (``{"Ref": ..}``) is a single value, never merged into.
    """
    merged = dict(globals_)
    for key, value in local.items():
        base = merged.get(key)
        if isinstance(base, dict) and isinstance(value, dict) and not (_is_intrinsic(base) or _is_intrinsic(value)):
            merged[key] = _merge_globals(base, value)
        elif isinstance(base, list) and isinstance(value, list):
            merged[key] = base + value
        else:
            merged[key] = value
    return merged


def _is_intrinsic(value: dict[str, Any]) -> bool:
    if len(value) != 1:
        return False
    key = str(next(iter(value)))
    return key in ("Ref", "Condition") or key.startswith("Fn::")


def _scalar_text(value: Any) -> str:
    # CloudFormation renders booleans in lower case ("true"), like JSON.
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _intrinsic_target(destination: dict[str, Any]) -> str | None:
    """The logical id that ``!Ref X``, ``!GetAtt X.Arn`` or ``!Sub "${X.Arn}"`` names, else None."""
    if isinstance(destination.get("Ref"), str):
        return str(destination["Ref"])
    getatt = destination.get("Fn::GetAtt")
    if isinstance(getatt, list) and getatt and isinstance(getatt[0], str):
        return getatt[0]
    if isinstance(getatt, str):
        return getatt.partition(".")[0]
    sub = destination.get("Fn::Sub")
    if isinstance(sub, str) and (match := _SUB_ARN_ONLY.match(sub)):
        return match.group(1)
    return None


def _lambda_function_name(text: str) -> str:
    """``NAME`` of ``arn:PARTITION:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]``, else ``text`` itself."""
    parts = text.split(":")
    if len(parts) >= 7 and parts[0] == "arn" and parts[2] == "lambda" and parts[5] == "function":
        return parts[6]
    return text
