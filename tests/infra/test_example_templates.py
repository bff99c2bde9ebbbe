"""The example pipelines' templates (examples/*) pass the same checks as template.yaml: SAM translates them,
every stage's function and destinations are wired as its pipeline.yaml says, and every role covers what its
code does and no more (``support.template_checks``). An example is what a team copies: it must deploy as is.

Each check is also shown to catch a broken copy of an example (sales), so a pass means something.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fave.core.dag import Pipeline
from fave.keys import final_key, state_key
from fave.local.orchestrator import load_local_pipeline
from fave.local.template import load_template, load_yaml
from fave_shared.stage import artifact_prefix
from support.sam import TEMPLATE, translate_many
from support.template_checks import (
    ORCHESTRATOR,
    REQUEST_ID,
    check_iam,
    check_source_reads,
    check_upload_trigger,
    check_wiring,
)

EXAMPLES = sorted(p.parent for p in (TEMPLATE.parent / "examples").glob("*/pipeline.yaml"))
SALES = TEMPLATE.parent / "examples" / "sales"
BUCKET = "arn:aws:s3:::fave-123456789012-us-east-1-51af3dc0"
SOURCES = ("uploads/", "inputs/")


def _sales_doc() -> dict[str, Any]:
    doc: dict[str, Any] = load_yaml((SALES / "template.yaml").read_text())
    return doc


def _statements(doc: dict[str, Any], lid: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = doc["Resources"][lid]["Properties"]["Policies"][0]["Statement"]
    return statements


def _without(doc: dict[str, Any], lid: str, sid: str) -> dict[str, Any]:
    doc["Resources"][lid]["Properties"]["Policies"][0]["Statement"] = [
        s for s in _statements(doc, lid) if s["Sid"] != sid
    ]
    return doc


def _broken_sales() -> dict[str, dict[str, Any]]:
    mutations: dict[str, dict[str, Any]] = {}
    doc = _sales_doc()  # the examples as they were: the orchestrator deletes anything under requests/
    deletes = next(s for s in _statements(doc, ORCHESTRATOR) if s["Sid"] == "SupersededShards")
    deletes["Resource"]["Fn::Sub"][0] = deletes["Resource"]["Fn::Sub"][0].replace(
        "/requests/*/metadata/tasks/*", "/requests/*"
    )
    mutations["deletes_everything"] = doc
    mutations["load_reads_no_source"] = _without(_sales_doc(), "LoadFunction", "ReadSources")
    mutations["no_sidecars"] = _without(_sales_doc(), ORCHESTRATOR, "ReadUploads")
    doc = _sales_doc()  # nothing starts a request from an upload
    del doc["Resources"][ORCHESTRATOR]["Properties"]["Events"]["Upload"]
    mutations["no_upload_event"] = doc
    return mutations


@pytest.fixture(scope="module")
def translated() -> dict[Path | str, dict[str, Any]]:
    """The examples and the broken copies of sales, translated in one .venv-sam run (each costs seconds)."""
    broken = _broken_sales()
    names: list[Path | str] = [*EXAMPLES, *broken]
    docs = translate_many([*(e / "template.yaml" for e in EXAMPLES), *broken.values()])
    return dict(zip(names, docs, strict=True))


@pytest.fixture(scope="module")
def sales() -> Pipeline:
    return load_local_pipeline(SALES / "pipeline.yaml")


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_the_example_template_is_wired_and_least_privilege(
    example: Path, translated: dict[Path | str, dict[str, Any]]
) -> None:
    pipeline = load_local_pipeline(example / "pipeline.yaml")
    assert check_wiring(translated[example], pipeline) == []
    assert check_iam(translated[example], pipeline, load_template(example / "template.yaml")) == []
    assert check_source_reads(translated[example], pipeline) == []
    assert check_upload_trigger(translated[example], pipeline) == []


def test_there_are_examples() -> None:
    assert {e.name for e in EXAMPLES} >= {"sales", "weekly"}


def test_deletes_beyond_shards_leases_mailboxes_and_markers_are_reported(
    translated: dict[Path | str, dict[str, Any]], sales: Pipeline
) -> None:
    problems = check_iam(translated["deletes_everything"], sales, load_template(SALES / "template.yaml"))
    assert problems == [
        f"{ORCHESTRATOR} may s3:DeleteObject on {BUCKET}/{key} ({why})"
        for key, why in (
            (state_key(REQUEST_ID), "state is never deleted"),
            (final_key(REQUEST_ID), "results are never deleted"),
            (f"{artifact_prefix(REQUEST_ID, 'load', None)}output-1.json", "stage artifacts are never deleted"),
        )
    ]


def test_a_first_stage_that_cannot_read_the_source_is_reported(
    translated: dict[Path | str, dict[str, Any]], sales: Pipeline
) -> None:
    problems = check_iam(translated["load_reads_no_source"], sales, load_template(SALES / "template.yaml"))
    assert problems == [
        f"LoadFunction may not s3:GetObject on {BUCKET}/{prefix}video.mp4 (a source under {prefix})"
        for prefix in ("uploads/", "inputs/")
    ]
    assert check_source_reads(translated["load_reads_no_source"], sales) == [
        "stage load (LoadFunction) reads sources under [], the orchestrator accepts them under "
        "['inputs/', 'uploads/'] (FAVE_INPUT_PREFIXES and FAVE_UPLOAD_PREFIX)"
    ]


def test_an_upload_trigger_without_its_wiring_is_reported(
    translated: dict[Path | str, dict[str, Any]], sales: Pipeline
) -> None:
    problems = check_iam(translated["no_sidecars"], sales, load_template(SALES / "template.yaml"))
    assert problems == [
        f"{ORCHESTRATOR} may not s3:GetObject on {BUCKET}/uploads/video.mp4 (the upload)",
        f"{ORCHESTRATOR} may not s3:GetObject on {BUCKET}/uploads/video.mp4.json (the upload's sidecar)",
        # load's cache key takes the source by its content: the orchestrator reads its ETag
        *(f"{ORCHESTRATOR} may not s3:GetObject on {BUCKET}/{p}video.mp4 (the source's ETag)" for p in SOURCES),
    ]
    (problem,) = check_upload_trigger(translated["no_upload_event"], sales)
    assert problem.startswith(f"the upload trigger: the bucket notifies {ORCHESTRATOR} of [], not of")


def test_without_an_upload_trigger_no_function_reads_sources_or_uploads(
    translated: dict[Path | str, dict[str, Any]], sales: Pipeline
) -> None:
    """The same template against sales without its ``trigger:``: every grant for sources is now too much."""
    untriggered = replace(sales, upload_field=None)
    template = load_template(SALES / "template.yaml")
    problems = check_iam(translated[SALES], untriggered, template)
    assert problems == [
        *(
            f"LoadFunction may s3:GetObject on {BUCKET}/{prefix}video.mp4 (sources under {prefix})"
            for prefix in ("uploads/", "inputs/")
        ),
        *(
            f"{ORCHESTRATOR} may s3:GetObject on {BUCKET}/{prefix}video.mp4 (no upload trigger: no request names "
            "a source)"
            for prefix in SOURCES
        ),
    ]
    assert check_source_reads(translated[SALES], untriggered) == [
        "stage load (LoadFunction) reads sources under ['inputs/', 'uploads/'], the orchestrator accepts them "
        "under [] (FAVE_INPUT_PREFIXES and FAVE_UPLOAD_PREFIX)"
    ]
    (problem,) = check_upload_trigger(translated[SALES], untriggered)
    assert problem.startswith(f"no upload trigger in the pipeline, but the bucket notifies {ORCHESTRATOR}")
