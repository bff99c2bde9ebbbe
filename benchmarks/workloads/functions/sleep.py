"""W3 task: I/O-bound waiting (``sleep_ms`` of the request input), no CPU."""

import time
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    time.sleep(float(event["input"]["request"]["sleep_ms"]) / 1000.0)
    return {"i": event["input"]["index"]}
