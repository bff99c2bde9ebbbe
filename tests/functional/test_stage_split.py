"""Stage split: scene cuts on the sample, boundary rules (speech, min/max length), and playable clip files."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import av
import pytest
from fave_shared.store import open_store
from hypothesis import given, settings
from hypothesis import strategies as st
from support.functions import FIXTURES, load_handler
from support.media_samples import SampleChain, invoke, sample_chain, write_scenes, write_video
from support.stage_results import terminal

TRUTH = json.loads((FIXTURES / "scenes20.json").read_text())


@pytest.fixture(scope="session")
def chain(sample_video: Path, tmp_path_factory: pytest.TempPathFactory) -> SampleChain:
    return sample_chain(sample_video, tmp_path_factory.getbasetemp() / "sample-chain")


def clip_facts(data: bytes, path: Path) -> dict[str, Any]:
    """Decode a clip completely: frame count, audio length, keyframe times."""
    path.write_bytes(data)
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        fps = float(video.average_rate or 25)
        frames = sum(1 for _ in container.decode(video))
    samples, rate = 0, 0
    with av.open(str(path)) as container:
        if container.streams.audio:
            rate = container.streams.audio[0].sample_rate
            samples = sum(f.samples for f in container.decode(container.streams.audio[0]))
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        video.codec_context.skip_frame = "NONKEY"
        keys = [round(float(f.time), 3) for f in container.decode(video)]
    return {"frames": frames, "fps": fps, "audio_s": samples / rate if rate else 0.0, "keyframes": keys}


def gop_packets(data: bytes, path: Path, start_s: float = 0.0, end_s: float = math.inf) -> list[bytes]:
    """The video packets (decode order) of the GOPs whose keyframe lies in [start_s, end_s)."""
    path.write_bytes(data)
    packets, keep = [], False
    with av.open(str(path)) as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.pts is None:
                continue
            if packet.is_keyframe:
                keep = start_s - 1e-3 <= float(packet.pts * packet.time_base) < end_s - 1e-3
            if keep:
                packets.append(bytes(packet))
    return packets


def is_copy(store: Any, normalized_key: str, clip: dict[str, Any], tmp_path: Path) -> bool:
    """Whether the clip's video is the normalized video's own packets for its span (a stream copy)."""
    mine = gop_packets(store.get(clip["key"]).data, tmp_path / "clip.mp4")
    source = gop_packets(store.get(normalized_key).data, tmp_path / "norm.mp4", clip["start_s"], clip["end_s"])
    return mine == source


def edges(clips: list[dict[str, Any]]) -> list[float]:
    """Every clip's start, then the last one's end."""
    return [c["start_s"] for c in clips] + [clips[-1]["end_s"]]


def check_exact(store: Any, clip: dict[str, Any], tmp_path: Path) -> None:
    """The clip file holds exactly its frames and its audio, with a keyframe every second from its start."""
    facts = clip_facts(store.get(clip["key"]).data, tmp_path / "clip.mp4")
    length = clip["end_s"] - clip["start_s"]
    assert facts["frames"] == round(length * facts["fps"]), clip
    assert facts["audio_s"] == pytest.approx(length, abs=0.05), clip
    assert facts["keyframes"] == [float(s) for s in range(math.ceil(length - 1e-6))], clip


@pytest.fixture(scope="module")
def scenes_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """7 s with hard cuts at 2.36 and 4.72 s: off the one-second grid of normalize's keyframes."""
    return write_scenes(tmp_path_factory.mktemp("scenes") / "cuts.mp4", cuts_s=[2.36, 4.72], duration_s=7.0)


# -- the sample ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sample_cuts_match_ground_truth(chain: SampleChain) -> None:
    out = chain.split
    assert out["cuts_s"] == pytest.approx(TRUTH["scene_cuts_s"], abs=0.05)
    bounds = [c["start_s"] for c in out["clips"][1:]]
    assert bounds == pytest.approx(TRUTH["scene_cuts_s"], abs=0.3)
    assert [c["reason"] for c in out["clips"]] == ["scene_cut", "scene_cut", "scene_cut", "end"]
    assert out["clips"][0]["start_s"] == 0.0
    assert out["clips"][-1]["end_s"] == pytest.approx(20.0, abs=0.05)
    assert [c["key"] for c in out["clips"]] == [f"requests/sample/clips/{i:05d}.mp4" for i in range(4)]


@pytest.mark.slow
def test_sample_clips_are_playable_with_the_right_length(chain: SampleChain, tmp_path: Path) -> None:
    for clip in chain.split["clips"]:
        facts = clip_facts(chain.read(clip["key"]), tmp_path / "clip.mp4")
        length = clip["end_s"] - clip["start_s"]
        assert facts["frames"] == round(length * facts["fps"])
        assert facts["audio_s"] == pytest.approx(length, abs=0.05)
        # One keyframe per second, as extract expects.
        assert facts["keyframes"] == [float(s) for s in range(math.ceil(length - 1e-6))]


@pytest.mark.slow
def test_sample_clips_are_copied_from_the_normalized_video(chain: SampleChain, tmp_path: Path) -> None:
    # Normalize put a keyframe on each scene cut, so no clip needed decoding or re-encoding.
    store = open_store(str(chain.store_dir))
    assert all(is_copy(store, chain.normalize["video_key"], clip, tmp_path) for clip in chain.split["clips"])


# -- stream copy and re-encoding -----------------------------------------------------------------------


def test_clips_between_scene_cuts_are_copied_and_exact(scenes_video: Path, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    norm = invoke("normalize", store_dir, {"request": {"video_uri": str(scenes_video)}})
    audio = invoke("audio", store_dir, {"needs": {"normalize": norm}})
    out = invoke("split", store_dir, {"needs": {"normalize": norm, "audio": audio}})
    assert out["cuts_s"] == pytest.approx([2.36, 4.72], abs=1e-3)
    clips = out["clips"]
    assert edges(clips) == pytest.approx([0.0, 2.36, 4.72, 7.0])
    store = open_store(str(store_dir))
    for clip in clips:
        assert is_copy(store, norm["video_key"], clip, tmp_path), clip
        check_exact(store, clip, tmp_path)


def test_a_boundary_moved_out_of_speech_is_reencoded(scenes_video: Path, tmp_path: Path) -> None:
    # Someone talks across the 4.72 s cut: the boundary moves to the end of their sentence, 4.92 s (on
    # the frame grid), between two keyframes. The clips on either side of it are re-encoded, the first copied.
    store_dir = tmp_path / "store"
    norm = invoke("normalize", store_dir, {"request": {"video_uri": str(scenes_video)}})
    audio = {"has_audio": True, "speech": [{"start_s": 4.5, "end_s": 4.9}], "energy_key": None}
    clips = invoke("split", store_dir, {"needs": {"normalize": norm, "audio": audio}})["clips"]
    assert edges(clips) == pytest.approx([0.0, 2.36, 4.92, 7.0])
    store = open_store(str(store_dir))
    assert [is_copy(store, norm["video_key"], c, tmp_path) for c in clips] == [True, False, False]
    for clip in clips:
        check_exact(store, clip, tmp_path)


def test_split_finds_the_cuts_itself_when_normalize_did_not_look_for_them(scenes_video: Path, tmp_path: Path) -> None:
    # Normalize looked only for cuts scoring 90 or more (none): it reports none and forces no keyframe.
    # Split's threshold is 10, so it runs scdet over the video itself, and must re-encode where it cuts.
    store_dir = tmp_path / "store"
    norm = invoke(
        "normalize", store_dir, {"request": {"video_uri": str(scenes_video)}, "config": {"scene_threshold": 90}}
    )
    audio = invoke("audio", store_dir, {"needs": {"normalize": norm}})
    for normalize_out in (norm, {k: v for k, v in norm.items() if k != "scenes"}):  # also: no scenes at all
        out = invoke("split", store_dir, {"needs": {"normalize": normalize_out, "audio": audio}})
        assert out["cuts_s"] == pytest.approx([2.36, 4.72], abs=1e-3)
        clips = out["clips"]
        assert edges(clips) == pytest.approx([0.0, 2.36, 4.72, 7.0])
        store = open_store(str(store_dir))
        assert not any(is_copy(store, norm["video_key"], c, tmp_path) for c in clips)
        for clip in clips:
            check_exact(store, clip, tmp_path)


def test_clips_asked_for_another_gop_are_reencoded(scenes_video: Path, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    norm = invoke("normalize", store_dir, {"request": {"video_uri": str(scenes_video)}})
    audio = invoke("audio", store_dir, {"needs": {"normalize": norm}})
    out = invoke("split", store_dir, {"needs": {"normalize": norm, "audio": audio}, "config": {"gop_s": 0.4}})
    first = out["clips"][0]
    assert not is_copy(open_store(str(store_dir)), norm["video_key"], first, tmp_path)
    facts = clip_facts(open_store(str(store_dir)).get(first["key"]).data, tmp_path / "c.mp4")
    assert facts["keyframes"] == [0.0, 0.4, 0.8, 1.2, 1.6, 2.0]
    assert facts["frames"] == 59


@pytest.mark.slow
def test_cut_inside_speech_moves_to_its_edge(chain: SampleChain) -> None:
    # Pretend someone talks across the 10 s scene cut: the clip boundary must not split their sentence.
    audio = {"has_audio": True, "speech": [{"start_s": 9.2, "end_s": 10.4}], "energy_key": None}
    out = chain.run("split", {"needs": {"normalize": chain.normalize, "audio": audio}}, request_id="talk")
    assert out["cuts_s"] == pytest.approx([5.0, 10.0, 15.0], abs=0.05)
    assert [c["start_s"] for c in out["clips"][1:]] == pytest.approx([5.0, 10.4, 15.0], abs=0.021)


@pytest.mark.slow
def test_max_length_splits_at_quiet_points(chain: SampleChain) -> None:
    # Every 5 s scene must split in two; each one's speech leaves a quiet spot inside the legal range.
    config = {"min_clip_s": 1.0, "max_clip_s": 4.0}
    needs = {"normalize": chain.normalize, "audio": chain.audio}
    out = chain.run("split", {"needs": needs, "config": config}, request_id="short-clips")
    clips = out["clips"]
    assert all(1.0 - 1e-6 <= c["end_s"] - c["start_s"] <= 4.0 + 1e-6 for c in clips)
    assert [c["reason"] for c in clips] == ["max_length", "scene_cut"] * 3 + ["max_length", "end"]
    assert {5.0, 10.0, 15.0} <= {c["end_s"] for c in clips}  # the scene cuts stay
    speech = chain.audio["speech"]
    for c in clips:
        if c["reason"] == "max_length":
            assert not any(s["start_s"] < c["end_s"] < s["end_s"] for s in speech), c
    assert [c["index"] for c in clips] == list(range(len(clips)))
    assert clips[0]["key"] == "requests/short-clips/clips/00000.mp4"

    # Re-running with the default limits replaces the clip set: no stale clip files are left behind.
    again = chain.run("split", {"needs": needs}, request_id="short-clips")
    assert len(again["clips"]) == 4
    stored = list(open_store(str(chain.store_dir)).list("requests/short-clips/clips/"))
    assert stored == [f"requests/short-clips/clips/{i:05d}.mp4" for i in range(4)]
    assert all(a["end_s"] == b["start_s"] for a, b in itertools.pairwise(clips))


def test_video_without_audio_splits_on_picture_only(tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = write_video(tmp_path / "mute.mp4", duration_s=3.0, audio=False)
    norm = invoke("normalize", store, {"request": {"video_uri": str(src)}})
    silent = invoke("audio", store, {"needs": {"normalize": norm}})
    out = invoke("split", store, {"needs": {"normalize": norm, "audio": silent}})
    assert out["cuts_s"] == []
    assert [(c["start_s"], c["end_s"], c["reason"]) for c in out["clips"]] == [(0.0, 3.0, "end")]
    facts = clip_facts(open_store(str(store)).get(out["clips"][0]["key"]).data, tmp_path / "c.mp4")
    assert facts["frames"] == 30
    assert facts["audio_s"] == 0.0


def test_config_must_allow_a_legal_split(tmp_path: Path) -> None:
    result = invoke(
        "split",
        tmp_path,
        {
            "needs": {"normalize": {"video_key": "x", "normalized": {"fps": 25}}},
            "config": {"min_clip_s": 2, "max_clip_s": 3},
        },
    )
    terminal(result, "ValidationError", match=r"max_clip_s \(3\.0\) must be at least 2 x min_clip_s \(2\.0\)")


# -- planning rules (pure) -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plan() -> Any:
    load_handler("split")  # puts functions/split on sys.path
    import split_plan

    return split_plan


def spans(clips: list[Any]) -> list[tuple[float, float, str]]:
    return [(c.start_s, c.end_s, c.reason) for c in clips]


def test_plan_without_cuts_is_one_clip(plan: Any) -> None:
    params = plan.PlanParams(min_clip_s=2, max_clip_s=30, fps=25)
    assert spans(plan.plan_clips(12.0, [], [], params)) == [(0.0, 12.0, "end")]
    # Shorter than min_clip_s is still one clip: there is nothing to merge it with.
    assert spans(plan.plan_clips(1.0, [0.5], [], params)) == [(0.0, 1.0, "end")]


def test_plan_moves_cut_to_nearer_speech_edge(plan: Any) -> None:
    params = plan.PlanParams(min_clip_s=1, max_clip_s=30, fps=25)
    speech = [(4.0, 5.4), (9.5, 12.0)]
    clips = plan.plan_clips(20.0, [5.0, 10.0], speech, params)
    # 9.5 s falls between frames (9.48, 9.52): the cut takes the frame before the speech starts.
    assert spans(clips) == [(0.0, 5.4, "scene_cut"), (5.4, 9.48, "scene_cut"), (9.48, 20.0, "end")]


def test_plan_merges_short_clip_into_shorter_neighbour(plan: Any) -> None:
    params = plan.PlanParams(min_clip_s=2, max_clip_s=30, fps=25)
    # Clips 0-6, 6-7 (short), 7-10, 10-20: the short one joins 7-10 (shorter than 0-6).
    clips = plan.plan_clips(20.0, [6.0, 7.0, 10.0], [], params)
    assert spans(clips) == [(0.0, 6.0, "scene_cut"), (6.0, 10.0, "scene_cut"), (10.0, 20.0, "end")]


def test_plan_splits_long_clip_in_silence(plan: Any) -> None:
    params = plan.PlanParams(min_clip_s=2, max_clip_s=10, fps=25)
    # 0-16 s of talk with one pause at 6.0-6.6 s; the energy envelope is quiet there too.
    speech = [(0.5, 6.0), (6.6, 15.5)]
    energy = plan.Energy(hop_s=0.1, rms_db=[-20.0] * 60 + [-90.0] * 6 + [-20.0] * 94)
    clips = plan.plan_clips(16.0, [], speech, params, energy)
    assert len(clips) == 2
    assert clips[0].reason == "max_length"
    assert 6.0 <= clips[0].end_s <= 6.6


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(
    duration=st.floats(0.5, 300.0),
    cuts=st.lists(st.floats(0.0, 300.0), max_size=30),
    speech_raw=st.lists(st.tuples(st.floats(0.0, 300.0), st.floats(0.05, 20.0)), max_size=20),
    min_clip=st.floats(0.0, 5.0),
    extra=st.floats(0.0, 60.0),
    fps=st.sampled_from([10.0, 24.0, 25.0, 29.97, 30.0]),
)
def test_plan_invariants(
    plan: Any,
    *,
    duration: float,
    cuts: list[float],
    speech_raw: list[tuple[float, float]],
    min_clip: float,
    extra: float,
    fps: float,
) -> None:
    max_clip = max(2 * min_clip, 0.5) + extra
    params = plan.PlanParams(min_clip_s=min_clip, max_clip_s=max_clip, fps=fps)
    speech = [(s, s + d) for s, d in speech_raw]
    clips = plan.plan_clips(duration, cuts, speech, params)
    end = round(duration * fps) / fps
    assert clips[0].start_s == 0.0
    assert clips[-1].end_s == pytest.approx(end, abs=1e-6)
    assert clips[-1].reason == "end"
    frame = 1 / fps
    for a, b in itertools.pairwise(clips):
        assert a.end_s == b.start_s  # contiguous, no gap, no overlap
    for c in clips:
        length = c.end_s - c.start_s
        assert length > 0
        assert length <= max_clip + frame  # snapping to the frame grid may add up to one frame
        if len(clips) > 1:
            assert length >= min_clip - frame
        assert abs(c.start_s * fps - round(c.start_s * fps)) < 1e-3  # on the frame grid
