"""A running ``fave serve`` (a subprocess) as a client sees it: its URLs, its HTTP API and its S3 endpoint.

``serve(pipeline, store, logs, *options)`` starts ``fave serve`` on free ports (``--port 0 --s3-port 0``) and
reads the URLs from its banner; ``Served.stop()`` sends SIGTERM (what Ctrl-C or a service manager does).
Used by tests/functional/test_serve.py and the browser test tests/e2e/test_serve_browser.py.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from support.e2e import child_env, start_fave, wait_for

BUCKET = "fave-local"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")
START_S = 30.0


class Served:
    """A running ``fave serve`` and its URLs (read from its banner)."""

    def __init__(self, process: subprocess.Popen[bytes], logs: Path, store: Path) -> None:
        self.process = process
        self.logs = logs
        self.store = store
        banner = wait_for(self._banner, timeout=START_S, what="fave serve's banner")
        self.api = re.search(r"API: +(http://\S+)", banner)[1]  # type: ignore[index]
        self.s3 = re.search(r"S3: +(http://\S+)", banner)[1]  # type: ignore[index]
        self.banner = banner

    def _banner(self) -> str | None:
        if self.process.poll() is not None:
            raise AssertionError(f"fave serve exited {self.process.returncode}: {self.stderr()}")
        text = (self.logs / "stdout").read_text()
        return text if "Ctrl-C stops it." in text else None

    def stderr(self) -> str:
        return (self.logs / "stderr").read_text()[-3000:]

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One HTTP call to the API (or the web view's JSON under /ui/api): status and JSON body."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.api + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def wait(self, request_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """``GET /requests/{id}`` until the request ends; its last document."""

        def ended() -> dict[str, Any] | None:
            code, doc = self.call("GET", f"/requests/{request_id}")
            assert code == 200, doc
            return doc if doc["status"] in TERMINAL else None

        doc: dict[str, Any] = wait_for(ended, timeout=timeout, interval=0.1, what=f"request {request_id} to end")
        return doc

    def s3_client(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.s3, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
        )

    def stop(self, timeout: float = 20.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def serve(pipeline: Path, store: Path, logs: Path, *extra: str) -> Served:
    """Start ``fave serve --pipeline PIPELINE --store STORE`` on free ports; output in files under ``logs``."""
    args = ("serve", "--pipeline", str(pipeline), "--store", str(store), "--port", "0", "--s3-port", "0", *extra)
    return Served(start_fave(*args, env=child_env(), log_dir=logs), logs, store)
