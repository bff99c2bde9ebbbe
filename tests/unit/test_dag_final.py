"""Every stage leads to the final stage: a request completes when its final stage succeeds, so a stage off that
path would be cut off with the request COMPLETED (a stage added by hand after ``final`` did exactly that)."""

from __future__ import annotations

import pytest
from fave.pipeline import PipelineError, parse_pipeline

FUNCTIONS = frozenset({"F"})


def document(final: str | None, **stages: list[str]) -> dict[str, object]:
    doc: dict[str, object] = {"stages": {name: {"function": "F", "needs": needs} for name, needs in stages.items()}}
    if final is not None:
        doc["final"] = final
    return doc


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        (document("a", a=[], b=["a"]), "stage b does not lead to the final stage 'a'"),
        (document("c", a=[], b=["a"], c=["a"], d=["b"]), "stages b, d do not lead to the final stage 'c'"),
        (document("b", a=[], b=["a"], side=[]), "stage side does not lead to the final stage 'b'"),
    ],
)
def test_a_stage_that_does_not_lead_to_the_final_one_is_refused(doc: dict[str, object], says: str) -> None:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(doc, FUNCTIONS)
    assert "field 'final'" in str(caught.value) and says in str(caught.value)


def test_a_diamond_into_the_final_stage_loads() -> None:
    pipeline = parse_pipeline(document("d", a=[], b=["a"], c=["a"], d=["b", "c"]), FUNCTIONS)
    assert pipeline.final == "d" and pipeline.order[0] == "a"
