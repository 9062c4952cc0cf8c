"""Fine-tuning (issue #12 item 4): `train(NEW, init_from=RUN)` starts from RUN's weights with a fresh optimizer and
schedule, extends the vocabulary with the new text's characters keeping every old id's rows, records where it came
from, and refuses settings that contradict the run. And it pays: on a related text it reaches a lower validation
loss in N steps than training from scratch does in the same N steps, by far more than the seeds move it."""

import json
import subprocess
import sys

import numpy as np
import pytest

import chargen
from chargen import checkpoint as ckpt
from chargen import finetune
from chargen.errors import ConfigError, CorpusError

from conftest import ROOT

WORDS = ["the", "state", "of", "each", "row", "carries", "on", "stream", "book", "river", "stone", "morning", "light"]
MODEL = dict(units=(48,), embed=16, batch_size=8, seq_len=32)
PRETRAIN_STEPS, STEPS, SEEDS = 200, 30, (1, 2)


def _text(seed, words, lines=900):
    rng = np.random.default_rng(seed)
    return "\n".join(" ".join(rng.choice(words, size=rng.integers(3, 8))) + "." for _ in range(lines)) + "\n"


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    """A pretrained run on text A; text B is related (most of A's words, three new ones, one with ';'), and brings
    characters A never has (';', 'q', 'u')."""
    d = tmp_path_factory.mktemp("finetune")
    (d / "a.txt").write_text(_text(0, WORDS), encoding="utf-8")
    (d / "b.txt").write_text(_text(1, WORDS[3:] + ["lantern", "quiet", "harbour;"]), encoding="utf-8")
    chargen.train(d / "a.txt", root=d / "ck", steps=PRETRAIN_STEPS, seed=0, progress=False, **MODEL)
    return d


def test_fine_tuning_beats_training_from_scratch_in_the_same_steps(books):
    val = {}
    for how in ("fine-tuned", "scratch"):
        for seed in SEEDS:
            start = {"init_from": "a"} if how == "fine-tuned" else {}
            r = chargen.train(books / "b.txt", root=books / "ck", name=f"{how}-{seed}", steps=STEPS, seed=seed,
                              progress=False, **MODEL, **start)
            val[how, seed] = r.history[-1]["val_loss"]
    fine, scratch = [val["fine-tuned", s] for s in SEEDS], [val["scratch", s] for s in SEEDS]
    gap, spread = min(scratch) - max(fine), max(max(fine) - min(fine), max(scratch) - min(scratch))
    print(f"\nvalidation loss after {STEPS} steps on B: fine-tuned {fine}, from scratch {scratch}: "
          f"gap {gap:.3f} nats, seeds move each by at most {spread:.3f}")
    assert gap > 0.5 and gap > 20 * spread, val  # measured: gap ~0.9 nats, seeds ~0.003


def test_new_characters_are_appended_and_old_ids_keep_their_rows(books):
    plan = finetune.check_init("a", None, None, books / "ck", False, {}, {})
    source = ckpt.open_snapshot(books / "ck" / "a", "best")
    start = finetune.start(plan, (books / "b.txt").read_text(encoding="utf-8"), seed=5, dropout=0.0)
    old = source.tokenizer.vocab_size
    assert start.tokenizer.tokens[:old] == source.tokenizer.tokens and start.tokenizer.tokens[old:] == [";", "q", "u"]
    assert start.record["new_chars"] == [";", "q", "u"] and start.model.vocab_size == old + 3
    (emb, *_), (new_emb, *_) = source.weights, start.weights
    np.testing.assert_array_equal(new_emb[:old], emb)  # every old id: the same embedding row
    np.testing.assert_array_equal(start.weights[-2][:, :old], source.weights[-2])  # and the same output column
    np.testing.assert_array_equal(start.weights[-1][:old], source.weights[-1])
    assert 0 < np.abs(new_emb[old:]).max() < 0.05 and 0 < np.abs(start.weights[-2][:, old:]).max() < 0.05
    assert (start.weights[-1][old:] == source.weights[-1].min()).all()  # as unlikely as the rarest known character
    for a, b in zip(start.weights[1:-2], source.weights[1:-2]):
        np.testing.assert_array_equal(a, b)
    ids = start.tokenizer.encode("quiet harbour;\n")
    assert start.tokenizer.decode(ids) == "quiet harbour;\n" and ids.max() == old + 2


def test_the_run_records_where_it_came_from_and_keeps_it_when_resumed(books):
    r = chargen.train(books / "b.txt", root=books / "ck", name="recorded", steps=2, seed=3, progress=False,
                      init_from=books / "ck" / "a", init_which="last")
    source = ckpt.open_snapshot(books / "ck" / "a", "last")
    want = {"run": str((books / "ck" / "a").resolve()), "snapshot": source.path.name, "which": "last",
            "sha256": finetune.weights_sha256(source.model, source.weights), "new_chars": [";", "q", "u"]}
    assert json.loads((r.run_dir / "config.json").read_text())["init_from"] == want
    chargen.train(books / "b.txt", root=books / "ck", name="recorded", steps=4, resume=True, progress=False)
    assert json.loads((ckpt.snapshot_dir(r.run_dir, "last") / "config.json").read_text())["init_from"] == want
    assert chargen.load(r.run_dir).generate("quiet ", 20, temperature=0.5, rng_seed=1)


def test_new_chars_error_refuses_the_text_and_writes_nothing(books):
    with pytest.raises(CorpusError, match=r"3 characters the run a never saw: ';', 'q', 'u'; pass --new-chars extend"):
        chargen.train(books / "b.txt", root=books / "ck", name="refused", steps=2, progress=False, init_from="a",
                      new_chars="error")
    assert not (books / "ck" / "refused").exists()


@pytest.mark.parametrize("options, needle", [
    ({"units": (64,)}, "units (64,) differs from the run init_from starts from (a: (48,))"),
    ({"embed": 8}, "embed 8 differs"),
    ({"cell": "gru"}, "cell 'gru' differs from the run init_from starts from (a: 'lstm')"),
    ({"tokenizer": "bpe"}, "tokenizer 'bpe' differs"),
    ({"resume": True}, "give one of them"),
    ({"new_chars": "guess"}, "new_chars must be 'extend' or 'error'"),
    ({"init_which": "worst"}, "which must be 'best' or 'last'"),
])
def test_settings_that_contradict_the_run_are_refused(books, options, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        chargen.train(books / "b.txt", root=books / "ck", name="x", steps=2, progress=False, init_from="a", **options)


def test_a_gru_run_is_fine_tuned_as_a_gru_from_its_own_weights(trained_runs, books):
    """The cell comes from the run: its GRU weights (named gru_i/...) are where the new run starts, new characters
    added around them."""
    source = trained_runs("gru").run_dir
    r = chargen.train(books / "b.txt", root=books / "ck", name="gru-tuned", steps=1, lr=1e-12, seed=1,
                      progress=False, init_from=source)
    old, new = chargen.load(source), chargen.load(r.run_dir)
    assert new.config.cell == "gru" and new.config.units == old.config.units
    names = [n for n, _ in ckpt.weight_layout(new.config)]
    assert "gru_0/recurrent_kernel" in names
    for name, a, b in zip(names, old.model.get_weights(), new.model.get_weights()):
        if name in ("embedding", "output/kernel", "output/bias"):  # the new characters' rows come after the old
            a, b = (a, b[:len(a)]) if name != "output/kernel" else (a, b[:, :a.shape[1]])
        np.testing.assert_allclose(b, a, atol=1e-6, err_msg=name)  # lr 1e-12: one step moves nothing visible
    assert new.config.vocab_size > old.config.vocab_size
    with pytest.raises(ConfigError, match="cell 'lstm' differs from the run init_from starts from"):
        chargen.train(books / "b.txt", root=books / "ck", name="x", steps=2, progress=False, init_from=source,
                      cell="lstm")


def test_which_and_new_chars_need_init_from(books):
    with pytest.raises(ConfigError, match="new_chars 'error' is for fine-tuning; add init_from"):
        chargen.train(books / "b.txt", root=books / "ck", name="x", steps=2, progress=False, new_chars="error")


def test_the_command_line(books):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "chargen", "train", "b.txt", "--root", "ck", *map(str, args)],
                              cwd=books, capture_output=True, text=True, timeout=600,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    r = cli("--init-from", "a", "--which", "last", "--steps", 2, "--name", "cli", "--dropout", 0.1, "--quiet")
    assert r.returncode == 0, r.stderr
    config = json.loads((books / "ck" / "cli" / "config.json").read_text())
    assert config["init_from"]["which"] == "last" and config["model"]["units"] == [48] and config["model"]["dropout"] == 0.1
    r = cli("--init-from", "a", "--units", "64", "--name", "cli2")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--units (64,) differs from the run" in r.stderr
    r = cli("--which", "last", "--name", "cli3")
    assert r.returncode == 2 and "--which 'last' is for fine-tuning; add --init-from (the run" in r.stderr


def test_a_bpe_run_keeps_its_merges_and_adds_each_new_character_as_a_token(tmp_path):
    (tmp_path / "a.txt").write_text(_text(0, WORDS, 300), encoding="utf-8")
    (tmp_path / "b.txt").write_text(_text(1, WORDS + ["quiet"], 300), encoding="utf-8")
    a = chargen.train(tmp_path / "a.txt", root=tmp_path / "ck", steps=3, seed=0, progress=False, tokenizer="bpe",
                      bpe_vocab=40, **MODEL)
    b = chargen.train(tmp_path / "b.txt", root=tmp_path / "ck", steps=3, seed=0, progress=False, init_from="a", **MODEL)
    old, new = chargen.load(a.run_dir).tokenizer, chargen.load(b.run_dir).tokenizer
    assert new.kind == "bpe" and new.tokens == old.tokens + ["q", "u"]
    assert json.loads(new.to_str())["model"]["merges"] == json.loads(old.to_str())["model"]["merges"]
    text = "the quiet row."
    assert new.decode(new.encode(text)) == text and new.encode("the row.").tolist() == old.encode("the row.").tolist()
