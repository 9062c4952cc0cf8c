"""The stateful-LSTM alphabet tutorial problem, answered: continue the alphabet from any letter."""

import string

import chargen
from chargen.corpus import read_text

from conftest import ROOT

# The README's demo settings: a tiny model that learns this corpus in seconds.
DEMO = dict(units=(64,), embed=16, batch_size=16, seq_len=32, lr=0.01, epochs=4)


def test_shipped_corpus_is_what_its_script_makes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_alphabet", ROOT / "corpora" / "make_alphabet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert read_text(ROOT / "corpora" / "alphabet.txt") == mod.make()


def test_tiny_model_continues_the_alphabet_from_any_letter(tmp_path):
    run = chargen.train(ROOT / "corpora" / "alphabet.txt", root=tmp_path, seed=1, progress=False, **DEMO)
    gen = chargen.load(run.run_dir)
    assert gen.generate("K", 3, temperature=0) == "LMN"
    wrapped = string.ascii_uppercase * 2
    for i, start in enumerate(string.ascii_uppercase):  # not a position trick: every letter has its successor
        gen.reset()
        assert gen.generate(start, 3, temperature=0) == wrapped[i + 1:i + 4], start
