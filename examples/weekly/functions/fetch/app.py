"""Stage fetch: read the catalogue the request names (a JSON file ``{"catalogue": ..., "entries": [...]}``, a
local path or s3://bucket/key) and hand its entries to ``synthesize`` (``for_each: fetch.entries``). Not cached:
it reads the outside world; what it returns is what the cache of the stages after it is keyed on."""

import json
from pathlib import Path
from typing import Any

from fave_shared.errors import ValidationError
from fave_shared.schemas import StageInput
from fave_shared.stage import StageContext, stage
from fave_shared.store import open_store
from pydantic import BaseModel

REQUIRED = ("id", "name", "category", "price_cents", "stock")


class FetchOutput(BaseModel):
    catalogue: str
    entries: list[dict[str, Any]]


def read_source(uri: str) -> bytes:
    try:
        if uri.startswith("s3://"):
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            return open_store(f"s3://{bucket}").get(key).data
        return Path(uri).read_bytes()
    except FileNotFoundError:
        raise ValidationError(f"catalogue: no such file {uri}") from None


@stage(StageInput)
def handler(inp: StageInput, ctx: StageContext) -> FetchOutput:
    uri = str(getattr(inp.request, "catalogue", ""))
    try:
        doc = json.loads(read_source(uri))
    except ValueError:
        raise ValidationError(f"catalogue: {uri} is not JSON") from None
    entries = doc.get("entries") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ValidationError(f"catalogue: {uri} has no 'entries' list")
    seen: set[str] = set()
    for n, entry in enumerate(entries):
        missing = [f for f in REQUIRED if not isinstance(entry, dict) or f not in entry]
        if missing:
            raise ValidationError(f"catalogue: entry {n} lacks {', '.join(missing)}")
        if entry["id"] in seen:
            raise ValidationError(f"catalogue: entry {n} repeats id {entry['id']}")
        seen.add(entry["id"])
    return FetchOutput(catalogue=str(doc.get("catalogue") or Path(uri).stem), entries=entries)
