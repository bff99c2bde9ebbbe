"""transcribe: speech to text for one clip (faster-whisper tiny.en, gated by silero voice activity).

No speech (no audio track, or the VAD hears none) gives an empty transcript: nothing is ever invented on
silence. Output times are absolute seconds in the source video.
"""

from __future__ import annotations

import logging

from fave_shared.stage import StageContext, stage
from transcribe_audio import Region, load_vad, read_wav, speech_regions
from transcribe_contract import Segment, SpeechRegion, TranscribeConfig, TranscribeInput, TranscribeOutput, Word
from transcribe_whisper import MODEL_NAME, Transcript, load_model, transcribe_regions

ARTIFACT = "transcript.json"


def _load_models() -> None:
    """Load both models in the environment's init phase, so its first clip does not wait for them (and a
    pre-warmed environment has them ready). A failure here is left for the first invocation to report."""
    try:
        load_vad()
        load_model(TranscribeConfig().cpu_threads)
    except Exception:
        logging.getLogger(__name__).warning("models not loaded at init", exc_info=True)


_load_models()


@stage(TranscribeInput)
def handler(inp: TranscribeInput, ctx: StageContext) -> TranscribeOutput:
    """Transcribe the clip's speech regions and store the whole transcript as a JSON artifact."""
    extract, cfg = inp.needs.extract, inp.config
    transcript, regions = Transcript(), list[Region]()
    if extract.wav_key and extract.has_audio:
        samples = read_wav(ctx.fetch(extract.wav_key))
        regions = speech_regions(
            samples,
            threshold=cfg.vad_threshold,
            min_speech_s=cfg.min_speech_s,
            min_silence_s=cfg.min_silence_s,
            pad_s=cfg.pad_s,
        )
        if regions:
            transcript = transcribe_regions(samples, regions, cpu_threads=cfg.cpu_threads, beam_size=cfg.beam_size)

    # The WAV starts at the clip's start: shift every time to the source video's clock.
    offset = extract.clip.start_s

    def at(t: float) -> float:
        return round(offset + t, 3)

    out = TranscribeOutput(
        clip=extract.clip,
        text=transcript.text,
        words=[
            Word(word=w["word"], start_s=at(w["start_s"]), end_s=at(w["end_s"]), probability=w["probability"])
            for w in transcript.words
        ],
        segments=[Segment(start_s=at(s["start_s"]), end_s=at(s["end_s"]), text=s["text"]) for s in transcript.segments],
        speech=[SpeechRegion(start_s=at(r.start_s), end_s=at(r.end_s)) for r in regions],
        speech_detected=bool(regions),
        transcript_key=ctx.key(ARTIFACT),
        model=MODEL_NAME,
        attempt=ctx.task.attempt,
    )
    ctx.put_bytes(ARTIFACT, out.model_dump_json(indent=1).encode(), "application/json")
    return out
