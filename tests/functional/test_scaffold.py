"""``fave new pipeline`` and ``fave new stage`` (issue 11, requirement 6): what they write runs at once.

The real CLI in subprocesses: the scaffold runs with ``fave run`` (its asynchronous stage reports back
through the template's destinations, which the loader checks), its generated test passes under pytest, a stage
added by ``fave new stage`` runs in the next request, and a refusal writes nothing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fave.local.orchestrator import load_local_pipeline
from fave.local.template import load_template
from support import e2e
from support.sam import translate_many
from support.template_checks import check_iam, check_source_reads, check_upload_trigger, check_wiring


def fave(*args: str) -> e2e.Result:
    return e2e.fave(*args, env=e2e.child_env(), timeout=120)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def scaffold(tmp_path: Path) -> Path:
    made = fave("new", "pipeline", "greet", "--dir", str(tmp_path))
    assert made.code == 0, made.describe()
    root = tmp_path / "greet"
    assert made.stdout.strip() == str(root)
    return root


def test_a_new_pipeline_runs_at_once_and_its_test_passes(scaffold: Path, tmp_path: Path) -> None:
    assert {p.relative_to(scaffold).as_posix() for p in scaffold.rglob("*") if p.is_file()} == {
        ".gitignore",
        "README.md",
        "pipeline.yaml",
        "template.yaml",
        "functions/hello/app.py",
        "tests/test_hello.py",
    }
    store = tmp_path / "store"
    run = fave("run", "--pipeline", str(scaffold / "pipeline.yaml"), "--store", str(store), "--json")
    assert run.code == 0, run.describe()
    assert run.json["status"] == "COMPLETED"
    assert run.json["final"] == {"greeting": "hello, world."}  # the declared input's default
    run = fave(
        "run", "--pipeline", str(scaffold / "pipeline.yaml"), "--store", str(store), "--json",
        "--input", '{"name": "Ada"}', "--profile", "shout",
    )  # fmt: skip
    assert run.json["final"] == {"greeting": "hello, Ada!!!"}
    tests = e2e.pytest_in(scaffold)
    assert tests.code == 0 and "1 passed" in tests.stdout, tests.stdout + tests.stderr


def test_the_scaffold_refuses_what_its_input_does_not_declare(scaffold: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    run = fave("run", "--pipeline", str(scaffold / "pipeline.yaml"), "--store", str(store), "--input", '{"nmae": 1}')
    assert run.code == 2, run.describe()
    assert "nmae" in run.stderr and "Traceback" not in run.stderr
    assert not store.exists() or not any(store.rglob("state.json"))


def test_a_new_stage_is_wired_and_runs_in_the_next_request(scaffold: Path, tmp_path: Path) -> None:
    added = fave(
        "new", "stage", "count", "--needs", "hello", "--mode", "async", "--pipeline", str(scaffold / "pipeline.yaml")
    )  # fmt: skip
    assert added.code == 0, added.describe()
    count = template_block((scaffold / "template.yaml").read_text(), "CountFunction")
    assert "OnSuccess: {Type: SQS, Destination: !GetAtt CompletionsQueue.Arn}" in count  # async: reports back
    assert "OnFailure: {Type: SQS, Destination: !GetAtt CompletionsQueue.Arn}" in count
    assert (scaffold / "functions/count/app.py").is_file() and (scaffold / "tests/test_count.py").is_file()
    template = (scaffold / "template.yaml").read_text()
    assert "CountFunction:" in template and "FAVE_FUNCTION_CountFunction" in template
    last = fave("new", "stage", "last", "--pipeline", str(scaffold / "pipeline.yaml"))  # after the final one
    assert last.code == 0, last.describe()
    assert "final: last" in (scaffold / "pipeline.yaml").read_text()
    store = tmp_path / "store"
    run = fave("run", "--pipeline", str(scaffold / "pipeline.yaml"), "--store", str(store), "--json")
    assert run.code == 0, run.describe()
    stages = run.json["stages"]
    assert list(stages) == ["hello", "count", "last"]
    assert all(s["status"] == "SUCCEEDED" for s in stages.values()), stages
    # Each stage added after the final one became the final one.
    assert run.json["final"] == {"stage": "last", "item": None, "needs": ["count"]}
    tests = e2e.pytest_in(scaffold)
    assert tests.code == 0 and "3 passed" in tests.stdout, tests.stdout + tests.stderr


def template_block(template: str, resource: str) -> str:
    start = template.index(f"\n  {resource}:")
    end = template.find("\n  ", start + 3)
    while end != -1 and template[end + 3] == " ":
        end = template.find("\n  ", end + 3)
    return template[start : end if end != -1 else None]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["Bad-Name"], "stage name 'Bad-Name'"),
        (["twice", "--needs", "nope"], "--needs: no stage nope"),
        (["hello"], "stage 'hello' already exists"),
        (["each", "--for-each", "hello"], "--for-each 'hello': expected STAGE.FIELD"),
        (["each", "--for-each", "hello.greeting"], "would follow the final stage 'hello' and is fanned out"),
    ],
)
def test_a_refused_stage_writes_nothing(scaffold: Path, args: list[str], says: str) -> None:
    before = snapshot(scaffold)
    refused = fave("new", "stage", *args, "--pipeline", str(scaffold / "pipeline.yaml"))
    assert refused.code == 2, refused.describe()
    assert says in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert snapshot(scaffold) == before


def test_a_stage_that_would_not_load_is_rolled_back(scaffold: Path) -> None:
    fave("new", "stage", "count", "--needs", "hello", "--pipeline", str(scaffold / "pipeline.yaml"))
    before = snapshot(scaffold)
    # A branch beside count that leads nowhere: the request would complete without it, so it does not load.
    refused = fave("new", "stage", "other", "--needs", "hello", "--pipeline", str(scaffold / "pipeline.yaml"))
    assert refused.code == 2, refused.describe()
    assert "would not load, nothing was changed" in refused.stderr
    assert snapshot(scaffold) == before
    assert not (scaffold / "functions/other").exists()


def test_new_pipeline_refuses_a_folder_in_use(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    refused = fave("new", "pipeline", "taken", "--dir", str(tmp_path))
    assert refused.code == 2 and "already exists" in refused.stderr
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]


def test_the_scaffold_template_is_a_valid_sam_template(scaffold: Path) -> None:
    sam = e2e.ROOT / ".venv-sam" / "bin" / "sam"
    if not sam.exists():
        pytest.skip(".venv-sam is not built (./dev setup builds it)")
    fave("new", "stage", "count", "--needs", "hello", "--pipeline", str(scaffold / "pipeline.yaml"))
    done = subprocess.run(
        [str(sam), "validate", "--lint", "-t", str(scaffold / "template.yaml")],
        env={**e2e.child_env(), "SAM_CLI_TELEMETRY": "0"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # And it passes the checks template.yaml passes: wired as its pipeline says, every role least privilege.
    # The scaffold has no upload trigger: no function may read uploads/ or inputs/, nothing notifies of uploads.
    (translated,) = translate_many([scaffold / "template.yaml"])
    pipeline = load_local_pipeline(scaffold / "pipeline.yaml")
    assert list(pipeline.stages) == ["hello", "count"]
    assert check_wiring(translated, pipeline) == []
    assert check_iam(translated, pipeline, load_template(scaffold / "template.yaml")) == []
    assert check_source_reads(translated, pipeline) == []
    assert check_upload_trigger(translated, pipeline) == []
