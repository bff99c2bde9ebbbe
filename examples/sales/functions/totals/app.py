"""Stage totals: the whole file's revenue and units (a branch beside the per-region fan-out)."""

from decimal import Decimal

from fave_shared.schemas import StageInput
from fave_shared.stage import StageContext, stage
from pydantic import BaseModel


class Sale(BaseModel):
    units: int
    unit_price: str


class Region(BaseModel):
    name: str
    sales: list[Sale]


class Loaded(BaseModel):
    rows: int
    regions: list[Region]


class TotalsNeeds(BaseModel):
    load: Loaded


class TotalsInput(StageInput):
    needs: TotalsNeeds


class TotalsOutput(BaseModel):
    rows: int
    units: int
    revenue: str


@stage(TotalsInput)
def handler(inp: TotalsInput, ctx: StageContext) -> TotalsOutput:
    sales = [s for r in inp.needs.load.regions for s in r.sales]
    revenue = sum((s.units * Decimal(s.unit_price) for s in sales), Decimal(0))
    return TotalsOutput(rows=inp.needs.load.rows, units=sum(s.units for s in sales), revenue=str(revenue))
