"""``fave export --format asl --sam``: a copy of the pipeline's template.yaml with an
``AWS::Serverless::StateMachine`` running the exported definition. Pure: text in, text out.

The resource is inserted as text at the top of ``Resources:`` so the rest of the template (its ``!Ref`` /
``!Sub`` tags, comments, order) stays byte for byte as written. The definition is inline (``Definition``, JSON
being YAML), so the copy needs no other file; function ARNs and the store are DefinitionSubstitutions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any

from fave.export.asl import RESULTS_BUCKET

__all__ = ["logical_id", "with_state_machine"]

_RESOURCES = re.compile(r"^Resources:[ \t]*(#.*)?$", re.MULTILINE)


def logical_id(pipeline: str, taken: Collection[str]) -> str:
    """``sales`` -> ``SalesStateMachine`` (CloudFormation ids are alphanumeric), unique among ``taken``."""
    base = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", pipeline) if part)
    name = f"{base}StateMachine"
    n = 2
    while name in taken:
        name = f"{base}StateMachine{n}"
        n += 1
    return name


def _indent_of_resources(text: str, start: int) -> str:
    """The indentation of the first resource under ``Resources:`` (two spaces when there is none)."""
    for line in text[start:].splitlines()[1:]:
        stripped = line.lstrip(" ")
        if stripped and not stripped.startswith("#"):
            return line[: len(line) - len(stripped)] or "  "
    return "  "


def with_state_machine(
    template: str,
    *,
    pipeline: str,
    definition: Mapping[str, Any],
    substitutions: Mapping[str, str],
    bucket: str,
    resources: Collection[str],
    distributed: bool,
) -> tuple[str, str]:
    """``template`` with the state machine added, and its logical id. ``substitutions``: placeholder ->
    function logical id (``FaveStore`` -> the store); ``bucket``: the logical id of the store's bucket;
    ``resources``: the template's logical ids. ``ValueError`` when the template has no ``Resources:`` line.
    ``FaveBucket`` (a DISTRIBUTED Map's ResultWriter, fave.export.asl) is the bucket's name."""
    found = _RESOURCES.search(template)
    if found is None:
        raise ValueError("the template has no top-level 'Resources:' line")
    ind = _indent_of_resources(template, found.start())
    lid = logical_id(pipeline, resources)
    store = {"FaveStore", RESULTS_BUCKET}  # the rest are function ARNs
    functions = sorted(f for name, f in substitutions.items() if name not in store)
    body = json.dumps(definition, indent=2, ensure_ascii=False)
    p = ind * 2  # the resource's properties
    lines = [
        f"{ind}# Added by `fave export --format asl --sam`: pipeline '{pipeline}' as a Step Functions state machine",
        f'{ind}# (docs/export.md). Start an execution named with a request id, input {{"request": {{...}}}}.',
        f"{ind}{lid}:",
        f"{ind}  Type: AWS::Serverless::StateMachine",
        f"{ind}  Properties:",
        f"{p}  Type: STANDARD",
        f'{p}  Name: !Sub "${{AWS::StackName}}-{pipeline}"',
        f"{p}  Definition:",
        *(f"{p}    {line}" for line in body.splitlines()),
        f"{p}  DefinitionSubstitutions:",
        *(f"{p}    {name}: !GetAtt {f}.Arn" for name, f in sorted(substitutions.items()) if name not in store),
        f'{p}    FaveStore: !Sub "s3://${{{bucket}}}"',
        *([f"{p}    {RESULTS_BUCKET}: !Ref {bucket}"] if RESULTS_BUCKET in substitutions else []),
        f"{p}  Policies:",
        *(f"{p}    - LambdaInvokePolicy: {{FunctionName: !Ref {f}}}" for f in functions),
    ]
    if distributed:
        # A DISTRIBUTED Map starts child executions of this very machine: named by Name above, so no cycle.
        account = "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}"
        machine = f"{account}:stateMachine:${{AWS::StackName}}-{pipeline}"
        execution = machine.replace(":stateMachine:", ":execution:") + "/*"
        lines += [
            f"{p}    - Statement:",
            f"{p}        - Sid: DistributedMapChildren",
            f"{p}          Effect: Allow",
            f"{p}          Action: [states:StartExecution]",
            f'{p}          Resource: !Sub "{machine}"',
            f"{p}        - Sid: DistributedMapRuns",
            f"{p}          Effect: Allow",
            f"{p}          Action: [states:DescribeExecution, states:StopExecution]",
            f'{p}          Resource: !Sub "{execution}"',
            # The DISTRIBUTED Map's items and its outputs go through the store (asl.py): read and write it.
            f"{p}    - S3CrudPolicy: {{BucketName: !Ref {bucket}}}",
        ]
    if RESULTS_BUCKET in substitutions:
        # A ResultWriter writes its result files by multipart upload (Step Functions' documented policy).
        lines += [
            f"{p}    - Statement:",
            f"{p}        - Sid: DistributedMapResultWriter",
            f"{p}          Effect: Allow",
            f"{p}          Action: [s3:ListMultipartUploadParts, s3:AbortMultipartUpload]",
            f'{p}          Resource: !Sub "arn:${{AWS::Partition}}:s3:::${{{bucket}}}/*"',
        ]
    block = "\n".join(lines) + "\n\n"
    cut = found.end() + 1
    return template[:cut] + block + template[cut:], lid
