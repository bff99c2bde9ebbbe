"""Bench stage: the list of ``items`` elements ``{"id": i, "v": 0}`` for i from ``first`` (default 0); the ids in
``changed`` carry ``"v": changed_at`` instead (a changed element, as a weekly update would bring). ``first: 1``
shifts the whole list by one position (one element gone at the front, one new at the end)."""

from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = event["input"]["request"]
    changed = set(request.get("changed") or ())
    version = request.get("changed_at", 1)
    first = int(request.get("first", 0))
    ids = range(first, first + int(request["items"]))
    return {"items": [{"id": i, "v": version if i in changed else 0} for i in ids]}
