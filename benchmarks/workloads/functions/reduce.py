"""Fan-in: count and sum the outputs of the one fanned-out stage it needs (the list may arrive by reference)."""

from typing import Any

from fave_shared.refs import resolve
from fave_shared.store import open_store


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    value = resolve(open_store(event["store"]), event["input"])
    (outputs,) = value["needs"].values()
    done = [o for o in outputs if o is not None]
    return {"count": len(done), "sum": sum(o["i"] for o in done)}
