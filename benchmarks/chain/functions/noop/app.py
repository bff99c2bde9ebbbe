"""Bench stage: do nothing but say which stage ran, so only the command's own cost is measured."""

from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"stage": event["task"]["stage"]}
