"""Bench stage: fan-in; counts the outputs it received (its input may arrive by reference)."""

from typing import Any

from fave_shared.refs import resolve
from fave_shared.store import open_store


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    value = resolve(open_store(event["store"]), event["input"])
    outputs = value["needs"]["work"]
    return {"count": sum(1 for o in outputs if o is not None), "changed": sum(1 for o in outputs if o and o["v"])}
