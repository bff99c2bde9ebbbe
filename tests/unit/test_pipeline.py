"""``fave.pipeline.parse_pipeline`` and ``fave.core.dag``: every way a pipeline document (a dict: no file, no
YAML) is refused, each as one ``PipelineError`` line naming the place (``stage 'x', field 'y'``); the
dataclasses' own checks, including those a document cannot reach; and what a valid document becomes
(order, per-item joins, downstream, digest, profiles, the retry and completion decisions).

The file level (reading, size, encoding, YAML bombs, the template) is tests/functional/test_pipeline_files.py.
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any

import pytest
from fave.core.dag import (
    DEFAULT_NON_RETRYABLE,
    CompletionPolicy,
    DagError,
    ForEach,
    Pipeline,
    RetryPolicy,
    Stage,
)
from fave.pipeline import PipelineError, parse_pipeline
from fave_shared.errors import ValidationError

FUNCTIONS = frozenset({"F", "G"})


def st(**fields: Any) -> dict[str, Any]:
    """A stage of a document: function F unless ``fields`` says otherwise."""
    return {"function": "F", **fields}


def doc(stages: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """A document with ``stages`` (default: one stage ``a``) and top-level fields."""
    return {"stages": {"a": st()} if stages is None else stages, **top}


#: plan (single task) -> work (per item of plan.items) -> post (item by item after work) -> reduce (fan-in)
FAN = {
    "plan": st(mode="sync"),
    "work": st(needs=["plan"], for_each="plan.items", max_concurrency=3),
    "post": st(needs=["work"], for_each="plan.items"),
    "reduce": st(needs=["post"], mode="sync"),
}


def refused(document: Any, functions: frozenset[str] | set[str] = FUNCTIONS) -> str:
    """The message of the PipelineError parsing ``document`` raises: one line, naming the (default) file."""
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(document, functions)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith("pipeline.yaml: "), message
    return message


# ---- every error path a document can reach ------------------------------------------------------------------

SINGLE = "use a letter, then letters, digits, '_' or '-' (64 characters at most)"

#: (document, where, what the reason says). ``where`` is exactly what follows the file name.
DOCUMENT_ERRORS = [
    # -- the document itself
    pytest.param([], "top level", "expected a mapping with 'stages'", id="not-a-mapping"),
    pytest.param("stages: {}", "top level", "expected a mapping with 'stages'", id="a-string"),
    pytest.param({}, "field 'stages'", "Field required", id="stages-missing"),
    pytest.param(doc(stages=[]), "field 'stages'", "Input should be a valid dictionary", id="stages-not-a-mapping"),
    pytest.param(doc(stages={}), "field 'stages'", "at least one stage is required", id="stages-empty"),
    pytest.param(doc(bogus=1), "field 'bogus'", "Extra inputs are not permitted", id="unknown-top-field"),
    # -- names (they end up in object keys, state.json and log lines)
    pytest.param(doc(name="a b"), "field 'name'", f"'a b' is not a valid pipeline name: {SINGLE}", id="pipeline-name"),
    pytest.param(doc(name="../x"), "field 'name'", "'../x' is not a valid pipeline name", id="pipeline-name-path"),
    pytest.param(doc(name="x" * 65), "field 'name'", "is not a valid pipeline name", id="pipeline-name-65"),
    pytest.param(doc(name=5), "field 'name'", "Input should be a valid string", id="pipeline-name-type"),
    pytest.param(doc({"a b": st()}), "stage 'a b'", f"'a b' is not a valid stage name: {SINGLE}", id="stage-name"),
    pytest.param(doc({"1a": st()}), "stage '1a'", "not a valid stage name", id="stage-name-digit-first"),
    pytest.param(doc({"a.b": st()}), "stage 'a.b'", "not a valid stage name", id="stage-name-dot"),
    pytest.param(doc({"x" * 65: st()}), "stage 'xxxx", "not a valid stage name", id="stage-name-65"),
    pytest.param(doc({5: st()}), "stage 5", "5 is not a valid stage name", id="stage-name-type"),
    pytest.param(doc({"a\nb": st()}), "stage 'a\\nb'", "'a\\nb' is not a valid stage name", id="stage-name-newline"),
    pytest.param(
        doc(profiles={"a/b": {}}), "field 'profiles'", f"'a/b' is not a valid profile name: {SINGLE}", id="profile-name"
    ),
    pytest.param(doc(profiles={5: {}}), "field 'profiles'", "5 is not a valid profile name", id="profile-name-type"),
    # -- other top-level fields
    pytest.param(doc(template=5), "field 'template'", "Input should be a valid string", id="template-type"),
    pytest.param(doc(final=5), "field 'final'", "Input should be a valid string", id="final-type"),
    pytest.param(doc(final="zz"), "field 'final'", "unknown stage 'zz'", id="final-unknown"),
    pytest.param(
        doc({"a": st(), "b": st()}),
        "field 'final'",
        "required when there are several last stages (['a', 'b'])",
        id="final-missing-several-sinks",
    ),
    pytest.param(
        doc(FAN, final="work"),
        "field 'final'",
        "'work' is fanned out; the final stage must be a single task",
        id="final-fanned-out",
    ),
    pytest.param(
        doc({"plan": st(), "work": st(needs="plan", for_each="plan.items")}),
        "field 'final'",
        "'work' is fanned out",
        id="final-derived-fanned-out",
    ),
    pytest.param(doc(defaults=5), "field 'defaults'", "Input should be a valid dictionary", id="defaults-type"),
    pytest.param(
        doc(defaults={"bogus": 1}), "field 'defaults.bogus'", "Extra inputs are not permitted", id="defaults-extra"
    ),
    pytest.param(
        doc(defaults={"retry": {"bogus": 1}}),
        "field 'defaults.retry.bogus'",
        "Extra inputs are not permitted",
        id="defaults-retry-extra",
    ),
    pytest.param(
        doc(defaults={"retry": {"max_attempts": "x"}}),
        "field 'defaults.retry.max_attempts'",
        "Input should be a valid integer",
        id="defaults-retry-type",
    ),
    # A bad default is reported where it is written, not at a stage it applies to.
    pytest.param(
        doc(defaults={"timeout": "soon"}), "field 'defaults.timeout'", "not a duration: 'soon'", id="defaults-timeout"
    ),
    pytest.param(
        doc(defaults={"retry": {"interval": "soon"}}),
        "field 'defaults.retry.interval'",
        "not a duration: 'soon'",
        id="defaults-retry-interval",
    ),
    # -- profiles
    pytest.param(doc(profiles=[]), "field 'profiles'", "Input should be a valid dictionary", id="profiles-type"),
    pytest.param(
        doc(profiles={"fast": []}), "field 'profiles.fast'", "Input should be a valid dictionary", id="profile-type"
    ),
    pytest.param(
        doc(profiles={"fast": {"a": 5}}),
        "field 'profiles.fast.a'",
        "Input should be a valid dictionary",
        id="override-type",
    ),
    pytest.param(
        doc(profiles={"fast": {"zz": {}}}), "field 'profiles.fast'", "unknown stage 'zz'", id="profile-unknown-stage"
    ),
    pytest.param(
        doc(profiles={"fast": {"a": {"when": datetime.date(2020, 1, 1)}}}),
        "field 'profiles.fast.a'",
        "a date value (datetime.date(2020, 1, 1)) is not JSON data: quote it to make it a string",
        id="override-date",
    ),
    pytest.param(
        doc(profiles={"fast": {"a": {"x": math.inf}}}),
        "field 'profiles.fast.a'",
        "inf is not a JSON number (config must be JSON data)",
        id="override-inf",
    ),
    pytest.param(
        doc(profiles={"fast": {"a": {"x": {1: "one"}}}}),
        "field 'profiles.fast.a'",
        "key 1 is not a string (config must be JSON data)",
        id="override-int-key",
    ),
    # -- a stage's own fields
    pytest.param(doc({"a": "F"}), "stage 'a'", "Input should be a valid dictionary", id="stage-type"),
    pytest.param(doc({"a": {}}), "stage 'a', field 'function'", "Field required", id="function-missing"),
    pytest.param(
        doc({"a": st(function=5)}), "stage 'a', field 'function'", "Input should be a valid string", id="function-type"
    ),
    pytest.param(
        doc({"a": st(function="X")}),
        "stage 'a', field 'function'",
        "'X' is not a function in template.yaml",
        id="function-unknown",
    ),
    pytest.param(
        doc({"a": st(bogus=1)}), "stage 'a', field 'bogus'", "Extra inputs are not permitted", id="stage-extra"
    ),
    pytest.param(
        doc({"a": st(**{"bad\rkey": 1})}),
        "stage 'a', field 'bad\\rkey'",
        "Extra inputs are not permitted",
        id="extra-escaped",
    ),
    pytest.param(
        doc({"a": st(mode="batch")}), "stage 'a', field 'mode'", "Input should be 'sync' or 'async'", id="mode"
    ),
    pytest.param(doc({"a": st(needs=5)}), "stage 'a', field 'needs'", "Input should be a valid list", id="needs-type"),
    pytest.param(
        doc({"a": st(needs=[5])}), "stage 'a', field 'needs.0'", "Input should be a valid string", id="needs-item"
    ),
    pytest.param(doc({"a": st(needs=["zz"])}), "stage 'a', field 'needs'", "unknown stage 'zz'", id="needs-unknown"),
    pytest.param(doc({"a": st(needs="a")}), "stage 'a', field 'needs'", "a stage cannot need itself", id="needs-self"),
    pytest.param(
        doc({"a": st(needs="b"), "b": st(needs="a")}),
        "stage 'a', field 'needs'",
        "cycle: a -> b -> a",
        id="cycle-of-two",
    ),
    pytest.param(
        doc({"a": st(needs="b"), "b": st(needs="c"), "c": st(needs="a"), "d": st(needs="c")}),
        "stage 'a', field 'needs'",
        "cycle: a -> b -> c -> a",
        id="cycle-of-three",
    ),
    pytest.param(
        doc({"x": st(), "a": st(needs="b"), "b": st(needs=["x", "c"]), "c": st(needs="b")}),
        "stage 'b', field 'needs'",
        "cycle: b -> c -> b",  # the cycle only, not the path that led to it
        id="cycle-below-the-entry",
    ),
    pytest.param(
        doc({"a": st(max_concurrency=0)}),
        "stage 'a', field 'max_concurrency'",
        "Input should be greater than or equal to 1",
        id="max-concurrency-0",
    ),
    pytest.param(
        doc({"a": st(max_concurrency="x")}),
        "stage 'a', field 'max_concurrency'",
        "Input should be a valid integer",
        id="max-concurrency-type",
    ),
    pytest.param(
        doc({"a": st(config=[1])}), "stage 'a', field 'config'", "Input should be a valid dictionary", id="config-type"
    ),
    pytest.param(
        doc({"a": st(config={1: "x"})}),
        "stage 'a', field 'config.1.[key]'",
        "Input should be a valid string",
        id="config-key",
    ),
    pytest.param(
        doc({"a": st(config={"x": {True: 1}})}),
        "stage 'a', field 'config'",
        "key True is not a string (config must be JSON data)",
        id="config-nested-key",
    ),
    pytest.param(
        doc({"a": st(config={"x": [math.nan]})}),
        "stage 'a', field 'config'",
        "nan is not a JSON number (config must be JSON data)",
        id="config-nan",
    ),
    pytest.param(
        doc({"a": st(config={"x": b"hi"})}),
        "stage 'a', field 'config'",
        "a bytes value (b'hi') is not JSON data: quote it to make it a string",
        id="config-bytes",
    ),
    pytest.param(
        doc({"a": st(config={"x": {1, 2}})}), "stage 'a', field 'config'", "a set value ({1, 2})", id="config-set"
    ),
    pytest.param(
        doc({"a": st(config={"x": datetime.datetime(2001, 12, 5, 1, 2)})}),
        "stage 'a', field 'config'",
        "a datetime value",
        id="config-datetime",
    ),
    pytest.param(
        doc({"a": st(config={"x": 1j})}), "stage 'a', field 'config'", "a complex value (1j)", id="config-complex"
    ),
    # -- durations: timeout, retry.interval, retry.max_delay
    pytest.param(
        doc({"a": st(timeout="soon")}),
        "stage 'a', field 'timeout'",
        "not a duration: 'soon' (use e.g. 500ms, 30s, 5m, 1h, 7d)",
        id="timeout-text",
    ),
    pytest.param(
        doc({"a": st(timeout="5m junk")}), "stage 'a', field 'timeout'", "not a duration: '5m junk'", id="timeout-tail"
    ),
    pytest.param(
        doc({"a": st(timeout="5 parsecs")}), "stage 'a', field 'timeout'", "not a duration", id="timeout-unit"
    ),
    pytest.param(doc({"a": st(timeout=True)}), "stage 'a', field 'timeout'", "not a duration: True", id="timeout-bool"),
    pytest.param(doc({"a": st(timeout=[1])}), "stage 'a', field 'timeout'", "not a duration: [1]", id="timeout-list"),
    pytest.param(
        doc({"a": st(timeout=-1)}),
        "stage 'a', field 'timeout'",
        "a duration cannot be negative: -1",
        id="timeout-negative",
    ),
    pytest.param(
        doc({"a": st(timeout=0)}), "stage 'a', field 'timeout'", "must be greater than zero", id="timeout-zero"
    ),
    pytest.param(
        doc({"a": st(timeout="0ms")}), "stage 'a', field 'timeout'", "must be greater than zero", id="timeout-0ms"
    ),
    pytest.param(
        doc({"a": st(timeout=math.inf)}), "stage 'a', field 'timeout'", "not a duration: inf", id="timeout-inf"
    ),
    pytest.param(
        doc({"a": st(timeout=math.nan)}), "stage 'a', field 'timeout'", "not a duration: nan", id="timeout-nan"
    ),
    pytest.param(
        doc({"a": st(timeout="inf")}), "stage 'a', field 'timeout'", "not a duration: 'inf'", id="timeout-inf-text"
    ),
    pytest.param(
        doc({"a": st(timeout="1e999")}), "stage 'a', field 'timeout'", "not a duration: '1e999'", id="timeout-1e999"
    ),
    pytest.param(
        doc({"a": st(timeout="9" * 500 + "x")}),
        "stage 'a', field 'timeout'",
        "not a duration: '9999",
        id="timeout-long",
    ),
    pytest.param(
        doc({"a": st(retry={"interval": "soon"})}),
        "stage 'a', field 'retry.interval'",
        "not a duration: 'soon'",
        id="interval",
    ),
    pytest.param(
        doc({"a": st(retry={"interval": None})}),
        "stage 'a', field 'retry.interval'",
        "not a duration: None",
        id="interval-null",
    ),
    pytest.param(
        doc({"a": st(retry={"interval": "-2s"})}),
        "stage 'a', field 'retry.interval'",
        "not a duration: '-2s'",
        id="interval-neg",
    ),
    pytest.param(
        doc({"a": st(retry={"interval": math.nan})}),
        "stage 'a', field 'retry.interval'",
        "not a duration: nan",
        id="interval-nan",
    ),
    pytest.param(
        doc({"a": st(retry={"max_delay": "later"})}),
        "stage 'a', field 'retry.max_delay'",
        "not a duration: 'later'",
        id="max-delay",
    ),
    pytest.param(
        doc({"a": st(retry={"max_delay": -1})}),
        "stage 'a', field 'retry.max_delay'",
        "a duration cannot be negative: -1",
        id="max-delay-negative",
    ),
    pytest.param(
        doc({"a": st(retry={"max_delay": "inf"})}),
        "stage 'a', field 'retry.max_delay'",
        "not a duration: 'inf'",
        id="max-delay-inf",
    ),
    # -- retry
    pytest.param(
        doc({"a": st(retry=5)}), "stage 'a', field 'retry'", "Input should be a valid dictionary", id="retry-type"
    ),
    pytest.param(
        doc({"a": st(retry={"bogus": 1})}),
        "stage 'a', field 'retry.bogus'",
        "Extra inputs are not permitted",
        id="retry-extra",
    ),
    pytest.param(
        doc({"a": st(retry={"max_attempts": -1})}),
        "stage 'a', field 'retry.max_attempts'",
        "Input should be greater than or equal to 0",
        id="max-attempts-negative",
    ),
    pytest.param(
        doc({"a": st(retry={"max_attempts": 101})}),
        "stage 'a', field 'retry.max_attempts'",
        "Input should be less than or equal to 100",
        id="max-attempts-101",
    ),
    pytest.param(
        doc({"a": st(retry={"max_attempts": 1.5})}),
        "stage 'a', field 'retry.max_attempts'",
        "Input should be a valid integer",
        id="max-attempts-fraction",
    ),
    pytest.param(
        doc({"a": st(retry={"backoff_rate": 0.5})}),
        "stage 'a', field 'retry.backoff_rate'",
        "Input should be greater than or equal to 1",
        id="backoff-below-1",
    ),
    pytest.param(
        doc({"a": st(retry={"backoff_rate": 101})}),
        "stage 'a', field 'retry.backoff_rate'",
        "Input should be less than or equal to 100",
        id="backoff-above-100",
    ),
    pytest.param(
        doc({"a": st(retry={"backoff_rate": math.nan})}),
        "stage 'a', field 'retry.backoff_rate'",
        "Input should be",
        id="backoff-nan",
    ),
    pytest.param(
        doc({"a": st(retry={"backoff_rate": "x"})}),
        "stage 'a', field 'retry.backoff_rate'",
        "Input should be a valid number",
        id="backoff-type",
    ),
    pytest.param(
        doc({"a": st(retry={"jitter": "half"})}),
        "stage 'a', field 'retry.jitter'",
        "Input should be 'full' or 'none'",
        id="jitter",
    ),
    pytest.param(
        doc({"a": st(retry={"non_retryable": "X"})}),
        "stage 'a', field 'retry.non_retryable'",
        "Input should be a valid list",
        id="non-retryable-type",
    ),
    pytest.param(
        doc({"a": st(retry={"non_retryable": [5]})}),
        "stage 'a', field 'retry.non_retryable.0'",
        "Input should be a valid string",
        id="non-retryable-item",
    ),
    # -- fan-out
    pytest.param(
        doc({"a": st(for_each=5)}), "stage 'a', field 'for_each'", "Input should be a valid string", id="for-each-type"
    ),
    pytest.param(
        doc({"p": st(), "a": st(needs="p", for_each="p")}),
        "stage 'a', field 'for_each'",
        "'p' names no list: use STAGE.FIELD, e.g. p.items",
        id="for-each-no-field",
    ),
    pytest.param(
        doc({"p": st(), "a": st(needs="p", for_each="p.")}),
        "stage 'a', field 'for_each'",
        "'p.' names no list",  # quoted as written
        id="for-each-trailing-dot",
    ),
    pytest.param(
        doc({"p": st(), "a": st(needs="p", for_each="p..x")}),
        "stage 'a', field 'for_each'",
        "'p..x' names no list",
        id="for-each-empty-part",
    ),
    pytest.param(
        doc({"p": st(), "a": st(needs="p", for_each="nope.items")}),
        "stage 'a', field 'for_each'",
        "unknown stage 'nope'",
        id="for-each-unknown",
    ),
    pytest.param(
        doc({"p": st(), "a": st(needs="p", for_each=".items")}),
        "stage 'a', field 'for_each'",
        "unknown stage ''",
        id="for-each-no-stage",
    ),
    pytest.param(
        doc({"p": st(), "q": st(), "a": st(needs="q", for_each="p.items")}),
        "stage 'a', field 'for_each'",
        "'p' must be upstream of this stage (in 'needs', directly or not)",
        id="for-each-not-upstream",
    ),
    pytest.param(
        doc({"a": st(for_each="b.items"), "b": st(needs="a")}),
        "stage 'a', field 'for_each'",
        "",
        id="for-each-downstream",
    ),
    pytest.param(
        doc({"a": st(for_each="b.items"), "b": st(needs="a")}),
        "stage 'a', field 'for_each'",
        "'b' must be upstream of this stage",
        id="for-each-downstream-wording",
    ),
    pytest.param(
        doc({**FAN, "again": st(needs="work", for_each="work.items"), "reduce": st(needs=["post", "again"])}),
        "stage 'again', field 'for_each'",
        "'work' is itself fanned out; fan out over a single-task stage's list",
        id="for-each-over-fanned-out",
    ),
    pytest.param(
        doc(
            {**FAN, "other": st(needs=["work", "plan"], for_each="plan.others"), "reduce": st(needs=["post", "other"])}
        ),
        "stage 'other', field 'needs'",
        "'work' fans out over plan.items, this stage over plan.others: join them in a single-task stage first",
        id="per-item-join-mismatch",
    ),
    # -- tolerated_failures
    pytest.param(
        doc({"a": st(tolerated_failures=1)}),
        "stage 'a', field 'tolerated_failures'",
        "only a fanned-out stage can tolerate failures",
        id="tolerated-on-single-task",
    ),
    pytest.param(
        doc({"a": st(tolerated_failures="10%")}),
        "stage 'a', field 'tolerated_failures'",
        "only a fanned-out stage can tolerate failures",
        id="tolerated-percent-on-single-task",
    ),
    pytest.param(
        doc({"a": st(tolerated_failures=-1)}),
        "stage 'a', field 'tolerated_failures'",
        "must be >= 0",
        id="tolerated-negative",
    ),
    pytest.param(
        doc({"a": st(tolerated_failures="lots")}),
        "stage 'a', field 'tolerated_failures'",
        "expected a count or a percentage like '10%', got 'lots'",
        id="tolerated-text",
    ),
    pytest.param(
        doc({"a": st(tolerated_failures="-5")}),
        "stage 'a', field 'tolerated_failures'",
        "expected a count or a percentage like '10%', got '-5'",
        id="tolerated-negative-text",
    ),
    pytest.param(
        doc({"a": st(tolerated_failures="150%")}),
        "stage 'a', field 'tolerated_failures'",
        "got '150%'",
        id="tolerated-over-100-percent",
    ),
    pytest.param(
        doc({"a": st(tolerated_failures="-1%")}),
        "stage 'a', field 'tolerated_failures'",
        "got '-1%'",
        id="tolerated-below-0-percent",
    ),
    pytest.param(
        doc({"a": st(tolerated_failures="nan%")}),
        "stage 'a', field 'tolerated_failures'",
        "got 'nan%'",
        id="tolerated-nan-percent",
    ),
    pytest.param(
        doc({"a": st(tolerated_failures="x%")}),
        "stage 'a', field 'tolerated_failures'",
        "got 'x%'",
        id="tolerated-x-percent",
    ),
    # pydantic names the union member it tried last ('int'): the field is still the stage's tolerated_failures.
    pytest.param(
        doc({"a": st(tolerated_failures=True)}),
        "stage 'a', field 'tolerated_failures'",
        "Input should be a valid integer",
        id="tolerated-bool",  # not taken for 1
    ),
    pytest.param(
        doc({"a": st(tolerated_failures=[1])}),
        "stage 'a', field 'tolerated_failures'",
        "Input should be a valid integer",
        id="tolerated-type",
    ),
    pytest.param(
        doc({"a": st(tolerated_failures=1.5)}),
        "stage 'a', field 'tolerated_failures'",
        "Input should be a valid integer",
        id="tolerated-fraction",
    ),
]


@pytest.mark.parametrize(("document", "where", "why"), DOCUMENT_ERRORS)
def test_every_invalid_document_is_one_line_naming_the_place(document: Any, where: str, why: str) -> None:
    message = refused(document)
    assert message.startswith(f"pipeline.yaml: {where}"), message
    assert why in message, message


def test_a_function_must_be_one_of_the_given_ids() -> None:
    assert parse_pipeline(doc({"a": st(function="G")}), ["G"]).stages["a"].function == "G"
    message = refused(doc({"a": st(function="F")}), {"G"})
    assert message == "pipeline.yaml: stage 'a', field 'function': 'F' is not a function in template.yaml"
    # The template named in the message is the one the document names (or the caller's template_path).
    with pytest.raises(PipelineError, match=r"'F' is not a function in other\.yaml$"):
        parse_pipeline(doc(template="sam/other.yaml"), set())
    with pytest.raises(PipelineError, match=r"'F' is not a function in given\.yaml$"):
        parse_pipeline(doc(), [], template_path=Path("/x/given.yaml"))


def test_an_empty_function_id_is_refused_even_when_the_caller_lists_it() -> None:
    assert refused(doc({"a": st(function="")}), {""}) == "pipeline.yaml: stage 'a', field 'function': required"


def test_the_message_names_the_file_given() -> None:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(doc({"a": st(needs="zz")}), FUNCTIONS, path=Path("/srv/p/video.yaml"))
    assert str(caught.value) == "/srv/p/video.yaml: stage 'a', field 'needs': unknown stage 'zz'"


def test_only_the_first_problem_is_reported() -> None:
    message = refused(doc({"a": st(mode="batch", timeout="soon")}, bogus=1))
    assert message == "pipeline.yaml: stage 'a', field 'mode': Input should be 'sync' or 'async'"


def test_a_pipeline_error_is_a_validation_error_and_carries_no_cause() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_pipeline(doc({"a": st(timeout="soon")}), FUNCTIONS)
    assert isinstance(caught.value, PipelineError)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # one line, no chained traceback


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(doc({"a": st(needs=["z" * 500])}), id="needs"),
        pytest.param(doc(final="z" * 500), id="final"),
        pytest.param(doc({"p": st(), "a": st(needs="p", for_each="z" * 500 + ".x")}), id="for_each"),
        pytest.param(doc(profiles={"fast": {"z" * 500: {}}}), id="profiles"),
    ],
)
def test_a_long_unknown_stage_name_is_shortened_in_the_message(document: dict[str, Any]) -> None:
    message = refused(document)
    assert "unknown stage 'zzz" in message and len(message) < 300, message


# ---- the dataclasses' own checks (what the core refuses whoever builds it) -------------------------------


def stage(name: str = "a", **fields: Any) -> Stage:
    return Stage(**{"name": name, "function": "F", "needs": (), "mode": "async", "timeout_s": 10.0, **fields})


DATACLASS_ERRORS = [
    # RetryPolicy: unreachable from a document where pydantic or parse_duration check first.
    pytest.param(
        lambda: RetryPolicy(max_attempts=-1),
        "field 'retry.max_attempts'",
        "from 0 to 100, got -1",
        id="retry-max-attempts-neg",
    ),
    pytest.param(
        lambda: RetryPolicy(max_attempts=101), "field 'retry.max_attempts'", "got 101", id="retry-max-attempts-101"
    ),
    pytest.param(
        lambda: RetryPolicy(interval_s=-1), "field 'retry.interval'", "a duration >= 0, got -1", id="retry-interval-neg"
    ),
    pytest.param(
        lambda: RetryPolicy(interval_s=math.inf), "field 'retry.interval'", "got inf", id="retry-interval-inf"
    ),
    pytest.param(
        lambda: RetryPolicy(interval_s=math.nan), "field 'retry.interval'", "got nan", id="retry-interval-nan"
    ),
    pytest.param(
        lambda: RetryPolicy(backoff_rate=0.9),
        "field 'retry.backoff_rate'",
        "from 1 to 100, got 0.9",
        id="retry-backoff-low",
    ),
    pytest.param(
        lambda: RetryPolicy(backoff_rate=101), "field 'retry.backoff_rate'", "got 101", id="retry-backoff-high"
    ),
    pytest.param(
        lambda: RetryPolicy(backoff_rate=math.nan), "field 'retry.backoff_rate'", "got nan", id="retry-backoff-nan"
    ),
    pytest.param(
        lambda: RetryPolicy(max_delay_s=-1),
        "field 'retry.max_delay'",
        "a duration >= 0, got -1",
        id="retry-max-delay-neg",
    ),
    pytest.param(
        lambda: RetryPolicy(max_delay_s=math.inf), "field 'retry.max_delay'", "got inf", id="retry-max-delay-inf"
    ),
    pytest.param(
        lambda: RetryPolicy(jitter="half"), "field 'retry.jitter'", "full or none, got 'half'", id="retry-jitter"
    ),
    # CompletionPolicy
    pytest.param(
        lambda: CompletionPolicy(count=-1), "field 'tolerated_failures'", "must be >= 0", id="completion-count-neg"
    ),
    pytest.param(
        lambda: CompletionPolicy(percent=101),
        "field 'tolerated_failures'",
        "from 0 to 100, got 101",
        id="completion-percent-101",
    ),
    pytest.param(
        lambda: CompletionPolicy(percent=-1), "field 'tolerated_failures'", "got -1", id="completion-percent-neg"
    ),
    pytest.param(
        lambda: CompletionPolicy(percent=math.nan), "field 'tolerated_failures'", "got nan", id="completion-percent-nan"
    ),
    # ForEach
    pytest.param(
        lambda: ForEach("split", ()),
        "field 'for_each'",
        "'split' names no list: use STAGE.FIELD",
        id="for-each-no-path",
    ),
    pytest.param(
        lambda: ForEach("split", ("a", "")), "field 'for_each'", "'split.a.' names no list", id="for-each-empty-part"
    ),
    # Stage
    pytest.param(lambda: stage("a b"), "stage 'a b'", "'a b' is not a valid stage name", id="stage-name"),
    pytest.param(lambda: stage(function=""), "stage 'a', field 'function'", "required", id="stage-function"),
    pytest.param(lambda: stage(mode="batch"), "stage 'a', field 'mode'", "sync or async, got 'batch'", id="stage-mode"),
    pytest.param(
        lambda: stage(timeout_s=0.0), "stage 'a', field 'timeout'", "must be greater than zero", id="stage-timeout-0"
    ),
    pytest.param(
        lambda: stage(timeout_s=-1.0), "stage 'a', field 'timeout'", "greater than zero", id="stage-timeout-neg"
    ),
    pytest.param(
        lambda: stage(timeout_s=math.inf), "stage 'a', field 'timeout'", "greater than zero", id="stage-timeout-inf"
    ),
    pytest.param(
        lambda: stage(timeout_s=math.nan), "stage 'a', field 'timeout'", "greater than zero", id="stage-timeout-nan"
    ),
    pytest.param(
        lambda: stage(max_concurrency=0), "stage 'a', field 'max_concurrency'", "must be >= 1", id="stage-concurrency"
    ),
    pytest.param(
        lambda: stage(needs=("a",)), "stage 'a', field 'needs'", "a stage cannot need itself", id="stage-self-need"
    ),
    pytest.param(
        lambda: stage(completion=CompletionPolicy(count=1)),
        "stage 'a', field 'tolerated_failures'",
        "only a fanned-out stage can tolerate failures",
        id="stage-tolerates-without-fan-out",
    ),
    pytest.param(
        lambda: stage(config={"x": {1, 2}}),
        "stage 'a', field 'config'",
        "a set value ({1, 2}) is not JSON data",
        id="stage-config",
    ),
    # Pipeline.build
    pytest.param(
        lambda: Pipeline.build(name="a/b", stages=[stage()], digest="d"),
        "field 'name'",
        "'a/b' is not a valid pipeline name",
        id="build-name",
    ),
    pytest.param(
        lambda: Pipeline.build(name="p", stages=[], digest="d"),
        "field 'stages'",
        "at least one stage is required",
        id="build-no-stages",
    ),
    pytest.param(
        lambda: Pipeline.build(name="p", stages=[stage()], profiles={"a b": {}}, digest="d"),
        "field 'profiles'",
        "'a b' is not a valid profile name",
        id="build-profile-name",
    ),
    pytest.param(
        lambda: Pipeline.build(name="p", stages=[stage()], profiles={"fast": {"a": {"k": object()}}}, digest="d"),
        "field 'profiles.fast.a'",
        "a object value",
        id="build-profile-override",
    ),
]


@pytest.mark.parametrize(("make", "where", "why"), DATACLASS_ERRORS)
def test_the_core_refuses_invalid_parts_naming_the_field(make: Any, where: str, why: str) -> None:
    with pytest.raises(DagError) as caught:
        make()
    error = caught.value
    assert error.where == where, error
    assert why in error.message, error
    assert str(error) == f"{where}: {error.message}" and "\n" not in str(error)


def test_a_policy_error_inside_a_stage_is_placed_in_that_stage() -> None:
    # ForEach's own error names only its field; parse_pipeline adds the stage.
    message = refused(doc({"p": st(), "a": st(needs="p", for_each="p")}))
    assert message.startswith("pipeline.yaml: stage 'a', field 'for_each': ")


# ---- a valid document --------------------------------------------------------------------------------------


def test_order_is_topological_and_follows_the_document_where_free() -> None:
    pipeline = parse_pipeline(
        doc({"d": st(needs=["b", "c"]), "b": st(needs="a"), "c": st(needs="a"), "a": st(), "e": st(needs="d")}),
        FUNCTIONS,
    )
    assert pipeline.order == ("a", "b", "c", "d", "e")
    assert list(pipeline.stages) == list(pipeline.order)
    for name, spec in pipeline.stages.items():
        assert all(pipeline.order.index(dep) < pipeline.order.index(name) for dep in spec.needs)
    assert pipeline.final == "e"  # the only stage nothing needs


def test_per_item_needs_whole_needs_and_downstream() -> None:
    pipeline = parse_pipeline(doc(FAN), FUNCTIONS)
    stages = pipeline.stages
    assert pipeline.order == ("plan", "work", "post", "reduce") and pipeline.final == "reduce"
    assert (stages["plan"].item_needs, stages["plan"].whole_needs) == ((), ())
    assert (stages["work"].item_needs, stages["work"].whole_needs) == ((), ("plan",))  # its source: whole
    assert (stages["post"].item_needs, stages["post"].whole_needs) == (("work",), ())  # same list: item by item
    assert (stages["reduce"].item_needs, stages["reduce"].whole_needs) == ((), ("post",))  # fan-in: all items
    assert dict(pipeline.downstream) == {"plan": (), "work": ("post",), "post": (), "reduce": ()}
    assert stages["work"].for_each == ForEach("plan", ("items",)) and str(stages["post"].for_each) == "plan.items"
    assert stages["work"].fanned_out and not stages["reduce"].fanned_out
    assert stages["work"].max_concurrency == 3 and stages["post"].max_concurrency is None
    assert pipeline.shape()["post"] == {"needs": ["work"], "for_each": "plan.items"}
    assert pipeline.functions == frozenset({"F"})


def test_a_per_item_stage_may_also_need_single_task_stages_and_a_deep_list() -> None:
    pipeline = parse_pipeline(
        doc({"p": st(), "q": st(needs="p"), "w": st(needs=["q"], for_each="p.out.items"), "r": st(needs="w")}),
        FUNCTIONS,
    )
    assert pipeline.stages["w"].for_each == ForEach("p", ("out", "items"))  # p is upstream through q
    assert pipeline.stages["w"].whole_needs == ("q",)


def test_needs_may_be_one_name_and_defaults_fill_what_a_stage_leaves_out() -> None:
    pipeline = parse_pipeline(
        doc(
            {"a": st(), "b": st(needs="a", timeout="1m30s", retry={"max_attempts": 0})},
            defaults={
                "timeout": "500ms",
                "retry": {"max_attempts": 5, "interval": "2s", "max_delay": "1m", "jitter": "none"},
            },
        ),
        FUNCTIONS,
    )
    a, b = pipeline.stages["a"], pipeline.stages["b"]
    assert b.needs == ("a",)
    assert a.timeout_s == 0.5 and b.timeout_s == 90.0
    assert a.retry == RetryPolicy(max_attempts=5, interval_s=2.0, backoff_rate=2.0, max_delay_s=60.0, jitter="none")
    assert b.retry == RetryPolicy(max_attempts=0)  # a stage's retry replaces the default one whole
    assert a.mode == "async" and a.config == {} and a.completion == CompletionPolicy()


def test_built_in_defaults() -> None:
    pipeline = parse_pipeline({"stages": {"a": {"function": "F"}}}, FUNCTIONS)
    a = pipeline.stages["a"]
    assert pipeline.name == "pipeline" and pipeline.final == "a"
    assert a.timeout_s == 300.0  # 5m
    assert a.retry == RetryPolicy(max_attempts=2, interval_s=1.0, backoff_rate=2.0, max_delay_s=None, jitter="full")
    assert a.retry.non_retryable == DEFAULT_NON_RETRYABLE
    assert pipeline.path == Path("pipeline.yaml") and pipeline.template_path == Path("template.yaml")


def test_non_retryable_replaces_the_default_list() -> None:
    pipeline = parse_pipeline(doc({"a": st(retry={"non_retryable": ["BadInput"]})}), FUNCTIONS)
    assert pipeline.stages["a"].retry.non_retryable == ("BadInput",)


@pytest.mark.parametrize(
    ("value", "policy"),
    [
        (0, CompletionPolicy()),
        (2, CompletionPolicy(count=2)),
        ("3", CompletionPolicy(count=3)),
        (" 4 ", CompletionPolicy(count=4)),
        ("10%", CompletionPolicy(percent=10.0)),
        (" 12.5 %", CompletionPolicy(percent=12.5)),
        ("0%", CompletionPolicy(percent=0.0)),
        ("100%", CompletionPolicy(percent=100.0)),
    ],
)
def test_tolerated_failures_forms(value: Any, policy: CompletionPolicy) -> None:
    pipeline = parse_pipeline(
        doc({"p": st(), "w": st(needs="p", for_each="p.items", tolerated_failures=value), "r": st(needs="w")}),
        FUNCTIONS,
    )
    assert pipeline.stages["w"].completion == policy


def test_the_default_profile_is_always_there_and_profiles_override_config_shallowly() -> None:
    document = doc({"a": st(config={"k": 1, "deep": {"x": 1, "y": 2}})}, profiles={"fast": {"a": {"deep": {"x": 9}}}})
    pipeline = parse_pipeline(document, FUNCTIONS)
    assert dict(pipeline.profiles) == {"default": {}, "fast": {"a": {"deep": {"x": 9}}}}
    assert pipeline.stage_config("a", "default") == {"k": 1, "deep": {"x": 1, "y": 2}}
    assert pipeline.stage_config("a", "fast") == {"k": 1, "deep": {"x": 9}}  # shallow: the whole key replaced
    assert pipeline.stage_config("a", "unknown") == {"k": 1, "deep": {"x": 1, "y": 2}}
    own_default = parse_pipeline(doc(profiles={"default": {"a": {"k": 2}}}), FUNCTIONS)
    assert dict(own_default.profiles) == {"default": {"a": {"k": 2}}}


def test_config_may_hold_any_json_data() -> None:
    config = {"s": "x", "i": 1, "f": 1.5, "b": True, "n": None, "l": [1, [2, {"k": "v"}]], "t": (1, 2), "d": {}}
    assert parse_pipeline(doc({"a": st(config=config)}), FUNCTIONS).stages["a"].config == config


def test_the_digest_identifies_the_document_whatever_its_key_order() -> None:
    one = {"name": "p", "final": "reduce", "stages": FAN, "profiles": {"fast": {"work": {"k": 1}}}}
    two = {
        "profiles": {"fast": {"work": {"k": 1}}},
        "stages": dict(reversed(list(FAN.items()))),
        "final": "reduce",
        "name": "p",
    }
    digest = parse_pipeline(one, FUNCTIONS).digest
    assert digest == parse_pipeline(two, FUNCTIONS).digest
    assert len(digest) == 16 and int(digest, 16) >= 0
    changed = {**one, "profiles": {"fast": {"work": {"k": 2}}}}
    assert parse_pipeline(changed, FUNCTIONS).digest != digest
    # The digest is of the document as written: a default spelled out is another definition.
    assert parse_pipeline({**one, "template": "template.yaml"}, FUNCTIONS).digest != digest


def test_the_document_is_not_changed_by_parsing() -> None:
    document = doc(FAN, profiles={"fast": {}})
    before = repr(document)
    parse_pipeline(document, FUNCTIONS)
    assert repr(document) == before


def test_names_inside_the_pattern() -> None:
    for name in ("a", "A", "a-b_C9", "x" * 64):
        pipeline = parse_pipeline(doc({name: st()}, name=name, profiles={name: {name: {}}}), FUNCTIONS)
        assert pipeline.order == (name,) and pipeline.name == name and name in pipeline.profiles


def test_functions_may_be_any_collection() -> None:
    for functions in (["F"], ("F",), {"F"}, frozenset({"F"}), {"F": object()}.keys()):
        assert parse_pipeline(doc(), functions).stages["a"].function == "F"


# ---- the retry decision --------------------------------------------------------------------------------------


def test_retry_delays_back_off_and_are_capped() -> None:
    policy = RetryPolicy(max_attempts=5, interval_s=1.0, backoff_rate=3.0, max_delay_s=10.0, jitter="none")
    decisions = [policy.decide(attempt, "Boom", 0.5) for attempt in range(1, 7)]
    assert [d.retry for d in decisions] == [True] * 5 + [False]
    assert [d.delay_s for d in decisions] == [1.0, 3.0, 9.0, 10.0, 10.0, 0.0]  # 27 and 81 capped at max_delay
    assert decisions[0].reason == "retry 1 of 5 in 1.00s"
    assert decisions[3].reason == "retry 4 of 5 in 10.00s"
    assert decisions[5].reason == "no retry left (5 retries after the first attempt)"


def test_the_last_retry_is_at_attempt_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=2, interval_s=2.0, backoff_rate=2.0, jitter="none")
    assert policy.decide(2, "Boom", 0.0).retry  # the 2nd failure still has a retry left: the 3rd attempt
    assert policy.decide(2, "Boom", 0.0).delay_s == 4.0
    last = policy.decide(3, "Boom", 0.0)
    assert (last.retry, last.delay_s) == (False, 0.0)
    assert (
        RetryPolicy(max_attempts=1).decide(2, "Boom", 0.0).reason == "no retry left (1 retry after the first attempt)"
    )


def test_zero_max_attempts_never_retries() -> None:
    decision = RetryPolicy(max_attempts=0).decide(1, "Boom", 0.3)
    assert (decision.retry, decision.delay_s) == (False, 0.0)
    assert decision.reason == "no retry left (0 retries after the first attempt)"


def test_a_non_retryable_error_fails_at_once_whatever_is_left() -> None:
    policy = RetryPolicy(max_attempts=100, non_retryable=("BadInput",))
    decision = policy.decide(1, "BadInput", 0.5)
    assert (decision.retry, decision.delay_s, decision.reason) == (False, 0.0, "BadInput is not retryable")
    assert policy.decide(1, "TerminalError", 0.5).retry  # the list replaced the defaults
    defaults = RetryPolicy(max_attempts=3)
    for error_type in DEFAULT_NON_RETRYABLE:
        assert defaults.decide(1, error_type, 0.5).reason == f"{error_type} is not retryable"
    assert defaults.decide(1, "States.Timeout", 0.5).retry  # a timed-out attempt is retried


def test_full_jitter_draws_the_delay_from_zero_to_the_backoff() -> None:
    policy = RetryPolicy(max_attempts=3, interval_s=4.0, backoff_rate=2.0, max_delay_s=6.0, jitter="full")
    assert policy.decide(1, "Boom", 0.0).delay_s == 0.0
    assert policy.decide(1, "Boom", 0.25).delay_s == 1.0
    assert policy.decide(2, "Boom", 0.5).delay_s == 3.0  # 8 capped at 6, then halved
    assert policy.decide(2, "Boom", 0.999).delay_s == pytest.approx(5.994)
    assert policy.decide(2, "Boom", 0.5).reason == "retry 2 of 3 in 3.00s"
    assert RetryPolicy(jitter="none", interval_s=4.0).decide(1, "Boom", 0.25).delay_s == 4.0  # the draw is ignored


# ---- the completion decision ---------------------------------------------------------------------------------


def test_a_count_tolerates_that_many_failed_items() -> None:
    none = CompletionPolicy()
    assert (none.decide(0, 10).ok, none.decide(1, 10).ok) == (True, False)
    assert none.decide(1, 10).reason == "1 item failed; 0 tolerated"
    two = CompletionPolicy(count=2)
    assert [two.decide(failed, 10).ok for failed in range(4)] == [True, True, True, False]
    assert two.decide(3, 10).reason == "3 items failed; 2 tolerated"
    assert not none.tolerates_any and two.tolerates_any


def test_a_percentage_tolerates_that_share_of_the_items() -> None:
    ten = CompletionPolicy(percent=10.0)
    assert ten.tolerates_any and not CompletionPolicy(percent=0.0).tolerates_any
    assert [ten.decide(failed, 20).ok for failed in range(4)] == [True, True, True, False]  # 2 of 20 = 10%: ok
    assert ten.decide(3, 20).reason == "3 of 20 items failed; 10% tolerated"
    assert ten.decide(1, 9).ok is False  # 11.1%
    assert CompletionPolicy(percent=12.5).decide(1, 8).reason == "1 of 8 items failed; 12.5% tolerated"
    assert CompletionPolicy(percent=100.0).decide(5, 5).ok
    assert not CompletionPolicy(percent=0.0).decide(1, 1000).ok


def test_a_percentage_of_no_items_is_ok_like_a_count() -> None:
    # Nothing failed of nothing: within any tolerance (the engine asks only once an item failed, anyway).
    decision = CompletionPolicy(percent=50.0).decide(0, 0)
    assert (decision.ok, decision.reason) == (True, "0 of 0 items failed; 50% tolerated")
    assert CompletionPolicy(count=0).decide(0, 0).ok  # a count does not depend on the total
