"""An event the orchestrator function fails to handle three times is kept in its dead-letter queue.

template.yaml gives the orchestrator an OnFailure destination (an SQS queue) after Lambda's two retries of an
asynchronous event: uploads, completions, ticks and its own steps all arrive that way. Here the real
function (template.yaml's OrchestratorFunction, fave.app.handler in a local execution environment) gets an
upload event while its S3 cannot be reached; the local runtime retries it as Lambda would and then hands the
record to the queue's destination handler, event included.
"""

from __future__ import annotations

import queue
import socket
from typing import Any

from fave.local.runtime import LocalRuntime
from fave.local.template import Template
from support.events import s3_upload_event


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_upload_event_that_fails_three_times_reaches_the_dead_letter_queue(template: Template) -> None:
    config = template.function("OrchestratorFunction").event_invoke_config
    assert config.on_failure == "OrchestratorDeadLetterQueue" and config.max_retry_attempts == 2

    dead_letters: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
    env = {  # S3 unreachable: every attempt fails before it can change anything
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{_closed_port()}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
        "POWERTOOLS_TRACE_DISABLED": "1",
    }
    event = s3_upload_event("fave-123456789012-us-east-1-51af3dc0", "uploads/lost.mp4")
    with LocalRuntime(
        template,
        env_overrides=env,
        destination_handlers={"OrchestratorDeadLetterQueue": dead_letters.put},
        async_retry_delays_s=(0.05, 0.05),
        max_environments=1,
    ) as runtime:
        runtime.invoke_async("OrchestratorFunction", event)
        record = dead_letters.get(timeout=60)
        assert runtime.stats()["OrchestratorFunction"].invocations == 3  # the first try and Lambda's 2 retries

    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestPayload"] == event  # the upload is kept whole, ready to replay
    assert record["responseContext"]["functionError"] == "Unhandled"
