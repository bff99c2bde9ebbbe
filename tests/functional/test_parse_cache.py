"""``fave.local.parsed``: a validated pipeline kept between commands. A command that reads an unchanged
pipeline.yaml does not validate it again (nor import pydantic); any change to what it was made from (the file,
its template, fave's own code) is seen; a bad or foreign entry is never used; failures are never kept."""

from __future__ import annotations

import os
import pickle
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from fave.local import parsed as parse_cache
from fave.local.orchestrator import load_local_pipeline
from fave.pipeline import PipelineError
from support import e2e

ROOT = Path(__file__).resolve().parents[2]
CHAIN = ROOT / "benchmarks" / "chain"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "cache"
    monkeypatch.setenv("FAVE_CACHE_DIR", str(where))
    monkeypatch.delenv("FAVE_PARSE_CACHE", raising=False)
    return where / "parsed"


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    folder = tmp_path / "chain"
    shutil.copytree(CHAIN, folder)
    return folder / "pipeline.yaml"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A file to parse, holding "one"."""
    file = tmp_path / "source.txt"
    file.write_text("one")
    return file


class Counting:
    """A parse function that says how often it ran."""

    def __init__(self, path: Path, depends: tuple[Path, ...] = ()) -> None:
        self.path, self.depends, self.calls = path, depends, 0

    def __call__(self) -> tuple[Any, list[tuple[Path, bytes]]]:
        self.calls += 1
        read = [(file, file.read_bytes()) for file in self.depends if file.exists()]  # what it could read
        return {"text": self.path.read_text(), "call": self.calls}, read


def test_a_second_run_of_the_same_pipeline_neither_validates_it_nor_imports_pydantic(
    cache: Path, chain: Path, tmp_path: Path
) -> None:
    args = ("run", str(chain), "--pipeline", str(chain), "--store", str(tmp_path / "store"), "--json")
    (first_code, first), (second_code, second) = (e2e.cli_modules(tmp_path / f"probe{n}.json", *args) for n in (1, 2))
    assert (first_code, second_code) == (0, 0)
    assert {"fave.pipeline", "pydantic"} <= first  # validated the first time
    assert not {"fave.pipeline", "pydantic"} & second  # then taken from the cache
    assert len(list(cache.glob("*.pickle"))) == 1


def test_the_cached_pipeline_equals_the_validated_one_and_follows_its_file(cache: Path, chain: Path) -> None:
    first = load_local_pipeline(chain)
    assert load_local_pipeline(chain) == first
    chain.write_text(chain.read_text().replace("name: bench-chain", "name: renamed"))
    assert load_local_pipeline(chain).name == "renamed"  # another file: validated again
    assert len(list(cache.glob("*.pickle"))) == 2


def test_an_edited_template_is_seen(cache: Path, chain: Path) -> None:
    load_local_pipeline(chain)
    template = chain.with_name("template.yaml")
    template.write_text(template.read_text().replace("NoopFunction:", "OtherFunction:"))
    with pytest.raises(PipelineError, match="NoopFunction"):
        load_local_pipeline(chain)


def test_a_failure_is_never_kept(cache: Path, chain: Path) -> None:
    chain.write_text(chain.read_text().replace("needs: [a]", "needs: [nowhere]"))
    for _ in range(2):
        with pytest.raises(PipelineError, match="nowhere"):
            load_local_pipeline(chain)
    assert not cache.exists() or not list(cache.glob("*.pickle"))


def test_a_hit_a_changed_file_and_a_changed_dependency(cache: Path, tmp_path: Path) -> None:
    source, extra = tmp_path / "source.txt", tmp_path / "extra.txt"
    source.write_text("one")
    extra.write_text("x")
    parse = Counting(source, (extra,))
    assert parse_cache.parsed("test", source, parse)["call"] == 1
    assert parse_cache.parsed("test", source, parse)["call"] == 1 and parse.calls == 1
    source.write_text("two")
    assert parse_cache.parsed("test", source, parse) == {"text": "two", "call": 2}
    extra.write_text("y")
    assert parse_cache.parsed("test", source, parse)["call"] == 3
    extra.unlink()
    assert parse_cache.parsed("test", source, parse)["call"] == 4  # a dependency gone: parsed again


def test_a_changed_fave_module_is_seen(
    cache: Path, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "module.py"
    module.write_text("x = 1\n")
    stamp = os.stat(module)
    monkeypatch.setattr(parse_cache, "_modules", lambda: ((str(module), stamp.st_size, stamp.st_mtime_ns),))
    parse = Counting(source)
    parse_cache.parsed("test", source, parse)
    parse_cache.parsed("test", source, parse)
    assert parse.calls == 1
    module.write_text("x = 22\n")  # fave upgraded, or a fix to the loader
    parse_cache.parsed("test", source, parse)
    assert parse.calls == 2


def test_another_checkout_of_fave_has_entries_of_its_own(
    source: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parse = Counting(source)
    parse_cache.parsed("test", source, parse)
    monkeypatch.setattr(parse_cache, "_code_roots", lambda: "/elsewhere/fave/__init__.py")
    parse_cache.parsed("test", source, parse)
    parse_cache.parsed("test", source, parse)
    assert parse.calls == 2 and len(list(cache.glob("*.pickle"))) == 2


def test_a_corrupt_or_foreign_entry_is_a_miss_and_is_replaced(cache: Path, source: Path) -> None:
    parse = Counting(source)
    parse_cache.parsed("test", source, parse)
    (entry,) = cache.glob("*.pickle")
    for junk in (b"", b"not a pickle", pickle.dumps(("another", "shape"))):
        entry.write_bytes(junk)
        assert parse_cache.parsed("test", source, parse)["text"] == "one"
    assert parse.calls == 4
    assert parse_cache.parsed("test", source, parse)["call"] == 4  # the last miss wrote a good entry again


def test_an_entry_others_can_write_is_never_unpickled(cache: Path, source: Path) -> None:
    parse = Counting(source)
    parse_cache.parsed("test", source, parse)
    (entry,) = cache.glob("*.pickle")
    entry.chmod(0o666)
    parse_cache.parsed("test", source, parse)
    assert parse.calls == 2
    entry.chmod(0o600)
    cache.chmod(0o777)
    parse_cache.parsed("test", source, parse)
    assert parse.calls == 3
    cache.chmod(0o700)


def test_turned_off_nothing_is_written(source: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAVE_PARSE_CACHE", "0")
    parse = Counting(source)
    parse_cache.parsed("test", source, parse)
    parse_cache.parsed("test", source, parse)
    assert parse.calls == 2 and not cache.exists()


def test_an_unwritable_cache_is_no_cache(source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("FAVE_CACHE_DIR", str(blocker))  # cannot hold a directory
    parse = Counting(source)
    assert parse_cache.parsed("test", source, parse)["text"] == "one"
    assert parse_cache.parsed("test", source, parse)["call"] == 2


def test_only_the_newest_entries_are_kept(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parse_cache, "KEEP", 3)
    source = tmp_path / "source.txt"
    for n in range(6):
        source.write_text(f"version {n}")
        parse_cache.parsed("test", source, Counting(source))
        os.utime(next(iter(sorted(cache.glob("*.pickle"), key=os.path.getmtime))), ns=(n, n))  # oldest stays old
    assert len(list(cache.glob("*.pickle"))) == 3


def test_a_dead_writers_temporary_file_goes_once_it_is_old(cache: Path, source: Path) -> None:
    cache.mkdir(parents=True, mode=0o700)
    old, young = cache / ".dead.tmp", cache / ".writing.tmp"
    for file in (old, young):
        file.write_bytes(b"half")
    os.utime(old, ns=(0, 0))
    parse_cache.parsed("test", source, Counting(source))  # a write prunes
    assert not old.exists() and young.exists()


def test_the_file_changing_while_parsed_keeps_nothing(cache: Path, source: Path) -> None:

    def parse() -> tuple[str, list[tuple[Path, bytes]]]:
        text = source.read_text()
        source.write_text("two")  # an editor saving meanwhile
        return text, []

    assert parse_cache.parsed("test", source, parse) == "one"
    assert not list(cache.glob("*.pickle"))


def test_a_pipe_is_read_once_by_its_parser_and_never_kept(cache: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipeline.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=("one",))
    writer.start()
    assert parse_cache.parsed("test", fifo, Counting(fifo))["text"] == "one"  # the cache did not swallow it
    writer.join(timeout=10)
    assert not cache.exists() or not list(cache.glob("*.pickle"))


def test_a_template_reached_through_a_link_that_is_repointed_is_seen(cache: Path, chain: Path) -> None:
    folder = chain.parent
    (folder / "template.yaml").rename(folder / "a.yaml")
    other = (folder / "a.yaml").read_text().replace("NoopFunction:", "OtherFunction:")
    (folder / "b.yaml").write_text(other)
    (folder / "template.yaml").symlink_to("a.yaml")
    assert load_local_pipeline(chain).template_path.name == "a.yaml"
    (folder / "template.yaml").unlink()
    (folder / "template.yaml").symlink_to("b.yaml")  # the same bytes of pipeline.yaml, another template
    with pytest.raises(PipelineError, match="NoopFunction"):
        load_local_pipeline(chain)


def test_a_template_saved_while_the_pipeline_is_validated_is_not_trusted(
    cache: Path, chain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fave.local import orchestrator as local_orchestrator

    template = chain.with_name("template.yaml")
    real = local_orchestrator.template_functions

    def saving_meanwhile(path: Path) -> frozenset[str]:
        functions = real(path)  # validated against this version...
        template.write_text(template.read_text().replace("NoopFunction:", "OtherFunction:"))  # ...then it changes
        return functions

    monkeypatch.setattr(local_orchestrator, "template_functions", saving_meanwhile)
    load_local_pipeline(chain)
    monkeypatch.setattr(local_orchestrator, "template_functions", real)
    with pytest.raises(PipelineError, match="NoopFunction"):  # not the entry made against the old version
        load_local_pipeline(chain)


def test_no_home_directory_is_no_cache(monkeypatch: pytest.MonkeyPatch, chain: Path) -> None:
    for name in ("FAVE_CACHE_DIR", "XDG_CACHE_HOME", "FAVE_PARSE_CACHE"):
        monkeypatch.delenv(name, raising=False)

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    assert parse_cache.cache_dir() is None
    assert load_local_pipeline(chain).name == "bench-chain"


def test_an_entry_is_stamped_with_the_validating_libraries_too(cache: Path, chain: Path) -> None:
    load_local_pipeline(chain)
    (entry,) = cache.glob("*.pickle")
    _, _, modules, _ = pickle.loads(entry.read_bytes())
    stamped = {Path(file).parts[-2] for file, _, _ in modules}
    assert {"pydantic", "yaml"} <= stamped  # an upgrade of either is seen
