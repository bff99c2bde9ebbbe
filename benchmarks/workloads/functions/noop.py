"""W2 task: nothing but a tiny output, so only orchestration is measured."""

from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"i": event["input"]["index"]}
