"""``fave export --format asl``: write the pipeline as another engine's definition and say what maps.

The definition goes to ``-o PATH`` (stdout without it); the table of what mapped exactly, approximately or not
at all goes to stderr (with ``--json``: everything as one JSON document on stdout). ``--sam [PATH]`` also writes
a copy of the pipeline's template.yaml with the state machine in it (default ``template.asl.yaml`` beside it).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fave.cli.main import UsageError, _json_out, _tell

if TYPE_CHECKING:
    from fave.export.mapping import Row

FORMATS = ("asl", "airflow", "openfaas", "prefect", "dagster")
SAM_DEFAULT = "template.asl.yaml"


def _store_bucket(resources: dict[str, Any]) -> str:
    """The logical id of the bucket that is the store: ``ArtifactsBucket`` (fave's templates), or the only
    ``AWS::S3::Bucket``."""
    if resources.get("ArtifactsBucket", {}).get("Type") == "AWS::S3::Bucket":
        return "ArtifactsBucket"
    buckets = [lid for lid, r in resources.items() if isinstance(r, dict) and r.get("Type") == "AWS::S3::Bucket"]
    if len(buckets) != 1:
        raise UsageError(
            f"--sam: cannot tell the store's bucket: name it ArtifactsBucket (the template has "
            f"{len(buckets)} AWS::S3::Bucket resources)"
        )
    return buckets[0]


def _json_report(
    args: argparse.Namespace,
    pipeline: str,
    written: Mapping[str, Any],
    *,
    rows: Sequence[Row],
    notes: Sequence[str],
    definition: Any,
    **extra: Any,
) -> int:
    """``--json``: the export as one JSON document on stdout, the definition itself only without ``-o``."""
    doc: dict[str, Any] = {"format": args.format, "pipeline": pipeline, **extra, "written": dict(written)}
    doc.update(mapping=[row.to_json() for row in rows], notes=list(notes))
    if not args.output:
        doc["definition"] = definition
    _json_out(doc)
    return 0


def _asl_only(args: argparse.Namespace) -> None:
    if args.sam is not None or args.distributed or args.distributed_above is not None or args.result_writer:
        raise UsageError("--sam, --distributed, --distributed-above and --result-writer are for --format asl")


def _sam_path(value: str, template: Path) -> Path:
    path = template.parent / SAM_DEFAULT if value == "" else Path(value)
    # The copy keeps the template's relative CodeUri / ContentUri paths: it must sit beside it.
    if path.resolve().parent != template.resolve().parent:
        raise UsageError(f"--sam: write the copy beside {template} (its CodeUri paths are relative), got {value}")
    if path.resolve() == template.resolve():
        raise UsageError(f"--sam: {value} is the template itself: name a copy, e.g. {SAM_DEFAULT}")
    return path


def _run_airflow(args: argparse.Namespace) -> int:
    """``--format airflow``: the DAG file (fave.export.airflow) to -o or stdout, the table to stderr."""
    from fave.export.airflow import export_airflow

    return _run_python_file(args, export_airflow)


def _run_python_flow(args: argparse.Namespace) -> int:
    """``--format prefect|dagster``: the flow / job file (fave.export.prefect, .dagster) to -o or stdout, the
    table to stderr."""
    if args.format == "prefect":
        from fave.export.prefect import export_prefect as export
    else:
        from fave.export.dagster import export_dagster as export
    return _run_python_file(args, export)


def _run_python_file(args: argparse.Namespace, export: Any) -> int:
    """An export that is one Python file for its engine (``export(pipeline, template=...)`` -> the source, the
    mapping rows, notes; an Airflow DAG also its ``dag_id`` and ``final_task``): to -o or stdout, the table to
    stderr, or all of it as JSON."""
    from fave.export.mapping import render
    from fave.local.orchestrator import load_local_pipeline

    _asl_only(args)
    pipeline = load_local_pipeline(args.pipeline)
    # The template's absolute path: the file runs from anywhere (FAVE_EXPORT_CALL=local).
    exported = export(pipeline, template=str(pipeline.template_path.resolve()))
    dag_id = getattr(exported, "dag_id", None)
    if args.output:
        try:
            Path(args.output).write_text(exported.source, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"-o: cannot write {args.output}: {exc.strerror or exc}") from None
    if args.json:
        extra = {} if dag_id is None else {"dag_id": dag_id, "final_task": exported.final_task}
        written = {"definition": str(args.output)} if args.output else {}
        return _json_report(
            args, pipeline.name, written, rows=exported.rows, notes=exported.notes, definition=exported.source, **extra
        )
    if args.output:
        _tell(f"fave: wrote {args.output}" + (f" (DAG {dag_id})" if dag_id is not None else ""))
    else:
        sys.stdout.write(exported.source)
    _tell(render(exported.rows))
    for note in exported.notes:
        _tell(f"note: {note}")
    return 0


def _run_openfaas(args: argparse.Namespace) -> int:
    """``--format openfaas``: a faas-cli stack.yml (fave.export.openfaas) to -o or stdout; with -o, each
    function's python3-http handler folder beside it. The gateway: GATEWAY_URL / OPENFAAS_URL, else the default."""
    import os

    import yaml

    from fave.export.mapping import render
    from fave.export.openfaas import DEFAULT_GATEWAY, FunctionFacts, export_openfaas, write_bundle
    from fave.local.orchestrator import load_local_pipeline
    from fave.local.template import load_template

    _asl_only(args)
    pipeline = load_local_pipeline(args.pipeline)
    template = load_template(pipeline.template_path)
    facts = {
        lid: FunctionFacts(f.handler, f.code_uri, f.timeout_s, f.memory_mb, dict(f.environment), f.layers)
        for lid, f in template.functions.items()
    }
    gateway = os.environ.get("GATEWAY_URL") or os.environ.get("OPENFAAS_URL") or DEFAULT_GATEWAY
    try:
        exported = export_openfaas(pipeline, facts, gateway=gateway)
    except ValueError as exc:
        raise UsageError(f"export: {exc}") from None
    text = yaml.safe_dump(exported.stack, sort_keys=False, default_flow_style=False)
    written: list[str] = []
    if args.output:
        try:
            written = [str(p) for p in write_bundle(Path(args.output), exported, facts, text)]
        except OSError as exc:
            raise UsageError(f"-o: cannot write {args.output}: {exc.strerror or exc}") from None
    if args.json:
        files = {"definition": str(args.output), "handlers": written[1:]} if args.output else {}
        return _json_report(
            args,
            pipeline.name,
            files,
            rows=exported.rows,
            notes=exported.notes,
            definition=exported.stack,
            functions=dict(exported.names),
        )
    if args.output:
        _tell(f"fave: wrote {args.output} and {len(written) - 1} handler folders beside it")
    else:
        sys.stdout.write(text)
    _tell(render(exported.rows))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from fave.export.asl import AslOptions, export_asl, result_location
    from fave.export.mapping import render
    from fave.local.orchestrator import load_local_pipeline

    if args.format not in FORMATS:
        raise UsageError(f"export: --format must be one of {', '.join(FORMATS)}, got {args.format!r}")
    if args.format == "airflow":
        return _run_airflow(args)
    if args.format == "openfaas":
        return _run_openfaas(args)
    if args.format in ("prefect", "dagster"):
        return _run_python_flow(args)
    if args.distributed_above is not None and args.distributed_above < 0:
        raise UsageError(f"--distributed-above: must be >= 0, got {args.distributed_above}")
    if args.distributed and args.distributed_above is not None:
        raise UsageError("--distributed makes every fan-out DISTRIBUTED: give it or --distributed-above, not both")
    pipeline = load_local_pipeline(args.pipeline)
    sam_path = _sam_path(args.sam, pipeline.template_path) if args.sam is not None else None
    if args.result_writer and args.sam is not None:
        raise UsageError("--result-writer: with --sam the results go to the stack's bucket: give one or the other")
    try:
        results = result_location(args.result_writer) if args.result_writer else None
    except ValueError as exc:
        raise UsageError(f"--result-writer: {exc}") from None
    options = AslOptions(
        arns="substitutions" if sam_path else "input",
        distributed=args.distributed,
        distributed_above=args.distributed_above,
        results=results,
    )
    exported = export_asl(pipeline, options)
    text = json.dumps(exported.definition, indent=2, ensure_ascii=False) + "\n"
    written: dict[str, str] = {}
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"-o: cannot write {args.output}: {exc.strerror or exc}") from None
        written["definition"] = str(args.output)
    if sam_path is not None:
        from fave.export.sam import with_state_machine
        from fave.local.template import load_yaml

        source = pipeline.template_path.read_text(encoding="utf-8")
        resources = dict(load_yaml(source).get("Resources") or {})
        try:
            copy, lid = with_state_machine(
                source,
                pipeline=pipeline.name,
                definition=exported.definition,
                substitutions=exported.substitutions,
                bucket=_store_bucket(resources),
                resources=resources,
                distributed=args.distributed or args.distributed_above is not None,
            )
        except ValueError as exc:
            raise UsageError(f"--sam: {pipeline.template_path}: {exc}") from None
        sam_path.write_text(copy, encoding="utf-8")
        written["sam"] = str(sam_path)
        written["state_machine"] = lid
    if args.json:
        return _json_report(
            args, pipeline.name, written, rows=exported.rows, notes=exported.notes, definition=exported.definition
        )
    if not args.output:
        sys.stdout.write(text)
    for what, where in written.items():
        if what != "state_machine":
            _tell(f"fave: wrote {where}" + (f" (state machine {written['state_machine']})" if what == "sam" else ""))
    _tell(render(exported.rows))
    for note in exported.notes:
        _tell(f"note: {note}")
    return 0
