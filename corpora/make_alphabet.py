"""Writes corpora/alphabet.txt: the answer to the classic stateful-LSTM alphabet tutorial.

In that tutorial a model that only learned positions answers "B" after any first letter. Here
every line starts at a random letter and runs on for 10 to 40 letters, wrapping from Z to A,
so every letter appears at every position and the only way to predict well is to learn
"after K comes L" for all of them: `chargen sample --seed K` must print LMNOP...

Run: python corpora/make_alphabet.py  (deterministic: the same file every time)
"""

import random
import string
from pathlib import Path

LINES = 2000


def make(lines: int = LINES, seed: int = 26) -> str:
    rng = random.Random(seed)
    letters = string.ascii_uppercase
    out = []
    for _ in range(lines):
        start, length = rng.randrange(26), rng.randint(10, 40)
        out.append("".join(letters[(start + i) % 26] for i in range(length)) + "\n")
    return "".join(out)


if __name__ == "__main__":
    out = Path(__file__).with_name("alphabet.txt")
    out.write_text(make(), encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
