"""Stage report: join the totals and every region into the request's final report (``final: report``)."""

from decimal import Decimal
from typing import Any

from fave_shared.schemas import StageInput
from fave_shared.stage import StageContext, stage
from pydantic import BaseModel


class Totals(BaseModel):
    rows: int
    units: int
    revenue: str


class ReportNeeds(BaseModel):
    totals: Totals
    region: list[dict[str, Any] | None]  # one per region, in load's order (None: that region failed)


class ReportInput(StageInput):
    needs: ReportNeeds


class RegionLine(BaseModel):
    region: str
    revenue: str
    share_pct: float
    top: list[dict[str, Any]]


class ReportOutput(BaseModel):
    currency: str
    rows: int
    units: int
    revenue: str
    best_region: str | None
    regions: list[RegionLine]


@stage(ReportInput)
def handler(inp: ReportInput, ctx: StageContext) -> ReportOutput:
    total = Decimal(inp.needs.totals.revenue)
    regions = [r for r in inp.needs.region if r is not None]
    lines = [
        RegionLine(
            region=r["region"],
            revenue=r["revenue"],
            share_pct=round(float(Decimal(r["revenue"]) / total * 100), 2) if total else 0.0,
            top=r["top"],
        )
        for r in sorted(regions, key=lambda r: -Decimal(r["revenue"]))
    ]
    return ReportOutput(
        currency=str(getattr(inp.request, "currency", "EUR")),
        rows=inp.needs.totals.rows,
        units=inp.needs.totals.units,
        revenue=str(total),
        best_region=lines[0].region if lines else None,
        regions=lines,
    )
