"""Stage score: per entry, after synthesize (the same item; ``cache: true``): flags a listing that needs a
person's look — sold out, or priced over the config's ``review_above`` — with the reasons."""

from decimal import Decimal
from typing import Any

from fave_shared.schemas import StageInput
from fave_shared.stage import StageContext, stage
from pydantic import BaseModel


class ScoreConfig(BaseModel):
    review_above: str = "150.00"


class ScoreNeeds(BaseModel):
    synthesize: dict[str, Any]


class ScoreInput(StageInput):
    needs: ScoreNeeds


class Score(BaseModel):
    id: str
    review: bool
    reasons: list[str]


@stage(ScoreInput)
def handler(inp: ScoreInput, ctx: StageContext) -> Score:
    config = ScoreConfig.model_validate(inp.config)
    listing = inp.needs.synthesize
    reasons = []
    if listing["availability"] == "sold out":
        reasons.append("sold out")
    if Decimal(listing["gross"]) > Decimal(config.review_above):
        reasons.append(f"gross over {config.review_above}")
    return Score(id=listing["id"], review=bool(reasons), reasons=reasons)
