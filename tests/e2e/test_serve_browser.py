"""``fave serve`` used as a person uses it: requests through the HTTP API and an S3 upload, then the web view in
a real browser (headless Debian chromium driven by Playwright).

* The video pipeline: a ``POST /requests`` (urllib) and an upload with a sidecar (boto3 to the local S3
  endpoint) both complete; the request page draws the DAG with every stage succeeded, the per-item grid of a
  fanned-out stage has its rows, and the result's annotated keyframe images load in the browser.
* The demo pipeline with a word that can never be shouted: the request page shows the failed item, and a click
  on its row shows the traceback.
* A slow demo request: the page follows it live (polling) while it runs, its Cancel button cancels it through
  the HTTP API, and Resume runs it to the end, which the page shows without a reload.

Screenshots of both request pages are kept in ``test-artifacts/`` (``FAVE_TEST_ARTIFACTS`` overrides). Where
chromium cannot be installed (``./dev test`` installs it with apt-get as root), the tests skip saying so.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.e2e import ROOT, SAMPLE, wait_for
from support.served import BUCKET, Served, serve

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("FAVE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("FAVE_TEST_ARTIFACTS") or ROOT / "test-artifacts")
VIDEO_TIMEOUT_S = 600.0
"""Two video requests at once on 2 shared cores take 1-3 minutes; this only stops a hung test."""
PAGE_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (./dev test installs Debian's with apt-get when run as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (requirements/dev.txt; ./dev setup)")
    with sync_playwright() as playwright:
        # A fresh profile each launch (Playwright's temporary user-data-dir); Debian's build, not a downloaded one.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
        assert errors == [], f"the page raised: {errors}"
    finally:
        context.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def open_request(page: Any, served: Served, request_id: str, status: str) -> None:
    """From the list page, as a person would: find the row, click the request, wait until the page shows it."""
    page.goto(f"{served.api}/")  # / redirects to the web view
    row = page.locator(f"tr[data-testid=request-row][data-request-id='{request_id}']")
    row.wait_for()
    row.locator("[data-testid=request-link]").click()
    page.wait_for_selector(f"body[data-request-status={status}]")
    page.wait_for_selector("svg#dag g[data-testid=dag-node]")


def dag_statuses(page: Any) -> dict[str, str]:
    nodes = page.locator("svg#dag g[data-testid=dag-node]")
    found = (nodes.nth(i) for i in range(nodes.count()))
    return {node.get_attribute("data-stage"): node.get_attribute("data-status") for node in found}


def test_video_requests_from_the_api_and_an_upload_in_the_browser(tmp_path: Path, page: Any) -> None:
    served = serve(ROOT / "pipeline.yaml", tmp_path / "store", tmp_path / "logs", "--tick", "2")
    try:
        s3 = served.s3_client()
        s3.upload_file(str(SAMPLE), BUCKET, "inputs/scenes20.mp4")
        body = {"video_uri": f"s3://{BUCKET}/inputs/scenes20.mp4", "query": "find scenes with cars"}
        code, doc = served.call("POST", "/requests", body)
        assert code == 202, doc
        posted = doc["request_id"]
        # The sidecar first (its event is skipped, the video's reads it), then the video: S3's notification.
        s3.put_object(Bucket=BUCKET, Key="uploads/scenes20.mp4.json", Body=b'{"query": "a person on a bicycle"}')
        s3.upload_file(str(SAMPLE), BUCKET, "uploads/scenes20.mp4")

        def uploaded() -> str | None:
            code, listing = served.call("GET", "/ui/api/requests")
            assert code == 200, listing
            others = [r["request_id"] for r in listing["requests"] if r["request_id"] != posted]
            return others[0] if others else None

        upload = wait_for(uploaded, timeout=60, interval=0.2, what="the upload to start a request")
        for request_id in (posted, upload):
            doc = served.wait(request_id, timeout=VIDEO_TIMEOUT_S)
            assert doc["status"] == "COMPLETED", (doc, served.stderr())
        code, summary = served.call("GET", f"/ui/api/requests/{upload}")
        assert code == 200 and summary["input"]["query"] == "a person on a bicycle", summary

        stages = served.call("GET", f"/ui/api/requests/{posted}")[1]["stages"]
        open_request(page, served, posted, "COMPLETED")
        statuses = dag_statuses(page)
        assert set(statuses) == {s["name"] for s in stages} and len(statuses) >= 5, statuses
        assert set(statuses.values()) == {"SUCCEEDED"}, statuses
        # The per-item grid of a fanned-out stage: one row per scene, each succeeded.
        fanned = [s["name"] for s in stages if s["for_each"]]
        assert fanned, "the video pipeline fans out"
        page.select_option("#stage-select", fanned[0])
        page.wait_for_selector(f"#grid[data-stage={fanned[0]}] tr[data-testid=grid-row]")
        rows = page.locator("tr[data-testid=grid-row]")
        assert rows.count() >= 2
        assert {rows.nth(i).get_attribute("data-status") for i in range(rows.count())} == {"SUCCEEDED"}
        # The video result: the matching scenes with their annotated keyframes, loaded by the browser.
        page.wait_for_selector("#result[data-kind=video] [data-testid=scene]")
        images = page.locator("img[data-testid=keyframe]")
        images.first.wait_for()
        assert images.count() >= 1
        for i in range(images.count()):
            image = images.nth(i)
            image.scroll_into_view_if_needed()
            wait_for(
                lambda image=image: image.evaluate("img => img.complete && img.naturalWidth > 0"),
                timeout=20,
                what=f"keyframe {image.get_attribute('data-key')} to load",
            )
        assert page.locator("[data-testid=scene-time]").count() >= 1
        shot = screenshot(page, "serve-video-request.png")
        assert shot.stat().st_size > 10_000
        assert served.stop() == 0
    finally:
        if served.process.poll() is None:
            served.stop()


def test_a_failed_item_shows_its_traceback_in_the_browser(tmp_path: Path, page: Any) -> None:
    demo = ROOT / "tests" / "fixtures" / "demo" / "pipeline.yaml"
    served = serve(demo, tmp_path / "store", tmp_path / "logs", "--tick", "1")
    try:
        body = {"video_uri": f"s3://{BUCKET}/inputs/a.mp4", "extra": {"text": "one bad word", "bad_word": "bad"}}
        code, doc = served.call("POST", "/requests", body)
        assert code == 202, doc
        request_id = doc["request_id"]
        assert served.wait(request_id, timeout=60)["status"] == "FAILED"

        open_request(page, served, request_id, "FAILED")
        assert dag_statuses(page)["shout"] == "FAILED"
        page.select_option("#stage-select", "shout")
        page.select_option("#grid-status", "FAILED")
        row = page.locator("#grid[data-stage=shout] tr[data-testid=grid-row][data-status=FAILED]")
        row.first.wait_for()
        assert row.count() == 1
        row.first.click()
        panel = page.locator("#task-panel[data-stage=shout]")
        panel.wait_for()
        traceback = page.locator("#task-traceback")
        traceback.wait_for()
        text = traceback.inner_text()
        assert "Traceback" in text and "can never be shouted" in text, text
        assert "TerminalError" in page.locator("#task-error").inner_text()
        screenshot(page, "serve-failed-item.png")
        assert served.stop() == 0
    finally:
        if served.process.poll() is None:
            served.stop()


def test_the_page_follows_a_running_request_and_its_buttons_call_the_api(tmp_path: Path, page: Any) -> None:
    demo = ROOT / "tests" / "fixtures" / "demo" / "pipeline.yaml"
    served = serve(demo, tmp_path / "store", tmp_path / "logs", "--tick", "1")
    try:
        # Eight words whose measure takes 1.9 s each (under the demo's 2 s timeout): several seconds of RUNNING.
        text = "one two three four five six seven eight"
        body = {"video_uri": f"s3://{BUCKET}/inputs/a.mp4", "extra": {"text": text, "sleep_s": 1.9}}
        code, doc = served.call("POST", "/requests", body)
        assert code == 202, doc
        request_id = doc["request_id"]
        page.goto(f"{served.api}/ui/requests/{request_id}")
        # Live: the page shows the request running (polling), then Cancel calls POST /requests/{id}/cancel.
        page.wait_for_selector("body[data-request-status=RUNNING]")
        page.wait_for_selector("svg#dag g[data-testid=dag-node][data-status=RUNNING]")
        page.click("#cancel-button")
        page.wait_for_selector("#action-result[data-action=cancel]")
        assert page.get_attribute("#action-result", "data-http-status") in ("200", "202")
        page.wait_for_selector("body[data-request-status=CANCELLED]")
        assert served.wait(request_id)["status"] == "CANCELLED"
        # Resume re-runs what did not succeed, through POST /requests/{id}/resume; the page follows it to the end.
        page.click("#resume-button")
        page.wait_for_selector("#action-result[data-action=resume]")
        assert page.get_attribute("#action-result", "data-http-status") in ("200", "202")
        page.wait_for_selector("body[data-request-status=COMPLETED]", timeout=60_000)
        assert set(dag_statuses(page).values()) == {"SUCCEEDED"}
        assert served.wait(request_id)["final"]["text"] == " ".join(w.upper() + "!" for w in text.split())
        assert served.stop() == 0
    finally:
        if served.process.poll() is None:
            served.stop()
