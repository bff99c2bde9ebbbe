"""Human durations in pipeline.yaml: ``500ms``, ``30s``, ``5m``, ``1h``, ``7d``, ``1m30s`` or a number of seconds."""

from __future__ import annotations

import math
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """Seconds as a float. Raises ``ValueError`` with the offending text for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            parts = _PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"not a duration: {_short(value)} (use e.g. 500ms, 30s, 5m, 1h, 7d)") from None
            seconds = sum(float(n) * _UNIT[u] for n, u in parts)
    else:
        raise ValueError(f"not a duration: {_short(value)}")
    if not math.isfinite(seconds):  # "inf", "nan", 1e999: no deadline could ever be computed from them
        raise ValueError(f"not a duration: {_short(value)}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    return seconds


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"
