"""The web view (``fave.web``, ``fave ui``): its JSON endpoints and pages over real requests of the demo pipeline
in a local store, served on a real port; bounded reads on a 10,000-item fan-out; ``fave ui`` as a process.

The browser-side behaviour (drawing, polling, clicking) is the Playwright test's; here every document the
pages are drawn from is checked, and what must never happen: a page reading a whole large stage, an artifact
of another request, a ``<script>`` from an item's error reaching a page unescaped.
"""

from __future__ import annotations

import contextlib
import json
import signal
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import quote
from urllib.request import Request, urlopen

import pytest
from fave.cli.bench import FANOUT_PIPELINE
from fave.cli.ui import serve_ui
from fave.keys import final_key, index_key, tasks_prefix
from fave.local.orchestrator import load_local_pipeline, local_orchestrator
from fave.status import SCAN_SHARDS
from fave.web import make_app
from fave.web.layout import layout
from fave.web.timeline import BARS_PER_STAGE, SHARDS_PER_STAGE
from fave_shared.store import Blob, LocalStore, ObjectStore
from support import e2e
from support.demo import DEMO as DEMO_PIPELINE
from support.demo import TEXT, run_demo

SCRIPT = "<script>alert(1)</script>"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def fetch(url: str, method: str = "GET") -> Reply:
    try:
        with urlopen(Request(url, method=method), timeout=30) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except HTTPError as exc:
        with exc:
            return Reply(exc.code, dict(exc.headers), exc.read())


@contextlib.contextmanager
def served(store: ObjectStore, **options: Any) -> Iterator[str]:
    """``make_app(store)`` on a free port of 127.0.0.1 in a thread; yields its base URL."""
    server = serve_ui(make_app(store, **options), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Recording:
    """An ``ObjectStore`` that records the keys it was asked to get (how much a view reads)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.gets: list[str] = []
        self._lock = threading.Lock()

    @property
    def uri(self) -> str:
        return self.inner.uri

    def get(self, key: str) -> Blob:
        with self._lock:
            self.gets.append(key)
        return self.inner.get(key)

    def put(self, key: str, data: bytes, **kwargs: Any) -> str:
        return self.inner.put(key, data, **kwargs)

    def head(self, key: str) -> str | None:
        return self.inner.head(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str) -> Iterator[str]:
        return self.inner.list(prefix)

    def link(self, key: str) -> str:
        return self.inner.link(key)

    def reads(self) -> list[str]:
        with self._lock:
            taken, self.gets = self.gets, []
        return taken


def png(width: int = 8, height: int = 6) -> bytes:
    """A real (tiny, red) PNG image."""
    raw = b"".join(b"\x00" + b"\xc8\x1e\x1e" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@dataclass
class Demo:
    store: LocalStore
    ok: str  # COMPLETED, 9 words
    bad: str  # FAILED: item 1 (the word SCRIPT) raised TerminalError
    video: str  # COMPLETED, its final.json replaced by one of the video pipeline's shape
    url: str


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    store = LocalStore(str(tmp_path_factory.mktemp("web") / "store"))
    ok = run_demo(store)
    bad = run_demo(store, {"text": f"a {SCRIPT} c", "bad_word": SCRIPT})
    video = run_demo(store, {"text": "x y"})
    assert (ok.status.value, bad.status.value, video.status.value) == ("COMPLETED", "FAILED", "COMPLETED")
    with served(store) as url:
        yield Demo(store, ok.request_id, bad.request_id, video.request_id, url)


def api(demo: Demo, path: str) -> Reply:
    return fetch(f"{demo.url}/ui/api{path}")


# ---- the list --------------------------------------------------------------------------------------------


def test_the_list_in_json_and_html_newest_first_filtered_by_status(demo: Demo) -> None:
    listed = api(demo, "/requests")
    assert listed.status == 200 and listed.headers["Content-Type"] == "application/json"
    rows = listed.json["requests"]
    assert [r["request_id"] for r in rows] == [demo.video, demo.bad, demo.ok]
    ok = rows[2]
    assert ok["status"] == "COMPLETED" and ok["pipeline"] == "demo" and ok["terminal"] is True
    assert ok["duration_s"] > 0 and ok["created_at"] <= ok["finished_at"]
    assert [r["request_id"] for r in api(demo, "/requests?status=failed").json["requests"]] == [demo.bad]
    assert len(api(demo, "/requests?limit=1").json["requests"]) == 1
    assert api(demo, "/requests?limit=1").json["truncated"] is True

    wrong = api(demo, "/requests?status=DONE")
    assert wrong.status == 400 and wrong.json["error"].startswith("status:")
    assert api(demo, "/requests?limit=x").json["error"].startswith("limit:")

    page = fetch(f"{demo.url}/ui/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'id="requests"' in page.text and 'id="status-filter"' in page.text and "/ui/static/list.js" in page.text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert fetch(f"{demo.url}/ui/static/list.js").headers["Content-Type"].startswith("text/javascript")
    assert fetch(f"{demo.url}/ui/static/../app.py").status == 404
    assert fetch(f"{demo.url}/ui/static/nothing.js").status == 404
    assert fetch(f"{demo.url}/elsewhere").status == 404
    assert fetch(f"{demo.url}/ui/api/requests", method="POST").status == 405


def test_the_banner_and_the_api_base_reach_the_page(demo: Demo) -> None:
    with served(demo.store, api_base="", banner="Local: IAM auth is off <b>") as url:
        page = fetch(f"{url}/ui/requests/{demo.ok}").text
        assert 'data-testid="banner">Local: IAM auth is off &lt;b&gt;<' in page
        assert 'data-api-base=""' in page and 'id="resume-button" data-testid="resume-button" type="button">' in page
    page = fetch(f"{demo.url}/ui/requests/{demo.ok}").text  # api_base="" default: the buttons work
    assert "disabled" not in page.split('id="resume-button"')[1].split(">")[0]
    with served(demo.store, api_base=None) as url:
        page = fetch(f"{url}/ui/requests/{demo.ok}").text
        assert "data-api-base" not in page and 'data-testid="banner"' not in page
        assert 'data-testid="resume-button" type="button" disabled>' in page
        assert f"fave resume {demo.ok}" in page and f"fave cancel {demo.ok}" in page and "fave serve" in page


# ---- one request -----------------------------------------------------------------------------------------


def test_the_summary_has_the_stage_counts_and_the_dag_from_state_json_alone(demo: Demo) -> None:
    recording = Recording(demo.store)
    with served(recording) as url:
        recording.reads()
        summary = fetch(f"{url}/ui/api/requests/{demo.ok}").json
        assert recording.reads() == [f"requests/{demo.ok}/metadata/state.json"]
    assert summary["status"] == "COMPLETED" and summary["has_final"] is True and summary["pipeline"] == "demo"
    stages = {s["name"]: s for s in summary["stages"]}
    assert list(stages) == ["words", "shout", "measure", "join"]
    assert {k: stages["shout"][k] for k in ("status", "total", "succeeded", "failed", "fanned_out")} == {
        "status": "SUCCEEDED",
        "total": 9,
        "succeeded": 9,
        "failed": 0,
        "fanned_out": True,
    }
    assert stages["shout"]["for_each"] == "words.words" and stages["join"]["needs"] == ["measure", "shout"]
    assert all(s["in_run"] for s in stages.values()) and summary["selection"] is None  # a whole run

    layout = summary["layout"]
    columns = {n["name"]: n["column"] for n in layout["nodes"]}
    assert columns == {"words": 0, "shout": 1, "measure": 2, "join": 3}
    assert {(e["from"], e["to"]) for e in layout["edges"]} == {
        ("words", "shout"),
        ("shout", "measure"),
        ("measure", "join"),
        ("shout", "join"),
    }
    assert all(n["x"] + n["w"] <= layout["width"] and n["y"] + n["h"] <= layout["height"] for n in layout["nodes"])

    failed = api(demo, f"/requests/{demo.bad}").json
    assert failed["status"] == "FAILED" and failed["failure"]["item"] == 1 and failed["has_final"] is False
    assert {s["name"]: s["failed"] for s in failed["stages"]}["shout"] == 1

    for wrong in ("01NOSUCHREQUEST0000000000A", "not-an-id%3Cx%3E", "x"):
        missing = api(demo, f"/requests/{wrong}")
        assert missing.status == 404 and "no request" in missing.json["error"], missing.json
    assert api(demo, "/requests/..%2F..%2Fetc").status == 404
    assert fetch(f"{demo.url}/ui/requests/01NOSUCHREQUEST0000000000A").status == 404
    page = fetch(f"{demo.url}/ui/requests/{demo.ok}")
    assert page.status == 200 and 'id="dag"' in page.text and 'id="grid"' in page.text


def test_a_stage_page_by_cursor_and_limit_filtered_by_status(demo: Demo) -> None:
    first = api(demo, f"/requests/{demo.ok}/stages/shout?limit=4").json
    assert [r["item"] for r in first["items"]] == [0, 1, 2, 3] and first["next_cursor"] == "4"
    assert first["total"] == 9 and all(r["status"] == "SUCCEEDED" and r["attempts"] == 1 for r in first["items"])
    second = api(demo, f"/requests/{demo.ok}/stages/shout?limit=4&cursor=4").json
    assert [r["item"] for r in second["items"]] == [4, 5, 6, 7] and second["next_cursor"] == "8"
    last = api(demo, f"/requests/{demo.ok}/stages/shout?limit=4&cursor=8").json
    assert [r["item"] for r in last["items"]] == [8] and last["next_cursor"] is None
    assert len(api(demo, f"/requests/{demo.ok}/stages/shout").json["items"]) == 9  # 100 a page by default

    failed = api(demo, f"/requests/{demo.bad}/stages/shout?status=FAILED").json
    assert [(r["item"], r["error_type"]) for r in failed["items"]] == [(1, "TerminalError")]
    assert failed["items"][0]["has_traceback"] is True
    succeeded = api(demo, f"/requests/{demo.bad}/stages/shout?status=succeeded").json["items"]
    assert succeeded and {r["status"] for r in succeeded} == {"SUCCEEDED"} and 1 not in {r["item"] for r in succeeded}
    single = api(demo, f"/requests/{demo.ok}/stages/words").json
    assert single["fanned_out"] is False and [r["item"] for r in single["items"]] == [None]

    wrong_queries = (("limit=0", "limit"), ("limit=1001", "limit"), ("cursor=-1", "cursor"), ("status=DONE", "status"))
    for query, param in wrong_queries:
        wrong = api(demo, f"/requests/{demo.ok}/stages/shout?{query}")
        assert wrong.status == 400 and wrong.json["error"].startswith(f"{param}:"), (query, wrong.json)
    unknown = api(demo, f"/requests/{demo.ok}/stages/nope")
    assert unknown.status == 404 and "no stage 'nope'" in unknown.json["error"]


def test_a_task_in_full_has_its_traceback_input_and_output(demo: Demo) -> None:
    failed = api(demo, f"/requests/{demo.bad}/stages/shout/task?item=1").json
    assert failed["status"] == "FAILED" and failed["error_type"] == "TerminalError"
    assert "Traceback (most recent call last)" in failed["traceback"] and "shout/app.py" in failed["traceback"]
    assert failed["input"]["item"] == SCRIPT and failed["input"]["needs"] == ["words"]
    assert failed["output"] is None and failed["history"][0]["error_type"] == "TerminalError"

    done = api(demo, f"/requests/{demo.ok}/stages/shout/task?item=2").json
    assert done["input"]["item"] == TEXT.split()[2] and done["output"]["word"] == TEXT.split()[2].upper() + "!"
    assert done["traceback"] is None
    words = api(demo, f"/requests/{demo.ok}/stages/words/task").json
    assert words["item"] is None and words["output"]["words"] == TEXT.split()

    assert api(demo, f"/requests/{demo.ok}/stages/shout/task?item=9").status == 404
    assert api(demo, f"/requests/{demo.ok}/stages/shout/task").json["error"].startswith("item:")
    assert api(demo, f"/requests/{demo.ok}/stages/shout/task?item=one").json["error"].startswith("item:")


def test_the_timeline_has_a_bar_per_task_of_a_small_request(demo: Demo) -> None:
    timeline = api(demo, f"/requests/{demo.ok}/timeline").json
    stages = {s["stage"]: s for s in timeline["stages"]}
    assert stages["shout"]["shown"] == 9 and stages["shout"]["sampled"] is False
    assert sorted(b["item"] for b in stages["shout"]["bars"]) == list(range(9))
    assert all(b["start"] <= b["end"] for b in stages["shout"]["bars"])
    assert stages["words"]["bars"][0]["item"] is None and timeline["start"] <= stages["words"]["start"]


# ---- the result and its artifacts ------------------------------------------------------------------------


def test_the_final_result_as_json_and_as_video_scenes_with_their_keyframes(demo: Demo) -> None:
    final = api(demo, f"/requests/{demo.ok}/final").json
    assert final["kind"] == "json" and final["final"]["text"].startswith("THE! QUICK!")
    assert api(demo, f"/requests/{demo.bad}/final").status == 404

    store, rid = demo.store, demo.video
    key = f"requests/{rid}/stages/detect/00000/keyframe-000-annotated.png"
    image = png()
    store.put(key, image, content_type="image/png")
    scene = {"clip_index": 0, "start_s": 5.0, "end_s": 10.0, "score": 0.9, "objects": {"car": 0.9}}
    scene |= {"transcript": f"a car {SCRIPT}", "links": {"clip": None, "keyframes": [store.link(key)]}}
    store.put(final_key(rid), json.dumps({"request_id": rid, "query": "cars", "scenes": [scene]}).encode())

    video = api(demo, f"/requests/{rid}/final")
    assert video.json["kind"] == "video" and video.json["links"] == {store.link(key): key}
    assert SCRIPT not in video.text and SCRIPT in video.json["final"]["scenes"][0]["transcript"]
    served_image = api(demo, f"/requests/{rid}/artifact?key={quote(key)}")
    assert served_image.status == 200 and served_image.body == image
    assert served_image.headers["Content-Type"] == "image/png"
    assert served_image.headers["X-Content-Type-Options"] == "nosniff"


def test_the_artifact_endpoint_serves_only_the_requests_own_objects(demo: Demo) -> None:
    store = demo.store
    own = f"requests/{demo.ok}/stages/shout/00000/page.html"
    store.put(own, f"<html>{SCRIPT}</html>".encode())
    html = api(demo, f"/requests/{demo.ok}/artifact?key={quote(own)}")
    assert html.status == 200 and html.headers["Content-Type"] == "application/octet-stream"  # never as HTML
    assert (
        html.headers["Content-Disposition"].startswith("attachment")
        and "sandbox" in html.headers["Content-Security-Policy"]
    )

    others = (f"requests/{demo.bad}/metadata/state.json", index_key(demo.ok), f"requests/{demo.ok}x/a")
    for key in others:
        refused = api(demo, f"/requests/{demo.ok}/artifact?key={quote(key)}")
        assert refused.status in (403, 404) and "no artifact" in refused.json["error"], key
    for key in ("../x", "requests/../../etc/passwd", "/etc/passwd"):
        assert api(demo, f"/requests/{demo.ok}/artifact?key={quote(key)}").status == 400, key
    assert api(demo, f"/requests/{demo.ok}/artifact").json["error"].startswith("key:")
    assert api(demo, f"/requests/{demo.ok}/artifact?key={quote(own)}x").status == 404
    unicode = f'requests/{demo.ok}/stages/shout/00001/bild-äö "1".txt'
    store.put(unicode, "grüße".encode())
    text = api(demo, f"/requests/{demo.ok}/artifact?key={quote(unicode)}")
    assert text.status == 200 and text.body.decode() == "grüße"
    assert text.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert text.headers["Content-Disposition"] == 'inline; filename="bild-____1_.txt"'


def test_a_script_in_an_error_or_an_output_never_reaches_a_page_unescaped(demo: Demo) -> None:
    bodies = [
        api(demo, "/requests"),
        api(demo, f"/requests/{demo.bad}"),
        api(demo, f"/requests/{demo.bad}/stages/shout?status=FAILED"),
        api(demo, f"/requests/{demo.bad}/stages/shout/task?item=1"),
        api(demo, f"/requests/{demo.bad}/stages/words/task"),
        api(demo, f"/requests/{demo.bad}/timeline"),
        fetch(f"{demo.url}/ui/"),
        fetch(f"{demo.url}/ui/requests/{demo.bad}"),
    ]
    for reply in bodies:
        assert reply.status == 200 and b"<script>alert" not in reply.body, reply.body[:200]
    task = bodies[3].json
    assert SCRIPT in task["error"] and task["input"]["item"] == SCRIPT  # the data itself is intact
    assert SCRIPT in bodies[4].json["output"]["words"]


# ---- a 10,000-item fan-out -------------------------------------------------------------------------------


def test_on_a_10000_item_stage_every_view_reads_a_bounded_number_of_objects(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "store"))
    orchestrator = local_orchestrator(FANOUT_PIPELINE, store)
    try:
        state = orchestrator.create({"items": 10_000, "video_uri": None})
        state = orchestrator.drive(state.request_id, tick_s=0.02)
    finally:
        orchestrator.close()
    rid = state.request_id
    assert state.status.value == "COMPLETED"
    recording = Recording(store)
    shards = tasks_prefix(rid)

    def shard_reads() -> list[str]:
        return [k for k in recording.reads() if k.startswith(shards)]

    with served(recording) as url:
        recording.reads()
        summary = fetch(f"{url}/ui/api/requests/{rid}").json
        assert {s["name"]: s["total"] for s in summary["stages"]}["work"] == 10_000
        assert shard_reads() == []  # the summary (polled every second) reads no task shard

        page = fetch(f"{url}/ui/api/requests/{rid}/stages/work?limit=100&cursor=5000").json
        assert [r["item"] for r in page["items"]] == list(range(5000, 5100)) and page["next_cursor"] == "5100"
        assert len(shard_reads()) <= 2
        end = fetch(f"{url}/ui/api/requests/{rid}/stages/work?limit=100&cursor=9950").json
        assert [r["item"] for r in end["items"]][-1] == 9999 and end["next_cursor"] is None
        recording.reads()

        for status in ("FAILED", "RUNNING"):  # nothing matches: the scan stops within its budget
            none = fetch(f"{url}/ui/api/requests/{rid}/stages/work?status={status}").json
            assert none["items"] == [] and none["next_cursor"] is not None
            assert len(shard_reads()) <= SCAN_SHARDS + 1, status

        task = fetch(f"{url}/ui/api/requests/{rid}/stages/work/task?item=7777").json
        assert task["status"] == "SUCCEEDED" and task["input"]["item"] is not None
        assert len(shard_reads()) <= 2

        timeline = fetch(f"{url}/ui/api/requests/{rid}/timeline").json
        work = {s["stage"]: s for s in timeline["stages"]}["work"]
        assert work["sampled"] is True and 0 < work["shown"] <= BARS_PER_STAGE and work["total"] == 10_000
        assert len(shard_reads()) <= SHARDS_PER_STAGE


# ---- fave ui ---------------------------------------------------------------------------------------------


def test_fave_ui_serves_a_store_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    store = tmp_path / "store"
    rid = run_demo(LocalStore(str(store)), {"text": "one two"}).request_id
    ui = e2e.start_fave("ui", "--store", str(store), "--port", "0", env=None, log_dir=tmp_path / "ui")
    try:

        def url() -> str | None:
            line = (tmp_path / "ui" / "stdout").read_text()
            return line.split(" on ", 1)[1].split()[0] if " on http://" in line else None

        base: str = e2e.wait_for(url, timeout=30, what="fave ui to print its URL")
        assert base.endswith("/ui/")
        page = fetch(base)
        assert page.status == 200 and 'id="requests"' in page.text
        assert fetch(base.removesuffix("ui/")).text == page.text  # / redirects to /ui/
        request_page = fetch(f"{base}requests/{rid}").text
        assert 'data-testid="resume-button" type="button" disabled>' in request_page  # no API behind fave ui
        assert [r["request_id"] for r in fetch(f"{base}api/requests").json["requests"]] == [rid]
        ui.send_signal(signal.SIGINT)
        assert ui.wait(timeout=10) == 0
    finally:
        if ui.poll() is None:
            ui.kill()
            ui.wait()
    assert "Traceback" not in (tmp_path / "ui" / "stderr").read_text()


@pytest.mark.parametrize("store", ["gs://bucket", "S3://bucket"])
def test_fave_ui_with_a_store_of_an_unknown_scheme_exits_2_with_one_line(store: str) -> None:
    done = e2e.fave("ui", "--store", store, "--port", "0", timeout=30)
    assert done.code == 2, done.describe()
    assert len(done.stderr.strip().splitlines()) == 1 and store in done.stderr and "Traceback" not in done.stderr


def test_fave_ui_on_a_port_in_use_exits_2_with_one_line(tmp_path: Path) -> None:
    with served(LocalStore(str(tmp_path / "store"))) as url:
        port = url.rsplit(":", 1)[1]
        done = e2e.fave("ui", "--store", str(tmp_path / "store"), "--port", port, timeout=30)
    assert done.code == 2 and len(done.stderr.strip().splitlines()) == 1 and f"--port {port}" in done.stderr


def test_the_video_pipelines_dag_is_laid_out_in_columns_without_overlaps() -> None:
    shape = load_local_pipeline(e2e.ROOT / "pipeline.yaml").shape()
    drawn = layout(list(shape), shape)
    columns = {n["name"]: n["column"] for n in drawn["nodes"]}
    assert columns == {
        "normalize": 0,
        "audio": 1,
        "split": 2,
        "extract": 3,
        "transcribe": 4,
        "detect": 4,
        "aggregate": 5,
    }
    boxes = [(n["x"], n["y"], n["x"] + n["w"], n["y"] + n["h"]) for n in drawn["nodes"]]
    for i, a in enumerate(boxes):
        assert min(a[0], a[1]) >= 0 and a[2] <= drawn["width"] and a[3] <= drawn["height"]
        assert all(a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1] for b in boxes[i + 1 :])
    assert len(drawn["edges"]) == sum(len(s["needs"]) for s in shape.values())


def test_an_unreadable_request_is_a_row_of_the_list_and_a_500_naming_it(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "store"))
    good, bad = run_demo(store, {"text": "a"}).request_id, run_demo(store, {"text": "b"}).request_id
    store.put(f"requests/{bad}/metadata/state.json", b"\x00 not json")
    with served(store) as url:
        rows = {r["request_id"]: r for r in fetch(f"{url}/ui/api/requests").json["requests"]}
        assert rows[good]["status"] == "COMPLETED" and rows[bad]["status"] == "UNREADABLE"
        assert "state.json is unreadable" in rows[bad]["error"]
        broken = fetch(f"{url}/ui/api/requests/{bad}")
        assert broken.status == 500 and bad in broken.json["error"] and "unreadable" in broken.json["error"]
        assert fetch(f"{url}/ui/requests/{bad}").status == 200  # the page, to say what is wrong


def test_a_subset_runs_stages_outside_its_selection_are_marked_not_in_run(tmp_path: Path) -> None:
    """``fave run --stage shout``: words and shout run, measure and join stay PENDING and are not owed."""
    store = LocalStore(str(tmp_path / "store"))
    orchestrator = local_orchestrator(DEMO_PIPELINE, store)
    try:
        state = orchestrator.create({"text": "a b"}, stages=("shout",))
        state = orchestrator.drive(state.request_id, tick_s=0.02)
    finally:
        orchestrator.close()
    assert state.status.value == "COMPLETED"
    with served(store) as url:
        summary = fetch(f"{url}/ui/api/requests/{state.request_id}").json
    stages = {s["name"]: (s["status"], s["in_run"]) for s in summary["stages"]}
    assert stages == {
        "words": ("SUCCEEDED", True),
        "shout": ("SUCCEEDED", True),
        "measure": ("PENDING", False),
        "join": ("PENDING", False),
    }
    assert summary["selection"] == {"stages": ["shout"], "runs": ["words", "shout"]}
