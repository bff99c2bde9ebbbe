"""Fan-out source: the list of N items (N from the request input)."""

from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"items": list(range(int(event["input"]["request"]["items"])))}
