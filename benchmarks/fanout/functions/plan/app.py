"""Bench stage: emit the list of N items to fan out over (N from the request input)."""

from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"items": list(range(int(event["input"]["request"]["items"])))}
