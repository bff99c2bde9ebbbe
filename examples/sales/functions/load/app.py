"""Stage load: read the sales CSV the request names and group its rows by region (the list ``region`` fans out
over). Input that cannot be fixed by retrying (no such file, a missing column, a bad number) is a
``ValidationError``: the SDK reports it as terminal, so fave fails the request at once instead of retrying."""

import csv
import io
from decimal import Decimal, InvalidOperation
from pathlib import Path

from fave_shared.errors import ValidationError
from fave_shared.schemas import StageInput
from fave_shared.stage import StageContext, stage
from fave_shared.store import open_store
from pydantic import BaseModel, Field

COLUMNS = ("date", "region", "product", "units", "unit_price")


class LoadConfig(BaseModel):
    max_rows: int = Field(100_000, ge=1)


class Sale(BaseModel):
    date: str
    product: str
    units: int
    unit_price: str  # a decimal string: money is never a float here


class Region(BaseModel):
    name: str
    sales: list[Sale]


class LoadOutput(BaseModel):
    rows: int
    regions: list[Region]


def read_source(uri: str) -> str:
    """The CSV's text: a local path, or s3://bucket/key (read with the stage's credentials)."""
    try:
        if uri.startswith("s3://"):
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            data = open_store(f"s3://{bucket}").get(key).data
        else:
            data = Path(uri).read_bytes()
        return data.decode("utf-8-sig")
    except FileNotFoundError:
        raise ValidationError(f"source: no such file {uri}") from None
    except UnicodeDecodeError:
        raise ValidationError(f"source: {uri} is not UTF-8 text") from None


def parse(text: str, max_rows: int) -> LoadOutput:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValidationError(f"source: missing column {', '.join(missing)} (columns: {', '.join(COLUMNS)})")
    regions: dict[str, list[Sale]] = {}
    count = 0
    for line, row in enumerate(reader, start=2):
        count += 1
        if count > max_rows:
            raise ValidationError(f"source: more than {max_rows} rows (config max_rows)")
        try:
            units = int(row["units"])
            price = Decimal(row["unit_price"])
        except (ValueError, InvalidOperation):
            raise ValidationError(f"source line {line}: units and unit_price must be numbers") from None
        if units < 0 or price < 0:
            raise ValidationError(f"source line {line}: negative units or price")
        sale = Sale(date=row["date"], product=row["product"], units=units, unit_price=str(price))
        regions.setdefault(row["region"].strip(), []).append(sale)
    return LoadOutput(rows=count, regions=[Region(name=n, sales=s) for n, s in sorted(regions.items())])


@stage(StageInput)
def handler(inp: StageInput, ctx: StageContext) -> LoadOutput:
    config = LoadConfig.model_validate(inp.config)
    source = str(getattr(inp.request, "source", ""))
    return parse(read_source(source), config.max_rows)
