"""Stage region: one task per region (``for_each: load.regions``): its revenue, units and top products."""

from collections import defaultdict
from decimal import Decimal

from fave_shared.schemas import StageInput
from fave_shared.stage import StageContext, stage
from pydantic import BaseModel


class Sale(BaseModel):
    date: str
    product: str
    units: int
    unit_price: str


class Region(BaseModel):
    name: str
    sales: list[Sale]


class RegionInput(StageInput):
    item: Region  # this task's element of load.regions


class Product(BaseModel):
    product: str
    units: int
    revenue: str


class RegionOutput(BaseModel):
    region: str
    units: int
    revenue: str
    top: list[Product]


@stage(RegionInput)
def handler(inp: RegionInput, ctx: StageContext) -> RegionOutput:
    top_n = int(getattr(inp.request, "top", 3) or 3)
    units: dict[str, int] = defaultdict(int)
    revenue: dict[str, Decimal] = defaultdict(Decimal)
    for sale in inp.item.sales:
        units[sale.product] += sale.units
        revenue[sale.product] += sale.units * Decimal(sale.unit_price)
    ranked = sorted(revenue, key=lambda p: (-revenue[p], p))[:top_n]
    return RegionOutput(
        region=inp.item.name,
        units=sum(units.values()),
        revenue=str(sum(revenue.values(), Decimal(0))),
        top=[Product(product=p, units=units[p], revenue=str(revenue[p])) for p in ranked],
    )
