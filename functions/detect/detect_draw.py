"""Draw detections on a keyframe and encode it as JPEG (the annotated keyframe a person looks at)."""

from __future__ import annotations

import zlib

import cv2
import numpy as np
from detect_model import Detection, Image
from fave_shared.errors import ValidationError


def decode_jpeg(data: bytes) -> Image:
    """A BGR image from encoded bytes (JPEG or anything else OpenCV reads)."""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValidationError("keyframe is not a decodable image")
    return np.asarray(image, dtype=np.uint8)


def colour(label: str) -> tuple[int, int, int]:
    """A stable, saturated BGR colour per label (same class, same colour in every frame)."""
    h = zlib.crc32(label.encode())
    return (64 + h % 192, 64 + (h >> 8) % 192, 64 + (h >> 16) % 192)


def annotate(bgr: Image, detections: list[Detection], quality: int = 85) -> bytes:
    """JPEG bytes of ``bgr`` with a labelled box per detection (the input image is not modified)."""
    canvas = bgr.copy()
    thickness = max(1, round(min(canvas.shape[:2]) / 240))
    for det in detections:
        x1, y1, x2, y2 = det.box
        c = colour(det.label)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), c, thickness)
        text = f"{det.label} {det.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        # Put the caption above the box, or inside it when the box touches the top edge.
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else y1 + th + 4
        cv2.rectangle(canvas, (x1, ty - th - 2), (x1 + tw + 4, ty + base), c, cv2.FILLED)
        cv2.putText(canvas, text, (x1 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return bytes(buf)
