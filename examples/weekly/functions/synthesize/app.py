"""Stage synthesize: one task per catalogue entry (``for_each: {from: fetch.entries, key: id}``, ``cache: true``):
the entry normalised for the shop — a clean title, a slug, the price with the category's VAT (config ``vat``),
an availability band and a one-line summary. Deterministic: the same entry and config give the same output, so
an entry unchanged since last week is taken from the result cache instead of being computed again."""

import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from fave_shared.schemas import StageInput
from fave_shared.stage import StageContext, stage
from pydantic import BaseModel, Field


class Entry(BaseModel):
    id: str
    name: str
    category: str
    price_cents: int = Field(ge=0)
    stock: int = Field(ge=0)


class SynthesizeConfig(BaseModel):
    vat: dict[str, float] = {"default": 0.19}
    low_stock: int = 10


class SynthesizeInput(StageInput):
    item: Entry


class Listing(BaseModel):
    id: str
    title: str
    slug: str
    category: str
    net: str
    gross: str
    availability: str
    summary: str


def title_of(name: str) -> str:
    return " ".join(word.capitalize() for word in name.split())


def money(cents: int | Decimal) -> str:
    return str((Decimal(cents) / 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


@stage(SynthesizeInput)
def handler(inp: SynthesizeInput, ctx: StageContext) -> Listing:
    config = SynthesizeConfig.model_validate(inp.config)
    entry = inp.item
    rate = Decimal(str(config.vat.get(entry.category, config.vat.get("default", 0.0))))
    gross = Decimal(entry.price_cents) * (1 + rate)
    title = title_of(entry.name)
    if entry.stock == 0:
        availability = "sold out"
    elif entry.stock < config.low_stock:
        availability = "low"
    else:
        availability = "in stock"
    summary: dict[str, Any] = {"title": title, "gross": money(gross), "availability": availability}
    return Listing(
        id=entry.id,
        title=title,
        slug=re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") + "-" + entry.id.lower(),
        category=entry.category,
        net=money(entry.price_cents),
        gross=money(gross),
        availability=availability,
        summary=f"{summary['title']}: {summary['gross']} ({summary['availability']})",
    )
