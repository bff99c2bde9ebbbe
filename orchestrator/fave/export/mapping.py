"""What an export carries over: one row per pipeline feature, mapped ``exact``, ``approximate`` or ``none``,
and how. The same rows are printed by ``fave export`` and documented in docs/export.md."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from fave.core.dag import Pipeline

Fidelity = Literal["exact", "approximate", "none"]


@dataclass(frozen=True, slots=True)
class Row:
    feature: str
    fidelity: Fidelity
    how: str
    used: bool = True
    """Whether the exported pipeline uses the feature (a row it does not use is still listed, dimmed)."""

    def to_json(self) -> dict[str, object]:
        return {"feature": self.feature, "mapping": self.fidelity, "how": self.how, "used": self.used}


@dataclass(frozen=True, slots=True)
class Wording:
    """What an engine adds to the rows every export shares (``common_rows``)."""

    request: str = ""
    """After "give the request as fave would pass it (defaults applied)": where it goes, say."""
    cache: str = ""
    """After "every stage runs"."""
    items: str = "position only"
    """After "items are named by"."""
    queue: str = ""
    """After "fave's queue and worker only": the engine's nearest thing."""


def common_rows(p: Pipeline, wording: Wording = Wording()) -> list[Row]:
    """The features no export maps, fave's own: the request's schema and defaults, the result cache, for_each
    keys, and the queue and worker's settings."""
    stages = list(p.stages.values())
    return [
        Row(
            "request input schema / defaults",
            "none",
            "give the request as fave would pass it (defaults applied)" + wording.request,
            p.input_schema is not None,
        ),
        Row("result cache", "none", "every stage runs" + wording.cache, any(s.cache for s in stages)),
        Row(
            "for_each key",
            "none",
            f"items are named by {wording.items}",
            any(s.for_each and s.for_each.key for s in stages),
        ),
        Row(
            "max_requests_in_flight, stale_after, alerts", "none", "fave's queue and worker only" + wording.queue, False
        ),
    ]


def render(rows: Sequence[Row]) -> str:
    """A plain-text table: the features this pipeline uses first, then the others."""
    ordered = [r for r in rows if r.used] + [r for r in rows if not r.used]
    width = max(len(r.feature) for r in ordered)
    lines = [f"{'feature':<{width}}  {'mapping':<11}  how", f"{'-' * width}  {'-' * 11}  {'-' * 3}"]
    for r in ordered:
        mark = "" if r.used else " (not used by this pipeline)"
        lines.append(f"{r.feature:<{width}}  {r.fidelity:<11}  {r.how}{mark}")
    return "\n".join(lines)
