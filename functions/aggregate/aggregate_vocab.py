"""The object vocabulary of queries: COCO class names, their plurals and common synonyms.

``lookup(phrase)`` maps what a person types ("cars", "puppy", "mobile phone") to detector class names.
The 80 class names are the ones ssd_mobilenet_v2_coco can report (functions/detect/detect_coco.py holds
the detector's id table; a unit test keeps the two in step).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

CLASS_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag",
    "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat",
    "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog",
    "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet", "tv",
    "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

_MOTOR_VEHICLES = ("car", "truck", "bus", "motorcycle")
_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe")

# Singular synonym -> classes. Plurals are generated (see ``plural``) unless listed in _IRREGULAR.
# "vehicle" means a motor vehicle on a road: car, truck, bus, motorcycle (not bicycle, boat, train or
# airplane, which people name when they mean them).
SYNONYMS: dict[str, tuple[str, ...]] = {
    # people
    "people": ("person",), "human": ("person",), "man": ("person",), "woman": ("person",),
    "someone": ("person",), "somebody": ("person",), "anyone": ("person",), "anybody": ("person",),
    "child": ("person",), "kid": ("person",), "boy": ("person",), "girl": ("person",),
    "guy": ("person",), "lady": ("person",), "pedestrian": ("person",), "astronaut": ("person",),
    # vehicles
    "bike": ("bicycle",), "cycle": ("bicycle",), "automobile": ("car",), "auto": ("car",),
    "sedan": ("car",), "taxi": ("car",), "vehicle": _MOTOR_VEHICLES, "motorbike": ("motorcycle",),
    "scooter": ("motorcycle",), "plane": ("airplane",), "aeroplane": ("airplane",),
    "aircraft": ("airplane",), "jet": ("airplane",), "lorry": ("truck",), "pickup": ("truck",),
    "ship": ("boat",), "locomotive": ("train",), "coach": ("bus",),
    # street
    "traffic signal": ("traffic light",), "hydrant": ("fire hydrant",),
    # animals
    "animal": _ANIMALS, "pet": ("cat", "dog"), "kitten": ("cat",), "kitty": ("cat",),
    "puppy": ("dog",), "pup": ("dog",), "doggy": ("dog",), "pony": ("horse",), "lamb": ("sheep",),
    "cattle": ("cow",), "calf": ("cow",),
    # things people carry
    "bag": ("handbag", "backpack", "suitcase"), "purse": ("handbag",), "rucksack": ("backpack",),
    "luggage": ("suitcase",), "necktie": ("tie",), "ball": ("sports ball",), "football": ("sports ball",),
    "basketball": ("sports ball",), "soccer ball": ("sports ball",), "racket": ("tennis racket",),
    "racquet": ("tennis racket",), "ski": ("skis",),
    # kitchen and food
    "mug": ("cup",), "teacup": ("cup",), "coffee cup": ("cup",), "wineglass": ("wine glass",),
    "doughnut": ("donut",), "hotdog": ("hot dog",), "fridge": ("refrigerator",),
    # furniture and rooms
    "sofa": ("couch",), "table": ("dining table",), "plant": ("potted plant",),
    "houseplant": ("potted plant",), "television": ("tv",), "telly": ("tv",),
    # devices
    "phone": ("cell phone",), "cellphone": ("cell phone",), "mobile phone": ("cell phone",),
    "smartphone": ("cell phone",), "remote control": ("remote",), "notebook computer": ("laptop",),
    "hair dryer": ("hair drier",), "hairdryer": ("hair drier",), "teddy": ("teddy bear",),
}  # fmt: skip

# Plurals the suffix rule gets wrong, and words whose plural is themselves.
_IRREGULAR: dict[str, str] = {
    "person": "persons", "man": "men", "woman": "women", "child": "children", "mouse": "mice",
    "knife": "knives", "sheep": "sheep", "skis": "skis", "scissors": "scissors", "people": "people",
    "cattle": "cattle", "broccoli": "broccoli", "aircraft": "aircraft", "calf": "calves",
    "luggage": "luggage", "lady": "ladies", "pony": "ponies", "puppy": "puppies", "kitty": "kitties",
    "doggy": "doggies", "telly": "tellies", "taxi": "taxis", "hair drier": "hair driers",
    "hair dryer": "hair dryers", "someone": "someone", "somebody": "somebody", "anyone": "anyone",
    "anybody": "anybody",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class VocabEntry:
    """What one surface form means: the classes it names and its singular form (lemma)."""

    classes: tuple[str, ...]
    lemma: str


def plural(phrase: str) -> str:
    """English plural of a noun phrase (its last word), good enough for this vocabulary."""
    if phrase in _IRREGULAR:
        return _IRREGULAR[phrase]
    head, _, last = phrase.rpartition(" ")
    if last.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        last = last[:-1] + "ies"
    elif last.endswith("fe"):
        last = last[:-2] + "ves"
    else:
        last += "s"
    return f"{head} {last}" if head else last


@functools.cache
def vocabulary() -> dict[str, VocabEntry]:
    """Every surface form (singular and plural, one or more words) -> its entry."""
    table: dict[str, VocabEntry] = {}
    for lemma, classes in [*((n, (n,)) for n in CLASS_NAMES), *SYNONYMS.items()]:
        for form in (lemma, plural(lemma)):
            # Class names win over synonyms that happen to share a plural form.
            table.setdefault(form, VocabEntry(classes, lemma))
    return table


@functools.cache
def max_phrase_words() -> int:
    """The longest surface form in words (how far the parser looks ahead)."""
    return max(len(form.split()) for form in vocabulary())


def lookup(phrase: str) -> VocabEntry | None:
    """The entry for a lower-case, single-spaced phrase, or None if it names no object."""
    return vocabulary().get(phrase)
