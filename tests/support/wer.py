"""Word error rate, the transcript measure of the transcribe stage's tests and of the end-to-end runs.

Its own module (no ``fave`` import) so the stage tests also run where only the stage functions' packages are
installed: the Lambda-Python virtualenv ``.venv-py312`` (see ``./dev``).
"""

from __future__ import annotations

import re


def words_of(text: str) -> list[str]:
    """Lower-case words without punctuation (how WER is usually scored)."""
    return re.findall(r"[a-z0-9']+", text.lower())


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance / number of reference words."""
    ref, hyp = words_of(reference), words_of(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(len(ref), 1)
