"""The aggregate stage: ranking clips against a query, on real upstream outputs and on edge cases."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from fave_shared.store import LocalStore
from support.functions import load_handler
from support.media_samples import SampleChain, sample_chain
from support.scene_media import stage_event, truth

aggregate = load_handler("aggregate")

REQUEST = "r-aggregate"


def _aggregate(store: LocalStore, query: str | None, needs: dict[str, Any], **config: Any) -> dict[str, Any]:
    inp = {"request": {"video_uri": "sample.mp4", "query": query}, "needs": needs, "config": config}
    out: dict[str, Any] = aggregate(stage_event(store, "aggregate", inp, request_id=REQUEST), None)
    return out


def _spans(out: dict[str, Any]) -> list[tuple[float, float]]:
    return [(s["start_s"], s["end_s"]) for s in out["scenes"]]


# -- realistic inputs: the real media chain (normalize, audio, split, extract), then transcribe and detect --


@pytest.fixture(scope="module")
def chain(sample_video: Path, tmp_path_factory: pytest.TempPathFactory) -> SampleChain:
    # The same chain (and store) as the other media stage tests: it runs once per process.
    return sample_chain(sample_video, tmp_path_factory.getbasetemp() / "sample-chain")


@pytest.fixture(scope="module")
def real_needs(chain: SampleChain) -> dict[str, Any]:
    """split + the real transcribe and detect outputs per clip (models shared by the whole process)."""
    outs: dict[str, list[Any]] = {"transcribe": [], "detect": []}
    for name, results in outs.items():
        for i, extract in enumerate(chain.extract):
            inp = {"item": chain.split["clips"][i], "index": i, "needs": {"extract": extract}}
            results.append(chain.run(name, inp, item=i))
    return {"split": chain.split, **outs}


def _aggregate_real(chain: SampleChain, query: str | None, needs: dict[str, Any]) -> dict[str, Any]:
    inp = {"request": {"video_uri": str(chain.video), "query": query}, "needs": needs}
    return chain.run("aggregate", inp)


@pytest.mark.slow
def test_the_sample_chain_cuts_the_truth_scenes(chain: SampleChain) -> None:
    # The assertions below name scenes by their truth times: check that split agrees first.
    spans = [(c["start_s"], c["end_s"]) for c in chain.split["clips"]]
    assert spans == [(s["start_s"], s["end_s"]) for s in truth()["scenes"]]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("query", "first", "parsed"),
    [
        ("find scenes with cars", (5.0, 10.0), {"objects": ["car"], "words": []}),
        ("hello", (0.0, 5.0), {"objects": [], "words": ["hello"]}),
        ("where does someone say hello", (0.0, 5.0), {"objects": ["person"], "words": ["hello"]}),
        ("cat", (10.0, 15.0), {"objects": ["cat"], "words": []}),
        ("cup", (15.0, 20.0), {"objects": ["cup"], "words": []}),
        ("a puppy and a bike", (5.0, 10.0), {"objects": ["dog", "bicycle"], "words": []}),
        ('someone says "white car"', (5.0, 10.0), {"objects": ["person"], "words": ["white car"]}),
    ],
)
def test_queries_on_the_sample_rank_the_right_scene_first(
    chain: SampleChain, real_needs: dict[str, Any], query: str, first: tuple[float, float], parsed: Any
) -> None:
    out = _aggregate_real(chain, query, real_needs)
    assert out["parsed_query"] == parsed
    assert _spans(out)[0] == first, out["scenes"]
    assert [s["score"] for s in out["scenes"]] == sorted((s["score"] for s in out["scenes"]), reverse=True)


@pytest.mark.slow
def test_cars_finds_exactly_the_street_scene(chain: SampleChain, real_needs: dict[str, Any]) -> None:
    out = _aggregate_real(chain, "find scenes with cars", real_needs)
    assert _spans(out) == [(5.0, 10.0)]
    [scene] = out["scenes"]
    assert scene["clip_index"] == 1 and scene["objects"].keys() == {"car"} and scene["objects"]["car"] >= 0.4
    assert scene["matched_words"] == ["car"]  # "a white car is parked ..." backs the detection up
    assert "car" in scene["transcript"].lower()
    assert scene["links"]["clip"] == LocalStore(str(chain.store_dir)).link(chain.split["clips"][1]["key"])
    assert scene["links"]["transcript"].endswith("/transcribe/00001/transcript.json")
    keyframes = scene["links"]["keyframes"]
    assert keyframes and all(Path(k.removeprefix("file://")).is_file() for k in keyframes)
    car = scene["evidence"]["objects"]["car"]
    assert car["keyframe"] in keyframes and len(car["box"]) == 4 and 5.0 <= car["t_s"] < 10.0
    [spoken] = scene["evidence"]["words"]
    assert spoken["word"] == "car" and 5.0 <= spoken["start_s"] < spoken["end_s"] <= 10.0
    assert scene["evidence"]["attempts"] == {"transcribe": 1, "detect": 1}


@pytest.mark.slow
def test_carrot_does_not_match_the_car_transcript(chain: SampleChain, real_needs: dict[str, Any]) -> None:
    out = _aggregate_real(chain, "carrot", real_needs)
    assert out["parsed_query"] == {"objects": ["carrot"], "words": []}
    assert out["scenes"] == []
    out = _aggregate_real(chain, 'someone says "carrot"', real_needs)
    assert all(s["matched_words"] == [] for s in out["scenes"])


@pytest.mark.slow
def test_every_clip_is_listed(chain: SampleChain, real_needs: dict[str, Any]) -> None:
    out = _aggregate_real(chain, None, real_needs)
    assert out["scenes"] == [] and out["query"] is None and out["request_id"] == chain.request_id
    assert [(c["index"], c["start_s"], c["end_s"]) for c in out["clips"]] == [
        (0, 0.0, 5.0),
        (1, 5.0, 10.0),
        (2, 10.0, 15.0),
        (3, 15.0, 20.0),
    ]
    assert "person" in out["clips"][0]["objects"] and "cup" in out["clips"][3]["objects"]
    assert out["clips"][3]["transcript"] == "" and out["clips"][3]["speech_detected"] is False
    assert all(c["missing"] == [] for c in out["clips"])


# -- hand-made inputs shaped like the real ones (no models) --------------------------------------------

CLIPS = [(0.0, 5.0), (5.0, 10.0), (10.0, 15.0), (15.0, 20.0)]
TEXTS = [
    "Hello world, my name is Eileen.",
    "Look, a white car is parked behind the bicycle.",
    "The cat is looking at the camera.",
    "",
]
OBJECTS: list[dict[str, float]] = [
    {"person": 0.72},
    {"bicycle": 0.95, "dog": 0.9, "car": 0.89},
    {"cat": 0.94},
    {"cup": 0.94, "spoon": 0.65, "dining table": 0.56},
]


def _needs() -> dict[str, Any]:
    clips = [{"index": i, "start_s": s, "end_s": e, "key": f"clips/{i}.mp4"} for i, (s, e) in enumerate(CLIPS)]
    transcribe, detect = [], []
    for i, ((start, _), text, objects) in enumerate(zip(CLIPS, TEXTS, OBJECTS, strict=True)):
        words = [
            {"word": w, "start_s": start + 0.6 + 0.3 * n, "end_s": start + 0.9 + 0.3 * n, "probability": 0.9}
            for n, w in enumerate(text.split())
        ]
        transcribe.append(
            {
                "text": text,
                "words": words,
                "speech_detected": bool(text),
                "transcript_key": f"t/{i}.json",
                "attempt": 1,
            }
        )
        frame = {
            "t_s": start + 1,
            "key": f"k/{i}.jpg",
            "annotated_key": f"a/{i}.jpg",
            "detections": [{"label": k, "score": v, "box": [1, 2, 3, 4]} for k, v in objects.items()],
        }
        detect.append({"frames": [frame], "objects": objects, "model": "ssd", "attempt": 2})
    return {"split": {"clips": clips}, "transcribe": transcribe, "detect": detect}


def test_nothing_matches_is_not_an_error(local_store: LocalStore) -> None:
    out = _aggregate(local_store, "find scenes with a giraffe", _needs())
    assert out["parsed_query"] == {"objects": ["giraffe"], "words": []}
    assert out["scenes"] == [] and len(out["clips"]) == 4


@pytest.mark.parametrize("query", [None, "", "   ", "find scenes with"])
def test_empty_query_lists_clips_only(local_store: LocalStore, query: str | None) -> None:
    out = _aggregate(local_store, query, _needs())
    assert out["scenes"] == [] and out["parsed_query"] == {"objects": [], "words": []}
    assert [c["objects"] for c in out["clips"]] == OBJECTS
    assert [c["transcript"] for c in out["clips"]] == TEXTS


def test_failed_clips_are_null_and_reported(local_store: LocalStore) -> None:
    needs = _needs()
    needs["detect"][1] = None  # the street scene's detect failed within the tolerated failures
    needs["transcribe"][2] = None
    out = _aggregate(local_store, "car", needs)
    # The car is no longer seen, but it is still heard: a weaker match.
    [scene] = out["scenes"]
    assert scene["clip_index"] == 1 and scene["score"] == 0.5 and scene["objects"] == {}
    assert scene["matched_words"] == ["car"]
    assert out["clips"][1]["missing"] == ["detect"] and out["clips"][2]["missing"] == ["transcribe"]
    assert out["clips"][2]["transcript"] == "" and out["clips"][1]["links"]["keyframes"] == []


def test_more_matched_terms_rank_higher(local_store: LocalStore) -> None:
    out = _aggregate(local_store, "a cat or someone saying hello", _needs())
    assert out["parsed_query"] == {"objects": ["cat", "person"], "words": ["hello"]}
    # clip 0: person + hello (2 of 3 terms); clip 2: cat + spoken "cat"; clip 1: "cat" nowhere
    assert [s["clip_index"] for s in out["scenes"]] == [0, 2]
    assert out["scenes"][0]["matched_words"] == ["hello"]


def test_vehicle_means_motor_vehicles(local_store: LocalStore) -> None:
    out = _aggregate(local_store, "vehicles", _needs())
    assert out["parsed_query"]["objects"] == ["car", "truck", "bus", "motorcycle"]
    assert [s["clip_index"] for s in out["scenes"]] == [1]
    assert out["scenes"][0]["objects"] == {"car": 0.89}


def test_links_attempts_and_max_scenes(local_store: LocalStore) -> None:
    out = _aggregate(local_store, "cat cup person", _needs(), max_scenes=2)
    assert len(out["scenes"]) == 2
    scene = out["scenes"][0]
    assert scene["links"]["clip"] == local_store.link(f"clips/{scene['clip_index']}.mp4")
    assert scene["links"]["keyframes"] == [local_store.link(f"a/{scene['clip_index']}.jpg")]
    assert scene["links"]["transcript"] == local_store.link(f"t/{scene['clip_index']}.json")
    assert scene["evidence"]["attempts"] == {"transcribe": 1, "detect": 2}


def test_clip_times_fall_back_to_the_echoed_clip(local_store: LocalStore) -> None:
    needs = _needs()
    needs["transcribe"][3]["clip"] = {"index": 3, "start_s": 15.0, "end_s": 20.0, "key": "clips/3.mp4"}
    needs["split"]["clips"] = needs["split"]["clips"][:3]  # split's list shorter than the fan-out
    out = _aggregate(local_store, "cup", copy.deepcopy(needs))
    assert _spans(out) == [(15.0, 20.0)] and out["scenes"][0]["clip_index"] == 3
