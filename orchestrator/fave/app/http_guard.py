"""Checks on a raw HTTP API event before Powertools routes it: what it would otherwise turn into a 500.

Powertools decodes the body (base64, UTF-8) and parses JSON lazily inside the route, where a bad base64 body,
bytes that are not UTF-8 or a document nested 100,000 deep (``RecursionError``) escape as exceptions, and an
event without ``requestContext.http.method`` fails before routing. Here each of those becomes a 400 naming the
problem, a body over ``MAX_BODY_BYTES`` a 413, and a good event is passed on with its body decoded once.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

__all__ = ["MAX_BODY_BYTES", "MAX_JSON_DEPTH", "check_http_event", "json_depth_exceeds"]

#: Largest request body accepted (request fields, ``extra`` included). Bigger inputs belong in the bucket.
MAX_BODY_BYTES = 64 * 1024
#: Deepest JSON nesting accepted: far above any real request, far below Python's recursion limit.
MAX_JSON_DEPTH = 32


def _problem(status: int, message: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"message": message}),
        "isBase64Encoded": False,
    }


def json_depth_exceeds(text: str, limit: int) -> bool:
    """Whether JSON ``text`` nests arrays/objects deeper than ``limit`` (strings are skipped, so brackets
    inside them do not count). Linear, no recursion: safe on hostile input."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def check_http_event(event: dict[str, Any]) -> dict[str, Any] | None:
    """An HTTP API response refusing ``event`` (400/413), or None after normalising its body in place."""
    request_context = event.get("requestContext")
    http = request_context.get("http") if isinstance(request_context, dict) else None
    if not isinstance(http, dict) or not isinstance(http.get("method"), str) or not http["method"]:
        return _problem(400, "requestContext.http.method: missing; not an API Gateway HTTP API (2.0) request")
    if not isinstance(event.get("rawPath", http.get("path", "")), str):
        return _problem(400, "rawPath: expected a string")
    body = event.get("body")
    if body is None:
        return None
    if not isinstance(body, str):
        return _problem(400, "body: expected a string")
    raw: bytes
    if event.get("isBase64Encoded"):
        # Decode no more than the cap allows (plus one byte, to tell "over the cap").
        limit = (MAX_BODY_BYTES // 3 + 1) * 4
        try:
            raw = base64.b64decode(body[:limit], validate=True)
        except (binascii.Error, ValueError):
            return _problem(400, "body: isBase64Encoded is set but the body is not valid base64")
        over = len(body) > limit or len(raw) > MAX_BODY_BYTES
    else:
        raw = body[: MAX_BODY_BYTES + 1].encode("utf-8", errors="surrogatepass")
        over = len(body) > MAX_BODY_BYTES or len(raw) > MAX_BODY_BYTES
    try:
        text = raw[: MAX_BODY_BYTES + 1].decode("utf-8", errors="strict" if not over else "ignore")
    except UnicodeDecodeError:
        return _problem(400, "body: not valid UTF-8")
    # Depth first: a hostile document is refused as what it is, whatever its size (only the part up to
    # the cap is scanned, so the check costs no more than a body the API accepts).
    if json_depth_exceeds(text, MAX_JSON_DEPTH):
        return _problem(400, f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if over:
        return _problem(413, f"body: larger than {MAX_BODY_BYTES} bytes")
    event["body"] = text
    event["isBase64Encoded"] = False
    return None
