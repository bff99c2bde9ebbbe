"""``POST /requests/{id}/reset`` on the orchestrator function (issue 13, requirement 4): reset a stage and what
needs it on a COMPLETED demo request, resume it, and only those stage functions run again."""

from __future__ import annotations

import json
from typing import Any

from support.app_lambda import OrchestratorLambda
from support.demo import TEXT
from support.events import http_event


def reset(lam: OrchestratorLambda, request_id: str, body: Any) -> tuple[int, dict[str, Any]]:
    event = http_event("http-resume.json", request_id=request_id, body=body)
    path = event["rawPath"].removesuffix("/resume") + "/reset"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["routeKey"] = event["requestContext"]["routeKey"] = "POST /requests/{id}/reset"
    response = lam.invoke(event)
    return response["statusCode"], json.loads(response["body"])


def test_reset_downstream_then_resume_reruns_only_those_stages(orchestrator_lambda: OrchestratorLambda) -> None:
    lam = orchestrator_lambda
    request_id = lam.start(TEXT)
    first = lam.wait(request_id)
    assert first["status"] == "COMPLETED", first
    words = len(TEXT.split())
    ran = {f: lam.invocations(f) for f in ("WordsFunction", "ShoutFunction", "MeasureFunction", "JoinFunction")}
    assert ran == {"WordsFunction": 1, "ShoutFunction": words, "MeasureFunction": words, "JoinFunction": 1}

    code, body = reset(lam, request_id, {"stages": ["measure", "nope"]})
    assert code == 400 and "'nope'" in body["message"] and body["errors"][0]["field"] == "stages"
    code, body = reset(lam, request_id, {"stages": ["measure"], "downstream": True})
    assert code == 200, body
    assert body["reset"] == {"stages": {"measure": words, "join": 1}, "downstream": True}
    assert body["status"] == "COMPLETED"
    assert [body["stages"][s]["status"] for s in ("words", "shout", "measure", "join")] == [
        "SUCCEEDED",
        "SUCCEEDED",
        "PENDING",
        "PENDING",
    ]

    code, body, _ = lam.http("http-resume.json", request_id=request_id)
    assert code == 202, body  # a COMPLETED request with stages reset has something to resume
    lam.settle()
    done = lam.wait(request_id)
    assert done["status"] == "COMPLETED" and done["final"] == first["final"], done
    again = {f: lam.invocations(f) - ran[f] for f in ran}
    assert again == {"WordsFunction": 0, "ShoutFunction": 0, "MeasureFunction": words, "JoinFunction": 1}
    code, body, _ = lam.http("http-resume.json", request_id=request_id)
    assert code == 409 and "nothing to resume" in body["message"]
