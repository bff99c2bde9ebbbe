"""detect: COCO objects in each keyframe of one clip (SSD-MobileNetV2 through OpenCV DNN).

Writes an annotated JPEG per keyframe (boxes and labels drawn) next to its output, for people to check.
"""

from __future__ import annotations

import logging

from detect_contract import DetectInput, DetectionOut, DetectOutput, FrameOut
from detect_draw import annotate, decode_jpeg
from detect_model import MODEL_NAME, detect, load_detector
from fave_shared.stage import StageContext, stage

try:
    # Init phase: the network is ready before the first clip (and in a pre-warmed environment). A failure
    # here is left for the first invocation to report, as its own error.
    load_detector()
except Exception:
    logging.getLogger(__name__).warning("model not loaded at init", exc_info=True)


@stage(DetectInput)
def handler(inp: DetectInput, ctx: StageContext) -> DetectOutput:
    """Detect objects in every keyframe of the clip and summarise the best score per label."""
    cfg = inp.config
    frames: list[FrameOut] = []
    best: dict[str, float] = {}
    for i, kf in enumerate(inp.needs.extract.keyframes):
        image = decode_jpeg(ctx.read_bytes(kf.key))
        found = detect(image, min_score=cfg.min_score, overlap_iou=cfg.overlap_iou)
        annotated_key = None
        if cfg.annotate:
            annotated_key = ctx.put_bytes(f"keyframe-{i:03d}-annotated.jpg", annotate(image, found), "image/jpeg")
        frames.append(
            FrameOut(
                t_s=kf.t_s,
                key=kf.key,
                annotated_key=annotated_key,
                height=int(image.shape[0]),
                width=int(image.shape[1]),
                detections=[DetectionOut(label=d.label, score=d.score, box=list(d.box)) for d in found],
            )
        )
        for d in found:
            best[d.label] = max(best.get(d.label, 0.0), d.score)
    return DetectOutput(
        clip=inp.needs.extract.clip,
        frames=frames,
        objects=dict(sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))),
        model=MODEL_NAME,
        attempt=ctx.task.attempt,
    )
