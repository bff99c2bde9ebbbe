"""W1 chain stage: one more than its upstream (the path of stages so far, so a wrong order shows)."""

from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    upstream = next(iter(event["input"].get("needs", {}).values()), None) or {"v": 0, "path": []}
    return {"v": upstream["v"] + 1, "path": [*upstream["path"], event["task"]["stage"]]}
