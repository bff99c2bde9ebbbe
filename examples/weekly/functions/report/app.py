"""Stage report: the whole catalogue at once (``cache: true``: it runs again only if one of its inputs — any
listing or score — changed): entries and gross value per category, and the listings to review."""

from collections import defaultdict
from decimal import Decimal
from typing import Any

from fave_shared.schemas import StageInput
from fave_shared.stage import StageContext, stage
from pydantic import BaseModel


class ReportNeeds(BaseModel):
    fetch: dict[str, Any]
    synthesize: list[dict[str, Any] | None]  # one per entry, in the catalogue's order (None: that entry failed)
    score: list[dict[str, Any] | None]


class ReportInput(StageInput):
    needs: ReportNeeds


class CategoryLine(BaseModel):
    category: str
    entries: int
    gross: str


class ReportOutput(BaseModel):
    catalogue: str
    entries: int
    failed: int
    categories: list[CategoryLine]
    review: list[dict[str, Any]]


@stage(ReportInput)
def handler(inp: ReportInput, ctx: StageContext) -> ReportOutput:
    listings = [x for x in inp.needs.synthesize if x is not None]
    count: dict[str, int] = defaultdict(int)
    gross: dict[str, Decimal] = defaultdict(Decimal)
    for listing in listings:
        count[listing["category"]] += 1
        gross[listing["category"]] += Decimal(listing["gross"])
    titles = {x["id"]: x["title"] for x in listings}
    review = [
        {"id": s["id"], "title": titles.get(s["id"]), "reasons": s["reasons"]}
        for s in inp.needs.score
        if s is not None and s["review"]
    ]
    return ReportOutput(
        catalogue=str(inp.needs.fetch.get("catalogue")),
        entries=len(listings),
        failed=len(inp.needs.synthesize) - len(listings),
        categories=[CategoryLine(category=c, entries=count[c], gross=str(gross[c])) for c in sorted(count)],
        review=sorted(review, key=lambda r: r["id"]),
    )
