"""Writes corpora/alphabet.txt: the answer to the classic stateful-LSTM alphabet tutorial.

In that tutorial a model that only learned positions answers "B" after any first letter. Here
every line starts at a random letter and runs on to Z, so the only way to predict well is to
learn "after K comes L" for every letter: `chargen sample --seed K` must print LMNOP...

Run: python corpora/make_alphabet.py  (deterministic: the same file every time)
"""

import random
import string
from pathlib import Path

LINES = 3000


def make(lines: int = LINES, seed: int = 26) -> str:
    rng = random.Random(seed)
    letters = string.ascii_uppercase
    return "".join(letters[rng.randrange(26):] + "\n" for _ in range(lines))


if __name__ == "__main__":
    out = Path(__file__).with_name("alphabet.txt")
    out.write_text(make(), encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
