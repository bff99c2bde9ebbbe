"""Writes week1.json and week2.json (run from this folder: ``python generate.py``; deterministic).

week1: 200 catalogue entries. week2: the same catalogue a week later: 6 entries changed (a price, a name, a
stock level), 3 added, 2 removed; every other entry is byte-for-byte the same (and in the same order)."""

import json
import random
from pathlib import Path

CATEGORIES = ("books", "food", "garden", "kitchen", "toys")
WORDS = ("oak", "linen", "amber", "river", "copper", "meadow", "slate", "willow", "cedar", "harbor", "maple", "quartz")


def entry(rng: random.Random, n: int) -> dict[str, object]:
    name = f"{rng.choice(WORDS)}  {rng.choice(WORDS)} {rng.choice(('set', 'box', 'kit', 'pack', 'jar'))}"
    return {
        "id": f"SKU-{n:05d}",
        "name": name if n % 7 else name.upper(),  # some names arrive in capitals and with double spaces
        "category": CATEGORIES[n % len(CATEGORIES)],
        "price_cents": rng.randrange(199, 19_999),
        "stock": rng.randrange(0, 120),
    }


def main() -> None:
    rng = random.Random(13)
    week1 = [entry(rng, n) for n in range(1, 201)]
    week2 = [dict(e) for e in week1]
    week2[4]["price_cents"] = int(week2[4]["price_cents"]) + 100
    week2[40]["name"] = "willow tea set"
    week2[77]["stock"] = 0
    week2[120]["price_cents"] = 999
    week2[150]["category"] = "garden"
    week2[199]["name"] = "meadow seed pack"
    del week2[60]  # SKU-00061
    del week2[10]  # SKU-00011
    week2 += [entry(rng, n) for n in (201, 202, 203)]
    here = Path(__file__).parent
    for name, entries in (("week1", week1), ("week2", week2)):
        doc = {"catalogue": name, "entries": entries}
        (here / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
