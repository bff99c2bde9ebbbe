"""Parse a free-text query into object classes to look for and words to listen for.

Rules, applied left to right over the lower-cased query:

1. Quoted text ("..." or '...', straight or typographic quotes) is a spoken phrase, matched as
   consecutive whole words: ``say "white car"``.
2. A speech verb (say, says, said, saying, mention..., talk..., speak..., spoke, spoken, utter...,
   hear..., word(s), phrase) switches to *speech mode*: the words after it are spoken words, even if
   they name objects (``someone says cat`` listens for "cat" and does not look for cats). Fillers after
   the verb (about, of, the, word, that, ...) are skipped.
3. Speech mode ends at a boundary: punctuation or one of and / or / but / with / while / where / when /
   then / plus.
4. Outside speech mode, the longest run of words (up to 3) that names a COCO class, a plural or a
   synonym (see aggregate_vocab: cars -> car, puppy -> dog, people/man/someone -> person,
   vehicle -> car/truck/bus/motorcycle) is an object term. An object term is also listened for in the
   transcript (its singular and plural forms), as weaker evidence than seeing it.
5. Otherwise stop-words (find, show, scenes, with, where, does, look for, ...) are dropped, and every
   other word is a spoken word: ``hello`` listens for "hello".

Unsupported on purpose: negation ("without cars" looks for cars), boolean precedence, and fuzzy or
stemmed speech matching ("parking" does not match "parked").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aggregate_text import normalize, tokenize
from aggregate_vocab import lookup, max_phrase_words, plural

SPEECH_VERBS = frozenset(
    {
        "say", "says", "said", "saying", "mention", "mentions", "mentioned", "mentioning",
        "talk", "talks", "talked", "talking", "speak", "speaks", "speaking", "spoke", "spoken",
        "utter", "utters", "uttered", "uttering", "hear", "hears", "heard", "hearing",
        "word", "words", "phrase", "phrases", "pronounce", "pronounces", "pronounced",
    }
)  # fmt: skip

BOUNDARIES = frozenset({"and", "or", "but", "with", "while", "where", "when", "then", "plus"})

# Skipped right after a speech verb: "talks about the word hello" listens for "hello" only.
SPEECH_FILLERS = frozenset(
    {
        "a",
        "an",
        "the",
        "about",
        "of",
        "that",
        "this",
        "word",
        "words",
        "phrase",
        "something",
        "like",
        "out",
        "loud",
    }
)

STOP_WORDS = frozenset(
    {
        "a", "an", "the", "find", "finds", "show", "shows", "showing", "me", "us", "give", "get", "list",
        "search", "searching", "for", "all", "any", "every", "some", "each", "scene", "scenes", "clip",
        "clips", "shot", "shots", "moment", "moments", "part", "parts", "segment", "segments", "frame",
        "frames", "video", "videos", "footage", "with", "where", "when", "what", "which", "who", "whose",
        "that", "there", "here", "is", "are", "was", "were", "be", "been", "being", "does", "do", "did",
        "has", "have", "had", "having", "in", "on", "at", "of", "to", "from", "by", "about", "and", "or",
        "but", "it", "its", "this", "these", "those", "them", "they", "their", "please", "can", "could",
        "would", "you", "i", "we", "my", "our", "your", "containing", "contains", "contain", "featuring",
        "features", "feature", "appear", "appears", "appearing", "visible", "seen", "see", "sees",
        "also", "both", "either", "one", "ones", "something", "anything", "thing", "things", "while",
        "then", "plus", "want", "need", "like", "just", "only", "somewhere", "anywhere", "time", "times",
        "s", "lot", "lots", "many", "much", "few", "several", "two", "three", "other", "how",
    }
)  # fmt: skip

# "look for" / "looking at" are how people ask; "look" alone stays a word someone may say.
_STOP_BIGRAMS = frozenset({("look", "for"), ("looking", "for"), ("look", "at"), ("looking", "at"), ("search", "for")})

# Single quotes double as apostrophes: inside '...' an apostrophe between letters ("don't") is text.
_QUOTED = re.compile(r"\"([^\"]*)\"|(?<!\w)'((?:[^']|(?<=\w)'(?=\w))*)'(?!\w)")
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[,;:.!?]")
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"'})


@dataclass(frozen=True, slots=True)
class ObjectTerm:
    """Something to see: ``text`` as typed, the detector ``classes`` it means, and how it sounds."""

    text: str
    classes: tuple[str, ...]
    spoken_forms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WordTerm:
    """Something to hear: a word or phrase, matched as whole words in any of its ``forms``.

    ``forms`` is just ``(text,)`` unless the word is an object noun, whose singular and plural both
    count ("talk about cats" hears "cat").
    """

    text: str
    forms: tuple[str, ...] = ()

    @property
    def spoken_forms(self) -> tuple[str, ...]:
        return self.forms or (self.text,)


@dataclass(frozen=True, slots=True)
class ParsedQuery:
    """The terms of a query, in the order they were typed, without duplicates."""

    objects: tuple[ObjectTerm, ...] = ()
    words: tuple[WordTerm, ...] = ()
    terms_in_order: tuple[ObjectTerm | WordTerm, ...] = field(default=(), repr=False)

    @property
    def empty(self) -> bool:
        return not self.objects and not self.words

    @property
    def object_classes(self) -> list[str]:
        """Every class any object term names, in order, without duplicates."""
        return list(dict.fromkeys(c for t in self.objects for c in t.classes))

    def as_dict(self) -> dict[str, list[str]]:
        """The ``parsed_query`` of the final result: class names and spoken words."""
        return {"objects": self.object_classes, "words": [w.text for w in self.words]}


def parse_query(query: str | None) -> ParsedQuery:
    """Split ``query`` into object terms and spoken-word terms (rules in the module docstring)."""
    if not query or not query.strip():
        return ParsedQuery()
    text = normalize(query).translate(_QUOTES)
    terms: list[ObjectTerm | WordTerm] = []
    # Quoted phrases first; each leaves a boundary behind so the words around it do not join up.
    pos = 0
    for m in _QUOTED.finditer(text):
        terms += _parse_unquoted(text[pos : m.start()])
        phrase = " ".join(tokenize(m.group(1) if m.group(1) is not None else m.group(2)))
        if phrase:
            terms.append(WordTerm(phrase))
        pos = m.end()
    terms += _parse_unquoted(text[pos:])

    unique = list(dict.fromkeys(terms))
    return ParsedQuery(
        objects=tuple(t for t in unique if isinstance(t, ObjectTerm)),
        words=tuple(t for t in unique if isinstance(t, WordTerm)),
        terms_in_order=tuple(unique),
    )


def _parse_unquoted(text: str) -> list[ObjectTerm | WordTerm]:
    tokens = _TOKEN.findall(text)
    terms: list[ObjectTerm | WordTerm] = []
    speech = False
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok[0].isalnum() or tok in BOUNDARIES:
            speech = False
            i += 1
        elif tok in SPEECH_VERBS:
            speech = True
            i += 1
        elif speech:
            if tok not in SPEECH_FILLERS:
                terms.append(_word_term(tok))
            i += 1
        elif tuple(tokens[i : i + 2]) in _STOP_BIGRAMS:
            i += 2
        elif (found := _longest_object(tokens, i)) is not None:
            term, used = found
            terms.append(term)
            i += used
        else:
            if tok not in STOP_WORDS:
                terms.append(WordTerm(tok))
            i += 1
    return terms


def _word_term(word: str) -> WordTerm:
    entry = lookup(word)
    if entry is None:
        return WordTerm(word)
    return WordTerm(word, tuple(dict.fromkeys((word, entry.lemma, plural(entry.lemma)))))


def _longest_object(tokens: list[str], start: int) -> tuple[ObjectTerm, int] | None:
    for n in range(min(max_phrase_words(), len(tokens) - start), 0, -1):
        words = tokens[start : start + n]
        if not all(w[0].isalnum() for w in words):
            continue
        phrase = " ".join(words)
        entry = lookup(phrase)
        if entry is not None:
            forms = tuple(dict.fromkeys((phrase, entry.lemma, plural(entry.lemma))))
            return ObjectTerm(phrase, entry.classes, forms), n
    return None
