"""Whole-word, case- and punctuation-insensitive matching of words and phrases in transcripts.

Text is reduced to a list of word tokens (lower case, accents kept, punctuation dropped, inner
apostrophes kept: "don't" is one token). A query word matches a token only when they are equal, so
"car" never matches "carrot", "cars" or "scar"; a phrase matches a run of consecutive tokens.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


def normalize(text: str) -> str:
    """Unicode-normalised, lower-cased text with typographic apostrophes made plain."""
    return unicodedata.normalize("NFKC", text).casefold().translate(_APOSTROPHES)


def tokenize(text: str) -> list[str]:
    """The word tokens of ``text`` (see the module docstring for what a token is)."""
    return _WORD.findall(normalize(text))


def find_phrase(tokens: Sequence[str], phrase: Sequence[str]) -> list[int]:
    """Start positions where ``phrase`` (tokens) occurs as consecutive whole tokens of ``tokens``."""
    n = len(phrase)
    if n == 0:
        return []
    return [i for i in range(len(tokens) - n + 1) if tuple(tokens[i : i + n]) == tuple(phrase)]


def contains(text: str, phrase: str) -> bool:
    """True when every word of ``phrase`` occurs, in order and adjacent, as whole words of ``text``."""
    return bool(find_phrase(tokenize(text), tokenize(phrase)))
