"""Query parsing and whole-word matching of the aggregate stage (pure functions, no I/O)."""

from __future__ import annotations

import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.functions import FUNCTIONS

if str(FUNCTIONS / "aggregate") not in sys.path:  # the function's sibling modules, as Lambda sees them
    sys.path.insert(0, str(FUNCTIONS / "aggregate"))
if str(FUNCTIONS / "detect") not in sys.path:
    sys.path.insert(0, str(FUNCTIONS / "detect"))

import detect_coco
from aggregate_query import STOP_WORDS, parse_query
from aggregate_text import contains, find_phrase, tokenize
from aggregate_vocab import CLASS_NAMES, lookup, plural, vocabulary


def parsed(query: str | None) -> dict[str, list[str]]:
    return parse_query(query).as_dict()


@pytest.mark.parametrize(
    ("query", "objects", "words"),
    [
        ("find scenes with cars", ["car"], []),
        ("Find scenes with a car.", ["car"], []),
        ("hello", [], ["hello"]),
        ("where does someone say hello", ["person"], ["hello"]),
        ("cat", ["cat"], []),
        ("CUP", ["cup"], []),
        ("carrot", ["carrot"], []),
        ("show me people", ["person"], []),
        ("a man and a woman", ["person"], []),
        ("bikes", ["bicycle"], []),
        ("puppies or kittens", ["dog", "cat"], []),
        ("a mug", ["cup"], []),
        ("automobiles", ["car"], []),
        ("vehicle", ["car", "truck", "bus", "motorcycle"], []),
        ("hot dog", ["hot dog"], []),  # the longest name wins over "dog"
        ("a dog that is hot", ["dog"], ["hot"]),
        ("mobile phones", ["cell phone"], []),
        ("mice", ["mouse"], []),
        ("knives", ["knife"], []),
        ("look for a dog", ["dog"], []),
        ("someone says look", ["person"], ["look"]),
        ("talk about cats", [], ["cats"]),  # a speech verb makes object names spoken words
        ("someone mentions the word bicycle and a dog", ["person", "dog"], ["bicycle"]),
        ('scenes where "white car" is said', [], ["white car"]),
        ("scenes where \u201cmy name\u201d is spoken", [], ["my name"]),
        ("someone saying 'don\u2019t stop'", ["person"], ["don't stop"]),
        ("cars, cars and more cars", ["car"], ["more"]),
        ("", [], []),
        (None, [], []),
        ("find scenes with", [], []),
        ("?!", [], []),
    ],
)
def test_parse_query(query: str | None, objects: list[str], words: list[str]) -> None:
    assert parsed(query) == {"objects": objects, "words": words}


def test_object_terms_are_also_listened_for() -> None:
    [term] = parse_query("find scenes with cars").objects
    assert term.classes == ("car",) and set(term.spoken_forms) == {"cars", "car"}
    [word] = parse_query("talk about cats").words
    assert set(word.spoken_forms) == {"cats", "cat"}
    [word] = parse_query("say hello").words
    assert word.spoken_forms == ("hello",)


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_every_class_name_and_its_plural_parse_to_that_class(name: str) -> None:
    assert parsed(f"find scenes with {name}")["objects"] == [name]
    assert parsed(f"find scenes with {plural(name)}")["objects"] == [name]


def test_vocabulary_agrees_with_the_detector_table() -> None:
    assert set(CLASS_NAMES) == detect_coco.DETECTABLE
    assert all(set(e.classes) <= set(CLASS_NAMES) for e in vocabulary().values())


def test_plural() -> None:
    assert [plural(w) for w in ["car", "bus", "couch", "toothbrush", "lorry", "knife", "wine glass", "toy"]] == [
        "cars",
        "buses",
        "couches",
        "toothbrushes",
        "lorries",
        "knives",
        "wine glasses",
        "toys",
    ]
    assert lookup("people") is not None and lookup("people").classes == ("person",)  # type: ignore[union-attr]


def test_tokenize_and_contains() -> None:
    assert tokenize("Look, a white CAR is parked... don\u2019t!") == [
        "look",
        "a",
        "white",
        "car",
        "is",
        "parked",
        "don't",
    ]
    assert contains("Look, a white car is parked", "car")
    assert contains("Look, a white car is parked", "White Car")
    assert not contains("Look, a white car is parked", "car white")
    assert not contains("a carrot and a scar", "car")
    assert not contains("cars", "car") and not contains("car", "cars")
    assert find_phrase(["a", "b", "a", "b"], ["a", "b"]) == [0, 2]
    assert find_phrase(["a"], []) == []


# -- properties ----------------------------------------------------------------------------------------

# CI shares two cores with other test workers: time limits per example would only add flakiness.
relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10)
affix = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=5)
filler = st.lists(st.sampled_from(["the", "a", "is", "parked", "behind", ",", ".", "!", "-", "\u2014"]), max_size=6)


@relaxed
@given(word, affix, affix, filler)
def test_a_word_never_matches_inside_a_longer_word(w: str, prefix: str, suffix: str, around: list[str]) -> None:
    around = [x for x in around if x != w]  # the filler must not be the word itself
    text = " ".join([*around, w + suffix, *around, prefix + w, *around, prefix + w + suffix])
    assert not contains(text, w)


@relaxed
@given(word, filler, st.sampled_from(["", ",", ".", "!", "?", '"', "'", ")", ";", ":"]))
def test_a_word_matches_whatever_its_case_and_punctuation(w: str, around: list[str], punct: str) -> None:
    text = " ".join([*around, f"({w.upper()}{punct}", *around])
    assert contains(text, w)


@relaxed
@given(st.text(max_size=80))
def test_parsing_never_fails_and_yields_known_classes(query: str) -> None:
    result = parse_query(query)
    assert set(result.object_classes) <= set(CLASS_NAMES)
    assert all(w.text and w.text == w.text.strip() for w in result.words)
    assert len(result.terms_in_order) == len(set(result.terms_in_order))


@relaxed
@given(st.lists(st.sampled_from(sorted(STOP_WORDS)), max_size=8))
def test_stop_words_alone_ask_for_nothing(words: list[str]) -> None:
    # Without a speech verb, "show me the scenes where ..." carries no search term by itself.
    assert parse_query(" ".join(words)).empty
