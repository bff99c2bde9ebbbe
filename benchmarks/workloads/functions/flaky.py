"""W4/W4R task: items ``index % fail_every == 0`` fail.

By default they fail their first attempt only (``task.attempt == 1``). With ``fail_while`` (a file path) in the
request they fail as long as that file exists instead: a bug that is fixed before ``fave resume``.

Every execution appends ``index attempt ok|fail`` to the request's ``ledger`` file (one ``O_APPEND`` write, atomic
for a line this short), so the bench can count which item bodies ran, and how often, in each run.
"""

import os
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = event["input"]["request"]
    index = int(event["input"]["index"])
    attempt = int(event["task"]["attempt"])
    every = int(request.get("fail_every") or 0)
    fail = False
    if every > 0 and index % every == 0:
        bug = request.get("fail_while")
        fail = os.path.exists(bug) if bug else attempt == 1
    ledger = request.get("ledger")
    if ledger:
        fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{index} {attempt} {'fail' if fail else 'ok'}\n".encode())
        finally:
            os.close(fd)
    if fail:
        raise RuntimeError(f"item {index} fails")
    return {"i": index}
