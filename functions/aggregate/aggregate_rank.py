"""Score every clip against a parsed query and rank the matches (pure: no I/O).

Each query term scores 0..1 on a clip, and the clip's score is the mean over the terms, so a clip that
satisfies every term outranks one that satisfies some, and stronger evidence outranks weaker:

* object term: the best detector score among its classes; if a form of the word is also spoken, +0.1
  (capped at 1). Spoken but not seen: 0.5, as weaker evidence (the speaker may talk about something off
  screen).
* word term: 1 if any of its forms is spoken (whole words, see aggregate_text), else 0.

A clip matches when its score is above 0. Ties go to the clip matching more terms, then the earlier one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aggregate_contract import AggregateNeeds, ClipRef, DetectResult, TranscribeResult
from aggregate_query import ObjectTerm, ParsedQuery
from aggregate_text import find_phrase, tokenize

SPOKEN_ONLY_SCORE = 0.5
SEEN_AND_SPOKEN_BONUS = 0.1


@dataclass(slots=True)
class BestFrame:
    """Where a label was seen best in a clip."""

    score: float
    t_s: float
    box: list[float]
    keyframe: str | None


@dataclass(slots=True)
class ClipView:
    """One clip with its upstream results joined (keys already turned into links)."""

    index: int
    start_s: float
    end_s: float
    clip_link: str | None = None
    objects: dict[str, float] = field(default_factory=dict)
    best_frames: dict[str, BestFrame] = field(default_factory=dict)
    keyframe_links: list[str] = field(default_factory=list)
    transcript: str = ""
    words: list[dict[str, Any]] = field(default_factory=list)
    speech_detected: bool = False
    transcript_link: str | None = None
    missing: list[str] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class ClipMatch:
    """Why a clip matched: its score, matched labels and words, and the evidence per term."""

    clip: ClipView
    score: float
    terms_matched: int
    objects: dict[str, float]
    matched_words: list[str]
    evidence: dict[str, Any]


def build_views(needs: AggregateNeeds, link: Callable[[str], str]) -> list[ClipView]:
    """Join split's clips with the per-clip transcribe/detect outputs (lists ordered by clip index)."""
    count = max(len(needs.split.clips), len(needs.transcribe), len(needs.detect))
    views: list[ClipView] = []
    for i in range(count):
        split_clip = needs.split.clips[i] if i < len(needs.split.clips) else None
        tr = needs.transcribe[i] if i < len(needs.transcribe) else None
        det = needs.detect[i] if i < len(needs.detect) else None
        ref = split_clip or _echoed_clip(tr, det)
        view = ClipView(
            index=ref.index if ref else i,
            start_s=ref.start_s if ref else 0.0,
            end_s=ref.end_s if ref else 0.0,
            clip_link=link(ref.key) if ref and ref.key else None,
        )
        if det is None:
            view.missing.append("detect")
        else:
            _add_detections(view, det, link)
        if tr is None:
            view.missing.append("transcribe")
        else:
            view.transcript = tr.text
            view.words = [w.model_dump() for w in tr.words]
            view.speech_detected = tr.speech_detected
            view.transcript_link = link(tr.transcript_key) if tr.transcript_key else None
            if tr.attempt is not None:
                view.attempts["transcribe"] = tr.attempt
        views.append(view)
    return views


def _echoed_clip(tr: TranscribeResult | None, det: DetectResult | None) -> ClipRef | None:
    # Without split's entry, fall back to the clip the per-clip stages echo back.
    return (tr.clip if tr else None) or (det.clip if det else None)


def _add_detections(view: ClipView, det: DetectResult, link: Callable[[str], str]) -> None:
    for frame in sorted(det.frames, key=lambda f: f.t_s):
        shown = frame.annotated_key or frame.key
        frame_link = link(shown) if shown else None
        if frame_link:
            view.keyframe_links.append(frame_link)
        for d in frame.detections:
            best = view.best_frames.get(d.label)
            if best is None or d.score > best.score:
                view.best_frames[d.label] = BestFrame(d.score, frame.t_s, d.box, frame_link)
    # The summary is authoritative when frames were trimmed; otherwise it equals the frames' maxima.
    merged = {label: b.score for label, b in view.best_frames.items()}
    for label, score in det.objects.items():
        merged[label] = max(score, merged.get(label, 0.0))
    view.objects = dict(sorted(merged.items(), key=lambda kv: (-kv[1], kv[0])))
    if det.attempt is not None:
        view.attempts["detect"] = det.attempt


def rank(query: ParsedQuery, views: Sequence[ClipView]) -> list[ClipMatch]:
    """The clips matching ``query``, best first (empty for an empty query)."""
    if query.empty:
        return []
    matches = [m for v in views if (m := score_clip(query, v)) is not None]
    return sorted(matches, key=lambda m: (-m.score, -m.terms_matched, m.clip.start_s, m.clip.index))


def score_clip(query: ParsedQuery, clip: ClipView) -> ClipMatch | None:
    """Score one clip (see the module docstring), or None if no term matches it."""
    spoken = _SpokenIndex(clip)
    term_evidence: list[dict[str, Any]] = []
    objects: dict[str, float] = {}
    matched_words: list[str] = []
    word_evidence: list[dict[str, Any]] = []
    total = 0.0
    matched_terms = 0
    for term in query.terms_in_order:
        hits = spoken.find(term.spoken_forms)
        heard = [h["word"] for h in hits]
        if isinstance(term, ObjectTerm):
            seen = {c: clip.objects[c] for c in term.classes if c in clip.objects}
            best = max(seen.values(), default=0.0)
            if best > 0:
                value = min(1.0, best + (SEEN_AND_SPOKEN_BONUS if hits else 0.0))
            else:
                value = SPOKEN_ONLY_SCORE if hits else 0.0
            objects.update(seen)
            entry: dict[str, Any] = {"term": term.text, "kind": "object", "classes": list(term.classes)}
            entry |= {"seen": seen, "heard": heard, "score": round(value, 4)}
        else:
            value = 1.0 if hits else 0.0
            entry = {"term": term.text, "kind": "word", "heard": heard, "score": value}
        term_evidence.append(entry)
        if value > 0:
            matched_terms += 1
            total += value
            matched_words += [w for w in heard if w not in matched_words]
            word_evidence += [h for h in hits if h not in word_evidence]
    if matched_terms == 0:
        return None
    seen_frames = {
        label: {"score": b.score, "t_s": b.t_s, "box": b.box, "keyframe": b.keyframe}
        for label in objects
        if (b := clip.best_frames.get(label)) is not None
    }
    evidence = {"terms": term_evidence, "objects": seen_frames, "words": word_evidence}
    return ClipMatch(
        clip=clip,
        score=round(total / len(query.terms_in_order), 4),
        terms_matched=matched_terms,
        objects=dict(sorted(objects.items(), key=lambda kv: (-kv[1], kv[0]))),
        matched_words=matched_words,
        evidence=evidence,
    )


class _SpokenIndex:
    """A clip's transcript as tokens, each tied to the timed word it came from (when there are words)."""

    def __init__(self, clip: ClipView) -> None:
        self.words = clip.words
        self.tokens: list[str] = []
        self.owner: list[int | None] = []
        if clip.words:
            for i, w in enumerate(clip.words):
                for tok in tokenize(str(w.get("word", ""))):
                    self.tokens.append(tok)
                    self.owner.append(i)
        else:
            self.tokens = tokenize(clip.transcript)
            self.owner = [None] * len(self.tokens)

    def find(self, forms: Sequence[str]) -> list[dict[str, Any]]:
        """Every occurrence of any form, with times when the transcript has timed words."""
        hits: list[dict[str, Any]] = []
        for form in forms:
            phrase = tokenize(form)
            for start in find_phrase(self.tokens, phrase):
                hit: dict[str, Any] = {"word": " ".join(phrase)}
                first, last = self.owner[start], self.owner[start + len(phrase) - 1]
                if first is not None and last is not None:
                    span = self.words[first : last + 1]
                    hit["start_s"] = span[0].get("start_s")
                    hit["end_s"] = span[-1].get("end_s")
                    probs = [w["probability"] for w in span if w.get("probability") is not None]
                    if probs:
                        hit["probability"] = min(probs)
                hits.append(hit)
        return hits
