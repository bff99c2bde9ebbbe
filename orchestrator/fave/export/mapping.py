"""What an export carries over: one row per pipeline feature, mapped ``exact``, ``approximate`` or ``none``,
and how. The same rows are printed by ``fave export`` and documented in docs/export.md."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

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


def render(rows: Sequence[Row]) -> str:
    """A plain-text table: the features this pipeline uses first, then the others."""
    ordered = [r for r in rows if r.used] + [r for r in rows if not r.used]
    width = max(len(r.feature) for r in ordered)
    lines = [f"{'feature':<{width}}  {'mapping':<11}  how", f"{'-' * width}  {'-' * 11}  {'-' * 3}"]
    for r in ordered:
        mark = "" if r.used else " (not used by this pipeline)"
        lines.append(f"{r.feature:<{width}}  {r.fidelity:<11}  {r.how}{mark}")
    return "\n".join(lines)
