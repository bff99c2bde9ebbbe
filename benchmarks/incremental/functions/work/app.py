"""Bench stage: a no-op that returns a tiny output derived from its element only (so it may be cached by the
element's content, wherever it sits in the list)."""

from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    item = event["input"]["item"]
    return {"id": item["id"], "v": item["v"]}
